"""The fast scoring path equals pycocoevalcap exactly (not approximately), and its caches are sound.

Pure-Python checks (BLEU, ROUGE-L, CIDEr-D against pycocoevalcap's scorers on pre-tokenised random
captions) need no Java; the end-to-end checks compare ``score_captions`` with
``score_captions_reference`` (the ``COCOEvalCap`` flow with pycocoevalcap's tokenizer and scorers)
and share the process-wide METEOR JVM with tests/test_metrics.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import random

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge, my_lcs

from fusionbench.metrics import (
    METRIC_KEYS,
    CaptionMetric,
    clear_meteor_cache,
    clear_reference_cache,
    coco,
    fast,
    prepare_references,
    ptb,
    score_captions,
    score_captions_reference,
)
from fusionbench.metrics.ptb import PreparedReferences

WORDS = (
    "a the man woman dog dogs on at in of riding horse red blue two sitting table street near with".split()
)


def tokens(rng: random.Random, lo: int = 0, hi: int = 14) -> str:
    """A tokenised caption (lower case, single spaces) over a small vocabulary, so n-grams repeat."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def prepared_from_tokens(tokenized: dict[int, list[str]]) -> PreparedReferences:
    return PreparedReferences(key="test", references=dict(tokenized), tokenized=dict(tokenized))


def reference_scores(gts: dict, res: dict):
    with contextlib.redirect_stdout(io.StringIO()):
        bleu = Bleu(4).compute_score(gts, res, verbose=0)
    return bleu, Rouge().compute_score(gts, res), Cider().compute_score(gts, res)


def assert_identical(fast_result, ref_result) -> None:
    score, scores = fast_result
    ref_score, ref_scores = ref_result
    assert np.asarray(score).tolist() == np.asarray(ref_score).tolist()
    assert np.asarray(scores).tolist() == np.asarray(ref_scores).tolist()


# ---------------------------------------------------------------------------------------------
# BLEU, ROUGE-L, CIDEr-D: bit-identical to pycocoevalcap (no Java)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_scorers_equal_pycocoevalcap_on_random_tokens(seed):
    rng = random.Random(seed)
    ids = rng.sample(range(1, 10**6), rng.randint(1, 60))
    gts = {i: [tokens(rng) for _ in range(rng.randint(1, 6))] for i in ids}
    prepared = prepared_from_tokens(gts)
    for _ in range(3):  # repeated calls reuse the reference caches
        scored = rng.sample(ids, rng.randint(1, len(ids)))  # any subset, any order
        hyps = [tokens(rng) for _ in scored]
        res = {i: [h] for i, h in zip(scored, hyps)}
        sub = {i: gts[i] for i in scored}
        bleu, rouge, cider = reference_scores(sub, res)
        assert_identical(fast.bleu(prepared, scored, hyps), bleu)
        assert_identical(fast.rouge(prepared, scored, hyps), rouge)
        assert_identical(fast.cider(prepared, scored, hyps), cider)
        # the uncached path (references given explicitly) is the same code
        assert_identical(fast.cider(prepared, scored, hyps, sub), cider)


def test_scorers_equal_pycocoevalcap_on_edge_cases():
    gts = {
        1: ["", "a"],  # empty reference
        2: ["a a a a a a a a", "a"],  # repeated words, clipped counts
        3: [" ".join(WORDS * 5), "dog"],  # longer than 64 tokens (multi-word bit masks)
        4: ["the man", "the man"],
    }
    res = {1: [""], 2: ["a a a"], 3: [" ".join(reversed(WORDS * 4))], 4: ["woman"]}
    prepared = prepared_from_tokens(gts)
    ids = list(res)
    hyps = [res[i][0] for i in ids]
    bleu, rouge, cider = reference_scores(gts, res)
    assert_identical(fast.bleu(prepared, ids, hyps), bleu)
    assert_identical(fast.rouge(prepared, ids, hyps), rouge)
    assert_identical(fast.cider(prepared, ids, hyps), cider)
    # a single image: CIDEr-D's log(number of images) is 0
    one = reference_scores({2: gts[2]}, {2: res[2]})
    assert_identical(fast.cider(prepared, [2], [res[2][0]]), one[2])


