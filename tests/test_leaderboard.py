"""Leaderboard: seed aggregation, bootstrap CIs, significance, written files, errors, CLI.

The synthetic grid has 3 configurations x 2 seeds on 5 test images (3 test_novel images); every
cell's metrics.json CIDEr is the mean of its hand-written per-image CIDEr values, as coco-caption's
CIDEr-D is. The statistics themselves (two-level bootstrap, Holm, verdicts, degenerate cells, one
seed) are pinned in test_leaderboard_stats.py.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from fusionbench.cli import main
from fusionbench.errors import DataError, FusionbenchError
from fusionbench.leaderboard import (
    SCALE_SENTENCE,
    average_per_image,
    bootstrap_ci,
    build_leaderboard,
    latest_records,
    paired_bootstrap_p,
    print_leaderboard,
    seed_stats,
)
from fusionbench.leaderboard.formatting import fmt_params, fmt_score

IMAGES = ["11", "12", "13", "14", "15"]
NOVEL = ["21", "22", "23"]

# Per-image test CIDEr (raw scale) per configuration and seed, written by hand.
TEST_CIDER = {
    # seed means 1.00 and 1.10 -> mean 1.05, sample std 0.0707107; per-image avg [1.1, .9, 1.1, 1.3, .85]
    "attention": {0: [1.2, 0.8, 1.0, 1.4, 0.6], 1: [1.0, 1.0, 1.2, 1.2, 1.1]},
    # seed means 1.05 and 0.97 -> mean 1.01, std 0.0565685; per-image avg [1.3, .6, 1.0, 1.4, .75]:
    # better than attention on 2 images, worse on 3, so not significantly different from the top.
    "late": {0: [1.4, 0.7, 1.0, 1.3, 0.85], 1: [1.2, 0.5, 1.0, 1.5, 0.65]},
    # seed means 0.40 and 0.44 -> mean 0.42; worse than attention on every image.
    "early": {0: [0.5, 0.3, 0.4, 0.6, 0.2], 1: [0.5, 0.3, 0.6, 0.6, 0.2]},
}
NOVEL_CIDER = {
    "attention": {0: [0.9, 0.6, 0.6], 1: [0.6, 0.6, 0.9]},  # means 0.7, 0.7
    "late": {0: [0.5, 0.5, 0.8], 1: [0.8, 0.8, 0.8]},  # means 0.6, 0.8
    "early": {0: [0.3, 0.3, 0.3], 1: [0.3, 0.3, 0.3]},  # means 0.3, 0.3
}
BLEU4 = {"attention": (0.30, 0.34), "late": (0.28, 0.29), "early": (0.10, 0.12)}
METEOR = {"attention": (0.24, 0.25), "late": (0.23, 0.23), "early": (0.15, 0.16)}
PARAMS = {"attention": 1_634_897, "late": 1_500_000, "early": 1_200_000}
IPS = {"attention": (120.0, 100.0), "late": (150.0, 130.0), "early": (200.0, None)}


def _mean(xs):
    return sum(xs) / len(xs)


def _split_scores(cider, bleu4, meteor):
    return {
        "Bleu_1": 0.7,
        "Bleu_2": 0.55,
        "Bleu_3": 0.42,
        "Bleu_4": bleu4,
        "METEOR": meteor,
        "ROUGE_L": 0.5,
        "CIDEr": cider,
        "unavailable": {"SPICE": "needs CoreNLP"},
    }


def _write_cell(root: Path, fusion: str, seed: int, *, extras: dict | None = None) -> dict:
    cell = f"cnn-{fusion}-lstm-s{seed}"
    run_dir = root / cell
    run_dir.mkdir(parents=True, exist_ok=True)
    test = TEST_CIDER[fusion][seed]
    novel = NOVEL_CIDER[fusion][seed]
    metrics = {
        "val": _split_scores(0.5, 0.2, 0.2),
        "test": _split_scores(_mean(test), BLEU4[fusion][seed], METEOR[fusion][seed]),
        "test_novel": _split_scores(_mean(novel), BLEU4[fusion][seed] / 2, METEOR[fusion][seed]),
        "params": {
            "encoder": 1,
            "projection": 1,
            "fusion": 0,
            "decoder": 1,
            "total": PARAMS[fusion],
            "trainable": 1,
        },
        "cost": {
            "train_images_per_s": IPS[fusion][seed],
            "inference_ms_per_image": {"test": 2.0 + seed, "test_novel": 1.0},
            "train_seconds": 10.0,
            "wall_seconds": 12.0,
            "epochs": 4,
            "flops_per_image": 2.0e9 + 1.0e9 * seed,
            "peak_memory_mb": 500.0 + 100.0 * seed,
            "peak_memory_source": "process RSS high-water mark (VmHWM)",
        },
        "val_history": [{"epoch": e, "CIDEr": _mean(test) * (e + 1) / 4, "Bleu_4": 0.1} for e in range(4)],
        "degenerate": None,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    for split, ids, values in (("test", IMAGES, test), ("test_novel", NOVEL, novel)):
        per_image = {i: {"Bleu_4": 0.3, "CIDEr": v} for i, v in zip(ids, values)}
        (run_dir / f"scores_{split}.json").write_text(json.dumps(per_image))
    assignment = {"model.encoder.name": "cnn", "model.fusion.name": fusion, "model.decoder.name": "lstm"}
    assignment.update(extras or {})
    assignment["seed"] = seed
    return {
        "cell": cell,
        "hash": f"h-{cell}",
        "status": "completed",
        "error": None,
        "assignment": assignment,
        "seed": seed,
        "components": {"dataset": "shapes", "encoder": "cnn", "fusion": fusion, "decoder": "lstm"},
        "run_dir": str(run_dir),
        "git_commit": "abc1234",
        "started_at": "2025-01-01T00:00:00",
        "finished_at": "2025-01-01T00:01:00",
        "wall_seconds": 60.0,
        "metrics": metrics,
    }


def _write_results(root: Path, records: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


@pytest.fixture
def grid(tmp_path) -> Path:
    root = tmp_path / "runs" / "grid"
    records = []
    # A failed first attempt of a cell that later completes: the last line wins.
    records.append(
        {
            "cell": "cnn-late-lstm-s1",
            "status": "failed",
            "error": "RuntimeError: boom\nTraceback ...",
            "seed": 1,
        }
    )
    for fusion in ("attention", "late", "early"):
        for seed in (0, 1):
            records.append({"cell": f"cnn-{fusion}-lstm-s{seed}", "status": "running", "seed": seed})
            records.append(_write_cell(root, fusion, seed))
    # A cell that failed and stayed failed.
    records.append(
        {
            "cell": "cnn-attention-transformer-s0",
            "status": "failed",
            "error": "ValueError: d_model must be divisible by heads\n  at line 3",
            "seed": 0,
            "assignment": {"model.decoder.name": "transformer", "seed": 0},
        }
    )
    _write_results(root, records)
    (root / "grid.json").write_text(json.dumps({"grid": "grid", "source": "grid.yaml"}))
    return root


def _build(grid: Path, tmp_path: Path, **kwargs):
    kwargs.setdefault("out_dir", tmp_path / "leaderboards")
    kwargs.setdefault("command", "fusionbench run experiments/grid.yaml")
    return build_leaderboard(grid, **kwargs)


def _row(board, fusion):
    (row,) = [r for r in board.rows if r["fusion"] == fusion]
    return row


# ------------------------------------------------------------------------------ pure functions


def test_seed_stats_by_hand():
    mean, std, n = seed_stats([1.0, 1.1])
    assert n == 2 and mean == pytest.approx(1.05)
    assert std == pytest.approx(math.sqrt((0.05**2 + 0.05**2) / 1))
    assert seed_stats([0.3]) == (0.3, None, 1)
    assert seed_stats([None, 2.0, 4.0, 6.0]) == (4.0, pytest.approx(2.0), 3)
    assert seed_stats([]) == (None, None, 0)


def test_latest_record_wins():
    latest = latest_records(
        [
            {"cell": "a", "status": "failed"},
            {"cell": "b", "status": "completed"},
            {"cell": "a", "status": "completed"},
        ]
    )
    assert latest == {"a": {"cell": "a", "status": "completed"}, "b": {"cell": "b", "status": "completed"}}


def test_average_per_image_intersects_ids():
    avg = average_per_image([{"x": 1.0, "y": 2.0, "z": 9.0}, {"x": 3.0, "y": 4.0}])
    assert avg == {"x": 2.0, "y": 3.0}


def test_bootstrap_ci_deterministic_contains_mean_and_depends_on_seed():
    per_image = {str(i): v for i, v in enumerate([0.2, 1.5, 0.7, 0.9, 1.1, 0.4, 2.0, 0.8, 1.3, 0.6])}
    mean = sum(per_image.values()) / len(per_image)
    first = bootstrap_ci(per_image, n_boot=500, seed=0)
    assert first == bootstrap_ci(per_image, n_boot=500, seed=0)
    lo, hi = first
    assert lo < mean < hi
    assert 0.2 < lo and hi < 2.0
    assert bootstrap_ci(per_image, n_boot=500, seed=1) != first
    assert bootstrap_ci({"a": 1.0}, n_boot=10) is None


def test_paired_bootstrap_identical_and_clearly_better():
    a = {str(i): 0.5 + 0.1 * (i % 4) for i in range(30)}
    assert paired_bootstrap_p(a, dict(a), n_boot=200, seed=0) == 1.0
    better = {k: v + 0.3 for k, v in a.items()}
    assert paired_bootstrap_p(better, a, n_boot=200, seed=0) == 0.0
    # Only shared images count: an image the other lacks does not enter.
    assert paired_bootstrap_p({**better, "extra": -100.0}, a, n_boot=200, seed=0) == 0.0


# ----------------------------------------------------------------------------- the leaderboard


def test_aggregation_matches_hand_computation(grid, tmp_path):
    board = _build(grid, tmp_path, n_boot=200)
    assert [r["fusion"] for r in board.rows] == ["attention", "late", "early"]
    assert [r["rank"] for r in board.rows] == [1, 2, 3]
    assert board.splits == ["test", "test_novel"]

    att = _row(board, "attention")
    assert att["n_seeds"] == 2 and att["seeds"] == "0;1"
    assert att["test_CIDEr_mean"] == pytest.approx(1.05)
    assert att["test_CIDEr_std"] == pytest.approx(0.0707107, abs=1e-6)
    assert att["test_Bleu_4_mean"] == pytest.approx(0.32)
    assert att["test_Bleu_4_std"] == pytest.approx(0.0282843, abs=1e-6)
    assert att["test_METEOR_mean"] == pytest.approx(0.245)
    assert att["test_ROUGE_L_std"] == pytest.approx(0.0)
    assert att["test_novel_CIDEr_mean"] == pytest.approx(0.7)
    assert att["test_novel_CIDEr_std"] == pytest.approx(0.0, abs=1e-12)
    assert att["params_total"] == 1_634_897
    assert att["train_images_per_s"] == pytest.approx(110.0)
    assert att["test_ms_per_image"] == pytest.approx(2.5)
    assert att["gflops_per_image"] == pytest.approx(2.5)  # (2 + 3) / 2 GFLOPs over the two seeds
    assert att["peak_memory_mb"] == pytest.approx(550.0)
    assert att["test_n_images"] == 5 and att["test_novel_n_images"] == 3

    late = _row(board, "late")
    assert late["test_CIDEr_mean"] == pytest.approx(1.01)
    assert late["test_CIDEr_std"] == pytest.approx(0.0565685, abs=1e-6)
    assert late["test_novel_CIDEr_mean"] == pytest.approx(0.7)
    assert late["test_novel_CIDEr_std"] == pytest.approx(0.1414214, abs=1e-6)

    early = _row(board, "early")
    assert early["test_CIDEr_mean"] == pytest.approx(0.42)
    assert early["train_images_per_s"] == pytest.approx(200.0)  # the null seed is ignored

    # Fusion summary: one configuration per fusion here, so the per-fusion mean is that row's mean.
    summary = {s["fusion"]: s for s in board.fusion_summary}
    assert summary["late"]["test_CIDEr_mean"] == pytest.approx(1.01)
    assert summary["early"]["test_novel_CIDEr_mean"] == pytest.approx(0.3)


def test_ci_contains_mean_and_is_deterministic(grid, tmp_path):
    a = _build(grid, tmp_path, n_boot=300, seed=0, out_dir=tmp_path / "a")
    b = _build(grid, tmp_path, n_boot=300, seed=0, out_dir=tmp_path / "b")
    c = _build(grid, tmp_path, n_boot=300, seed=7, out_dir=tmp_path / "c")
    for ra, rb in zip(a.rows, b.rows):
        assert (ra["test_CIDEr_ci_lo"], ra["test_CIDEr_ci_hi"]) == (
            rb["test_CIDEr_ci_lo"],
            rb["test_CIDEr_ci_hi"],
        )
        assert ra["test_CIDEr_ci_lo"] <= ra["test_CIDEr_mean"] <= ra["test_CIDEr_ci_hi"]
        assert ra["test_novel_CIDEr_ci_lo"] <= ra["test_novel_CIDEr_mean"] <= ra["test_novel_CIDEr_ci_hi"]
    assert [(r["test_CIDEr_ci_lo"], r["test_CIDEr_ci_hi"]) for r in a.rows] != [
        (r["test_CIDEr_ci_lo"], r["test_CIDEr_ci_hi"]) for r in c.rows
    ]


def test_significance_markers(grid, tmp_path):
    board = _build(grid, tmp_path, n_boot=1000)
    top, late, early = board.rows
    assert top["p_vs_top"] is None and top["not_significant_vs_top"] is None
    # late beats attention on 2 of 5 images: not significantly worse than the top.
    assert late["p_vs_top"] >= 0.05 and late["not_significant_vs_top"] is True
    # early is worse on every image: every resample favours the top.
    assert early["p_vs_top"] == 0.0 and early["not_significant_vs_top"] is False
    # Holm over the 2 comparisons with #1: the smaller p is doubled, the larger kept (but not below it).
    assert early["p_vs_top_holm"] == 0.0 and late["p_vs_top_holm"] == pytest.approx(late["p_vs_top"])
    md = board.markdown_path.read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert table[1].startswith("| 1 |") and table[2].startswith("| 2† |") and table[3].startswith("| 3 |")
    assert "† tied with #1" in md and "Holm correction over the 2 comparisons with #1" in md
    assert "two-level bootstrap" in md and "cannot be separated from training noise" not in md


def test_identical_configurations_not_significant(tmp_path):
    root = tmp_path / "g"
    records = [_write_cell(root, "attention", s) for s in (0, 1)]
    twin = [_write_cell(root, "attention", s, extras={"model.fusion.mode": "copy"}) for s in (0, 1)]
    for r in twin:
        r["cell"] += "-copy"
    records += twin
    # Point the twin at its own folders holding the same per-image scores.
    for r in twin:
        new = Path(r["run_dir"] + "-copy")
        new.mkdir()
        for f in Path(r["run_dir"]).iterdir():
            (new / f.name).write_text(f.read_text())
        r["run_dir"] = str(new)
    board = _build(_write_results(root, records), tmp_path, n_boot=200)
    assert len(board.rows) == 2
    # Seeds are drawn independently per configuration, so twins differ within a resample; by symmetry
    # #1 is not ahead in at least half of them (in all where both drew the same seeds).
    assert board.rows[1]["p_vs_top"] >= 0.5 and board.rows[1]["not_significant_vs_top"] is True
    # The extra assignment key becomes a column named by its last part.
    md = board.markdown_path.read_text()
    assert "| rank | encoder | fusion | decoder | mode | test CIDEr-D |" in md
    assert "mode" in board.columns


def test_files_written(grid, tmp_path):
    board = _build(grid, tmp_path, n_boot=100)
    out = tmp_path / "leaderboards"
    assert board.name == "shapes"
    assert board.markdown_path == out / "shapes.md"
    for path in board.paths:
        assert path.is_file() and path.stat().st_size > 0
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    md = board.markdown_path.read_text()
    assert "fusionbench run experiments/grid.yaml" in md
    assert SCALE_SENTENCE in md and "x100" in md
    assert "abc1234" in md
    assert "- Grid: grid (from grid.yaml)" in md
    assert "6 completed of 7" in md
    table = [ln for ln in md.split("## Fusion strategies")[0].splitlines() if ln.startswith("|")]
    assert len(table) == 2 + 3  # header, separator, one row per configuration
    assert "test_novel CIDEr-D" in table[0] and "BLEU-4" in table[0]
    assert "105.0 ± 7.1 [" in table[2]  # attention: CIDEr-D x100, mean ± std [CI]
    assert "1.63M" in table[2]
    assert "## Fusion strategies" in md and "- test: no clear winner (`attention` leads `late` by 4.0" in md
    assert "## Encoders" not in md  # one encoder in the grid: no encoder verdict
    assert "peak MB: process RSS high-water mark (VmHWM), as recorded in metrics.json" in md

    with board.csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert [r["fusion"] for r in rows] == ["attention", "late", "early"]
    assert float(rows[0]["test_CIDEr_mean"]) == pytest.approx(1.05)  # raw scale, not x100
    assert float(rows[0]["test_CIDEr_std"]) == pytest.approx(0.0707107, abs=1e-6)
    assert float(rows[0]["test_CIDEr_ci_lo"]) <= 1.05 <= float(rows[0]["test_CIDEr_ci_hi"])
    assert float(rows[1]["test_novel_CIDEr_mean"]) == pytest.approx(0.7)
    assert int(rows[0]["params_total"]) == 1_634_897
    assert rows[0]["p_vs_top"] == "" and rows[2]["not_significant_vs_top"] == "False"

    page = board.html_path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script>" in page and "sortable" in page and page.count("<svg") == 3  # + validation curves
    assert (out / "shapes_val_curves.svg").is_file()
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    assert "fusionbench run experiments/grid.yaml" in page and "x100" in page
    assert page.count("<tr>") >= 1 + 3


def test_failed_cells_listed_and_last_record_wins(grid, tmp_path):
    board = _build(grid, tmp_path, n_boot=50)
    assert _row(board, "late")["n_seeds"] == 2  # failed first, completed last -> completed
    assert [f["cell"] for f in board.failed] == ["cnn-attention-transformer-s0"]
    md = board.markdown_path.read_text()
    assert "cnn-attention-transformer-s0" in md
    assert "ValueError: d_model must be divisible by heads" in md
    assert "at line 3" not in md  # first line of the error only
    assert "RuntimeError: boom" not in md


def test_later_failure_replaces_completion(grid, tmp_path):
    lines = (grid / "results.jsonl").read_text()
    lines += json.dumps({"cell": "cnn-early-lstm-s1", "status": "failed", "error": "OOM"}) + "\n"
    (grid / "results.jsonl").write_text(lines)
    board = _build(grid, tmp_path, n_boot=50)
    assert _row(board, "early")["n_seeds"] == 1
    assert _row(board, "early")["test_CIDEr_std"] is None
    assert "cnn-early-lstm-s1" in [f["cell"] for f in board.failed]


def test_missing_per_image_file_omits_ci_with_note(grid, tmp_path):
    (grid / "cnn-late-lstm-s0" / "scores_test.json").unlink()
    board = _build(grid, tmp_path, n_boot=50)
    late = _row(board, "late")
    assert late["test_CIDEr_ci_lo"] is None and late["test_CIDEr_ci_hi"] is None
    assert late["p_vs_top"] is None and late["not_significant_vs_top"] is None
    assert late["test_novel_CIDEr_ci_lo"] is not None
    assert late["test_CIDEr_mean"] == pytest.approx(1.01)
    assert "per-image scores missing" in late["notes"]
    assert "per-image scores missing" in board.markdown_path.read_text()


def test_relative_run_dir_and_metrics_from_file(grid, tmp_path, monkeypatch):
    lines = [json.loads(ln) for ln in (grid / "results.jsonl").read_text().splitlines()]
    for r in lines:
        if r.get("status") == "completed":
            r["run_dir"] = str(Path(r["run_dir"]).relative_to(tmp_path))
            del r["metrics"]
    _write_results(grid, lines)
    monkeypatch.chdir(tmp_path)
    board = build_leaderboard("runs/grid", out_dir="lb", n_boot=50)
    assert (tmp_path / "lb" / "shapes.md").is_file()
    assert _row(board, "attention")["test_CIDEr_mean"] == pytest.approx(1.05)
    assert _row(board, "attention")["test_CIDEr_ci_lo"] is not None


def test_errors_on_missing_or_empty_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist.*run the grid first"):
        build_leaderboard(tmp_path / "nope", out_dir=tmp_path / "lb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no results.jsonl.*run the grid first"):
        build_leaderboard(tmp_path / "empty", out_dir=tmp_path / "lb")
    failed = _write_results(tmp_path / "failed", [{"cell": "a-s0", "status": "failed", "error": "x"}])
    with pytest.raises(FusionbenchError, match="no completed cell"):
        build_leaderboard(failed, out_dir=tmp_path / "lb")
    assert not (tmp_path / "lb").exists()


def test_cli_command(grid, tmp_path, capsys):
    args = ["leaderboard", str(grid), "--out", str(tmp_path / "cli"), "--name", "g"]
    assert main([*args, "--n-boot", "20", "--boot-seed", "3"]) == 0
    assert (tmp_path / "cli" / "g.csv").is_file()
    assert (
        "20 two-level resamples (each configuration's seeds, then the test images"
        in (tmp_path / "cli" / "g.md").read_text()
    )
    assert "numpy default_rng(3)" in (tmp_path / "cli" / "g.md").read_text()
    printed = capsys.readouterr().out
    assert "Test split (x100)" in printed and "105.0 ± 7.1" in printed and "leaderboard: " in printed
    assert main(["leaderboard", str(tmp_path / "missing"), "--out", str(tmp_path / "cli")]) == 2
    assert "run the grid first" in capsys.readouterr().err


def test_module_entry_point_is_the_cli(grid, tmp_path):
    """``python -m fusionbench.leaderboard ARGS`` is ``fusionbench leaderboard ARGS``, recorded as such."""
    out = tmp_path / "m"
    args = [str(grid), "--out", str(out), "--n-boot", "20"]
    result = subprocess.run(
        [sys.executable, "-m", "fusionbench.leaderboard", *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    md = (out / "shapes.md").read_text()
    assert f"- Command: `fusionbench leaderboard {' '.join(args)}`" in md
    assert "Test split (x100)" in result.stdout


def test_leaderboard_imports_no_torch(grid, tmp_path):
    """Building and printing a leaderboard reads JSON and does numpy: no torch, torchmetrics, Lightning."""
    code = (
        "import sys\n"
        "from rich.console import Console\n"
        "from fusionbench.leaderboard import build_leaderboard, print_leaderboard\n"
        f"board = build_leaderboard({str(grid)!r}, out_dir={str(tmp_path / 'lb')!r}, n_boot=20)\n"
        "print_leaderboard(board, Console(width=80))\n"
        "heavy = ('torch', 'torchmetrics', 'lightning', 'pytorch_lightning')\n"
        "print('HEAVY', sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert (tmp_path / "lb" / "shapes.md").is_file()


def _printed(board, width: int = 80) -> str:
    console = Console(width=width, record=True)
    print_leaderboard(board, console)
    return console.export_text()


def _assert_fits(text: str, width: int = 80) -> None:
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text  # rich's ellipsis: a cell cut short


def test_terminal_tables_fit_80_columns(grid, tmp_path):
    board = _build(grid, tmp_path, n_boot=200)
    text = _printed(board)
    _assert_fits(text)
    for row in board.rows:  # every number the ranking rests on is printed whole
        assert fmt_score(row["test_CIDEr_mean"], row["test_CIDEr_std"]) in text
        assert f"[{100 * row['test_CIDEr_ci_lo']:.1f}, {100 * row['test_CIDEr_ci_hi']:.1f}]" in text
        assert fmt_score(row["test_Bleu_4_mean"], row["test_Bleu_4_std"]) in text
        assert fmt_score(row["test_novel_CIDEr_mean"], row["test_novel_CIDEr_std"]) in text
        assert fmt_params(row["params_total"]) in text
    assert "2†" in text and "0.000" in text  # late tied with #1; early's p
    assert "test_novel split" in text and "Cost" in text
    assert "† tied" not in text and "†: tied with #1" in text
    assert "Fusion strategies (x100):" in text and "test: no clear winner" in text


def test_terminal_tables_fit_80_columns_with_long_names(tmp_path):
    """Long component names and extra assignment columns split tables instead of cutting cells."""
    root = tmp_path / "g"
    extras = {"model.fusion.num_heads": 16, "optim.learning_rate": 0.00025, "model.decoder.num_layers": 6}
    records = [
        _write_cell(root, fusion, s, extras=extras) for fusion in ("attention", "late") for s in (0, 1)
    ]
    for r in records:
        r["assignment"]["model.encoder.name"] = "regions"
        r["assignment"]["model.decoder.name"] = "transformer"
    board = _build(_write_results(root, records), tmp_path, n_boot=100)
    text = _printed(board)
    _assert_fits(text)
    for value in ("regions", "transformer", "attention", "num_heads", "learning_rate", "0.00025"):
        assert value in text
    assert "Test split (x100) (1/2)" in text
    for row in board.rows:
        assert fmt_score(row["test_CIDEr_mean"], row["test_CIDEr_std"]) in text
        assert row["p_vs_top_holm"] is None or f"{row['p_vs_top_holm']:.3f}" in text
    # A wide terminal gets the ranking in one table.
    _assert_fits(_printed(board, width=160), width=160)
    assert "(1/2)" not in _printed(board, width=160)


# ------------------------------------------------------------------------------ diagnostics
GAP = {"attention": (0.50, 0.70), "late": (0.30, 0.30), "early": (0.0, 0.02)}


def _add_diagnostics(grid: Path) -> None:
    """Diagnostics in each run's metrics.json only (the grid records leave them out, like collapse)."""
    for fusion, gaps in GAP.items():
        for seed, gap in enumerate(gaps):
            path = grid / f"cnn-{fusion}-lstm-s{seed}" / "metrics.json"
            metrics = json.loads(path.read_text())
            grounding = {"mass": 0.4 + 0.1 * seed} if fusion == "attention" else {"unavailable": "n/a"}
            metrics["diagnostics"] = {
                "test": {
                    "visual": {"gap": gap},
                    "chair": {"CHAIR_i": 0.1 * (seed + 1)},
                    "facts": {"relations": {"f1": 0.5}},
                    "grounding": grounding,
                    "diversity": {"distinct_2": 0.2},
                },
                "test_novel": {"novel_pairs": {"accuracy": 0.25}},
                "seconds": {"total": 1.0},
            }
            path.write_text(json.dumps(metrics))


