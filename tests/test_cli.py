"""The ``fusionbench`` command end to end: a tiny run, scoring files, and clean errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

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
    assert metrics["components"] == {
        "dataset": "shapes",
        "encoder": "cnn",
        "fusion": "attention",
        "decoder": "lstm",
    }
    assert metrics["cost"]["inference_ms_per_image"]["test"] > 0
    import torch

    from fusionbench.numerics import numerics_fingerprint

    threads = torch.get_num_threads()
    torch.set_num_threads(metrics["numerics"]["threads"])  # the fingerprint depends on it
    try:
        fingerprint = numerics_fingerprint("32-true")
    finally:
        torch.set_num_threads(threads)
    assert metrics["numerics"] == {  # what reproducing these numbers bit for bit needs of a host
        "precision": "32-true",
        "configured_precision": "32-true",
        "device": "cpu",
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "bf16_native": torch.ops.mkldnn._is_mkldnn_bf16_supported(),
        "threads": metrics["numerics"]["threads"],
        "fingerprint": fingerprint,  # recomputed here with the run's threads: same bits
    }
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


# -- what a command imports -----------------------------------------------------------------------
HEAVY = ("torch", "torchmetrics", "torchvision", "pytorch_lightning", "lightning_fabric")


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), *sys.path])}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False, timeout=300
    )


IMPORTED = (
    """
import json, sys
from fusionbench.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:  # --help
    code = e.code
print(json.dumps({"code": code, "heavy": [m for m in HEAVY if m in sys.modules]}), file=sys.stderr)
"""
).replace("HEAVY", repr(HEAVY))


def imported(*argv: str) -> tuple[dict, str]:
    proc = run_python(IMPORTED, *argv)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return report, proc.stdout


def test_score_and_help_import_no_torch_or_lightning(tmp_path):
    p = write_json(tmp_path / "p.json", [{"image_id": 1, "caption": "a red circle left of a blue square"}])
    r = write_json(
        tmp_path / "r.json",
        {
            "images": [{"id": 1}],
            "annotations": [{"image_id": 1, "caption": "A red circle left of a square."}],
        },
    )
    report, out = imported("score", "--predictions", p, "--references", r)
    assert report == {"code": 0, "heavy": []}
    assert set(METRIC_KEYS) <= set(json.loads(out))  # it scored
    report, out = imported("--help")
    assert report == {"code": 0, "heavy": []} and "score" in out and "caption" in out


def test_caption_arguments_are_added_when_that_command_is_parsed(capsys):
    from fusionbench.cli import parse_args

    args = parse_args(["caption", "a.png", "b.png", "--checkpoint", "best.ckpt", "--beam", "3"])
    assert args.images == ["a.png", "b.png"] and args.checkpoint == "best.ckpt" and args.beam == 3
    with pytest.raises(SystemExit):
        parse_args(["caption", "--help"])
    assert "--checkpoint" in capsys.readouterr().out


def test_importing_a_run_installs_no_warning_or_log_filters():
    code = """
import logging, warnings
import pytorch_lightning, torch  # their own import-time filters are not ours to judge
before = list(warnings.filters)
import fusionbench.experiment, fusionbench.grid.runner
assert warnings.filters == before, [f for f in warnings.filters if f not in before]
rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
assert not rank_zero.filters, rank_zero.filters
from fusionbench.logs import quiet_known_noise
quiet_known_noise(); quiet_known_noise()
added = [f for f in warnings.filters if f not in before]
assert len(added) == 2 and len(rank_zero.filters) == 1, (added, rank_zero.filters)
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]


