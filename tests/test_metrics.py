"""fusionbench.metrics against the real pycocoevalcap and Java (no mocks).

METEOR's JVM takes seconds to start: the reference side uses one session-wide ``Meteor`` and
fusionbench reuses its own module-level one, so the suite starts about three JVMs in all.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import stat
import sys

import pytest
import torch

from fusionbench.errors import MetricUnavailableError, ScoreInputError
from fusionbench.metrics import (
    METRIC_KEYS,
    CaptionMetric,
    ScoreResult,
    check_java,
    coco,
    load_predictions,
    load_references,
    score_captions,
    score_files,
)

TOL = 1e-9

TRICKY_REFS = {
    1: ["A man riding a horse on the beach.", "Someone rides a horse, near the SEA!", "a person on a horse"],
    2: ["Café tables with naïve art.", "Tables outside a café.", "Chairs and tables at the Café"],
    3: ["2 dogs' bowls on the floor.", "Two dogs eat from their bowls", "Dog bowls (2) on a kitchen floor"],
    4: ["It's 5 o'clock!", "A clock showing five o'clock.", "The clock says it's 5:00"],
    7: ["A cat sleeping on a red sofa", "A cat on a couch"],  # not predicted: must be ignored
    5: ["Über-cool skateboarder — mid-air", "A skateboarder doing a trick", "skater jumps, 10 ft high"],
}
TRICKY_PREDS = {
    4: "It's 5 o'clock already!",
    1: "A MAN rides a horse on the beach.",
    2: "A naïve Café with tables...",
    3: "2 dogs' bowls, on a floor",
    5: "a skateboarder (mid-air) jumps 10 ft",
}


@pytest.fixture(scope="session")
def reference_meteor():
    """One pycocoevalcap Meteor for all reference computations (independent of fusionbench's)."""
    from pycocoevalcap.meteor.meteor import Meteor

    m = Meteor()
    yield m
    coco._discard_meteor(m)


def pycocoevalcap_scores(preds, refs, meteor):
    """COCOEvalCap.evaluate written out: PTBTokenizer, then Bleu(4), Meteor, Rouge, Cider."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = {i: [{"caption": c} for c in refs[i]] for i in preds}
    res = {i: [{"caption": preds[i]}] for i in preds}
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize(gts)
    res = tokenizer.tokenize(res)
    corpus, per_image = {}, {i: {} for i in gts}
    scorers = [
        (Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]),
        (meteor, "METEOR"),
        (Rouge(), "ROUGE_L"),
        (Cider(), "CIDEr"),
    ]
    for scorer, method in scorers:
        score, scores = scorer.compute_score(gts, res)
        if isinstance(method, list):
            for sc, scs, m in zip(score, scores, method):
                corpus[m] = sc
                for i, s in zip(gts.keys(), scs):
                    per_image[i][m] = s
        else:
            corpus[method] = score
            for i, s in zip(gts.keys(), scores):
                per_image[i][method] = s
    return corpus, per_image


def assert_same(result: ScoreResult, expected_corpus, expected_per_image):
    assert list(result.corpus) == list(METRIC_KEYS)
    for k in METRIC_KEYS:
        assert isinstance(result.corpus[k], float)
        assert result.corpus[k] == pytest.approx(expected_corpus[k], abs=TOL), k
    assert set(result.per_image) == set(expected_per_image)
    for i, scores in expected_per_image.items():
        assert set(result.per_image[i]) == set(METRIC_KEYS)
        for k in METRIC_KEYS:
            assert result.per_image[i][k] == pytest.approx(scores[k], abs=TOL), (i, k)


def random_caption(rng: random.Random) -> str:
    vocab = "a an the A The dog dogs cat man woman is sitting on at table red blue two 3 Café naïve it's , . !".split()
    vocab += ["riding", "horse", "beach", "o'clock", "dogs'", "Über", "(big)", "street", "near"]
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(3, 12)))


# ---------------------------------------------------------------------------------------------
# score_captions == pycocoevalcap
# ---------------------------------------------------------------------------------------------


def test_agrees_with_pycocoevalcap_on_tricky_captions(reference_meteor):
    result = score_captions(TRICKY_PREDS, TRICKY_REFS)
    corpus, per_image = pycocoevalcap_scores(TRICKY_PREDS, TRICKY_REFS, reference_meteor)
    assert_same(result, corpus, per_image)
    assert set(result.per_image) == set(TRICKY_PREDS)  # image 7 has no prediction: not scored
    assert 0 < result.corpus["Bleu_1"] <= 1 and result.corpus["CIDEr"] > 0


def test_agrees_with_pycocoevalcap_on_random_captions(reference_meteor):
    rng = random.Random(1234)
    ids = rng.sample(range(1, 100_000), 30)
    refs = {i: [random_caption(rng) for _ in range(rng.randint(1, 5))] for i in ids}
    preds = {i: random_caption(rng) for i in ids[:27]}  # a strict subset of the reference ids
    preds[ids[0]] = "!!!"  # tokenizes to an empty caption
    result = score_captions(preds, refs)
    corpus, per_image = pycocoevalcap_scores(preds, refs, reference_meteor)
    assert_same(result, corpus, per_image)


def test_line_breaks_inside_captions_do_not_shift_images():
    refs = {1: ["a dog on a sofa", "a dog"], 2: ["a red car", "a car on a street"], 3: ["two cats", "cats"]}
    plain = score_captions({1: "a dog on a bed", 2: "a red car", 3: "two cats"}, refs)
    broken = score_captions({1: "a dog\ron a\u2028bed", 2: "a red\x0ccar", 3: "two\x0bcats"}, refs)
    assert broken.corpus == plain.corpus
    assert broken.per_image == plain.per_image


def test_to_dict_is_json_with_unavailable():
    d = score_captions({1: "a man rides a horse"}, TRICKY_REFS).to_dict()
    json.dumps(d)
    assert [k for k in d if k != "unavailable"] == list(METRIC_KEYS)
    assert all(isinstance(d[k], float) for k in METRIC_KEYS)
    assert isinstance(d["unavailable"], dict)


# ---------------------------------------------------------------------------------------------
# SPICE
# ---------------------------------------------------------------------------------------------


def test_spice_reported_unavailable_without_jars(tmp_path):
    lib = os.path.join(coco._spice_dir(), "lib")
    if all(os.path.isfile(os.path.join(lib, j)) for j in coco.SPICE_CORENLP_JARS):
        pytest.skip("SPICE's CoreNLP jars are installed here")
    result = score_captions({1: "a man on a horse"}, TRICKY_REFS)
    assert "SPICE" not in result.corpus
    reason = result.unavailable["SPICE"]
    assert "stanford-corenlp-3.6.0.jar" in reason and lib in reason and "spice_jar_dir" in reason
    assert not os.path.exists(os.path.join(lib, "stanford-corenlp-3.6.0.jar"))  # no download happened

    given = score_captions({1: "a man on a horse"}, TRICKY_REFS, spice_jar_dir=tmp_path)
    assert str(tmp_path) in given.unavailable["SPICE"]
    assert given.corpus == result.corpus


def test_spice_failure_is_reported_not_raised(tmp_path):
    for jar in coco.SPICE_CORENLP_JARS:  # present but not real jars: SPICE runs and fails
        (tmp_path / jar).write_bytes(b"")
    result = score_captions({1: "a man on a horse"}, TRICKY_REFS, spice_jar_dir=tmp_path)
    assert "SPICE" not in result.corpus
    assert "SPICE failed" in result.unavailable["SPICE"] and str(tmp_path) in result.unavailable["SPICE"]
    assert list(result.corpus) == list(METRIC_KEYS)


# ---------------------------------------------------------------------------------------------
# Input errors (raised before any Java starts)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preds", "refs", "needle"),
    [
        ({}, TRICKY_REFS, "empty"),
        ({1: "a", 99: "b", 98: "c"}, TRICKY_REFS, "99"),
        ({1: "a"}, {1: []}, "references[1] is empty"),
        ({1: 5}, TRICKY_REFS, "predictions[1]"),
        ({1: "a"}, {1: ["ok", None]}, "references[1][1]"),
        ({1: "a"}, {1: "a man"}, "references[1]"),
        ({"1": "a"}, TRICKY_REFS, "'1'"),
        ([(1, "a")], TRICKY_REFS, "dict"),
    ],
)
def test_score_captions_input_errors(preds, refs, needle):
    with pytest.raises(ScoreInputError) as e:
        score_captions(preds, refs)
    assert needle in str(e.value)


def test_unknown_ids_are_listed_with_count():
    preds = {i: "a dog" for i in range(100, 110)}
    with pytest.raises(ScoreInputError) as e:
        score_captions(preds, TRICKY_REFS)
    msg = str(e.value)
    assert "100, 101, 102, 103, 104" in msg and "10 in all" in msg and "109" not in msg


# ---------------------------------------------------------------------------------------------
# Java check
# ---------------------------------------------------------------------------------------------


def test_check_java_finds_java():
    assert check_java() >= 8


def test_java_version_parsing():
    assert coco._java_major('java version "1.8.0_101"') == 8
    assert coco._java_major('openjdk version "17.0.15" 2025-04-15') == 17
    assert coco._java_major('openjdk version "21" 2023-09-19') == 21
    assert coco._java_major("garbage") is None


def test_check_java_missing_or_old(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MetricUnavailableError) as e:
        check_java()
    assert "PATH" in str(e.value) and "install" in str(e.value).lower()

    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'java version \"1.7.0_80\"' >&2\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(MetricUnavailableError) as e:
        check_java()
    assert "Java 7" in str(e.value)


# ---------------------------------------------------------------------------------------------
# METEOR JVM reuse
# ---------------------------------------------------------------------------------------------


def test_meteor_jvm_is_reused_and_restarted_when_dead():
    preds = {1: "a man rides a horse", 2: "a café with tables"}
    first = score_captions(preds, TRICKY_REFS)
    proc = coco.meteor_process()
    assert proc is not None and proc.poll() is None
    second = score_captions(preds, TRICKY_REFS)
    assert coco.meteor_process() is proc  # same JVM
    assert second.corpus == first.corpus

    proc.kill()
    proc.wait()
    third = score_captions(preds, TRICKY_REFS)
    new_proc = coco.meteor_process()
    assert new_proc is not None and new_proc is not proc and new_proc.poll() is None
    assert third.corpus == first.corpus
    assert third.per_image == first.per_image


def _score_in_child(preds, refs, out) -> None:
    """A grid cell's process: scores, and reports whether it booted a METEOR JVM of its own."""
    from fusionbench.metrics import coco as child_coco

    result = child_coco.score_captions(preds, refs, spice=False)
    out.put((result.corpus, result.per_image, child_coco.meteor_process() is not None))


def test_grid_cells_score_meteor_on_the_grids_one_jvm_and_get_the_same_scores():
    """A grid serves its JVM to the cells' processes (each cell runs in a fresh process): they boot
    none of their own and get exactly the scores an in-process run gets; without the service, or
    when it is gone, a process scores on its own JVM, as a single run does."""
    preds = {1: "a man rides a horse", 2: "a café with tables"}
    here = score_captions(preds, TRICKY_REFS, spice=False)
    ctx = multiprocessing.get_context("spawn")
    with coco.serve_meteor() as address:
        assert os.environ[coco.meteor_service.ADDRESS_ENV] == address
        out = ctx.Queue()
        child = ctx.Process(target=_score_in_child, args=(preds, TRICKY_REFS, out))
        child.start()
        corpus, per_image, booted = out.get(timeout=120)
        child.join(30)
    assert not booted  # the grid's JVM answered
    assert corpus == here.corpus and per_image == here.per_image
    assert coco.meteor_service.ADDRESS_ENV not in os.environ  # the service ended with the block

    os.environ[coco.meteor_service.ADDRESS_ENV] = address  # a service that has gone away
    os.environ[coco.meteor_service.KEY_ENV] = "00" * 32
    try:
        assert coco.meteor_service.available()
        again = score_captions(preds, TRICKY_REFS, spice=False)  # scored on this process's JVM
        assert not coco.meteor_service.available()  # not asked again
    finally:
        os.environ.pop(coco.meteor_service.ADDRESS_ENV)
        os.environ.pop(coco.meteor_service.KEY_ENV)
    assert again.corpus == here.corpus and again.per_image == here.per_image


# ---------------------------------------------------------------------------------------------
# CaptionMetric
# ---------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric CaptionMetric was called before")
def test_caption_metric_accumulates_batches_like_score_captions():
    metric = CaptionMetric(TRICKY_REFS)
    metric.update([4, 1], [TRICKY_PREDS[4], TRICKY_PREDS[1]])
    metric.update(torch.tensor([2, 3]), [TRICKY_PREDS[2], TRICKY_PREDS[3]])
    metric.update(torch.tensor([5, 1], dtype=torch.int32), [TRICKY_PREDS[5], "a padded duplicate of image 1"])
    scores = metric.compute()

    expected = score_captions(TRICKY_PREDS, TRICKY_REFS)
    assert scores == expected.corpus
    assert metric.last_predictions == TRICKY_PREDS  # first caption of image 1 kept
    assert metric.last_result.per_image == expected.per_image
    assert "SPICE" in metric.last_result.unavailable or "SPICE" in scores

    metric.reset()
    assert metric.image_ids == [] and metric.hyp_bytes == [] and metric.hyp_lengths == []
    with pytest.raises(ScoreInputError, match="no captions"):
        metric.compute()


def test_caption_metric_update_errors():
    metric = CaptionMetric(TRICKY_REFS)
    with pytest.raises(ScoreInputError, match="one caption per image id"):
        metric.update([1, 2], ["only one"])
    with pytest.raises(ScoreInputError, match="1-D integer tensor"):
        metric.update(torch.tensor([1.0]), ["a"])
    with pytest.raises(ScoreInputError, match="list of caption strings"):
        metric.update([1], [b"bytes"])
    with pytest.raises(ScoreInputError, match="non-empty dict"):
        CaptionMetric({})
    metric.update([1, 99], ["a", "b"])
    with pytest.raises(ScoreInputError, match="99"):
        metric.compute()


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        out = {}
        ragged = CaptionMetric(TRICKY_REFS)  # both processes have captions of different byte lengths
        lonely = CaptionMetric(TRICKY_REFS)  # only process 0 gets a batch
        if rank == 0:
            ragged.update([1, 2], ["A man — on a horse", "café"])
            ragged.update([3], ["a much longer caption about two dogs' bowls on the floor"])
            lonely.update([5], ["Über skater"])
        else:
            ragged.update(torch.tensor([4, 1]), ["It's 5 o'clock!", "duplicate of image 1 from padding"])
        for name, metric in (("ragged", ragged), ("lonely", lonely)):
            metric.sync()
            out[name] = list(metric._predictions().items())
            metric.unsync()
            out[name + "_local"] = list(metric._predictions().items())
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


def test_caption_metric_syncs_ragged_captions_across_processes(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    world_size = 2
    procs = [
        ctx.Process(target=_ddp_worker, args=(r, world_size, str(tmp_path / "init"), str(tmp_path)))
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * world_size
    expected = [
        [1, "A man — on a horse"],
        [2, "café"],
        [3, "a much longer caption about two dogs' bowls on the floor"],
        [4, "It's 5 o'clock!"],
    ]
    results = []
    for r in range(world_size):
        with open(tmp_path / f"rank{r}.json") as f:
            results.append(json.load(f))
    for got in results:
        assert got["ragged"] == expected
        assert got["lonely"] == [[5, "Über skater"]]
    assert results[1]["lonely_local"] == []  # unsync restored the local (empty) state
    assert results[0]["ragged_local"] == expected[:3]


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def write_refs(path, refs):
    images = [{"id": i, "file_name": f"{i}.jpg"} for i in refs]
    anns = [
        {"image_id": i, "id": n, "caption": c}
        for n, (i, c) in enumerate((i, c) for i in refs for c in refs[i])
    ]
    path.write_text(json.dumps({"images": images, "annotations": anns}, ensure_ascii=False), encoding="utf-8")


def write_preds(path, preds):
    path.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in preds.items()]), encoding="utf-8")


