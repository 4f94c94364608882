"""Greedy and batched beam search, written once over the decoder step interface.

Any ``CaptioningModel`` decodes through ``start(ctx) -> state`` and
``step_logprobs(last_ids, state, ctx) -> (log-probs [B, V], state)``, so LSTM, Transformer and
BERT decoders share one implementation. Beam search is batched over images x beams (one step
call per time step for the whole batch) and keeps finished beams in the beam set with a frozen
score, so ``beam_size=1`` is exactly greedy. Beams are ranked by their summed log-probability;
the final choice among a image's beams divides by ``length ** length_penalty`` (0 = no
normalisation, as in most captioning code bases). ``no_repeat_ngram=n`` forbids any n-gram to
occur twice in a caption (Paulus et al., 2018), the usual cure for "a red circle a red circle".
``decode`` is the one place that chooses greedy search (``beam_size == 1``) or beam search.
``sample`` draws captions at random for self-critical training (``fusionbench.scst``), over the
same interface and with the log-probabilities kept for the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from fusionbench.decoding.settings import DecodingConfig
from fusionbench.fusion.base import FusedContext


class Steppable(Protocol):
    def start(self, ctx: FusedContext) -> dict: ...
    def step_logprobs(self, last_ids: Tensor, state: dict, ctx: FusedContext) -> tuple[Tensor, dict]: ...
    def reorder(self, state: dict, index: Tensor) -> dict: ...


def _block_ngrams(logp: Tensor, seqs: Tensor, n: int) -> Tensor:
    """Set to -inf every token that would complete an n-gram already present in ``seqs``."""
    t = seqs.shape[1]
    if n <= 0 or t < n:
        return logp
    windows = seqs.unfold(1, n, 1)  # [R, t-n+1, n]
    if n == 1:
        banned_mask = torch.ones(windows.shape[:2], dtype=torch.bool, device=seqs.device)
    else:
        suffix = seqs[:, t - n + 1 :].unsqueeze(1)  # [R, 1, n-1]
        banned_mask = (windows[:, :, :-1] == suffix).all(-1)  # [R, W]
    rows, cols = banned_mask.nonzero(as_tuple=True)
    if rows.numel():
        logp = logp.clone()
        logp[rows, windows[rows, cols, -1]] = float("-inf")
    return logp


@torch.no_grad()
def greedy_search(
    model: Steppable,
    ctx: FusedContext,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_len: int,
    no_repeat_ngram: int = 0,
) -> Tensor:
    """Most probable next word at each step; ``[B, L]`` ids ending in ``eos`` (then ``pad``)."""
    b = ctx.batch_size
    device = ctx.device
    state = model.start(ctx)
    last = torch.full((b,), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    seqs = torch.empty(b, 0, dtype=torch.long, device=device)
    for t in range(max_len + 1):
        logp, state = model.step_logprobs(last, state, ctx)
        logp = _block_ngrams(logp, seqs, no_repeat_ngram)
        if t == max_len:  # the caption must end here
            logp = torch.full_like(logp, float("-inf")).index_fill(
                1, torch.tensor([eos_id], device=device), 0.0
            )
        nxt = logp.argmax(-1)
        nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
        seqs = torch.cat([seqs, nxt.unsqueeze(1)], 1)
        finished |= nxt == eos_id
        if bool(finished.all()):
            break
        last = nxt
    return seqs


@torch.no_grad()
def beam_search(
    model: Steppable,
    ctx: FusedContext,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_len: int,
    beam_size: int = 3,
    length_penalty: float = 0.0,
    no_repeat_ngram: int = 0,
) -> Tensor:
    """Batched beam search; returns the best ``[B, L]`` ids per image."""
    b, k = ctx.batch_size, beam_size
    device = ctx.device
    expand = torch.arange(b, device=device).repeat_interleave(k)
    ctx = ctx.index_select(expand)
    state = model.start(ctx)
    scores = torch.zeros(b, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: keep only the first alive
    last = torch.full((b * k,), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(b * k, dtype=torch.bool, device=device)
    seqs = torch.empty(b * k, 0, dtype=torch.long, device=device)
    lengths = torch.zeros(b * k, device=device)
    for t in range(max_len + 1):
        logp, state = model.step_logprobs(last, state, ctx)  # [B*K, V]
        vocab = logp.shape[-1]
        logp = _block_ngrams(logp, seqs, no_repeat_ngram)
        if t == max_len:
            logp = torch.full_like(logp, float("-inf")).index_fill(
                1, torch.tensor([eos_id], device=device), 0.0
            )
        # a finished beam can only continue with pad at no cost
        frozen = torch.full_like(logp, float("-inf"))
        frozen[:, pad_id] = 0.0
        logp = torch.where(finished.unsqueeze(1), frozen, logp)
        cand = (scores.view(-1, 1) + logp).view(b, k * vocab)
        top_scores, top_idx = cand.topk(k, dim=1)  # ties resolved like argmax: lowest index first
        beam_idx = top_idx // vocab
        tokens = top_idx % vocab
        src = (torch.arange(b, device=device).unsqueeze(1) * k + beam_idx).view(-1)
        tokens = tokens.view(-1)
        seqs = torch.cat([seqs.index_select(0, src), tokens.unsqueeze(1)], 1)
        prev_finished = finished.index_select(0, src)
        lengths = lengths.index_select(0, src) + (~prev_finished).float()
        finished = prev_finished | (tokens == eos_id)
        scores = top_scores
        state = model.reorder(state, src)
        if bool(finished.all()):
            break
        last = tokens
    norm = scores.view(-1) / lengths.clamp(min=1).pow(length_penalty) if length_penalty else scores.view(-1)
    best = norm.view(b, k).argmax(1)
    return seqs.view(b, k, -1)[torch.arange(b, device=device), best]


def decode(
    model: Steppable, ctx: FusedContext, decoding: DecodingConfig, *, bos_id: int, eos_id: int, pad_id: int
) -> Tensor:
    """Caption ids ``[B, L]`` for ``ctx`` with ``decoding``: greedy search when ``beam_size == 1``
    (what beam search gives then, faster), else beam search. The one place that chooses."""
    common = dict(
        bos_id=bos_id,
        eos_id=eos_id,
        pad_id=pad_id,
        max_len=decoding.max_len,
        no_repeat_ngram=decoding.no_repeat_ngram,
    )
    if decoding.greedy:
        return greedy_search(model, ctx, **common)
    return beam_search(
        model, ctx, beam_size=decoding.beam_size, length_penalty=decoding.length_penalty, **common
    )


@dataclass
class Samples:
    """What ``sample`` drew: ``n`` captions per image, image-major (rows ``i*n .. i*n+n-1`` are image i).

    Attributes:
        ids: ``[B*n, L]`` sampled ids, ``pad`` after each caption's ``eos``.
        logprobs: ``[B*n, L]`` the model's log-probability of each sampled id (with grad).
        mask: ``[B*n, L]`` float, 1 for the words and the ``eos`` a caption consists of.
        entropy: ``[B*n, L]`` the entropy of the model's next-word distribution at each step.
        ended: ``[B*n]`` bool, the caption chose ``eos`` (False: cut at ``max_len`` words).
    """

    ids: Tensor
    logprobs: Tensor
    mask: Tensor
    entropy: Tensor
    ended: Tensor


def sample(
    model: Steppable,
    ctx: FusedContext,
    *,
    n: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_len: int,
    temperature: float = 1.0,
) -> Samples:
    """``n`` multinomial samples per image in one batched pass (Rennie et al., 2017).

    The context is expanded ``n`` times (as beam search expands it into beams), so every fusion,
    decoder and decoder cache samples the way it decodes. Each step draws from the model's
    distribution sharpened or flattened by ``temperature``; the log-probabilities kept are the
    model's own (``temperature`` changes which captions are explored, not the policy whose gradient
    is taken, as in ImageCaptioning.pytorch). A caption that has not chosen ``eos`` after ``max_len``
    words is cut there (``ended`` False), so the reward can tell it from a finished one. Draws come
    from torch's global RNG: a seeded run samples the same captions, also after a resume.
    """
    b = ctx.batch_size
    device = ctx.device
    ctx = ctx.index_select(torch.arange(b, device=device).repeat_interleave(n))
    rows = b * n
    state = model.start(ctx)
    last = torch.full((rows,), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    ids, logps, masks, entropies = [], [], [], []
    for _ in range(max_len):
        logp, state = model.step_logprobs(last, state, ctx)  # [R, V]
        with torch.no_grad():
            scaled = logp if temperature == 1.0 else torch.log_softmax(logp / temperature, -1)
            nxt = torch.multinomial(scaled.exp(), 1).squeeze(1)
        nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
        ids.append(nxt)
        logps.append(logp.gather(1, nxt.unsqueeze(1)).squeeze(1))
        masks.append((~finished).float())
        entropies.append(-(logp.exp() * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(-1).detach())
        finished = finished | (nxt == eos_id)
        if bool(finished.all()):
            break
        last = nxt
    return Samples(
        ids=torch.stack(ids, 1),
        logprobs=torch.stack(logps, 1),
        mask=torch.stack(masks, 1),
        entropy=torch.stack(entropies, 1),
        ended=finished,
    )
