"""Word-level text pipeline for the LSTM and Transformer decoders.

Captions are normalised as in COCO practice (Karpathy's preprocessing): lower-cased, punctuation
stripped, split on whitespace. The vocabulary is built from the *train* captions only, keeps words
seen at least ``min_count`` times, and is saved with every run so a checkpoint decodes the same way
on another machine. Scores are always computed on detokenised plain text, so decoders with other
tokenizers (BERT's WordPiece) are scored on equal terms.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)

_PUNCT = re.compile(r"[^\w\s']|_")


def normalize_caption(text: str) -> list[str]:
    """Lower-case, strip punctuation (keeping in-word apostrophes), split on whitespace."""
    text = _PUNCT.sub(" ", text.lower())
    return [w.strip("'") for w in text.split() if w.strip("'")]


class WordVocab:
    """A word <-> id mapping with ``<pad>=0, <bos>=1, <eos>=2, <unk>=3``."""

    def __init__(self, words: Sequence[str]) -> None:
        self.itos: list[str] = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> WordVocab:
        """Vocabulary of the words seen at least ``min_count`` times, most frequent first."""
        counts = Counter(w for c in captions for w in normalize_caption(c))
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(words)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, caption: str, max_len: int | None = None) -> list[int]:
        """``<bos> w1 .. wn <eos>`` ids; truncated to ``max_len`` words (``<eos>`` always kept)."""
        words = normalize_caption(caption)
        if max_len is not None:
            words = words[:max_len]
        return [self.bos_id] + [self.stoi.get(w, self.unk_id) for w in words] + [self.eos_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Plain text up to the first ``<eos>``; specials dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return " ".join(out)

    def to_dict(self) -> dict:
        return {"type": "word", "itos": self.itos}

    @classmethod
    def from_dict(cls, data: dict) -> WordVocab:
        itos = data["itos"]
        if tuple(itos[:4]) != SPECIALS:
            raise ValueError("vocabulary file does not start with <pad> <bos> <eos> <unk>")
        return cls(itos[4:])

    def save(self, path: str | Path) -> None:
        from fusionbench.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> WordVocab:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
