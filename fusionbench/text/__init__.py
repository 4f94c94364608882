"""Tokenizers: the word vocabulary of the LSTM and Transformer decoders (``words``) and BERT's
WordPiece (``wordpiece``). Both normalise captions the same way and decode to plain words, so every
decoder is scored on equal terms. Imports nothing above it (no model, no torch)."""

from fusionbench.text.words import (
    BOS,
    EOS,
    PAD,
    SPECIALS,
    UNK,
    WordVocab,
    normalize_caption,
    tokenizer_from_dict,
)

__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "WordVocab", "normalize_caption", "tokenizer_from_dict"]
