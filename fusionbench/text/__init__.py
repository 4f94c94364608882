"""Tokenizers: the word vocabulary of the LSTM and Transformer decoders (``words``) and BERT's
WordPiece (``wordpiece``). Both normalise captions the same way and decode to plain words, so every
decoder is scored on equal terms. Imports nothing above it (no model, no torch)."""

from __future__ import annotations

from fusionbench.text.wordpiece import WordPieceTokenizer
from fusionbench.text.words import BOS, EOS, PAD, SPECIALS, UNK, WordVocab, normalize_caption


def tokenizer_from_dict(data: dict) -> WordVocab | WordPieceTokenizer:
    """Rebuild a saved tokenizer (``vocab.json`` or a checkpoint's copy) from its ``type``."""
    kind = data.get("type")
    if kind == "word":
        return WordVocab.from_dict(data)
    if kind == "wordpiece":
        return WordPieceTokenizer.from_dict(data)
    raise ValueError(f"unknown tokenizer type {kind!r} (expected 'word' or 'wordpiece')")


__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SPECIALS",
    "UNK",
    "WordPieceTokenizer",
    "WordVocab",
    "normalize_caption",
    "tokenizer_from_dict",
]