def test_diagnostics_columns_table_summary_and_gap_plot(grid, tmp_path):
    _add_diagnostics(grid)
    board = _build(grid, tmp_path, n_boot=50)
    attention, early = _row(board, "attention"), _row(board, "early")
    assert attention["diag_visual_gap"] == pytest.approx(0.6) and early["diag_visual_gap"] == pytest.approx(
        0.01
    )
    assert attention["diag_chair_i"] == pytest.approx(0.15) and attention["diag_grounding"] == pytest.approx(
        0.45
    )
    assert early["diag_grounding"] is None and attention["diag_novel_accuracy"] == 0.25
    with board.csv_path.open(newline="") as f:
        header = next(csv.reader(f))
    assert {"diag_visual_gap", "diag_chair_i", "diag_relation_f1", "diag_novel_accuracy"} <= set(header)
    md = board.markdown_path.read_text()
    section = md.split("## Diagnostics")[1].split("## Fusion strategies")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")]
    assert "vis gap" in rows[0] and "CHAIR-i" in rows[0] and len(rows) == 2 + 3
    assert "| cnn-attention-lstm | 60.0 | 15.0 | 50.0 | 25.0 | 45.0 | 20.0 |" in rows
    assert all(len(ln) <= 80 for ln in rows)
    per_fusion = md.split("Diagnostics per fusion strategy")[1]
    assert "| early | 1.0 | 15.0 | 50.0 | 25.0 | – | 20.0 |" in per_fusion
    page = board.html_path.read_text()
    assert page.count("<svg") == 4 and "visual gap x100" in page
    assert (tmp_path / "leaderboards" / "shapes_gap.svg").is_file()