def test_bit_parallel_lcs_equals_my_lcs():
    rng = random.Random(7)
    for _ in range(500):
        a = tokens(rng, 1, 80).split(" ")
        b = tokens(rng, 1, 30).split(" ")
        length, masks = fast._rouge_ref(" ".join(a))
        assert fast.lcs_length(length, masks, b) == my_lcs(a, b)


def test_cider_document_frequencies_follow_the_scored_images():
    rng = random.Random(3)
    gts = {i: [tokens(rng, 3) for _ in range(5)] for i in range(1, 41)}
    prepared = prepared_from_tokens(gts)
    subset, full = list(range(1, 11)), list(gts)
    for ids in (full, subset, full, subset[::-1]):
        hyps = [tokens(rng, 3) for _ in ids]
        expected = Cider().compute_score({i: gts[i] for i in ids}, {i: [h] for i, h in zip(ids, hyps)})
        assert_identical(fast.cider(prepared, ids, hyps), expected)
    assert len(prepared.scorer_cache["cider_states"]) == 2  # one per set of scored images


# ---------------------------------------------------------------------------------------------
# End to end: score_captions == COCOEvalCap flow
# ---------------------------------------------------------------------------------------------


def raw_caption(rng: random.Random) -> str:
    vocab = "a an the A The dog dogs cat man woman is sitting on at table red blue two 3 Café naïve it's , . !".split()
    vocab += [
        "riding",
        "horse",
        "beach",
        "o'clock",
        "dogs'",
        "Über",
        "(big)",
        "street",
        "near",
        "Corp.",
        "U.S.",
    ]
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 12)))


def assert_same_result(result, expected) -> None:
    assert result.corpus == expected.corpus  # bit-identical, not approximately equal
    assert list(result.per_image) == list(expected.per_image)
    assert result.per_image == expected.per_image
    assert result.unavailable == expected.unavailable


def test_score_captions_equals_reference_flow_on_random_captions():
    rng = random.Random(2024)
    ids = rng.sample(range(1, 100_000), 60)
    refs = {i: [raw_caption(rng) for _ in range(rng.randint(1, 5))] for i in ids}
    clear_meteor_cache()
    for call in range(3):  # cold caches, then warm reference caches with new hypotheses
        scored = ids if call == 0 else rng.sample(ids, rng.randint(20, 60))
        preds = {i: raw_caption(rng) for i in scored}
        if call == 2:
            preds[scored[0]] = "!!!"  # tokenizes to an empty caption
        result = score_captions(preds, refs, spice=False)
        assert_same_result(result, score_captions_reference(preds, refs, spice=False))
        assert set(result.corpus) == set(METRIC_KEYS)


def test_meteor_statistics_cache_gives_the_same_scores():
    rng = random.Random(11)
    refs = {i: [raw_caption(rng) for _ in range(3)] for i in range(1, 31)}
    first = {i: raw_caption(rng) for i in refs}
    score_captions(first, refs, spice=False)
    mixed = {i: (first[i] if i % 2 else raw_caption(rng)) for i in refs}  # half remembered, half new
    assert_same_result(
        score_captions(mixed, refs, spice=False), score_captions_reference(mixed, refs, spice=False)
    )


def test_changed_references_get_a_new_cache_entry(tmp_path):
    refs = {1: ["A dog on a sofa.", "A dog sleeping"], 2: ["Two cats on a bed", "cats"], 3: ["a red car"]}
    preds = {1: "a dog on a couch", 2: "two cats", 3: "a red car on a street"}
    first = prepare_references(refs)
    assert prepare_references({k: list(v) for k, v in refs.items()}) is first  # same content, same entry

    changed = {**refs, 2: ["Two dogs on a bed", "cats"]}
    second = prepare_references(changed)
    assert second is not first and second.key != first.key
    assert (
        second.tokenized[2] == ["two dogs on a bed", "cats"] and first.tokenized[2][0] == "two cats on a bed"
    )
    reordered = {3: refs[3], 1: refs[1], 2: refs[2]}
    assert prepare_references(reordered).key != first.key  # order is part of the content

    score_captions(preds, refs, spice=False)  # fills the caches for the old references
    assert_same_result(
        score_captions(preds, changed, spice=False), score_captions_reference(preds, changed, spice=False)
    )
    assert_same_result(
        score_captions(preds, refs, spice=False), score_captions_reference(preds, refs, spice=False)
    )


