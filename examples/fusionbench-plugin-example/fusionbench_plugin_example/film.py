"""FiLM fusion: the image modulates the language model's states feature-wise.

Perez et al. (2018), "FiLM: Visual Reasoning with a General Conditioning Layer": a conditioning
vector predicts a per-feature scale ``gamma`` and shift ``beta`` applied to another network's
activations. Here the pooled image vector conditions every decoder state just before the
vocabulary projection, so the decoder itself is a pure language model (a merge architecture in
Tanti et al.'s terms, with multiplicative instead of additive/concatenative merging).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from fusionbench.encoders.base import VisualFeatures
from fusionbench.fusion.base import FusedContext, Fusion


class FiLMFusion(Fusion):
    """Image vector scales and shifts each decoder state feature-wise (Perez et al. 2018)."""

    @dataclass
    class Config:
        hidden: int = 0  # width of the FiLM generator's hidden layer; 0 = one linear layer

    def __init__(self, config: Config, d_model: int) -> None:
        super().__init__(config, d_model)
        if config.hidden:
            self.film = nn.Sequential(
                nn.Linear(d_model, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 2 * d_model)
            )
        else:
            self.film = nn.Linear(d_model, 2 * d_model)
        last = self.film[-1] if isinstance(self.film, nn.Sequential) else self.film
        nn.init.zeros_(last.weight)  # start as the identity: gamma = 1, beta = 0
        nn.init.zeros_(last.bias)

    def prepare(self, vis: VisualFeatures) -> FusedContext:
        return FusedContext(merge=vis.pooled)

    def combine(self, hidden: Tensor, ctx: FusedContext) -> Tensor:
        gamma, beta = self.film(ctx.merge).chunk(2, dim=-1)
        if hidden.dim() == 3:
            gamma, beta = gamma.unsqueeze(1), beta.unsqueeze(1)
        return (1.0 + gamma) * hidden + beta
