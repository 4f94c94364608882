"""Weights & Biases integration: per-run logging, the grid summary run, the saved dashboard.

Nothing here imports wandb at import time, and with ``logger.wandb.mode: disabled`` (the typed
default) nothing imports it at all. See :mod:`fusionbench.tracking.wandb_run` (one run),
:mod:`fusionbench.tracking.grid_summary` (after a grid), :mod:`fusionbench.tracking.dashboard`
(``fusionbench wandb-dashboard``) and :mod:`fusionbench.tracking.mode` (online/offline/auto).
"""

from __future__ import annotations

from typing import Any

from fusionbench.tracking.mode import ModeDecision, resolve_mode

__all__ = [
    "ModeDecision",
    "NullTracker",
    "TrackingWarning",
    "WandbTracker",
    "create_dashboard",
    "log_grid_summary",
    "resolve_mode",
    "start_run_tracking",
]

_LAZY = {
    "NullTracker": "fusionbench.tracking.wandb_run",
    "TrackingWarning": "fusionbench.tracking.wandb_run",
    "WandbTracker": "fusionbench.tracking.wandb_run",
    "start_run_tracking": "fusionbench.tracking.wandb_run",
    "log_grid_summary": "fusionbench.tracking.grid_summary",
    "create_dashboard": "fusionbench.tracking.dashboard",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fusionbench.tracking' has no attribute {name!r}")
