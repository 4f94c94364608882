"""The SCST reward: CIDEr-D of each sampled caption against its image's train references.

Scored as coco-caption scores a caption, with two choices the references make (Rennie et al.,
2017; ImageCaptioning.pytorch's ``get_self_critical_reward`` and ``prepro_ngrams``):

* the document frequencies (and the corpus size in the idf) are those of the **train** references
  of every train image, not of the images in a batch, so a batch's reward does not depend on which
  other images it holds;
* the end token counts as a word: ``<eos>`` is appended to every reference and to every sampled
  caption that chose to end, so "a red circle to the <eos>" shares no 2-gram with the references'
  endings and is penalised, and a caption cut at ``max_len`` gets no end word at all.

The train references are PTB-tokenised once (``fusionbench.metrics.ptb.prepare_references``, cached
on disk), their CIDEr-D vectors and document frequencies built once per run (``fast._CiderState``,
the arithmetic of pycocoevalcap's ``CiderScorer`` operation for operation). A sampled caption is
PTB-tokenised word by word: its words come from the decoder's vocabulary, each is tokenised once in
one JVM call and cached (``PtbWords``), so a training step starts no JVM. ``cider+bleu`` adds
``bleu_weight`` x BLEU-4 (pycocoevalcap's per-sentence BLEU, "closest" reference length).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np

from fusionbench.errors import DataError
from fusionbench.metrics.fast import _CiderState
from fusionbench.metrics.ptb import PreparedReferences, prepare_references, tokenize_lines

#: The end token as a word; PTB tokenisation never produces it (it splits ``<`` and ``>`` off).
END_WORD = "<eos>"


class PtbWords:
    """PTB tokens of single words, each tokenised once: a caption's tokens are its words' tokens.

    Words are what a decoder's vocabulary emits (lower-cased, no punctuation but in-word
    apostrophes), which the PTB tokenizer splits only inside the word ("man's" -> "man 's"), never
    across words. Unseen words of a batch are tokenised together in one JVM call.
    """

    def __init__(self, words: Iterable[str] = ()) -> None:
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self.add(words)

    def add(self, words: Iterable[str]) -> None:
        with self._lock:
            new = sorted({w for w in words if w and w not in self._tokens})
            for word, tokens in zip(new, tokenize_lines(new)):
                self._tokens[word] = tokens

    def tokenize(self, captions: Sequence[str]) -> list[str]:
        """Each caption as coco-caption's tokenizer writes it (tokens joined by single spaces)."""
        split = [c.split() for c in captions]
        self.add(w for words in split for w in words)
        return [" ".join(t for t in (self._tokens[w] for w in words) if t) for words in split]


class CiderReward:
    """CIDEr-D (+ optional BLEU-4) rewards of captions of train images (see the module docstring)."""

    def __init__(
        self, references: PreparedReferences, *, bleu_weight: float = 0.0, words: Iterable[str] = ()
    ):
        from pycocoevalcap.bleu.bleu_scorer import cook_refs
        from pycocoevalcap.cider.cider_scorer import precook

        self.references = references
        self.bleu_weight = float(bleu_weight)
        self.tokenized = {i: [f"{r} {END_WORD}" for r in refs] for i, refs in references.tokenized.items()}
        self.cider = _CiderState({i: [precook(r) for r in refs] for i, refs in self.tokenized.items()})
        self._cooked = {i: cook_refs(refs) for i, refs in self.tokenized.items()} if self.bleu_weight else {}
        self.words = PtbWords(words)

    @classmethod
    def for_train(
        cls, train_references: dict[int, list[str]], *, bleu_weight: float = 0.0, words: Iterable[str] = ()
    ) -> CiderReward:
        """The reward of a run's train split; raises ``DataError`` when it has no references."""
        empty = [i for i, refs in train_references.items() if not refs]
        if not train_references or empty:
            raise DataError(
                "scst.enabled needs reference captions for every train image (the reward scores samples "
                f"against them), but the train split has {len(train_references)} images"
                + (f", {len(empty)} without captions (first: {empty[0]})" if empty else "")
                + ". Use a dataset with train captions, or set scst.enabled=false."
            )
        prepared = prepare_references(train_references)
        key = f"scst_reward|{bleu_weight}"
        with prepared.lock:  # one reward per reference set and process: a grid's cells share it
            reward = prepared.scorer_cache.get(key)
            if reward is None:
                reward = prepared.scorer_cache[key] = cls(prepared, bleu_weight=bleu_weight, words=words)
        return reward

    def hypotheses(self, captions: Sequence[str], ended: Sequence[bool]) -> list[str]:
        """The strings scored: PTB tokens, plus the end word for a caption that chose to end."""
        tokens = self.words.tokenize(captions)
        return [f"{t} {END_WORD}".strip() if e else t for t, e in zip(tokens, ended)]

    def __call__(
        self, image_ids: Sequence[int], captions: Sequence[str], ended: Sequence[bool]
    ) -> np.ndarray:
        """``[len(captions)]`` float64 rewards; ``image_ids[k]`` is the train image of ``captions[k]``."""
        from pycocoevalcap.cider.cider_scorer import precook

        missing = [int(i) for i in image_ids if int(i) not in self.cider.refs]
        if missing:
            raise KeyError(f"images {missing[:5]} are not train images of this reward")
        hyps = self.hypotheses(captions, ended)
        out = np.array([float(self.cider.score(precook(h), int(i))) for i, h in zip(image_ids, hyps)])
        if self.bleu_weight:
            out = out + self.bleu_weight * self.bleu4(image_ids, hyps)
        return out

    def bleu4(self, image_ids: Sequence[int], hyps: Sequence[str]) -> np.ndarray:
        from pycocoevalcap.bleu.bleu_scorer import BleuScorer, cook_test

        scorer = BleuScorer(n=4)
        scorer.crefs = [self._cooked[int(i)] for i in image_ids]
        scorer.ctest = [cook_test(h, self._cooked[int(i)]) for i, h in zip(image_ids, hyps)]
        _, per_sentence = scorer.compute_score(option="closest", verbose=0)
        return np.array(per_sentence[3], dtype=np.float64)
