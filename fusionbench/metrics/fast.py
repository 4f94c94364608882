"""BLEU, ROUGE-L and CIDEr-D equal to pycocoevalcap's, with the reference side computed once.

pycocoevalcap's scorers redo all reference work on every call: ``BleuScorer`` counts every
reference's n-grams, ``Rouge`` runs a quadratic LCS against every reference, and ``CiderScorer``
recounts n-grams, recomputes the CIDEr-D document frequencies and re-weights every reference vector.
During training the references of a split never change, so here that work is done once per
reference set (kept on ``PreparedReferences.scorer_cache``) and only the hypothesis side is
computed per evaluation. The arithmetic follows pycocoevalcap operation for operation (same
functions for n-gram counting and BLEU, same numpy calls where pycocoevalcap uses numpy), so
the results are bit-identical; ``tests/test_metrics_fast.py`` checks that on randomised inputs.

* BLEU (Papineni et al., 2002), "closest" reference length: ``cook_refs`` per image is cached;
  ``cook_test`` and ``BleuScorer.compute_score`` are pycocoevalcap's own.
* ROUGE-L (Lin, 2004) with beta 1.2: the LCS length comes from a bit-parallel algorithm (Allison
  and Dix, 1986; Hyyro, 2004) over per-reference match masks, an exact integer like ``my_lcs``.
* CIDEr-D (Vedantam et al., 2015), sigma 6, document frequencies from the references of the
  scored images: document frequencies and reference tf-idf vectors are cached per set of scored
  images (usually the whole split).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from fusionbench.metrics.ptb import PreparedReferences

_CIDER_N = 4
_CIDER_SIGMA = 6.0
_ROUGE_BETA = 1.2
_CIDER_STATES = 2  # cached document-frequency tables per reference set (one per scored id set)


def _slot(prepared: PreparedReferences, name: str, build) -> Any:
    with prepared.lock:
        value = prepared.scorer_cache.get(name)
        if value is None:
            value = prepared.scorer_cache[name] = build()
        return value


# ---------------------------------------------------------------------------------------------
# BLEU
# ---------------------------------------------------------------------------------------------


def bleu(
    prepared: PreparedReferences,
    ids: Sequence[int],
    hyps: Sequence[str],
    gts: dict[int, list[str]] | None = None,
) -> tuple[list[float], list[list[float]]]:
    """``Bleu(4).compute_score(gts, res)`` for the tokenised hypotheses ``hyps`` of images ``ids``.

    ``gts``: the tokenised references to use instead of the prepared ones (not cached).
    """
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer, cook_refs, cook_test

    if gts is None:
        cooked = _slot(prepared, "bleu", dict)
        with prepared.lock:
            missing = [i for i in ids if i not in cooked]
            for i in missing:
                cooked[i] = cook_refs(prepared.tokenized[i])
    else:
        cooked = {i: cook_refs(gts[i]) for i in ids}
    scorer = BleuScorer(n=4)
    scorer.crefs = [cooked[i] for i in ids]
    scorer.ctest = [cook_test(h, cooked[i]) for i, h in zip(ids, hyps)]
    return scorer.compute_score(option="closest", verbose=0)


# ---------------------------------------------------------------------------------------------
# ROUGE-L
# ---------------------------------------------------------------------------------------------


def _rouge_ref(tokens: str) -> tuple[int, dict[str, int]]:
    words = tokens.split(" ")
    masks: dict[str, int] = {}
    for pos, w in enumerate(words):
        masks[w] = masks.get(w, 0) | (1 << pos)
    return len(words), masks


def lcs_length(ref_len: int, masks: dict[str, int], words: Sequence[str]) -> int:
    """Length of the longest common subsequence of a reference (given as match masks) and ``words``."""
    full = (1 << ref_len) - 1
    v = full
    for w in words:
        m = masks.get(w)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return ref_len - v.bit_count()


def _rouge_one(refs: list[tuple[int, dict[str, int]]], hyp: str) -> float:
    # pycocoevalcap.rouge.Rouge.calc_score, with my_lcs replaced by the bit-parallel LCS
    token_c = hyp.split(" ")
    prec = []
    rec = []
    for ref_len, masks in refs:
        lcs = lcs_length(ref_len, masks, token_c)
        prec.append(lcs / float(len(token_c)))
        rec.append(lcs / float(ref_len))
    prec_max = max(prec)
    rec_max = max(rec)
    beta = _ROUGE_BETA
    if prec_max != 0 and rec_max != 0:
        return ((1 + beta**2) * prec_max * rec_max) / float(rec_max + beta**2 * prec_max)
    return 0.0


def rouge(
    prepared: PreparedReferences,
    ids: Sequence[int],
    hyps: Sequence[str],
    gts: dict[int, list[str]] | None = None,
) -> tuple[float, np.ndarray]:
    """``Rouge().compute_score(gts, res)``."""
    if gts is None:
        cache = _slot(prepared, "rouge", dict)
        with prepared.lock:
            for i in ids:
                if i not in cache:
                    cache[i] = [_rouge_ref(r) for r in prepared.tokenized[i]]
    else:
        cache = {i: [_rouge_ref(r) for r in gts[i]] for i in ids}
    score = [_rouge_one(cache[i], h) for i, h in zip(ids, hyps)]
    return np.mean(np.array(score)), np.array(score)


# ---------------------------------------------------------------------------------------------
# CIDEr-D
# ---------------------------------------------------------------------------------------------


class _CiderState:
    """Document frequencies and reference vectors for one set of scored images."""

    def __init__(self, crefs: dict[int, list[dict]]) -> None:
        # CiderScorer.compute_doc_freq
        df: dict[tuple, float] = {}
        for refs in crefs.values():
            for ngram in set(ngram for ref in refs for ngram in ref):
                df[ngram] = df.get(ngram, 0.0) + 1
        self.df = df
        self.ref_len = np.log(float(len(crefs)))
        self._weights: dict[tuple[int, float], tuple[float, float]] = {}
        self.refs = {i: self._index(refs) for i, refs in crefs.items()}

    def _weight(self, term_freq: int, ngram: tuple) -> tuple[float, float]:
        """``float(tf) * (ref_len - np.log(max(1.0, df)))`` and its ``pow(., 2)``, as pycocoevalcap computes them.

        Both depend only on ``(tf, df)``: each distinct pair is computed once with the same numpy
        calls and kept as a Python float (the same double).
        """
        key = (term_freq, self.df.get(ngram, 0.0))
        w = self._weights.get(key)
        if w is None:
            df = np.log(max(1.0, key[1]))
            v = float(term_freq) * (self.ref_len - df)
            w = self._weights[key] = (float(v), float(pow(v, 2)))
        return w

    def _index(self, refs: list[dict]) -> tuple[dict, list, list]:
        """One image's reference vectors (``counts2vec`` of each reference) as ``ngram -> [(ref, weight)]``
        plus each reference's per-order norms and length."""
        index: dict[tuple, list] = {}
        norms, lengths = [], []
        weight = self._weight
        for k, cnts in enumerate(refs):
            norm = [0.0] * _CIDER_N
            length = 0
            for ngram, term_freq in cnts.items():
                v, v2 = weight(term_freq, ngram)
                n = len(ngram) - 1
                norm[n] += v2
                if n == 1:
                    length += term_freq
                hits = index.get(ngram)
                if hits is None:
                    index[ngram] = [(k, v)]
                else:
                    hits.append((k, v))
            norms.append([math.sqrt(x) for x in norm])  # IEEE sqrt: the same double as np.sqrt
            lengths.append(length)
        return index, norms, lengths

    def vec(self, cnts: dict) -> tuple[list[dict], list, int]:
        """``CiderScorer.compute_cider.counts2vec``."""
        vec: list[dict] = [{} for _ in range(_CIDER_N)]
        length = 0
        norm = [0.0] * _CIDER_N
        weight = self._weight
        for ngram, term_freq in cnts.items():
            v, v2 = weight(term_freq, ngram)
            n = len(ngram) - 1
            vec[n][ngram] = v
            norm[n] += v2
            if n == 1:
                length += term_freq
        return vec, [math.sqrt(x) for x in norm], length

    def score(self, test: dict, i: int) -> Any:
        """One image's CIDEr-D: ``compute_cider``'s loop body, summing in the same order."""
        vec, norm, length = self.vec(test)
        index, norms_ref, lengths_ref = self.refs[i]
        n_refs = len(norms_ref)
        # dot[k][n]: sum over the hypothesis n-grams (in their order) of min(h, r) * r for reference k;
        # n-grams missing from a reference add 0.0 in pycocoevalcap and are skipped here.
        dot = [[0.0] * _CIDER_N for _ in range(n_refs)]
        for n in range(_CIDER_N):
            for ngram, h in vec[n].items():
                hits = index.get(ngram)
                if hits:
                    for k, r in hits:
                        dot[k][n] += min(h, r) * r
        sigma = _CIDER_SIGMA
        score = [0.0] * _CIDER_N
        for k in range(n_refs):
            delta = float(length - lengths_ref[k])
            penalty = np.e ** (-(delta**2) / (2 * sigma**2))
            norm_ref = norms_ref[k]
            for n in range(_CIDER_N):
                val = dot[k][n]
                if (norm[n] != 0) and (norm_ref[n] != 0):
                    val /= norm[n] * norm_ref[n]
                if math.isnan(val):
                    raise AssertionError("CIDEr-D similarity is NaN")
                val *= penalty
                score[n] += val
        score_avg = np.mean(np.array(score))
        score_avg /= n_refs
        score_avg *= 10.0
        return score_avg


def cider(
    prepared: PreparedReferences,
    ids: Sequence[int],
    hyps: Sequence[str],
    gts: dict[int, list[str]] | None = None,
) -> tuple[float, np.ndarray]:
    """``Cider().compute_score(gts, res)`` (CIDEr-D, document frequencies from the scored images' references)."""
    from pycocoevalcap.cider.cider_scorer import precook

    if gts is None:
        states: OrderedDict = _slot(prepared, "cider_states", OrderedDict)
        with prepared.lock:
            key = frozenset(ids)
            state = states.get(key)
            if state is None:
                tokenized = prepared.tokenized
                state = states[key] = _CiderState({i: [precook(r) for r in tokenized[i]] for i in ids})
                while len(states) > _CIDER_STATES:
                    states.popitem(last=False)
            states.move_to_end(key)
    else:
        state = _CiderState({i: [precook(r) for r in gts[i]] for i in ids})
    scores = [state.score(precook(h), i) for i, h in zip(ids, hyps)]
    return np.mean(np.array(scores)), np.array(scores)
