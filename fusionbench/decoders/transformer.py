"""Causal Transformer decoder (Vaswani et al., 2017) with a key-value cache for incremental decoding.

Each layer is masked multi-head self-attention, then (under attention fusion) multi-head
cross-attention over the visual tokens, then a position-wise feed-forward network, each sub-layer
with a residual connection and layer normalisation: pre-norm (Xiong et al., 2020, the default:
stable without warm-up tricks, with a final LayerNorm) or post-norm as in the original paper.
Inputs are word embeddings plus learned absolute positions (as in GPT, Radford et al. 2018).

How the image enters depends on the fusion (Tanti et al., 2018):

* early: the visual prefix is placed before the words and the whole stream ``[prefix; words]``
  runs through causal self-attention; padded prefix tokens (``prefix_mask`` False) are never
  attended to. Prefix tokens get a learned "visual" type embedding instead of a position (the
  encoder already encodes where they are), so words are at positions ``0..T-1`` whatever the
  prefix length. Hidden states are returned at the word positions only.
* attention: every layer cross-attends over ``memory`` (respecting ``memory_mask``), as the
  Transformer decoder of Vaswani et al. (2017); the last layer's attention weights, averaged over
  heads, are returned (``extras["attention"]`` ``[B, T, N]`` / ``state["attention"]`` ``[B, N]``).
  The fusion's ``init`` vector, when given and ``use_init`` is on, is projected and added to the
  input embedding of the first position (the ``<bos>`` token), the Transformer analogue of
  initialising an LSTM's state from the mean visual vector (Xu et al., 2015).
* late: a pure causal language model.

Incremental decoding keeps, per layer, the self-attention keys/values ``[B, H, S, dh]`` of every
position seen so far (``init_state`` fills them with the prefix), the validity of each cached key
``[B, S]``, and the cross-attention keys/values of the memory ``[B, H, N, dh]``, computed once.
All are batch-first tensors, so the base ``reorder_state`` serves beam search. ``forward`` and
``step`` run the same layer code (``forward`` is one call over the whole sequence with an empty
cache), so their logits agree to float precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusionbench.checks import Fraction, PositiveInt, Range, check_config, check_divides, full_key
from fusionbench.decoders.base import Decoder, State, add_to_first_position
from fusionbench.errors import ConfigError
from fusionbench.fusion.base import FusedContext
from fusionbench.registry import DECODERS

KV = tuple[Tensor, Tensor]


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``[B, S, D]`` -> ``[B, H, S, D / H]``."""
    b, s, d = x.shape
    return x.view(b, s, num_heads, d // num_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """``[B, H, S, dh]`` -> ``[B, S, H * dh]``."""
    b, h, s, dh = x.shape
    return x.transpose(1, 2).reshape(b, s, h * dh)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (Vaswani et al., 2017) over given keys/values.

    ``project_kv`` computes the keys/values of a source once (cached by the caller); ``forward``
    attends from queries ``[B, q, D]`` to keys/values ``[B, H, S, dh]`` under a boolean mask
    broadcastable to ``[B, H, q, S]`` (True = may attend). It uses
    ``F.scaled_dot_product_attention`` unless the weights are wanted (then the same computation
    written out, returning the weights averaged over heads).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def project_kv(self, source: Tensor) -> KV:
        k, v = self.kv(source).chunk(2, dim=-1)
        return _split_heads(k, self.num_heads), _split_heads(v, self.num_heads)

    def forward(
        self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        q = _split_heads(self.q(x), self.num_heads)
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1)
            out = F.dropout(weights, p, self.training) @ v
            avg = weights.mean(1)  # [B, q, S]
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
            avg = None
        return self.out(_merge_heads(out)), avg


class DecoderLayer(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; pre- or post-norm residuals."""

    def __init__(
        self, d_model: int, num_heads: int, ff_dim: int, dropout: float, pre_norm: bool, cross: bool
    ):
        super().__init__()
        self.pre_norm = pre_norm
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout) if cross else None
        self.norm2 = nn.LayerNorm(d_model) if cross else None
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model)
        )
        self.norm3 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def _sublayer(self, x: Tensor, norm: nn.Module, fn) -> tuple[Tensor, object]:
        if self.pre_norm:
            y, aux = fn(norm(x))
            return x + self.drop(y), aux
        y, aux = fn(x)
        return norm(x + self.drop(y)), aux

    def forward(
        self,
        x: Tensor,
        past: KV,
        self_mask: Tensor,
        cross_kv: KV | None,
        cross_mask: Tensor | None,
        need_weights: bool,
    ) -> tuple[Tensor, KV, Tensor | None]:
        """``x`` ``[B, q, D]`` new positions; ``past`` cached self K/V; returns the grown cache."""
        new_kv: list[KV] = []

        def self_attention(h: Tensor):
            k, v = self.self_attn.project_kv(h)
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            new_kv.append((k, v))
            return self.self_attn(h, k, v, self_mask)

        x, _ = self._sublayer(x, self.norm1, self_attention)
        weights = None
        if self.cross_attn is not None and cross_kv is not None:
            x, weights = self._sublayer(
                x, self.norm2, lambda h: self.cross_attn(h, *cross_kv, cross_mask, need_weights)
            )
        x, _ = self._sublayer(x, self.norm3, lambda h: (self.ff(h), None))
        return x, new_kv[0], weights


@DECODERS.register("transformer")
class TransformerDecoder(Decoder):
    """Causal Transformer decoder with KV cache; cross-attention under attention fusion (Vaswani et al. 2017).

    Config: ``num_layers``, ``num_heads`` (must divide ``d_model``), ``ff_dim`` (feed-forward
    width), ``dropout``, ``pre_norm`` (False: post-norm as in the paper), ``max_positions``
    (learned word positions; the prefix takes none), ``tie_embeddings`` (output layer shares the
    word embedding, Press & Wolf 2017), ``use_init`` (add attention fusion's init vector to the
    first input).
    """

    @dataclass
    class Config:
        num_layers: PositiveInt = 2
        num_heads: PositiveInt = 4
        ff_dim: PositiveInt = 512
        dropout: Fraction = 0.1
        pre_norm: bool = True
        max_positions: Annotated[int, Range(ge=2)] = 64
        tie_embeddings: bool = False
        use_init: bool = True

        def check(self, key: str, d_model: int | None = None) -> None:
            check_divides(full_key(key, "num_heads"), self.num_heads, "model.d_model", d_model)

    def __init__(self, config: Config, *, d_model: int, tokenizer, fusion) -> None:
        super().__init__(config, d_model=d_model, tokenizer=tokenizer, fusion=fusion)
        check_config(config, "model.decoder", d_model=d_model)
        d = d_model
        self.embed = nn.Embedding(len(tokenizer), d, padding_idx=tokenizer.pad_id)
        self.pos = nn.Embedding(config.max_positions, d)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)
        with torch.no_grad():
            self.embed.weight[tokenizer.pad_id].zero_()
        if self.uses_prefix:
            self.prefix_type = nn.Parameter(torch.zeros(d))
        if self.uses_init and config.use_init:
            self.init_proj = nn.Linear(d, d)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            DecoderLayer(
                d, config.num_heads, config.ff_dim, config.dropout, config.pre_norm, self.uses_memory
            )
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(d) if config.pre_norm else nn.Identity()
        self.head = nn.Linear(d, len(tokenizer))
        if config.tie_embeddings:
            self.head.weight = self.embed.weight

    # -- building blocks ------------------------------------------------------------------------
    def _embed_words(self, ids: Tensor, start: int, init: Tensor | None) -> Tensor:
        """Word + position embeddings of ``ids`` ``[B, T]`` at positions ``start..start+T-1``."""
        t = ids.shape[1]
        if start + t > self.config.max_positions:
            raise ConfigError(
                f"caption position {start + t - 1} exceeds model.decoder.max_positions="
                f"{self.config.max_positions}; raise it or lower decoding.max_len / data.max_words."
            )
        x = self.embed(ids) + self.pos(torch.arange(start, start + t, device=ids.device))
        return add_to_first_position(x, init if start == 0 else None)

    def _cross_kv(self, ctx: FusedContext) -> list[KV] | None:
        if not self.uses_memory:
            return None
        return [layer.cross_attn.project_kv(ctx.memory) for layer in self.layers]

    def _run(
        self,
        x: Tensor,
        new_valid: Tensor,
        past: list[KV],
        past_valid: Tensor,
        cross: list[KV] | None,
        ctx: FusedContext,
    ) -> tuple[Tensor, list[KV], Tensor, Tensor | None]:
        """Run ``x`` ``[B, q, D]`` (validity ``new_valid`` ``[B, q]``) after ``past`` cached positions."""
        b, q, _ = x.shape
        s0 = past_valid.shape[1]
        valid = torch.cat([past_valid, new_valid], dim=1)  # [B, S0 + q]
        qpos = torch.arange(s0, s0 + q, device=x.device).view(q, 1)
        kpos = torch.arange(s0 + q, device=x.device).view(1, s0 + q)
        # causal and valid keys; a position always sees itself, so no row is empty (no NaN)
        mask = ((kpos <= qpos) & valid.view(b, 1, s0 + q)) | (kpos == qpos)
        mask = mask.unsqueeze(1)  # [B, 1, q, S0 + q]
        cross_mask = None
        if cross is not None:
            mm = ctx.memory_mask
            mm = mm | ~mm.any(dim=1, keepdim=True)  # an image without tokens attends to all (no NaN)
            cross_mask = mm.view(b, 1, 1, -1)
        x = self.drop(x)
        new_past, weights = [], None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x, kv, w = layer(x, past[i], mask, None if cross is None else cross[i], cross_mask, i == last)
            new_past.append(kv)
            if w is not None:
                weights = w
        return self.final_norm(x), new_past, valid, weights

    def _empty_past(self, b: int, dtype: torch.dtype, device: torch.device) -> tuple[list[KV], Tensor]:
        h = self.config.num_heads
        empty = torch.zeros(b, h, 0, self.d_model // h, dtype=dtype, device=device)
        return [(empty, empty) for _ in self.layers], torch.zeros(b, 0, dtype=torch.bool, device=device)

    def _prefix(self, ctx: FusedContext) -> tuple[Tensor, Tensor] | None:
        if not (self.uses_prefix and ctx.prefix is not None):
            return None
        mask = ctx.prefix_mask
        if mask is None:
            mask = torch.ones(ctx.prefix.shape[:2], dtype=torch.bool, device=ctx.prefix.device)
        return ctx.prefix + self.prefix_type, mask.bool()

    # -- decoding interface ---------------------------------------------------------------------
    def forward(self, input_ids: Tensor, ctx: FusedContext) -> tuple[Tensor, dict[str, Tensor]]:
        b, t = input_ids.shape
        x = self._embed_words(input_ids, 0, self.projected_init(ctx))
        valid = torch.ones(b, t, dtype=torch.bool, device=input_ids.device)
        p = 0
        prefix = self._prefix(ctx)
        if prefix is not None:
            p = prefix[0].shape[1]
            x = torch.cat([prefix[0], x], dim=1)
            valid = torch.cat([prefix[1], valid], dim=1)
        past, past_valid = self._empty_past(b, x.dtype, x.device)
        h, _, _, weights = self._run(x, valid, past, past_valid, self._cross_kv(ctx), ctx)
        extras: dict[str, Tensor] = {}
        if weights is not None:
            extras["attention"] = weights[:, p:]
        return h[:, p:], extras

    def init_state(self, ctx: FusedContext) -> State:
        b = ctx.batch_size
        past, valid = self._empty_past(b, ctx.dtype, ctx.device)
        cross = self._cross_kv(ctx)
        prefix = self._prefix(ctx)
        if prefix is not None:
            _, past, valid, _ = self._run(prefix[0], prefix[1], past, valid, cross, ctx)
        state: State = {"kv": past, "valid": valid, "t": 0}
        if cross is not None:
            state["cross_kv"] = cross
        init = self.projected_init(ctx)
        if init is not None:
            state["init"] = init
        return state

    def step(self, last_ids: Tensor, state: State, ctx: FusedContext) -> tuple[Tensor, State]:
        t = int(state["t"])
        x = self._embed_words(last_ids.unsqueeze(1), t, state.get("init"))
        new_valid = torch.ones(last_ids.shape[0], 1, dtype=torch.bool, device=last_ids.device)
        h, past, valid, weights = self._run(
            x, new_valid, state["kv"], state["valid"], state.get("cross_kv"), ctx
        )
        new = {k: v for k, v in state.items() if k != "init"}  # init enters the first position only
        new.update(kv=past, valid=valid, t=t + 1)
        if weights is not None:
            new["attention"] = weights[:, -1]
        return h[:, -1], new
