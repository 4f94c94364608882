"""Where grid cells run: this machine's processes, a SLURM cluster (submitit) or a Ray cluster.

``fusionbench run grid.yaml --launcher local|slurm|ray``. Every launcher runs the same cell
function (``fusionbench.grid.execute.run_cell_worker``) and hands back the same results record, so
the results store, skipping of finished cells, resuming from ``last.ckpt`` and failure isolation
work identically whatever runs the cells: the grid process (the "driver") submits, waits, and
appends each record to ``results.jsonl`` itself. A cell whose worker dies (killed, preempted, out
of memory at the OS level) is recorded as ``interrupted``, so running the grid again resumes it
from its last checkpoint.

Launcher settings live in the grid file (command-line flags override them)::

    grid:
      axes: {...}
      launcher:
        slurm: {partition: gpu, time_min: 240, gpus_per_cell: 1, cpus_per_cell: 8, mem_gb: 32, array: true}
        ray: {address: auto, cpus_per_cell: 4, gpus_per_cell: 1}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fusionbench.errors import ConfigError
from fusionbench.launchers.base import (
    Launcher,
    LauncherConfig,
    RayConfig,
    SlurmConfig,
    WorkerDied,
    launcher_config,
)

LAUNCHERS = ("local", "slurm", "ray")

__all__ = [
    "LAUNCHERS",
    "Launcher",
    "LauncherConfig",
    "RayConfig",
    "SlurmConfig",
    "WorkerDied",
    "launcher_config",
    "make_launcher",
]


def make_launcher(
    name: str,
    worker: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    jobs: int,
    config: LauncherConfig,
    results_dir,
    address: str | None = None,
):
    """The launcher ``name``, running ``worker(payload) -> record`` for each submitted cell.

    The grid driver passes its worker function in, so launchers never import the driver.
    ``worker`` must be importable by name (a module-level function): it is pickled to the
    worker processes, SLURM jobs or Ray tasks.
    """
    if name not in LAUNCHERS:
        raise ConfigError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {name!r}.")
    if name == "local":
        from fusionbench.launchers.local import ProcessLauncher

        return ProcessLauncher(worker, jobs)
    if name == "slurm":
        from fusionbench.launchers.slurm import SlurmLauncher

        return SlurmLauncher(worker, config.slurm, results_dir, jobs=jobs)
    from fusionbench.launchers.ray_cluster import RayLauncher

    return RayLauncher(
        worker, config.ray if address is None else replace(config.ray, address=address), jobs=jobs
    )