def test_a_grid_without_diagnostics_has_no_diagnostics_section(grid, tmp_path):
    board = _build(grid, tmp_path, n_boot=50)
    assert "## Diagnostics" not in board.markdown_path.read_text()
    assert _row(board, "attention")["diag_visual_gap"] is None
    assert not (tmp_path / "leaderboards" / "shapes_gap.svg").exists()


def test_the_header_names_the_package_versions_the_cells_ran_with():
    """Numbers depend on library releases: the header says which, as the cells recorded them."""
    from importlib import metadata

    from fusionbench.leaderboard.load import RunResult
    from fusionbench.leaderboard.table import packages_item
    from fusionbench.results import package_versions

    versions = package_versions()
    assert versions["torch"] == metadata.version("torch") and "timm" in versions and "numpy" in versions
    same = [RunResult(f"c-s{i}", {"packages": versions}, {}, None) for i in range(2)]
    assert packages_item(same) == (
        ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + " (constraints.txt pins them)"
    )
    mixed = [*same, RunResult("c-s2", {"packages": {**versions, "timm": "0.0"}}, {}, None)]
    assert packages_item(mixed).endswith("(cells come from several installs)")
    assert packages_item([RunResult("c-s0", {}, {}, None)]) == "not recorded"


def test_the_header_names_the_grids_family_settings_and_the_csv_keeps_each_seeds_score(grid, tmp_path):
    """Cells of one grid may train with per-family settings (``grid.settings``): the reader is told
    which; and every seed's own test CIDEr-D is in the CSV, for re-analysis."""
    rules = [{"when": {"model.encoder.name": "vit"}, "set": {"optim.lr": 5.0e-4}}]
    (grid / "grid.json").write_text(json.dumps({"grid": "grid", "source": "grid.yaml", "settings": rules}))
    board = _build(grid, tmp_path, n_boot=50)
    md = board.markdown_path.read_text()
    assert "- Family settings: encoder vit: optim.lr 0.0005 (grid.settings" in md
    with open(board.markdown_path.with_suffix(".csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        pairs = dict(p.split(":", 1) for p in row["test_CIDEr_by_seed"].split(";"))
        assert sorted(pairs) == sorted(row["seeds"].split(";"))
        values = [float(v) for v in pairs.values()]
        assert abs(sum(values) / len(values) - float(row["test_CIDEr_mean"])) < 1e-12
