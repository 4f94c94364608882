"""The fusion contract: where the image enters the caption generator.

Tanti, Gatt & Camilleri (2018), "Where to put the image in an image caption generator", separate
*inject* architectures (the image enters the decoder's input stream) from *merge* architectures
(the decoder is a pure language model and the image is combined with its states only before the
vocabulary projection); Xu et al. (2015) add *attention* over visual tokens at every step.

One contract covers all three:
``prepare(vis) -> FusedContext`` says what the decoder receives (a prefix in its input stream,
a memory to attend over, a vector to initialise its state), and ``combine(hidden, ctx)`` merges
the image into the decoder states before the vocabulary projection (identity except for late).
Decoders consume whatever fields are set, so every fusion works with every decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from fusionbench.encoders.base import VisualFeatures


@dataclass
class FusedContext:
    """What the decoder gets from the image (all widths are the model's ``d_model``).

    Attributes:
        prefix: ``[B, P, D]`` embeddings placed before the words in the decoder's input (early).
        prefix_mask: ``[B, P]`` bool, True for real prefix positions.
        memory: ``[B, N, D]`` visual tokens attended over at every step (attention).
        memory_mask: ``[B, N]`` bool, True for real tokens.
        init: ``[B, D]`` vector that initialises a recurrent decoder's state.
        merge: ``[B, D]`` vector merged with the decoder states by ``combine`` (late).
    """

    prefix: Tensor | None = None
    prefix_mask: Tensor | None = None
    memory: Tensor | None = None
    memory_mask: Tensor | None = None
    init: Tensor | None = None
    merge: Tensor | None = None

    @property
    def batch_size(self) -> int:
        for f in fields(self):
            t = getattr(self, f.name)
            if t is not None:
                return t.shape[0]
        raise ValueError("empty FusedContext")

    def _reference(self) -> Tensor:
        """The first image tensor set (prefix, memory, init, merge): where the image went."""
        for t in (self.prefix, self.memory, self.init, self.merge):
            if t is not None:
                return t
        raise ValueError("empty FusedContext: a fusion must set prefix, memory, init or merge")

    @property
    def device(self) -> torch.device:
        """The device of the context's tensors (decoders and searches create their state there)."""
        return self._reference().device

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the context's tensors (a decoder's zero state takes it)."""
        return self._reference().dtype

    def index_select(self, index: Tensor) -> FusedContext:
        """Rows ``index`` of every tensor (beam search expands each image into beams)."""
        return FusedContext(
            **{
                f.name: None
                if getattr(self, f.name) is None
                else getattr(self, f.name).index_select(0, index)
                for f in fields(self)
            }
        )


class Fusion(nn.Module):
    """Base class of registered fusion strategies.

    Class attributes tell a decoder, at construction, which inputs it must accept:
    ``uses_prefix`` (early), ``uses_memory`` (attention), ``uses_init``.
    """

    uses_prefix: bool = False
    uses_memory: bool = False
    uses_init: bool = False

    def __init__(self, config, d_model: int) -> None:
        super().__init__()
        self.config = config
        self.d_model = d_model

    def prepare(self, vis: VisualFeatures) -> FusedContext:  # pragma: no cover - abstract
        raise NotImplementedError

    def combine(self, hidden: Tensor, ctx: FusedContext) -> Tensor:
        """Merge the image into decoder states ``[B, T, D]`` or ``[B, D]``; identity by default."""
        return hidden
