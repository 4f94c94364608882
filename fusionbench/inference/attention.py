"""Where the decoder looked: per-token attention over the visual tokens, and heatmap overlays.

With attention fusion, ``Captioner.caption_with_attention`` returns for every generated token the
decoder's attention weights over the visual tokens (Show, Attend and Tell, Xu et al. 2015): the
teacher-forced weights of the generated caption, which equal those of the decoding steps (the
decoders' ``forward`` and ``step`` agree). Grid tokens (CNN cells, ViT patches) are placed on
their grid, region tokens paint their boxes; ``AttentionCaption.save_overlays`` writes heatmap
overlays (Pillow only) as ``<stem>_<t>_<word>.png``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: Overlays written per image by default: the first words of the caption.
ATTENTION_WORDS = 5


@dataclass
class AttentionCaption:
    """A caption with, for each generated token, where the decoder looked.

    Attributes:
        caption: the plain-text caption.
        tokens: the generated tokens up to the end token (words, or WordPiece pieces for BERT).
        weights: ``[T, N]`` attention over the N visual tokens per token; None without attention.
        maps: ``[T, S, S]`` in [0, 1]: ``weights`` placed on the model's input image (grid cells,
            patches or region boxes); None when there is no attention or no known token layout.
        image: uint8 ``[H, W, 3]``: the image overlays are drawn on (the original for ``stretch``).
        name: the image's path or description.
    """

    caption: str
    tokens: list[str]
    weights: np.ndarray | None
    maps: np.ndarray | None
    image: np.ndarray
    name: str

    def overlay(self, t: int, min_side: int = 224) -> Image.Image:
        """Token ``t``'s attention shaded over ``image`` (bright = attended), at least ``min_side`` px."""
        if self.maps is None:
            raise ValueError(f"no attention map for {self.name}: the model has no attention fusion")
        from fusionbench.tracking.media import shade

        height, width = self.image.shape[:2]
        amap = Image.fromarray(self.maps[t].astype(np.float32), mode="F").resize(
            (width, height), Image.BILINEAR
        )
        picture = Image.fromarray(shade(self.image, np.clip(np.asarray(amap), 0.0, 1.0)))
        short = min(width, height)
        if short < min_side:
            factor = min_side / short
            picture = picture.resize((round(width * factor), round(height * factor)), Image.NEAREST)
        return picture

    def save_overlays(self, directory: str | Path, stem: str, max_words: int = ATTENTION_WORDS) -> list[Path]:
        """Write ``<directory>/<stem>_<t>_<word>.png`` for the first ``max_words`` tokens."""
        if self.maps is None:
            return []
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for t, token in enumerate(self.tokens[:max_words]):
            word = re.sub(r"[^A-Za-z0-9_-]+", "_", token).strip("_") or "token"
            path = directory / f"{stem}_{t:02d}_{word}.png"
            self.overlay(t).save(path)
            written.append(path)
        return written


def token_text(tokenizer, token: int) -> str:
    """How token id ``token`` is shown next to its overlay: the WordPiece piece, or the word."""
    vocab = getattr(tokenizer, "vocab", None)
    if isinstance(vocab, list) and 0 <= token < len(vocab):  # WordPiece: show the piece itself
        return vocab[token].removeprefix("##")
    itos = getattr(tokenizer, "itos", None)
    if isinstance(itos, list) and 0 <= token < len(itos):
        return itos[token]
    return tokenizer.decode([token]) or "?"
