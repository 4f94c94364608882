"""One run over several processes: DDP on CPU (gloo), as a user would launch it from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fusionbench.cli import main

# 7 test images over 2 processes: Lightning's DistributedSampler repeats one image to even them out.
DATA = ["data.num_test=7", "data.num_test_novel=5"]


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``fusionbench`` in a fresh process (Lightning's DDP launcher re-runs this command per rank)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "fusionbench.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_config_path):
    out = tmp_path_factory.mktemp("ddp-runs")
    # one epoch: the scores only have to be compared between one and two processes
    args = ["run", str(tiny_config_path), f"output_dir={out}", *DATA, "trainer.max_epochs=1", "--no-progress"]
    assert main(args) == 0
    return out / "tiny" / "cnn-attention-lstm-s0" / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def tiny_config_path():
    from pathlib import Path

    return Path(__file__).parent / "configs" / "tiny.yaml"


def test_two_ddp_processes_score_a_checkpoint_exactly_like_one(checkpoint, tmp_path):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main(["evaluate", str(checkpoint), "--out", str(one)]) == 0
    _cli(
        "evaluate",
        str(checkpoint),
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "loader.eval_batch_size=3",  # uneven batches on each process too
        "--out",
        str(two),
    )
    single, ddp = json.loads(one.read_text()), json.loads(two.read_text())
    assert single["test"]["images"] == 7 and single["test_novel"]["images"] == 5  # none dropped or repeated
    assert ddp == single  # every metric, bit for bit


def test_evaluate_rejects_overrides_of_the_model_or_data(checkpoint, capsys):
    assert main(["evaluate", str(checkpoint), "model.d_model=64"]) == 2
    assert "cannot override model" in capsys.readouterr().err


def test_a_ddp_grid_cell_runs_as_its_own_command_and_writes_its_results_once(tmp_path):
    """Lightning's DDP launcher re-runs the command line for the other ranks: a multi-device grid
    cell must therefore run as `fusionbench run <cell config>`, not inside the grid process. That
    command is a DDP training run as a user launches it (here cross-entropy then one SCST epoch,
    each rank sampling and rewarding its own images): rank 0 alone writes the results."""
    from grids import write_grid

    from fusionbench.grid import load_grid
    from fusionbench.grid.execute import needs_own_process
    from fusionbench.grid.runner import run_grid

    path = write_grid(
        tmp_path,
        {"axes": {"trainer.devices": [2]}},
        trainer={"max_epochs": 1, "strategy": "ddp"},
        data={"num_test": 7, "num_test_novel": 5},  # as DATA: uneven over 2 processes
        scst={"enabled": True, "epochs": 1, "samples": 2},
    )
    assert not needs_own_process(load_grid(path, ["trainer.devices=1"]).cells[0].config)
    grid = load_grid(path)
    assert [needs_own_process(c.config) for c in grid.cells] == [True]
    summary = run_grid(grid, progress=False)
    assert len(summary.completed) == 1 and not summary.failed, summary.failed
    run = grid.results_dir / grid.cells[0].name
    assert (run / "cell.yaml").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    # one SCST epoch after the cross-entropy one: each rank samples and rewards its own images
    assert metrics["checkpoint"] == "scst/best.ckpt" and len(metrics["scst"]["val_history"]) == 1
    assert metrics["test"] == metrics["scst"]["test"] and "test" in metrics["xe"]
    preds = json.loads((run / "predictions.json").read_text())
    assert len(preds) == 7 and len({p["image_id"] for p in preds}) == 7  # each test image once
    ckpts = run / "checkpoints"
    assert (ckpts / "best.ckpt").is_file() and (ckpts / "last.ckpt").is_file()
    assert (ckpts / "scst" / "best.ckpt").is_file()
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
