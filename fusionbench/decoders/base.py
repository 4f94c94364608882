"""The decoder contract: teacher forcing, incremental steps with state, and a vocabulary head.

A decoder consumes whatever its fusion provides in the ``FusedContext`` (a prefix in its input
stream, a memory to attend over, an initial-state vector) and produces hidden states of width
``d_model``; ``CaptioningModel`` applies the fusion's ``combine`` and then ``lm_head``.
Greedy and beam search are written once (``fusionbench.decoding.search``) over ``init_state``/``step``/
``reorder_state``, so every decoder gets the same decoding.

State is a dict of tensors whose first dimension is the batch, so beam search can reorder any
decoder's state (LSTM hidden/cell, Transformer or BERT key-value cache) the same way.

Checkpoints: ``rebuild_state`` exports what rebuilding the decoder needs besides its config,
tokenizer and weights (plain data), and ``from_rebuild_state`` builds it from that without loading
any weights; ``load_state_dict`` then fills them (``fusionbench.checkpoint``). The defaults save
nothing and build from the config, which is all a decoder needs whose constructor reads no weights
or files (BERT saves its ``BertConfig`` instead of reading a pretrained model again).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fusionbench.fusion.base import FusedContext, Fusion

State = dict[str, Any]


class Decoder(nn.Module):
    """Base class of registered decoders. Subclasses declare a ``Config`` dataclass."""

    def __init__(self, config, *, d_model: int, tokenizer, fusion: type[Fusion] | Fusion) -> None:
        super().__init__()
        self.config = config
        self.d_model = d_model
        self.tokenizer = tokenizer
        self.uses_prefix = fusion.uses_prefix
        self.uses_memory = fusion.uses_memory
        self.uses_init = fusion.uses_init

    # -- checkpoints ------------------------------------------------------------------------------
    def rebuild_state(self) -> dict[str, Any]:
        """What rebuilding this decoder needs besides its config, tokenizer and weights, as plain
        data (JSON types: checkpoints are read with ``weights_only=True``). Default: nothing."""
        return {}

    @classmethod
    def from_rebuild_state(cls, config: Any, state: dict[str, Any], **build_kwargs: Any) -> Decoder:
        """The decoder ``rebuild_state`` described, built without loading weights.

        ``build_kwargs`` are the constructor's (``d_model``, ``tokenizer``, ``fusion``). The
        default is ``cls(config, **build_kwargs)``; a decoder whose constructor loads weights
        overrides this and passes the keywords that build the same architecture without them.
        """
        return cls(config, **build_kwargs)

    @classmethod
    def build_tokenizer(cls, config, captions: list[str], min_count: int):
        """The tokenizer this decoder writes with, fitted on the train captions if it needs to be."""
        from fusionbench.text import WordVocab

        return WordVocab.build(captions, min_count=min_count)

    def forward(self, input_ids: Tensor, ctx: FusedContext) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher forcing: hidden states ``[B, T, D]`` at the word positions, and extras
        (``attention`` ``[B, T, N]`` where the decoder attends, ``aux_loss`` where it has one)."""
        raise NotImplementedError

    def init_state(self, ctx: FusedContext) -> State:
        """State before the first word (the prefix, if any, already consumed)."""
        raise NotImplementedError

    def step(self, last_ids: Tensor, state: State, ctx: FusedContext) -> tuple[Tensor, State]:
        """One incremental step: hidden ``[B, D]`` for ``last_ids`` ``[B]`` and the new state."""
        raise NotImplementedError

    def reorder_state(self, state: State, index: Tensor) -> State:
        """Select rows ``index`` of every state tensor (beam search)."""
        return {k: _index(v, index) for k, v in state.items()}

    def lm_head(self, hidden: Tensor) -> Tensor:
        """Vocabulary logits from (fused) hidden states."""
        return self.head(hidden)

    def projected_init(self, ctx: FusedContext) -> Tensor | None:
        """The fusion's ``init`` vector through ``self.init_proj``, for decoders that add it to the
        first input embedding (they create ``init_proj`` only when the fusion gives an init vector
        and their ``use_init`` is on); None otherwise."""
        proj = getattr(self, "init_proj", None)
        return proj(ctx.init) if proj is not None and ctx.init is not None else None


def add_to_first_position(x: Tensor, vector: Tensor | None) -> Tensor:
    """``x`` ``[B, T, D]`` with ``vector`` ``[B, D]`` added at position 0 only (None: unchanged)."""
    if vector is None:
        return x
    return torch.cat([x[:, :1] + vector.unsqueeze(1), x[:, 1:]], dim=1)


def _index(value: Any, index: Tensor) -> Any:
    if isinstance(value, Tensor):
        return value.index_select(0, index)
    if isinstance(value, (list, tuple)):
        return type(value)(_index(v, index) for v in value)
    if isinstance(value, dict):
        return {k: _index(v, index) for k, v in value.items()}
    return value
