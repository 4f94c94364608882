"""Attention grounding: does the decoder look at the object it names while naming it?

For every generated word that names an object's shape ("circle" in "a red circle left of ..."),
the decoder's attention over the visual tokens at that step is compared with the box of the
object the phrase names (parsed with ``fusionbench.diagnostics.shapes_text``; a phrase that
several objects fit is grounded on all of their boxes; a hallucinated one is skipped):

* ``mass``: the attention mass on the tokens inside the box (grid cells or patches overlapping
  it; the region whose box it is, IoU >= ``REGION_IOU``), as in attention-correctness studies
  (Liu et al. 2017, "Attention Correctness in Neural Image Captioning");
* ``pointing``: whether the most-attended token lies inside the box (the pointing game, Zhang et
  al. 2016, "Top-down Neural Attention by Excitation Backprop");
* ``chance_mass``: the mass uniform attention would put there, the level that means "not looking".

Transformer and BERT decoders attend in every layer: each layer's weights (averaged over heads)
are read and reported per layer; the headline numbers average the layers. An LSTM (Show, Attend
and Tell) has one attention. Only attention fusion has attention over the visual tokens; every
other fusion reports ``n/a``. Captions are the test predictions, teacher-forced once more to read
the weights (the decoders' ``forward`` and ``step`` agree, ``fusionbench.inference.attention``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fusionbench.diagnostics.shapes_text import SHAPE_OF, Parsed, Scene, parse

#: A region token "is" an object's when their boxes overlap at least this much (IoU).
REGION_IOU = 0.5
NOT_ATTENTION = "n/a: only attention fusion attends over the visual tokens"


def grid_boxes(n: int) -> tuple[np.ndarray, int] | None:
    """``([N', 4] cell boxes in [0, 1], leading tokens to skip)`` of a square grid of ``n`` tokens
    (a leading CLS-like token skipped); None when ``n`` tokens are no square grid."""
    for skip in (0, 1):
        side = math.isqrt(n - skip) if n - skip > 0 else 0
        if side * side == n - skip and side > 0:
            r, c = np.divmod(np.arange(side * side), side)
            boxes = np.stack([c / side, r / side, (c + 1) / side, (r + 1) / side], axis=1)
            return boxes.astype(np.float64), skip
    return None


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` ``[N, 4]`` with one box ``b`` ``[4]``."""
    w = np.clip(np.minimum(a[:, 2], b[2]) - np.maximum(a[:, 0], b[0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[3]) - np.maximum(a[:, 1], b[1]), 0, None)
    inter = w * h
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def inside(token_boxes: np.ndarray, box: np.ndarray, regions: bool) -> np.ndarray:
    """Which tokens lie in ``box`` (all in [0, 1] image coordinates): overlapping grid cells, or
    regions with IoU >= ``REGION_IOU``."""
    if regions:
        return _iou(token_boxes, box) >= REGION_IOU
    return (
        (token_boxes[:, 0] < box[2])
        & (token_boxes[:, 2] > box[0])
        & (token_boxes[:, 1] < box[3])
        & (token_boxes[:, 3] > box[1])
    )


def named_objects(parsed: Parsed, scene: Scene) -> dict[int, list[int]]:
    """``{word index of a shape word: objects its phrase names}`` (hallucinated phrases left out)."""
    out = {}
    for p in parsed.phrases:
        if p.shape is None:
            continue
        hits = scene.matches(p)
        if hits:
            out[p.end - 1] = hits
    return out


def ground_caption(
    parsed: Parsed,
    scene: Scene,
    attention: np.ndarray,
    word_steps: Sequence[int],
    token_boxes: np.ndarray,
    valid: np.ndarray,
    regions: bool,
) -> list[tuple[list[float], list[bool], float]]:
    """Per shape word: (mass per layer, pointing per layer, chance mass).

    ``attention`` ``[L, T, N]`` per layer and decoding step; ``word_steps[w]`` the step that wrote
    word ``w`` (-1 when unknown); ``token_boxes`` ``[N, 4]`` in [0, 1]; ``valid`` ``[N]`` bool.
    """
    out = []
    size = float(scene.image_size)
    for w, objects in named_objects(parsed, scene).items():
        t = word_steps[w] if w < len(word_steps) else -1
        if t < 0 or t >= attention.shape[1]:
            continue
        hit = np.zeros(len(token_boxes), dtype=bool)
        for k in objects:
            hit |= inside(token_boxes, np.asarray(scene.objects[k].box, dtype=np.float64) / size, regions)
        hit &= valid
        if not valid.any():
            continue
        masses, points = [], []
        for layer in attention:
            a = np.where(valid, layer[t], 0.0)
            masses.append(float(a[hit].sum()))
            points.append(bool(hit[int(np.argmax(a))]))
        out.append((masses, points, float(hit.sum()) / float(valid.sum())))
    return out


def grounding_scores(found: Sequence[tuple[list[float], list[bool], float]]) -> dict[str, Any]:
    """Means over every grounded word: headline (averaged over layers) and per layer."""
    if not found:
        return {"words": 0, "mass": None, "pointing": None, "chance_mass": None, "per_layer": []}
    layers = len(found[0][0])
    per_layer = [
        {
            "layer": i,
            "mass": float(np.mean([m[i] for m, _, _ in found])),
            "pointing": float(np.mean([p[i] for _, p, _ in found])),
        }
        for i in range(layers)
    ]
    return {
        "words": len(found),
        "mass": float(np.mean([x["mass"] for x in per_layer])),
        "pointing": float(np.mean([x["pointing"] for x in per_layer])),
        "chance_mass": float(np.mean([c for _, _, c in found])),
        "per_layer": per_layer,
    }


# -- reading the attention of a model ---------------------------------------------------------------
def layer_attention(decoder, input_ids: torch.Tensor, ctx) -> list[torch.Tensor]:
    """Each layer's attention over the memory ``[B, T, N]`` (heads averaged) of a teacher-forced pass.

    Transformer: every layer's cross-attention is asked for its weights (a forward pre-hook sets
    ``need_weights``); BERT (eager attention): ``cross_attentions`` of every layer; otherwise (LSTM)
    the decoder's own ``extras["attention"]``.
    """
    captured: list[torch.Tensor] = []
    handles = []
    layers = getattr(decoder, "layers", None)
    if layers is not None and all(getattr(layer, "cross_attn", None) is not None for layer in layers):
        for layer in layers:
            handles.append(layer.cross_attn.register_forward_pre_hook(lambda m, args: (*args[:4], True)))
            handles.append(
                layer.cross_attn.register_forward_hook(lambda m, args, out: captured.append(out[1]))
            )
    elif hasattr(decoder, "bert"):

        def keep(module, args, out) -> None:
            for w in getattr(out, "cross_attentions", None) or ():
                if w is not None:
                    captured.append(w.mean(1))

        handles.append(decoder.bert.bert.register_forward_hook(keep))
    try:
        _, extras = decoder(input_ids, ctx)
    finally:
        for h in handles:
            h.remove()
    t = input_ids.shape[1]
    if captured:
        return [w[:, -t:] for w in captured]
    att = extras.get("attention")
    return [] if att is None else [att]


def word_steps(tokenizer, ids: Sequence[int], words: Sequence[str]) -> list[int]:
    """The decoding step that wrote each word of ``words`` (WordPiece pieces merged; -1 where the
    tokens do not spell the word)."""
    vocab = getattr(tokenizer, "vocab", None)
    itos = getattr(tokenizer, "itos", None)
    pieces = []
    for t in ids:
        if isinstance(vocab, list) and 0 <= t < len(vocab):
            pieces.append(vocab[t])
        elif isinstance(itos, list) and 0 <= t < len(itos):
            pieces.append(itos[t])
        else:
            pieces.append("")
    spelled: list[tuple[str, int]] = []
    for step, piece in enumerate(pieces):
        if piece.startswith("##") and spelled:
            spelled[-1] = (spelled[-1][0] + piece[2:], spelled[-1][1])
        else:
            spelled.append((piece, step))
    out = []
    for w, word in enumerate(words):
        out.append(spelled[w][1] if w < len(spelled) and spelled[w][0] == word else -1)
    return out


@torch.no_grad()
def model_grounding(
    model,
    datamodule,
    split,
    predictions: Mapping[int, str],
    scenes: Mapping[int, Scene],
    device,
    batch_size: int,
) -> dict[str, Any]:
    """Grounding of ``predictions`` on ``split`` for a model with attention fusion."""
    from fusionbench.data.module import CaptionImages, batch_inputs

    if not getattr(model.fusion, "uses_memory", False):
        return {"unavailable": NOT_ATTENTION}
    tok = model.tokenizer
    images = CaptionImages(split, datamodule.features)
    found: list[tuple[list[float], list[bool], float]] = []
    layout_missing = False
    for start in range(0, len(split), batch_size):
        rows = list(range(start, min(len(split), start + batch_size)))
        batch = datamodule.collate([images[k] for k in rows])
        inputs = batch_inputs(batch).to(device)
        boxes = None if batch["boxes"] is None else [b.to(device) for b in batch["boxes"]]
        captions = [predictions[int(split.image_ids[k])] for k in rows]
        parsed = [parse(c) for c in captions]
        if not any(SHAPE_OF.keys() & set(p.words) for p in parsed):
            continue
        encoded = [tok.encode(c) for c in captions]
        length = max(len(e) for e in encoded) - 1
        ids = torch.full((len(rows), length), tok.pad_id, dtype=torch.long)
        for r, e in enumerate(encoded):
            ids[r, : len(e) - 1] = torch.tensor(e[:-1])
        vis = model.encode(inputs, boxes)
        atts = layer_attention(model.decoder, ids.to(device), model.fusion.prepare(vis))
        if not atts:
            return {"unavailable": NOT_ATTENTION}
        att = torch.stack([a.float() for a in atts], 1).cpu().numpy()  # [B, L, T, N]
        valid = vis.mask.cpu().numpy()
        for r, k in enumerate(rows):
            n = att.shape[-1]
            if vis.boxes is not None:
                frame = _frame(inputs, r)
                token_boxes = vis.boxes[r].float().cpu().numpy() / np.array([frame[1], frame[0]] * 2)
                regions, skip = True, 0
            else:
                layout = grid_boxes(n)
                if layout is None:
                    layout_missing = True
                    continue
                token_boxes, skip = layout
                regions = False
            steps = word_steps(tok, encoded[r][1:-1], parsed[r].words)
            found += ground_caption(
                parsed[r],
                scenes[int(split.image_ids[k])],
                att[r][:, :, skip:],
                steps,
                token_boxes,
                valid[r][skip:].astype(bool),
                regions,
            )
    if layout_missing and not found:
        return {"unavailable": "n/a: the visual tokens have no known place in the image"}
    return grounding_scores(found)


def _frame(inputs, row: int) -> tuple[float, float]:
    """(height, width) in pixels of the frame the region boxes of batch row ``row`` refer to."""
    size = getattr(inputs, "image_size", None)
    if size is not None:
        return float(size[row][0]), float(size[row][1])
    return float(inputs.shape[-2]), float(inputs.shape[-1])
