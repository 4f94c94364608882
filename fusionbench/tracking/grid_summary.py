"""The grid's summary run in W&B: the aggregated leaderboard, its heatmap and quality-vs-cost plots.

After a grid, one more W&B run (``job_type: leaderboard``, name ``<grid>-leaderboard``, in the
grid's group) logs what ``fusionbench.leaderboard.build_leaderboard`` computes from the results
folder: ``leaderboard`` (one row per configuration, raw coco-caption scale, seed mean/std and
bootstrap CI columns as in the CSV), ``leaderboard/fusion_summary``, the encoder x fusion heatmap
and quality-vs-cost SVGs (``wandb.Html``), and native W&B charts ``leaderboard/cider_by_fusion``
(bar) and ``leaderboard/quality_vs_params`` (scatter). Like every W&B call here it only warns on
failure; ``disabled`` does nothing.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from pathlib import Path
from typing import Any

from fusionbench.io import atomic_write_json
from fusionbench.tracking.mode import resolve_mode
from fusionbench.tracking.wandb_run import init_run, sync_command, wandb_config, wandb_env, wandb_root, warn

SUMMARY_INFO = "wandb_leaderboard.json"  # in the grid's results folder


def _cell(value: Any) -> Any:
    """A table cell W&B can type: scalars as they are (NaN as None), anything else as text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    return str(value)


def log_grid_summary(grid, *, n_boot: int = 1000) -> dict[str, Any] | None:
    """Log the grid's leaderboard as a W&B summary run; returns where it went (None when off)."""
    try:
        cfg = grid.cells[0].config
        wc = wandb_config(cfg)
        decision = resolve_mode(str(wc.mode))
        if decision.mode == "disabled":
            return None
        from fusionbench.leaderboard import build_leaderboard

        with tempfile.TemporaryDirectory(prefix="fusionbench-wandb-") as tmp:
            board = build_leaderboard(grid.results_dir, out_dir=tmp, n_boot=n_boot)
            heatmap, cost = (p.read_text(encoding="utf-8") for p in board.plot_paths[:2])
    except Exception as err:
        warn(f"W&B grid summary skipped: the leaderboard could not be built ({type(err).__name__}: {err}).")
        return None

    group = str(wc.group or grid.name)
    with wandb_env(wandb_root(cfg)):
        run, mode = _start(grid, board, decision, wc, group, n_boot)
        if run is None:
            return None
        exit_code = 1
        try:
            _log_board(run, board, heatmap, cost)
            exit_code = 0
        except Exception as err:
            warn(f"W&B grid summary could not be logged completely ({type(err).__name__}: {err}).")
        finally:
            try:
                run.finish(exit_code=exit_code)
            except Exception as err:
                warn(f"W&B could not finish the grid summary run cleanly ({type(err).__name__}: {err}).")
    info = {
        "mode": mode,
        "id": getattr(run, "id", None),
        "project": getattr(run, "project", None),
        "group": group,
        "dir": str(getattr(run.settings, "sync_dir", "")),
        "url": getattr(run, "url", None) if mode == "online" else None,
        "sync": sync_command(run) if mode == "offline" else None,
    }
    with contextlib.suppress(Exception):
        atomic_write_json(Path(grid.results_dir) / SUMMARY_INFO, info)
    return info


def _start(grid, board, decision, wc, group: str, n_boot: int):
    cfg = grid.cells[0].config
    datasets = sorted({str(c.config.data.name) for c in grid.cells})
    axes = sorted({k for c in grid.cells for k in c.assignment if k != "seed"})
    return init_run(
        decision=decision,
        wc=wc,
        root=wandb_root(cfg),
        name=f"{grid.name}-leaderboard",
        group=group,
        job_type="leaderboard",
        tags=list(dict.fromkeys(["leaderboard", *datasets, *[str(t)[:64] for t in wc.tags or []]])),
        config={
            "experiment": grid.name,
            "grid": grid.name,
            "source": str(grid.source),
            "cells": len(grid.cells),
            "configurations": len(board.rows),
            "axes": axes,
            "dataset": datasets[0] if len(datasets) == 1 else ",".join(datasets),
            "n_boot": n_boot,
        },
    )


def _log_board(run, board, heatmap: str, cost: str) -> None:
    import wandb

    log: dict[str, Any] = {
        "leaderboard": wandb.Table(
            columns=list(board.columns),
            data=[[_cell(row.get(c)) for c in board.columns] for row in board.rows],
        ),
        "leaderboard/heatmap": wandb.Html(heatmap),
        "leaderboard/quality_vs_cost": wandb.Html(cost),
    }
    if board.fusion_summary:
        fcols = list(board.fusion_summary[0])
        fusion = wandb.Table(
            columns=fcols, data=[[_cell(r.get(c)) for c in fcols] for r in board.fusion_summary]
        )
        log["leaderboard/fusion_summary"] = fusion
        if "test_CIDEr_mean" in fcols:
            log["leaderboard/cider_by_fusion"] = wandb.plot.bar(
                fusion, "fusion", "test_CIDEr_mean", title="Test CIDEr-D (raw scale) by fusion"
            )
    points = [
        [r["label"], r["fusion"], r["encoder"], float(r["params_total"]), float(r["test_CIDEr_mean"])]
        for r in board.rows
        if r.get("params_total") is not None and r.get("test_CIDEr_mean") is not None
    ]
    if points:
        scatter = wandb.Table(
            columns=["label", "fusion", "encoder", "params_total", "test_CIDEr"], data=points
        )
        log["leaderboard/quality_vs_params"] = wandb.plot.scatter(
            scatter, "params_total", "test_CIDEr", title="Test CIDEr-D (raw scale) vs parameters"
        )
    run.log(log)
    top = board.best or {}  # None when every configuration is degenerate
    run.summary.update(
        {
            "configurations": len(board.rows),
            "best/label": top.get("label"),
            "best/test_CIDEr": top.get("test_CIDEr_mean"),
            "failed_cells": len(board.failed),
        }
    )
    if board.method is not None and board.method.on_val:  # a sweep: #1 was chosen on validation
        run.summary.update({"best/selected_on": "val", "best/val_CIDEr": top.get("val_CIDEr_mean")})