def test_files_round_trip(tmp_path):
    rp, pp = tmp_path / "captions_val.json", tmp_path / "results.json"
    write_refs(rp, TRICKY_REFS)
    write_preds(pp, TRICKY_PREDS)
    assert load_references(rp) == TRICKY_REFS
    assert load_predictions(pp) == TRICKY_PREDS
    d = score_files(pp, rp)
    assert d == score_captions(TRICKY_PREDS, TRICKY_REFS).to_dict()
    json.dumps(d)


def _error(fn, path) -> str:
    with pytest.raises(ScoreInputError) as e:
        fn(path)
    msg = str(e.value)
    assert path.name in msg
    return msg


def test_file_errors(tmp_path):
    f = tmp_path / "my_results.json"
    assert "does not exist" in _error(load_predictions, f)
    assert "does not exist" in _error(load_references, f)

    f.write_text('[{"image_id": 1, "caption": "a"},\n {"image_id": 2 "caption": "b"}]')
    msg = _error(load_predictions, f)
    assert "line 2" in msg and "column" in msg

    f.write_bytes('[{"image_id": 1, "caption": "caf\u00e9"}]'.encode("latin-1"))
    assert "UTF-8" in _error(load_predictions, f)

    f.write_text("[]")
    assert "empty" in _error(load_predictions, f)

    f.write_text('{"images": [], "annotations": []}')
    assert "references" in _error(load_predictions, f)

    f.write_text('[{"image_id": 1, "caption": "a"}, {"image_id": 2}]')
    msg = _error(load_predictions, f)
    assert "entry[1]" in msg and "'caption'" in msg

    f.write_text('[{"image_id": "1", "caption": "a"}]')
    assert "not an int" in _error(load_predictions, f)

    f.write_text('[{"image_id": 7, "caption": "a"}, {"image_id": 7, "caption": "b"}]')
    msg = _error(load_predictions, f)
    assert "image_id 7" in msg and "twice" in msg

    r = tmp_path / "my_refs.json"
    r.write_text('[{"image_id": 1, "caption": "a"}]')
    assert "JSON list" in _error(load_references, r)

    r.write_text('{"images": [{"id": 1}]}')
    assert "'annotations'" in _error(load_references, r)

    r.write_text(
        '{"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": "a"}, {"caption": "b"}]}'
    )
    msg = _error(load_references, r)
    assert "annotations[1]" in msg and "'image_id'" in msg

    r.write_text('{"images": [{"id": 1}], "annotations": [{"image_id": 2, "caption": "a"}]}')
    assert "not in 'images'" in _error(load_references, r)


def test_score_files_unknown_ids(tmp_path):
    rp, pp = tmp_path / "captions_val.json", tmp_path / "results_test.json"
    write_refs(rp, TRICKY_REFS)
    write_preds(pp, {i: "a dog" for i in [1, *range(1000, 1007)]})
    with pytest.raises(ScoreInputError) as e:
        score_files(pp, rp)
    msg = str(e.value)
    assert pp.name in msg and rp.name in msg
    assert "1000, 1001, 1002, 1003, 1004" in msg and "7 in all" in msg


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
