"""Early fusion (inject): the image enters only through the decoder's input stream.

Tanti et al. (2018) "pre-inject": projected visual information is placed before the first word,
as prefix embeddings, and the decoder processes it like words (Vinyals et al. 2015 "Show and Tell"
feed the image vector as the first input). ``prefix: pooled`` gives one prefix token,
``prefix: tokens`` every visual token (as in prefix-LM captioners such as ClipCap).
The LSTM decoder also takes the mean prefix with every word by default (par-inject,
``model.decoder.prefix_every_step``): pre-inject alone collapses onto one caption at the default
budget, see docs/early_fusion_collapse.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from fusionbench.checks import check_config
from fusionbench.encoders.base import VisualFeatures
from fusionbench.fusion.base import FusedContext, Fusion
from fusionbench.registry import FUSIONS


@FUSIONS.register("early")
class EarlyFusion(Fusion):
    """Visual prefix before the words in the decoder input (Tanti et al. 2018 pre-inject)."""

    uses_prefix = True

    @dataclass
    class Config:
        prefix: Literal["pooled", "tokens"] = "pooled"  # one pooled token, or every visual token

    def __init__(self, config: Config, d_model: int) -> None:
        super().__init__(config, d_model)
        check_config(config, "model.fusion")
        self.proj = nn.Sequential(nn.Linear(d_model, d_model), nn.LayerNorm(d_model))

    def prepare(self, vis: VisualFeatures) -> FusedContext:
        if self.config.prefix == "pooled":
            prefix = self.proj(vis.pooled).unsqueeze(1)
            mask = vis.mask.new_ones(prefix.shape[:2])
        else:
            prefix, mask = self.proj(vis.tokens), vis.mask
        return FusedContext(prefix=prefix, prefix_mask=mask)
