"""LSTM decoder; with attention fusion it is the Show, Attend and Tell decoder.

Xu et al. (2015): at each step soft additive attention (Bahdanau et al., 2015) over the visual
tokens gives a context vector, gated by ``beta = sigmoid(f(h))``, which is fed with the word
embedding into the LSTM; the output combines the hidden state and the context ("deep output").
The doubly stochastic regulariser ``lambda * sum_i (1 - sum_t alpha_ti)^2`` is optional
(``attention_reg``). Without a memory the same decoder is a plain LSTM language model (late
fusion) or consumes a visual prefix before the words (early fusion, Vinyals et al. 2015).

Under early fusion the prefix is by default also given with every word (``prefix_every_step``:
the mean prefix concatenated to each input, Tanti et al. 2018 "par-inject", Donahue et al. 2015
LRCN). With the prefix only before the words (pre-inject, ``prefix_every_step: false``) the image
reaches word t only through t + 1 steps of the cell state; from a scratch encoder at the default
budget that path collapses onto one caption for every image (docs/early_fusion_collapse.md). A
Transformer decoder needs no such option: its prefix stays in view at every position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fusionbench.checks import Fraction, NonNegativeFloat, PositiveInt, check_config
from fusionbench.decoders.base import Decoder, State
from fusionbench.fusion.base import FusedContext
from fusionbench.registry import DECODERS


class AdditiveAttention(nn.Module):
    """Bahdanau attention: ``alpha = softmax(w^T tanh(W_m m + W_h h))`` over unmasked tokens."""

    def __init__(self, d_model: int, attention_dim: int) -> None:
        super().__init__()
        self.mem = nn.Linear(d_model, attention_dim)
        self.query = nn.Linear(d_model, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def forward(self, mem_proj: Tensor, memory: Tensor, mask: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        e = self.score(torch.tanh(mem_proj + self.query(h).unsqueeze(1))).squeeze(-1)  # [B, N]
        e = e.masked_fill(~mask, torch.finfo(e.dtype).min)
        alpha = torch.softmax(e, dim=-1)
        return torch.bmm(alpha.unsqueeze(1), memory).squeeze(1), alpha


def _mean_prefix(ctx: FusedContext) -> Tensor:
    """``[B, D]`` mean of the real prefix tokens (the pooled prefix itself when it is one token)."""
    prefix = ctx.prefix
    if ctx.prefix_mask is None:
        return prefix.mean(dim=1)
    keep = ctx.prefix_mask.unsqueeze(-1).to(prefix.dtype)
    return (prefix * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


@DECODERS.register("lstm")
class LSTMDecoder(Decoder):
    """LSTM decoder; Show, Attend and Tell soft attention under attention fusion."""

    @dataclass
    class Config:
        num_layers: PositiveInt = 1
        dropout: Fraction = 0.1
        attention_dim: PositiveInt = 256
        attention_reg: NonNegativeFloat = 0.0  # lambda of the doubly stochastic regulariser
        prefix_every_step: bool = True  # early fusion: the mean prefix also enters with every word

    def __init__(self, config: Config, *, d_model: int, tokenizer, fusion) -> None:
        super().__init__(config, d_model=d_model, tokenizer=tokenizer, fusion=fusion)
        check_config(config, "model.decoder")
        d = d_model
        self.embed = nn.Embedding(len(tokenizer), d, padding_idx=tokenizer.pad_id)
        self.par_inject = self.uses_prefix and config.prefix_every_step
        in_dim = 2 * d if (self.uses_memory or self.par_inject) else d
        self.cells = nn.ModuleList(nn.LSTMCell(in_dim if i == 0 else d, d) for i in range(config.num_layers))
        self.drop = nn.Dropout(config.dropout)
        if self.uses_memory:
            self.attention = AdditiveAttention(d, config.attention_dim)
            self.beta = nn.Linear(d, 1)
            self.deep_out = nn.Linear(2 * d, d)
        if self.uses_init:
            self.init_h = nn.Linear(d, config.num_layers * d)
            self.init_c = nn.Linear(d, config.num_layers * d)
        self.head = nn.Linear(d, len(tokenizer))

    # -- state --------------------------------------------------------------------------------
    def init_state(self, ctx: FusedContext) -> State:
        b, L, d = ctx.batch_size, self.config.num_layers, self.d_model
        if self.uses_init and ctx.init is not None:
            h = torch.tanh(self.init_h(ctx.init)).view(b, L, d)
            c = torch.tanh(self.init_c(ctx.init)).view(b, L, d)
        else:
            h = torch.zeros(b, L, d, dtype=ctx.dtype, device=ctx.device)
            c = torch.zeros(b, L, d, dtype=ctx.dtype, device=ctx.device)
        state: State = {"h": h, "c": c}
        if self.uses_memory:
            state["mem_proj"] = self.attention.mem(ctx.memory)
        if self.uses_prefix and ctx.prefix is not None:
            for p in range(ctx.prefix.shape[1]):
                _, new = self._cell(ctx.prefix[:, p], state, ctx)
                keep = ctx.prefix_mask[:, p].view(b, 1, 1)
                state["h"] = torch.where(keep, new["h"], state["h"])
                state["c"] = torch.where(keep, new["c"], state["c"])
        return state

    def _cell(self, x: Tensor, state: State, ctx: FusedContext) -> tuple[tuple[Tensor, Tensor | None], State]:
        h, c = state["h"], state["c"]
        alpha = context = None
        if self.uses_memory:
            context, alpha = self.attention(state["mem_proj"], ctx.memory, ctx.memory_mask, h[:, -1])
            x = torch.cat([x, torch.sigmoid(self.beta(h[:, -1])) * context], dim=-1)
        elif self.par_inject:
            x = torch.cat([x, _mean_prefix(ctx)], dim=-1)
        hs, cs = [], []
        for i, cell in enumerate(self.cells):
            hi, ci = cell(x, (h[:, i], c[:, i]))
            hs.append(hi)
            cs.append(ci)
            x = self.drop(hi)
        out = hs[-1]
        if self.uses_memory:
            out = torch.tanh(self.deep_out(torch.cat([out, context], dim=-1)))
        new = dict(state)
        new["h"], new["c"] = torch.stack(hs, 1), torch.stack(cs, 1)
        return (self.drop(out), alpha), new

    # -- decoding interface -------------------------------------------------------------------
    def step(self, last_ids: Tensor, state: State, ctx: FusedContext) -> tuple[Tensor, State]:
        (out, alpha), state = self._cell(self.embed(last_ids), state, ctx)
        if alpha is not None:
            state["attention"] = alpha
        return out, state

    def forward(self, input_ids: Tensor, ctx: FusedContext) -> tuple[Tensor, dict[str, Tensor]]:
        state = self.init_state(ctx)
        emb = self.embed(input_ids)
        outs, alphas = [], []
        for t in range(input_ids.shape[1]):
            (out, alpha), state = self._cell(emb[:, t], state, ctx)
            outs.append(out)
            if alpha is not None:
                alphas.append(alpha)
        extras: dict[str, Tensor] = {}
        if alphas:
            att = torch.stack(alphas, 1)  # [B, T, N]
            extras["attention"] = att
            if self.config.attention_reg > 0:
                valid = (input_ids != self.tokenizer.pad_id).unsqueeze(-1).to(att.dtype)
                total = (att * valid).sum(1)  # [B, N]
                reg = ((1.0 - total) ** 2 * ctx.memory_mask).sum(1).mean()
                extras["aux_loss"] = self.config.attention_reg * reg
        return torch.stack(outs, 1), extras
