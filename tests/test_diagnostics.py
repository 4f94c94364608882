"""Diagnostics on hand-written captions with known answers, and on models with hand-set attention."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fusionbench.diagnostics.chair import chair_scores, shapes_hallucinations
from fusionbench.diagnostics.coco_chair import coco_chair, coco_mentions
from fusionbench.diagnostics.diversity import diversity, train_sentences
from fusionbench.diagnostics.facts import caption_facts, fact_scores, novel_pair_scores, reference_items
from fusionbench.diagnostics.grounding import grid_boxes, ground_caption, grounding_scores, model_grounding
from fusionbench.diagnostics.shapes_text import Scene, parse
from fusionbench.diagnostics.text import (
    export_references,
    scenes_from_references,
    scenes_of_split,
    text_diagnostics,
)
from fusionbench.diagnostics.visual import derangement, reliance

CONFIGS = Path(__file__).parent / "configs"

# 64 px image: a large red circle on the left, a small blue square on the right, a green triangle below.
SCENE = Scene.from_labels(
    ["large red circle", "small blue square", "small red triangle"],
    [[2, 20, 24, 42], [44, 24, 54, 34], [28, 50, 38, 60]],
    64,
)


def facts_of(caption: str, references: list[str] = ()):
    parsed = parse(caption)
    return caption_facts(parsed, SCENE), reference_items([parse(r) for r in references], SCENE)


def test_a_blue_star_is_a_hallucinated_object_and_a_red_circle_is_not():
    n, bad = shapes_hallucinations(parse("A blue star next to a big red disc."), SCENE)
    assert (n, bad) == (2, ["blue star"])
    # right shape, wrong colour: there is a circle, but no blue one
    assert shapes_hallucinations(parse("a blue circle"), SCENE) == (1, ["blue circle"])
    scores = chair_scores(
        {1: shapes_hallucinations(parse("a blue star and a red circle"), SCENE), 2: (1, []), 3: (0, [])}
    )
    assert scores["CHAIR_i"] == pytest.approx(1 / 3) and scores["CHAIR_s"] == pytest.approx(1 / 3)


def test_a_wrong_relation_is_false_and_the_right_one_true():
    wrong, _ = facts_of("a red circle to the right of a blue box")
    assert wrong.stated["relations"] == 1 and wrong.true["relations"] == 0
    assert wrong.wrong_relations == ["red circle right of blue square"] or wrong.wrong_relations
    right, refs = facts_of(
        "a big red circle to the left of a blue box", ["a blue square right of a red disc"]
    )
    assert right.true["relations"] == 1 and right.items["relations"] == {(0, "left of", 1)}
    scores = fact_scores({1: (right, refs)})
    assert scores["relations"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "stated": 1,
        "reference_items": 1,
    }
    # the triangle is below the circle by the generator's margin rule, not above it
    assert facts_of("a red triangle below a blue square")[0].true["relations"] == 1
    assert facts_of("a red triangle above a blue square")[0].true["relations"] == 0


def test_pairs_sizes_and_counts_are_checked_against_the_scene():
    f, _ = facts_of("two red shapes, a small blue square and three circles")
    assert f.stated == {"pairs": 1, "sizes": 1, "counts": 2, "relations": 0}
    assert f.true == {"pairs": 1, "sizes": 1, "counts": 1, "relations": 0}  # one circle, not three
    assert facts_of("a large blue square")[0].true["sizes"] == 0


def test_a_correct_novel_pair_counts_and_a_missed_one_does_not():
    scenes = {1: SCENE, 2: SCENE}
    named = novel_pair_scores(
        {1: parse("a red triangle below a blue box"), 2: parse("a red circle")}, scenes, [["red", "triangle"]]
    )
    assert named["accuracy"] == 0.5 and named["precision"] == 1.0 and named["mentions"] == 1
    wrong = novel_pair_scores(
        {1: parse("a green diamond")}, {1: SCENE}, [["red", "triangle"], ["green", "diamond"]]
    )
    assert wrong["precision"] == 0.0 and wrong["accuracy"] == 0.0


def test_the_references_of_a_shapes_split_state_only_true_facts():
    from fusionbench.registry import DATASETS

    ds = DATASETS.build(
        OmegaConf.create(
            {"name": "shapes", "num_train": 4, "num_val": 4, "num_test": 60, "num_test_novel": 60}
        )
    )
    for name in ("test", "test_novel"):
        split = ds.split(name)
        refs = split.references()
        for k in range(5):
            preds = {i: refs[i][k] for i in refs}
            summary, per_image = text_diagnostics(preds, refs, scenes=scenes_of_split(split))
            assert summary["chair"]["CHAIR_i"] == 0.0
            assert all(summary["facts"][t]["precision"] == 1.0 for t in ("pairs", "sizes", "relations"))
            assert not any(v["wrong_relations"] for v in per_image.values())
    # an exported references file carries the same scenes
    split = ds.split("test_novel")
    exported = json.loads(json.dumps(export_references(split)))
    assert scenes_from_references(exported) == scenes_of_split(split)
    assert exported["novel_pairs"] == split.meta["novel_pairs"]


def test_diversity_of_a_constant_caption_set():
    preds = {i: "a red circle" for i in range(10)}
    d = diversity(preds, train_sentences([["A red circle."]]))
    assert d["unique_share"] == 0.1 and d["modal_share"] == 1.0 and d["copied_share"] == 1.0
    assert d["distinct_1"] == pytest.approx(3 / 30) and d["vocabulary"] == 3


def test_coco_chair_maps_synonyms_and_reports_hallucinations():
    assert coco_mentions("A man riding a motor bike next to two dogs and a hot dog") == [
        "person",
        "motorcycle",
        "dog",
        "hot dog",
    ]
    summary, bad = coco_chair({1: "a puppy on a sofa", 2: "a cat"}, {1: {"dog"}, 2: {"cat"}})
    assert bad == {1: ["couch"], 2: []} and summary["CHAIR_i"] == pytest.approx(1 / 3)


def test_the_derangement_moves_every_image_and_a_constant_caption_set_has_no_visual_gap():
    order = derangement(50)
    assert sorted(order) == list(range(50)) and all(i != j for i, j in enumerate(order))
    assert derangement(50) == order
    from fusionbench.diagnostics.visual import cider_d

    refs = {1: ["a red circle"], 2: ["a blue square on the left"], 3: ["two green discs"]}
    constant = {i: "a red circle" for i in refs}
    true, permuted = cider_d(refs, [constant, dict(constant)])
    assert reliance(true, permuted, None)["gap"] == 0.0


def _cells(box, side=4, size=64):
    cells, _ = grid_boxes(side * side)
    return (
        (cells[:, 0] < box[2] / size)
        & (cells[:, 2] > box[0] / size)
        & (cells[:, 1] < box[3] / size)
        & (cells[:, 3] > box[1] / size)
    )


def test_grounding_with_attention_set_by_hand_on_the_right_box_and_a_wrong_one():
    parsed = parse("a red circle left of a blue square")
    cells, _ = grid_boxes(16)
    on_circle = _cells(SCENE.objects[0].box).astype(float)
    on_square = _cells(SCENE.objects[1].box).astype(float)
    steps = list(range(len(parsed.words)))  # word w written at step w
    att = np.zeros((1, len(parsed.words), 16))
    att[0, 2] = on_circle / on_circle.sum()  # "circle" looks at the circle
    att[0, 7] = on_circle / on_circle.sum()  # "square" looks at the circle too: wrong
    found = ground_caption(parsed, SCENE, att, steps, cells, np.ones(16, bool), regions=False)
    assert [f[0][0] for f in found] == [pytest.approx(1.0), 0.0] and [f[1][0] for f in found] == [True, False]
    att[0, 7] = on_square / on_square.sum()
    scores = grounding_scores(
        ground_caption(parsed, SCENE, att, steps, cells, np.ones(16, bool), regions=False)
    )
    assert scores["mass"] == pytest.approx(1.0) and scores["pointing"] == 1.0 and scores["chance_mass"] < 0.5


def _tiny_model(*overrides):
    from fusionbench.config import load_config
    from fusionbench.experiment import build_experiment
    from fusionbench.registry import DATASETS

    cfg = load_config(CONFIGS / "tiny.yaml", ["data.image_size=64", *overrides])
    dataset = DATASETS.build(cfg.data)
    _, model, datamodule, _ = build_experiment(cfg, dataset)
    return model.eval(), datamodule, dataset


def test_a_model_whose_attention_is_set_by_hand_is_grounded_exactly_when_it_looks_at_the_box():
    model, datamodule, dataset = _tiny_model()
    split = dataset.split("test")
    scenes = scenes_of_split(split)
    preds = {}
    targets = []
    for i in split.image_ids:
        o = scenes[i].objects[0]
        preds[i] = f"a {o.size} {o.colour} {o.shape}"
        named = scenes[i].matches(parse(preds[i]).phrases[0])  # object 0 and any identical one
        # resnet10t at stride 8 on 64 px: an 8 x 8 grid; look at object 0, or away from all it names
        targets.append(
            (_cells(o.box, side=8), ~np.any([_cells(scenes[i].objects[k].box, side=8) for k in named], 0))
        )
    target = torch.tensor(np.stack([t for t, _ in targets]), dtype=torch.float32)
    away = torch.tensor(np.stack([a for _, a in targets]), dtype=torch.float32)
    rows = {"start": 0}

    def look(right: bool):
        def hook(module, args, out):
            b = out[1].shape[0]
            want = (target if right else away)[rows["start"] : rows["start"] + b]
            return out[0], want / want.sum(-1, keepdim=True)

        return hook

    for right, mass in ((True, 1.0), (False, 0.0)):
        handle = model.decoder.attention.register_forward_hook(look(right))
        try:
            got = model_grounding(model, datamodule, split, preds, scenes, "cpu", batch_size=len(split))
        finally:
            handle.remove()
        assert got["words"] >= len(split) and got["mass"] == pytest.approx(mass, abs=1e-6)
        assert got["pointing"] == (1.0 if right else 0.0) and len(got["per_layer"]) == 1


def test_transformer_grounding_reads_every_layer_and_late_fusion_is_not_applicable():
    from fusionbench.diagnostics.grounding import layer_attention

    model, datamodule, dataset = _tiny_model("model.decoder.name=transformer", "model.decoder.num_layers=3")
    split = dataset.split("test")
    batch = datamodule.collate([{"image": split.images[k], "image_id": split.image_ids[k]} for k in range(4)])
    ctx = model.context(batch["images"])
    ids = torch.tensor([model.tokenizer.encode("a red circle")[:-1]] * 4)
    layers = layer_attention(model.decoder, ids, ctx)
    _, extras = model.decoder(ids, ctx)
    assert len(layers) == 3 and torch.allclose(layers[-1], extras["attention"])
    assert torch.allclose(layers[0].sum(-1), torch.ones(4, ids.shape[1]))
    late, dm, ds = _tiny_model("model.fusion.name=late")
    got = model_grounding(
        late,
        dm,
        ds.split("test"),
        {i: "a red circle" for i in ds.split("test").image_ids},
        scenes_of_split(ds.split("test")),
        "cpu",
        8,
    )
    assert got["unavailable"].startswith("n/a")


def test_a_run_records_diagnostics_and_a_blind_model_has_no_visual_gap(tmp_path):
    from fusionbench.config import load_config
    from fusionbench.experiment import run_experiment

    cfg = load_config(
        CONFIGS / "tiny.yaml",
        [
            f"output_dir={tmp_path}",
            f"plugins=[{CONFIGS / 'plugins' / 'blind.py'}]",
            "model.fusion.name=blind",
            "trainer.max_epochs=1",
            "logger.wandb.mode=disabled",
        ],
    )
    metrics = run_experiment(cfg, progress=False)
    saved = json.loads((Path(metrics["run_dir"]) / "metrics.json").read_text())
    for split in ("test", "test_novel"):
        d = saved["diagnostics"][split]
        assert d["visual"]["CIDEr_true"] == saved[split]["CIDEr"]
        assert d["visual"]["gap"] == 0.0 and d["visual"]["blind_gap"] == 0.0  # it never sees the image
        assert d["grounding"]["unavailable"].startswith("n/a")
        assert {"chair", "facts", "diversity"} <= set(d)
    assert "novel_pairs" in saved["diagnostics"]["test_novel"]
    assert saved["diagnostics"]["seconds"]["total"] > 0
    assert "torch" in sys.modules  # (the run needs it; the score CLI test checks the opposite)


def test_score_diagnostics_checks_any_systems_captions_against_exported_scenes_without_torch(tmp_path):
    import subprocess

    from fusionbench.registry import DATASETS

    ds = DATASETS.build(
        OmegaConf.create(
            {"name": "shapes", "num_train": 4, "num_val": 4, "num_test": 4, "num_test_novel": 12}
        )
    )
    split = ds.split("test_novel")
    (tmp_path / "refs.json").write_text(json.dumps(export_references(split)))
    preds = [{"image_id": i, "caption": "a blue star to the left of a red triangle"} for i in split.image_ids]
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    code = (
        "import sys, json; from fusionbench.cli import main; "
        f"sys.argv = ['fusionbench', 'score', '--predictions', '{tmp_path / 'preds.json'}', "
        f"'--references', '{tmp_path / 'refs.json'}', '--diagnostics']; code = main(); "
        "print(json.dumps({'torch': 'torch' in sys.modules}), file=sys.stderr); sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stderr.strip().splitlines()[-1]) == {"torch": False}
    out = json.loads(done.stdout)["diagnostics"]
    assert out["chair"]["CHAIR_s"] == 1.0 and out["facts"]["relations"]["precision"] == 0.0
    assert all("blue star" in f["hallucinated"] for f in out["failures"].values())
    assert out["novel_pairs"]["mentions"] == 12


@pytest.mark.parametrize("dataset", ["coco", "coco_karpathy"])
def test_coco_instances_for_chair_are_a_checked_config_key(dataset, tmp_path):
    from fusionbench.config import load_config
    from fusionbench.errors import ConfigError

    smoke = Path(__file__).parent.parent / "experiments" / "smoke.yaml"
    with pytest.raises(
        ConfigError, match=r"data\.instances=.*missing\.json.* is not a file.*instances_val2014"
    ):
        load_config(smoke, [f"data.name={dataset}", f"data.instances={tmp_path / 'missing.json'}"])
    (tmp_path / "instances.json").write_text("{}")
    cfg = load_config(smoke, [f"data.name={dataset}", f"data.instances={tmp_path / 'instances.json'}"])
    assert cfg.data.instances == str(tmp_path / "instances.json")
