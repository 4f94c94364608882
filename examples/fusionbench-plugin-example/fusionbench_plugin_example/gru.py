"""A GRU caption decoder: the smallest recurrent decoder that meets every fusion strategy.

Cho et al. (2014), "Learning Phrase Representations using RNN Encoder-Decoder for Statistical
Machine Translation". One ``GRUCell`` steps over the words; early fusion's prefix is consumed
before the first word, attention fusion's memory enters every step as its (masked) mean, and the
fusion's init vector starts the hidden state. It implements only the decoder contract: it writes
with fusionbench's word vocabulary, and checkpoints rebuild it with the base class's defaults
(``rebuild_state``/``from_rebuild_state``: its constructor reads no files).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fusionbench.decoders.base import Decoder, State
from fusionbench.fusion.base import FusedContext


class GRUDecoder(Decoder):
    """A GRU decoder; under attention fusion it reads the mean of the memory at every step."""

    @dataclass
    class Config:
        dropout: float = 0.1

    def __init__(self, config: Config, *, d_model: int, tokenizer, fusion) -> None:
        super().__init__(config, d_model=d_model, tokenizer=tokenizer, fusion=fusion)
        self.embed = nn.Embedding(len(tokenizer), d_model, padding_idx=tokenizer.pad_id)
        self.cell = nn.GRUCell(2 * d_model if self.uses_memory else d_model, d_model)
        self.init = nn.Linear(d_model, d_model) if self.uses_init else None
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(d_model, len(tokenizer))

    def _input(self, x: Tensor, ctx: FusedContext) -> Tensor:
        if self.uses_memory:
            m = ctx.memory_mask.unsqueeze(-1).to(ctx.memory.dtype)
            x = torch.cat([x, (ctx.memory * m).sum(1) / m.sum(1).clamp(min=1)], dim=-1)
        return x

    def init_state(self, ctx: FusedContext) -> State:
        ref = next(t for t in (ctx.init, ctx.memory, ctx.prefix, ctx.merge) if t is not None)
        h = ref.new_zeros(ctx.batch_size, self.d_model)
        if self.init is not None and ctx.init is not None:
            h = torch.tanh(self.init(ctx.init))
        if self.uses_prefix and ctx.prefix is not None:
            for p in range(ctx.prefix.shape[1]):
                new = self.cell(self._input(ctx.prefix[:, p], ctx), h)
                h = torch.where(ctx.prefix_mask[:, p : p + 1], new, h)
        return {"h": h}

    def step(self, last_ids: Tensor, state: State, ctx: FusedContext) -> tuple[Tensor, State]:
        h = self.cell(self._input(self.embed(last_ids), ctx), state["h"])
        return self.drop(h), {"h": h}

    def forward(self, input_ids: Tensor, ctx: FusedContext) -> tuple[Tensor, dict[str, Tensor]]:
        state = self.init_state(ctx)
        outs = []
        for t in range(input_ids.shape[1]):
            out, state = self.step(input_ids[:, t], state, ctx)
            outs.append(out)
        return torch.stack(outs, 1), {}
