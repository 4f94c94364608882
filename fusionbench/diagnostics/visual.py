"""Visual reliance: how much worse the captions get when the image is not the right one.

A captioner that reads the image writes worse captions for the wrong image; one that ignores it
writes the same captions and scores the same. So the split is decoded again with its images
permuted among themselves by a fixed, seeded derangement (no image keeps its own, Sattolo's
algorithm), with the run's test-time decoding, and scored against the *true* images' references:
``gap = CIDEr-D(true) - CIDEr-D(permuted)`` is near 0 for a model that ignores the image (this
is the "image-shuffling" control of image-grounding studies, e.g. Shekhar et al. 2019; Hessel et
al. 2021 use the same argument for image-text models). The *blind* reference point decodes with
the visual input replaced by the mean visual features of (the first ``BLIND_IMAGES`` of) the
train split: the caption a model writes when it sees an average image, the same for every image,
so it is decoded once and scored for all. The true images' captions are the test predictions
already decoded (no extra decode), so ``CIDEr_true`` equals the reported CIDEr-D.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fusionbench.data.module import CaptionImages, batch_inputs
from fusionbench.decoding.search import decode
from fusionbench.encoders.base import VisualFeatures

#: Train images whose mean visual features make the blind input.
BLIND_IMAGES = 256
#: Seed of the derangement; fixed so every run permutes the same way.
PERMUTATION_SEED = 0


def derangement(n: int, seed: int = PERMUTATION_SEED) -> list[int]:
    """A permutation of ``range(n)`` without fixed points (Sattolo's algorithm: one n-cycle)."""
    order = list(range(n))
    rng = random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)  # j < i: never leaves an element in place
        order[i], order[j] = order[j], order[i]
    return order


def _batches(datamodule, split, order: Sequence[int], batch_size: int, device):
    images = CaptionImages(split, datamodule.features)
    for start in range(0, len(order), batch_size):
        chunk = range(start, min(len(order), start + batch_size))
        batch = datamodule.collate([images[order[k]] for k in chunk])
        boxes = batch["boxes"]
        yield (
            list(chunk),
            batch_inputs(batch).to(device),
            None if boxes is None else [b.to(device) for b in boxes],
        )


@torch.no_grad()
def permuted_captions(model, datamodule, split, decoding, device, batch_size: int) -> dict[int, str]:
    """Captions of ``split``'s images decoded from other images of the split (``derangement``)."""
    order = derangement(len(split))
    out: dict[int, str] = {}
    for chunk, inputs, boxes in _batches(datamodule, split, order, batch_size, device):
        for k, text in zip(chunk, model.caption(inputs, boxes, decoding)):
            out[int(split.image_ids[k])] = text
    return out


@torch.no_grad()
def mean_features(
    model, datamodule, split, device, batch_size: int, limit: int = BLIND_IMAGES
) -> VisualFeatures:
    """The mean projected visual features of the first ``limit`` images of ``split``, one row.

    Tokens are averaged position by position when every image has the same tokens (grids,
    patches), else (regions, which vary in number) into one token.
    """
    order = list(range(min(limit, len(split))))
    tokens: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    pooled: list[torch.Tensor] = []
    for _, inputs, boxes in _batches(datamodule, split, order, batch_size, device):
        vis = model.encode(inputs, boxes)
        tokens.append(vis.tokens.float())
        masks.append(vis.mask)
        pooled.append(vis.pooled.float())
    dtype = tokens[0].dtype
    mean_pooled = torch.cat(pooled).mean(0, keepdim=True)
    if len({t.shape[1] for t in tokens}) == 1 and all(bool(m.all()) for m in masks):
        mean_tokens = torch.cat(tokens).mean(0, keepdim=True)
    else:
        total = sum((t * m.unsqueeze(-1)).sum((0, 1)) for t, m in zip(tokens, masks))
        count = sum(int(m.sum()) for m in masks)
        mean_tokens = (total / max(1, count)).view(1, 1, -1)
    mask = torch.ones(mean_tokens.shape[:2], dtype=torch.bool, device=mean_tokens.device)
    return VisualFeatures(tokens=mean_tokens.to(dtype), mask=mask, pooled=mean_pooled.to(dtype), boxes=None)


@torch.no_grad()
def blind_caption(model, vis: VisualFeatures, decoding) -> str:
    """The caption decoded from ``vis`` (one row): the same for every image of a split."""
    tok = model.tokenizer
    ids = decode(
        model, model.fusion.prepare(vis), decoding, bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id
    )
    return tok.decode(ids[0].tolist())


def cider_d(references: Mapping[int, list[str]], caption_sets: Sequence[Mapping[int, str]]) -> list[float]:
    """CIDEr-D of each caption set against ``references`` (coco-caption's, one PTB call for all)."""
    return cider_d_many([(references, s) for s in caption_sets])


def cider_d_many(jobs: Sequence[tuple[Mapping[int, list[str]], Mapping[int, str]]]) -> list[float]:
    """CIDEr-D of each (references, captions) pair, the captions of all PTB-tokenised in one JVM
    call (the references are prepared once per set and cached, ``fusionbench.metrics.ptb``)."""
    from fusionbench.metrics.fast import cider
    from fusionbench.metrics.ptb import prepare_references, tokenize_lines

    ids = [sorted(int(i) for i in refs) for refs, _ in jobs]
    flat = tokenize_lines([captions[i] for (_, captions), keys in zip(jobs, ids) for i in keys])
    out, start = [], 0
    for (refs, _), keys in zip(jobs, ids):
        score, _ = cider(prepare_references(refs), keys, flat[start : start + len(keys)])
        out.append(float(score))
        start += len(keys)
    return out


def reliance(cider_true: float, cider_permuted: float, cider_blind: float | None) -> dict[str, Any]:
    """The visual-reliance block of ``metrics.json`` (raw CIDEr-D scale)."""
    return {
        "CIDEr_true": cider_true,
        "CIDEr_permuted": cider_permuted,
        "CIDEr_blind": cider_blind,
        "gap": cider_true - cider_permuted,
        "blind_gap": None if cider_blind is None else cider_true - cider_blind,
        "permutation": f"derangement (Sattolo), seed {PERMUTATION_SEED}",
    }
