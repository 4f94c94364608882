"""Pictures for W&B: a fixed sample of test images, and attention heatmaps over an image.

Pure numpy/PIL/torch; the caller turns the arrays into ``wandb.Image``. The sample is the same
for every run of a dataset split (evenly spaced over the split, by position), so the
``predictions`` tables of different runs show the same images and can be compared row by row.

Attention heatmaps follow Show, Attend and Tell (Xu et al., 2015, Fig. 2-3): the caption is decoded
greedily and, for each of the first words, the attention weights over the visual tokens at that
step are drawn over the image (brighter = more attention). Grid tokens (CNN cells, ViT patches)
are reshaped to their grid; region tokens paint their boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from fusionbench.decoding import DecodingConfig

MIN_SIDE = 128  # small images (shapes is 64x64) are enlarged so W&B's panels show them legibly


def sample_indices(n_items: int, n: int) -> list[int]:
    """``n`` positions evenly spread over ``range(n_items)`` (all of them when ``n >= n_items``)."""
    if n <= 0 or n_items <= 0:
        return []
    if n >= n_items:
        return list(range(n_items))
    return sorted({int(round(x)) for x in np.linspace(0, n_items - 1, n)})


def enlarge(image: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor until the short side is ``min_side``."""
    factor = max(1, math.ceil(min_side / max(1, min(image.shape[:2]))))
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


@dataclass
class WordAttention:
    """One decoded word and where the model looked when it produced it."""

    position: int
    word: str
    weights: np.ndarray  # [N] attention over the visual tokens
    heatmap: np.ndarray  # [H, W, 3] uint8: the image shaded by the attention


@dataclass
class AttentionCaption:
    caption: str
    words: list[WordAttention]
    strip: np.ndarray  # the image, then one heatmap per word, side by side


def _grid_shape(n_tokens: int, height: int, width: int) -> tuple[int, int] | None:
    """``(h, w)`` with ``h * w == n_tokens`` closest to the image's aspect ratio, if any is plausible."""
    best = None
    for h in range(1, n_tokens + 1):
        if n_tokens % h:
            continue
        w = n_tokens // h
        err = abs(math.log((h / w) / (height / width)))
        if best is None or err < best[0]:
            best = (err, h, w)
    if best is None or best[0] > math.log(1.5):
        return None
    return best[1], best[2]


def attention_map(
    weights: np.ndarray, height: int, width: int, boxes: np.ndarray | None = None
) -> np.ndarray | None:
    """Attention over tokens as an ``[height, width]`` map in ``[0, 1]``; None when the tokens have
    no known place in the image (then no heatmap is drawn)."""
    weights = np.asarray(weights, dtype=np.float32)
    if boxes is not None and len(boxes) == len(weights):
        out = np.zeros((height, width), dtype=np.float32)
        for w, (x1, y1, x2, y2) in zip(weights, np.asarray(boxes, dtype=np.float32)):
            xa, xb = int(max(0, math.floor(x1))), int(min(width, math.ceil(x2)))
            ya, yb = int(max(0, math.floor(y1))), int(min(height, math.ceil(y2)))
            if xb > xa and yb > ya:
                out[ya:yb, xa:xb] += w
    else:
        shape = _grid_shape(len(weights), height, width)
        if shape is None and len(weights) > 1:  # a leading [CLS]-like token
            shape = _grid_shape(len(weights) - 1, height, width)
            weights = weights[1:] if shape is not None else weights
        if shape is None:
            return None
        grid = Image.fromarray(weights.reshape(shape), mode="F")
        out = np.asarray(grid.resize((width, height), Image.BILINEAR), dtype=np.float32)
    top = float(out.max())
    return out / top if top > 0 else out


def shade(image: np.ndarray, amap: np.ndarray) -> np.ndarray:
    """Darken where attention is low and tint where it is high (image uint8 ``[H, W, 3]``)."""
    a = amap[..., None]
    base = image.astype(np.float32) * (0.25 + 0.75 * a)
    tint = np.array([255.0, 210.0, 40.0], dtype=np.float32)
    return np.clip(base * (1 - 0.35 * a) + tint * 0.35 * a, 0, 255).astype(np.uint8)


@torch.no_grad()
def attention_captions(
    model, images: np.ndarray, boxes: list[np.ndarray] | None, *, max_len: int, n_words: int
) -> list[AttentionCaption] | None:
    """Greedy captions of ``images`` (uint8 ``[B, H, W, 3]``) with a heatmap for each of the first
    ``n_words`` words; None when the decoder reports no attention (not attention fusion)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0).to(device)
        box_t = [torch.as_tensor(b, dtype=torch.float32, device=device) for b in boxes] if boxes else None
        greedy = DecodingConfig(beam_size=1, max_len=max_len)
        ids_t, att, vis = model.generate_with_attention(x, box_t, greedy)
        if att is None:
            return None
        tok = model.tokenizer
    finally:
        model.train(was_training)
    ids = ids_t.cpu().numpy()  # [B, T]
    atts = att.float().cpu().numpy()  # [B, T, N]
    token_boxes = vis.boxes.cpu().numpy() if getattr(vis, "boxes", None) is not None else None
    out = []
    height, width = images.shape[1:3]
    for b in range(len(images)):
        words: list[WordAttention] = []
        for t, token in enumerate(ids[b]):
            if int(token) == tok.eos_id or len(words) >= n_words:
                break
            word = tok.decode([int(token)])
            if not word:
                continue
            bx = token_boxes[b] if token_boxes is not None else None  # region tokens paint their boxes
            amap = attention_map(atts[b, t], height, width, bx)
            if amap is None:
                return None
            heat = enlarge(shade(images[b], amap))
            words.append(WordAttention(position=t, word=word, weights=atts[b, t], heatmap=heat))
        caption = tok.decode([int(i) for i in ids[b]])
        panels = [enlarge(images[b])] + [w.heatmap for w in words]
        gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
        strip = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
        out.append(AttentionCaption(caption=caption, words=words, strip=strip))
    return out
