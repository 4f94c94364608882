"""Attention fusion: the decoder attends over all visual tokens at every step.

Xu et al. (2015), "Show, Attend and Tell": soft attention over the annotation vectors for an LSTM;
for Transformer/BERT decoders this is multi-head cross-attention (Vaswani et al., 2017). As in
Show, Attend and Tell, the mean visual vector also initialises a recurrent decoder's state.
"""

from __future__ import annotations

from dataclasses import dataclass

from fusionbench.encoders.base import VisualFeatures
from fusionbench.fusion.base import FusedContext, Fusion
from fusionbench.registry import FUSIONS


@FUSIONS.register("attention")
class AttentionFusion(Fusion):
    """Decoder attends over every visual token at each step (Xu et al. 2015)."""

    uses_memory = True
    uses_init = True

    @dataclass
    class Config:
        init_state: bool = True

    def prepare(self, vis: VisualFeatures) -> FusedContext:
        return FusedContext(
            memory=vis.tokens,
            memory_mask=vis.mask,
            init=vis.pooled if self.config.init_state else None,
        )