# -- overrides after flags ------------------------------------------------------------------------
def test_overrides_may_follow_flags(tiny_config, capsys):
    assert main(["validate", str(tiny_config), "--print", "trainer.max_epochs=3"]) == 0
    assert "max_epochs: 3" in capsys.readouterr().out
    assert main(["data", "stats", str(tiny_config), "data.num_val=4", "--json", "data.num_test=2"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["splits"]["val"]["images"] == 4 and stats["splits"]["test"]["images"] == 2
    grid = Path(__file__).parent / "configs" / "tiny_grid.yaml"
    assert main(["run", str(grid), "--dry-run", "--no-progress", "seed=7"]) == 0
    assert "late-s7" in capsys.readouterr().out
    # a list option's values end at the first override, which still applies (and in order)
    assert main(["run", str(grid), "--dry-run", "--no-progress", "--seeds", "3", "4", "name=renamed"]) == 0
    out = capsys.readouterr().out
    assert "late-s3" in out and "late-s4" in out and "grid 'renamed'" in out
    # an override that replaces a grid axis would make cells repeat: refused, with the fix
    assert_clean_error(
        capsys, main(["run", str(grid), "--dry-run", "--seeds", "3", "4", "seed=7"]), "seed=7", "--seeds"
    )
    with pytest.raises(SystemExit) as info:  # a flag nobody knows is still an error
        main(["run", str(grid), "--dry-run", "--bogus", "seed=7"])
    assert info.value.code == 2 and "--bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # score takes no overrides
        main(["score", "--predictions", "p.json", "--references", "r.json", "seed=1"])
    assert_clean_error(capsys, main(["validate", str(tiny_config), "--print", "oops"]), "oops", "key=value")


# -- tables in an 80-column terminal ----------------------------------------------------------------
def render(renderable, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text().splitlines()


def test_dry_run_table_of_the_default_grid_reads_in_80_columns():
    from fusionbench.cli import grid_plan
    from fusionbench.grid import load_grid

    grid = load_grid(Path(__file__).parent.parent / "experiments" / "grid.yaml")
    lines = render(grid_plan(grid))
    assert max(len(line) for line in lines) <= 80
    assert not any("\u2026" in line for line in lines)  # nothing cut to an ellipsis
    rows = {
        line.split()[0]: line.split() for line in lines if line.split() and line.split()[0].endswith("-s0")
    }
    assert len(rows) == 27  # one row per cell, none wrapped
    cell = next(c for c in grid.cells[1:] if c.seed == 0)
    assert rows[cell.name][1:] == [*(str(v) for v in cell.assignment.values()), cell.hash[:8]]
    header = next(line for line in lines if line.split()[:1] == ["cell"]).split()
    assert header == ["cell", "encoder", "fusion", "decoder", "seed", "hash"]
    legend = " ".join(
        " ".join(lines[lines.index(next(ln for ln in lines if ln.startswith("columns:"))) :]).split()
    )
    assert "encoder = model.encoder.name" in legend and "decoder = model.decoder.name" in legend
    text = " ".join(" ".join(lines).split())
    assert "family settings: encoder vit: optim.lr 0.0005" in text  # the rules, before anything runs
    assert "decoder bert: trainer.precision bf16-mixed" in text


def test_data_stats_read_in_80_columns(tiny_config):
    from fusionbench.config import load_config
    from fusionbench.data.stats import dataset_stats, format_stats
    from fusionbench.registry import DATASETS

    stats = dataset_stats(DATASETS.build(load_config(tiny_config).data))
    lines = render(format_stats(stats))
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= 80 and "\u2026" not in text
    header = next(line for line in lines if "train" in line and "test_novel" in line).split()
    assert header == ["train", "val", "test", "test_novel"]
    for label in (
        "images",
        "captions",
        "vocabulary (words)",
        "missing images",
        "corrupt images",
        "empty captions",
    ):
        row = next(line for line in lines if line.strip().startswith(label))
        assert len(row.split()) >= 4 + len(label.split()), row
    images = next(line for line in lines if line.strip().startswith("images ")).split()[1:]
    assert images == [f"{stats['splits'][s]['images']:,}" for s in ("train", "val", "test", "test_novel")]
    many = {**stats, "splits": {f"split{k}": stats["splits"]["val"] for k in range(7)}}
    assert max(len(line) for line in render(format_stats(many))) <= 80  # more splits: more tables


# -- a grid's console ------------------------------------------------------------------------------
def test_grid_console_shows_its_progress_and_each_cell_keeps_lightnings_lines_in_its_log(tmp_path):
    grid = Path(__file__).parent / "configs" / "tiny_grid.yaml"
    cmd = [sys.executable, "-m", "fusionbench.cli", "run", str(grid), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), *sys.path])}
    proc = subprocess.run(
        [*cmd, f"output_dir={tmp_path}", "--leaderboard-dir", "", "trainer.max_epochs=1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-3000:]
    for banner in ("GPU available", "TPU available", "Restoring states", "Loaded model weights"):
        assert banner not in console, banner
    done = [line for line in console.splitlines() if line.startswith("done ")]
    assert [line.split()[1].rstrip(":") for line in done] == ["late-s0", "attention-s0"]
    assert all("CIDEr" in line for line in done)
    for cell in ("late-s0", "attention-s0"):
        log = (tmp_path / "tiny-grid" / cell / "cell.log").read_text()
        assert "GPU available" in log and "Loaded model weights" in log, log[-2000:]
