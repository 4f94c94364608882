"""The ``fusionbench`` command end to end: a tiny run, scoring files, and clean errors."""

import json

import pytest
import yaml

from fusionbench.cli import main
from fusionbench.metrics import METRIC_KEYS, score_captions


def run_tiny(tiny_config, out_dir, *extra):
    return main(["run", str(tiny_config), f"output_dir={out_dir}", "--no-progress", *extra])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from pathlib import Path

    out = tmp_path_factory.mktemp("runs")
    config = Path(__file__).parent / "configs" / "tiny.yaml"
    assert run_tiny(config, out) == 0
    return out / "tiny" / "cnn-attention-lstm-s0"


def test_run_writes_config_metrics_predictions_and_checkpoint(tiny_run):
    run = tiny_run
    for name in (
        "config.yaml",
        "metrics.json",
        "predictions.json",
        "predictions_test_novel.json",
        "vocab.json",
    ):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "best.ckpt").is_file()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["decoder"]["num_layers"] == 1  # resolved defaults are saved
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("val", "test", "test_novel"):
        for key in METRIC_KEYS:
            assert isinstance(metrics[split][key], float), (split, key)
    assert "SPICE" in metrics["test"]["unavailable"]
    assert metrics["params"]["total"] == sum(
        metrics["params"][k] for k in ("encoder", "projection", "fusion", "decoder")
    )
    assert metrics["cost"]["train_images_per_s"] > 0
    assert metrics["cost"]["inference_ms_per_image"]["test"] > 0
    preds = json.loads((run / "predictions.json").read_text())
    assert len(preds) == 8 and all(set(p) == {"image_id", "caption"} for p in preds)
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))


def test_test_scores_equal_rescoring_the_written_predictions(tiny_run):
    """metrics.json's test scores are exactly coco-caption's on predictions.json."""
    from fusionbench.registry import DATASETS

    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    refs = DATASETS.build(cfg["data"]).split("test").references()
    preds = {p["image_id"]: p["caption"] for p in json.loads((tiny_run / "predictions.json").read_text())}
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    again = score_captions(preds, refs).corpus
    for key in METRIC_KEYS:
        assert metrics["test"][key] == pytest.approx(again[key], abs=1e-12)


def test_same_config_and_seed_give_the_same_metrics(tiny_run, tiny_config, tmp_path):
    assert run_tiny(tiny_config, tmp_path) == 0
    first = json.loads((tiny_run / "metrics.json").read_text())
    second = json.loads((tmp_path / "tiny" / "cnn-attention-lstm-s0" / "metrics.json").read_text())
    for split in ("val", "test", "test_novel"):
        for key in METRIC_KEYS:
            assert first[split][key] == second[split][key]
    assert (tiny_run / "predictions.json").read_text() == (
        tmp_path / "tiny" / "cnn-attention-lstm-s0" / "predictions.json"
    ).read_text()


def write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_score_command_prints_coco_caption_scores(tmp_path, capsys):
    refs = {
        1: ["A red circle, left of a Blue square.", "a red disc left of a blue box"],
        2: ["Two green triangles!", "two green triangles above nothing"],
    }
    preds = {1: "a red circle left of a blue square", 2: "two green squares"}
    p = write_json(tmp_path / "p.json", [{"image_id": k, "caption": v} for k, v in preds.items()])
    r = write_json(
        tmp_path / "r.json",
        {
            "images": [{"id": 1}, {"id": 2}],
            "annotations": [{"image_id": k, "caption": c} for k, cs in refs.items() for c in cs],
        },
    )
    assert main(["score", "--predictions", p, "--references", r]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = score_captions(preds, refs).corpus
    for key in METRIC_KEYS:
        assert printed[key] == pytest.approx(expected[key], abs=1e-9)


def assert_clean_error(capsys, code, *needles):
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)


def test_cli_errors_are_one_paragraph_exit_2(tmp_path, tiny_config, capsys):
    assert_clean_error(
        capsys, main(["run", str(tmp_path / "missing.yaml")]), "missing.yaml", "does not exist"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {encoder: [\n")
    assert_clean_error(capsys, main(["validate", str(bad)]), "bad.yaml", "YAML")
    assert_clean_error(
        capsys, main(["validate", str(tiny_config), "model.encoder.name=vitt"]), "Unknown encoder", "vit"
    )
    assert_clean_error(capsys, main(["validate", str(tiny_config), "trainer.epochs=3"]), "trainer.epochs")
    assert_clean_error(
        capsys, main(["validate", str(tiny_config), "trainer.max_epochs=abc"]), "trainer.max_epochs"
    )
    empty = write_json(tmp_path / "empty.json", [])
    refs = write_json(
        tmp_path / "refs.json", {"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": "a"}]}
    )
    assert_clean_error(capsys, main(["score", "--predictions", empty, "--references", refs]), "empty.json")
    unknown = write_json(tmp_path / "unknown.json", [{"image_id": 99, "caption": "a dog"}])
    assert_clean_error(capsys, main(["score", "--predictions", unknown, "--references", refs]), "99")
    wrong = write_json(tmp_path / "wrong.json", [{"image_id": 1, "caption": "a"}])
    p = write_json(tmp_path / "p.json", [{"image_id": 1, "caption": "a"}])
    assert_clean_error(capsys, main(["score", "--predictions", p, "--references", wrong]), "wrong.json")


def test_debug_flag_shows_the_traceback(tmp_path):
    from fusionbench.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "validate", str(tmp_path / "missing.yaml")])


def test_validate_and_list(tiny_config, capsys):
    assert main(["validate", str(tiny_config), "--print"]) == 0
    assert "resnet10t" in capsys.readouterr().out
    assert main(["list", "fusions"]) == 0
    text = capsys.readouterr().out
    assert "early" in text and "late" in text and "attention" in text
    assert main(["list"]) == 0
    assert "shapes" in capsys.readouterr().out


def test_detector_train_command_writes_a_checkpoint_the_regions_encoder_loads(tiny_config, tmp_path, capsys):
    from fusionbench.registry import ENCODERS

    ckpt = tmp_path / "detector.pt"
    args = ["detector", "train", str(tiny_config), "--out", str(ckpt), "--epochs", "1", "--batch-size", "8"]
    assert main([*args, "--max-steps", "2"]) == 0
    text = capsys.readouterr().out
    assert "detector_checkpoint=" in text and "test" in text  # the table's val and test rows
    enc = ENCODERS.build({"name": "regions", "box_source": "detector", "detector_checkpoint": str(ckpt)})
    assert enc.detector is not None and not any(p.requires_grad for p in enc.detector.parameters())
    stored = enc.detector_meta["metrics"]  # detection quality travels with the checkpoint
    for key in ("val_map_50", "test_map_50", "test_map", "test_recall_iou50_top36"):
        assert 0.0 <= stored[key] <= 1.0
    assert stored["test_split"] == "test" and stored["steps"] == 2
