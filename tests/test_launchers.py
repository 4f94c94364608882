"""Grids through launchers: Ray (a local instance), SLURM (submitit's local executor), processes.

The results store, skipping finished cells, failure isolation and resuming after a dead worker
must behave the same whatever runs the cells.
"""

from __future__ import annotations

import json
from pathlib import Path

import grids
import pytest

from fusionbench.errors import ConfigError
from fusionbench.grid import load_grid
from fusionbench.grid.runner import run_grid
from fusionbench.results import ResultsStore

CONFIGS = grids.CONFIGS


def write_grid(tmp_path: Path, grid: dict, **top) -> Path:
    """One-epoch cells unless ``trainer`` says otherwise."""
    return grids.write_grid(tmp_path, grid, **{"trainer": {"max_epochs": 1}, **top})


def test_ray_launcher_runs_a_three_cell_grid_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray")
    # three cells on two Ray workers: the third waits for a free one
    path = write_grid(tmp_path, {"axes": {"model.fusion.name": ["late", "attention", "early"]}})
    summary = run_grid(load_grid(path), progress=False, launcher="ray", jobs=2)
    assert sorted(summary.completed) == ["attention-s0", "early-s0", "late-s0"]
    assert not summary.failed
    latest = ResultsStore(tmp_path / "runs" / "g").latest()
    assert all(r["status"] == "completed" and r["metrics"]["test"]["CIDEr"] >= 0 for r in latest.values())
    for cell in latest:
        assert (tmp_path / "runs" / "g" / cell / "metrics.json").is_file()
    again = run_grid(load_grid(path), progress=False, launcher="ray", jobs=2)
    assert again.completed == [] and len(again.skipped) == 3  # finished cells are not rerun


def test_slurm_launcher_through_submitits_local_executor_isolates_a_failing_cell(tmp_path):
    pytest.importorskip("submitit")
    # a learning rate of 1e30 makes the loss non-finite: a real failure inside the job
    path = write_grid(
        tmp_path,
        {
            "axes": {"optim.lr": [1.0e30, 0.003]},
            "launcher": {"slurm": {"cluster": "local", "cpus_per_cell": 1}},
        },
    )
    grid = load_grid(path)
    summary = run_grid(grid, progress=False, launcher="slurm", jobs=2)
    bad, good = (c.name for c in grid.cells)
    assert list(summary.failed) == [bad] and "loss" in summary.failed[bad]
    assert summary.completed == [good]
    latest = ResultsStore(grid.results_dir).latest()
    assert latest[bad]["status"] == "failed" and latest[good]["status"] == "completed"
    assert list((grid.results_dir / "submitit").iterdir())  # submitit's job folders (logs, pickles)


@pytest.mark.parametrize("launcher", ["local", "slurm"])
def test_a_killed_worker_is_resumed_from_its_checkpoint_on_the_next_run(tmp_path, launcher):
    if launcher == "slurm":
        pytest.importorskip("submitit")
    marker = tmp_path / "died"
    cells = {"model.fusion.name": ["dies_once"]}
    path = write_grid(
        tmp_path,
        {"axes": cells, "seeds": [0, 1], "launcher": {"slurm": {"cluster": "local", "cpus_per_cell": 1}}},
        plugins=[str(CONFIGS / "plugins" / "dies_once.py")],
        trainer={"max_epochs": 2},
        model={"fusion": {"name": "dies_once", "marker": str(marker)}},
    )
    grid = load_grid(path)
    first = run_grid(grid, progress=False, launcher=launcher, jobs=2)
    assert marker.exists()
    latest = ResultsStore(grid.results_dir).latest()
    # One worker died. A process pool loses its other running cell with it; a SLURM job does not.
    died = sorted(c for c, r in latest.items() if r["status"] == "interrupted")
    assert died and all("worker died" in latest[c]["error"] and c in first.failed for c in died), latest
    assert len(died) == 1 or launcher == "local"
    resumable = [c for c in died if (grid.results_dir / c / "checkpoints" / "last.ckpt").is_file()]
    assert resumable  # epoch 1 was saved before the worker died in epoch 2

    second = run_grid(load_grid(path), progress=False, launcher=launcher, jobs=2)
    assert sorted(second.completed) == died and not second.failed
    for cell in resumable:
        metrics = json.loads((grid.results_dir / cell / "metrics.json").read_text())
        assert metrics["cost"]["resumed"] is True
        assert [h["epoch"] for h in metrics["val_history"]] == [0, 1]  # epoch 0 restored, epoch 1 trained


def test_launcher_settings_are_validated(tmp_path):
    path = write_grid(
        tmp_path, {"axes": {"model.fusion.name": ["late"]}, "launcher": {"slurm": {"partiton": "gpu"}}}
    )
    with pytest.raises(ConfigError, match="grid.launcher"):
        load_grid(path)