def test_disk_cache_is_reused_and_rebuilt_when_damaged(monkeypatch):
    refs = {10: ["A man rides a horse.", "a horse and its rider"], 11: ["It's 5 o'clock!"]}
    built = prepare_references(refs)
    path = ptb._disk_path(built.key)
    assert path.is_file() and json.loads(path.read_text())["key"] == built.key

    clear_reference_cache()
    calls = []
    monkeypatch.setattr(ptb, "tokenize_lines", lambda lines: calls.append(lines) or [])
    loaded = prepare_references(refs)  # from disk: no JVM
    assert calls == [] and loaded is not built and loaded.tokenized == built.tokenized

    monkeypatch.undo()
    clear_reference_cache()
    path.write_text('{"format": 1, "key": "' + built.key + '", "tokenized": [["x"]]')  # truncated JSON
    rebuilt = prepare_references(refs)
    assert rebuilt.tokenized == built.tokenized
    assert json.loads(path.read_text())["tokenized"] == list(built.tokenized.values())


def test_context_sensitive_references_are_retokenised_in_the_scored_order(monkeypatch):
    refs = {
        1: ["He works at Corp.", "The man works."],
        2: ["We went to the U.S.", "Then we came back"],
        3: ["Foo etc.", "bar"],
    }
    prepared = prepare_references(refs)
    # Pretend some line depends on its neighbours, so the scorer must not reuse the cached tokens
    # when the scored order differs from the cached one.
    monkeypatch.setattr(prepared, "context_sensitive", True)
    sent = []
    real = coco._tokenize_refs
    monkeypatch.setattr(coco, "_tokenize_refs", lambda caps: sent.append(list(caps)) or real(caps))
    preds = {3: "foo etc", 1: "he works at corp.", 2: "we went to the us"}
    assert_same_result(
        score_captions(preds, refs, spice=False), score_captions_reference(preds, refs, spice=False)
    )
    assert sent == [[3, 1, 2]]
    in_order = {1: preds[1], 2: preds[2], 3: preds[3]}
    assert_same_result(
        score_captions(in_order, refs, spice=False), score_captions_reference(in_order, refs, spice=False)
    )
    assert sent == [[3, 1, 2]]  # the cached order is the scored order: no second tokenisation


def test_tokenizer_flags_lines_whose_tokens_depend_on_their_neighbours(monkeypatch):
    real = ptb.tokenize_lines

    def fake(lines):  # the JVM's answer, except that "x." keeps its period only before an upper-case line
        out = real(lines)
        return [
            (t + " period" if line == "x." and n + 1 < len(lines) and lines[n + 1][:1].isupper() else t)
            for n, (line, t) in enumerate(zip(lines, out))
        ]

    monkeypatch.setattr(ptb, "tokenize_lines", fake)
    plain = prepare_references({1: ["a dog", "A cat"]}, disk_cache=False)
    assert plain.context_sensitive is None  # not needed while scored in the references' own order
    assert ptb.check_context(plain, disk_cache=False) is False
    touchy = prepare_references({1: ["x.", "A cat"], 2: ["b"]}, disk_cache=False)
    assert touchy.tokenized[1] == ["x period", "a cat"]  # (fake) context-dependent tokens
    assert ptb.check_context(touchy, disk_cache=False) is True
    assert touchy.context_sensitive is True


def test_caption_metric_repeated_compute_matches_reference():
    rng = random.Random(5)
    refs = {i: [raw_caption(rng) for _ in range(4)] for i in range(1, 21)}
    metric = CaptionMetric(refs, spice=False)
    for _ in range(2):  # two "epochs"
        preds = {i: raw_caption(rng) for i in refs}
        metric.update(list(preds), list(preds.values()))
        scores = metric.compute()
        expected = score_captions_reference(preds, refs, spice=False)
        assert scores == expected.corpus
        assert metric.last_result.per_image == expected.per_image
        metric.reset()


def test_spice_jar_folder_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(coco.SPICE_JARS_ENV, str(tmp_path))
    corpus, per_image, reason = coco._spice_score({1: ["a dog"]}, {1: ["a dog"]}, None)
    assert corpus is None and per_image is None
    assert str(tmp_path) in reason and coco.SPICE_CORENLP_JARS[0] in reason
