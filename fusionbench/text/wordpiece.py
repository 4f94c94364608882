"""BERT's WordPiece vocabulary behind the ``WordVocab`` API (the BERT decoder's tokenizer).

Lives with the other tokenizers, below the decoders, so that rebuilding a saved tokenizer
(``tokenizer_from_dict``) never imports a model; ``transformers``' ``BertTokenizer`` does the
splitting and is imported only when a tokenizer is built.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from fusionbench.errors import ConfigError
from fusionbench.text.words import normalize_caption

KEY = "model.decoder.pretrained"
SPECIAL_TOKENS = {"pad": "[PAD]", "bos": "[CLS]", "eos": "[SEP]", "unk": "[UNK]"}


class WordPieceTokenizer:
    """BERT's WordPiece vocabulary behind the ``WordVocab`` API.

    ``encode`` normalises a caption like ``WordVocab`` (lower case, punctuation stripped), splits it
    into word pieces and returns ``[CLS] p1 .. pn [SEP]`` ids (at most ``max_len`` pieces);
    ``decode`` stops at ``[SEP]``, drops special tokens (``[UNK]`` included), merges ``##`` pieces and
    returns normalised plain words, so scores compare with word-level decoders. ``to_dict`` holds
    the whole vocabulary, so a checkpoint rebuilds the tokenizer without the original files.
    """

    def __init__(
        self, vocab: list[str], do_lower_case: bool = True, source_ids: list[int] | None = None
    ) -> None:
        missing = [t for t in SPECIAL_TOKENS.values() if t not in vocab]
        if missing:
            raise ValueError(f"WordPiece vocabulary lacks the special tokens {missing}")
        self.vocab: list[str] = list(vocab)
        # for a vocabulary pruned to the train captions: each token's id in the source model's vocabulary
        self.source_ids: list[int] | None = list(source_ids) if source_ids is not None else None
        self.do_lower_case = bool(do_lower_case)
        self.stoi = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id = self.stoi[SPECIAL_TOKENS["pad"]]
        self.bos_id = self.stoi[SPECIAL_TOKENS["bos"]]
        self.eos_id = self.stoi[SPECIAL_TOKENS["eos"]]
        self.unk_id = self.stoi[SPECIAL_TOKENS["unk"]]
        self._specials = {i for w, i in self.stoi.items() if re.fullmatch(r"\[[^\]\s]+\]", w)}
        self._build()

    def _build(self) -> None:
        from transformers import BertTokenizer

        self._hf = BertTokenizer(
            vocab=dict(self.stoi),
            do_lower_case=self.do_lower_case,
            unk_token=SPECIAL_TOKENS["unk"],
            sep_token=SPECIAL_TOKENS["eos"],
            pad_token=SPECIAL_TOKENS["pad"],
            cls_token=SPECIAL_TOKENS["bos"],
        )

    @classmethod
    def from_pretrained(cls, source: str) -> WordPieceTokenizer:
        """The vocabulary of a model directory (``vocab.txt``) or of a hub model."""
        path = Path(source)
        vocab_file = path / "vocab.txt"
        lower = True
        if path.is_dir():
            cfg_file = path / "tokenizer_config.json"
            if cfg_file.is_file():
                lower = bool(json.loads(cfg_file.read_text(encoding="utf-8")).get("do_lower_case", True))
        if vocab_file.is_file():
            return cls(vocab_file.read_text(encoding="utf-8").splitlines(), do_lower_case=lower)
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{KEY}: cannot load a WordPiece tokenizer from '{source}': {err}") from None
        vocab = [w for w, _ in sorted(hf.get_vocab().items(), key=lambda kv: kv[1])]
        return cls(vocab, do_lower_case=getattr(hf, "do_lower_case", True))

    def __len__(self) -> int:
        return len(self.vocab)

    def tokenize(self, caption: str) -> list[str]:
        text = " ".join(normalize_caption(caption))
        return self._hf.tokenize(text) if text else []

    def encode(self, caption: str, max_len: int | None = None) -> list[int]:
        """``[CLS] p1 .. pn [SEP]`` ids; truncated to ``max_len`` word pieces (``[SEP]`` always kept)."""
        pieces = self.tokenize(caption)
        if max_len is not None:
            pieces = pieces[:max_len]
        return [self.bos_id] + [self.stoi.get(p, self.unk_id) for p in pieces] + [self.eos_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Plain lower-case words up to the first ``[SEP]``; word pieces merged, specials dropped."""
        words: list[str] = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in self._specials or not 0 <= i < len(self.vocab):
                continue
            piece = self.vocab[i]
            if piece.startswith("##") and words:
                words[-1] += piece[2:]
            else:
                words.append(piece.removeprefix("##"))
        text = re.sub(r"\s*'\s*", "'", " ".join(words))  # BERT splits "man's" into man ' s
        return " ".join(normalize_caption(text))

    def pruned(self, captions: Iterable[str]) -> WordPieceTokenizer:
        """The same tokenizer restricted to the special tokens and the pieces ``captions`` use.

        WordPiece is greedy longest-match-first, so every caption of ``captions`` tokenises exactly
        as with the full vocabulary; the output layer shrinks from ~30k rows to a few hundred.
        """
        used = {self.stoi.get(p, self.unk_id) for c in captions for p in self.tokenize(c)}
        specials = {self.stoi[t] for t in (*SPECIAL_TOKENS.values(), "[MASK]") if t in self.stoi}
        keep = [i for i in range(len(self.vocab)) if i in used or i in specials]
        base = self.source_ids
        return WordPieceTokenizer(
            [self.vocab[i] for i in keep],
            self.do_lower_case,
            [base[i] for i in keep] if base is not None else keep,
        )

    def to_dict(self) -> dict:
        return {
            "type": "wordpiece",
            "vocab": self.vocab,
            "do_lower_case": self.do_lower_case,
            "source_ids": self.source_ids,
        }

    @classmethod
    def from_dict(cls, data: dict) -> WordPieceTokenizer:
        if data.get("type") != "wordpiece":
            raise ValueError(f"not a WordPiece tokenizer dict (type={data.get('type')!r})")
        return cls(
            list(data["vocab"]),
            do_lower_case=data.get("do_lower_case", True),
            source_ids=data.get("source_ids"),
        )

    def save(self, path: str | Path) -> None:
        from fusionbench.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> WordPieceTokenizer:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    # pickling (checkpoints, DDP spawn) keeps only the vocabulary
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_hf"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._build()
