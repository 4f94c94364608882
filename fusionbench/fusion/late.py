"""Late fusion (merge): a pure language model whose states meet the image before the output layer.

Tanti et al. (2018) "merge" architecture (also Mao et al. 2015, m-RNN): the decoder never sees the
image; its hidden state at each step is combined with the image vector just before the vocabulary
projection, by concatenation, addition or a learned gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from fusionbench.checks import check_config, literal_choices
from fusionbench.encoders.base import VisualFeatures
from fusionbench.fusion.base import FusedContext, Fusion
from fusionbench.registry import FUSIONS

Mode = Literal["concat", "add", "gated"]
MODES: tuple[str, ...] = literal_choices(Mode)


@FUSIONS.register("late")
class LateFusion(Fusion):
    """Merge the image vector with LM states before the vocabulary projection (Tanti et al. 2018)."""

    @dataclass
    class Config:
        mode: Mode = "concat"

    def __init__(self, config: Config, d_model: int) -> None:
        super().__init__(config, d_model)
        check_config(config, "model.fusion")
        self.image = nn.Linear(d_model, d_model)
        if config.mode == "concat":
            self.out = nn.Linear(2 * d_model, d_model)
        elif config.mode == "gated":
            self.gate = nn.Linear(2 * d_model, d_model)
        self.norm = nn.LayerNorm(d_model)

    def prepare(self, vis: VisualFeatures) -> FusedContext:
        return FusedContext(merge=vis.pooled)

    def combine(self, hidden: Tensor, ctx: FusedContext) -> Tensor:
        v = self.image(ctx.merge)
        if hidden.dim() == 3:
            v = v.unsqueeze(1).expand_as(hidden)
        if self.config.mode == "add":
            out = hidden + v
        elif self.config.mode == "concat":
            out = torch.tanh(self.out(torch.cat([hidden, v], dim=-1)))
        else:
            g = torch.sigmoid(self.gate(torch.cat([hidden, v], dim=-1)))
            out = g * hidden + (1 - g) * v
        return self.norm(out)
