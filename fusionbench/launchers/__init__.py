"""Where grid cells run: this machine's processes, a SLURM cluster (submitit) or a Ray cluster.

``fusionbench run grid.yaml --launcher local|slurm|ray``. Every launcher runs the same cell
function (``fusionbench.grid.runner.run_cell_worker``) and hands back the same results record, so
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
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from omegaconf import OmegaConf

from fusionbench.errors import ConfigError

LAUNCHERS = ("local", "slurm", "ray")


@dataclass
class SlurmConfig:
    """submitit's ``AutoExecutor`` parameters for one cell (one job, or one task of a job array)."""

    cluster: str = "slurm"  # slurm | local (submitit's local executor: subprocesses, for testing) | debug
    partition: str | None = None
    time_min: int = 60
    gpus_per_cell: int = 0
    cpus_per_cell: int = 2
    mem_gb: float | None = None
    array: bool = True  # submit the grid as one job array (slurm_array_parallelism caps it)
    array_parallelism: int = 256
    folder: str | None = None  # submitit logs; default <results>/submitit
    additional: dict[str, Any] = field(default_factory=dict)  # extra slurm_* parameters, e.g. {account: x}


@dataclass
class RayConfig:
    address: str | None = None  # None: start a local Ray instance; "auto" or ray://host:port: join one
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0


@dataclass
class LauncherConfig:
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    ray: RayConfig = field(default_factory=RayConfig)


def launcher_config(spec: Any, source: str) -> LauncherConfig:
    """Validate a grid's ``launcher:`` mapping (unknown keys and wrong types name the key)."""
    base = OmegaConf.structured(LauncherConfig)
    if not spec:
        return OmegaConf.to_object(base)
    try:
        return OmegaConf.to_object(OmegaConf.merge(base, spec))
    except Exception as err:  # omegaconf's ValidationError / ConfigKeyError
        key = getattr(err, "full_key", None)
        raise ConfigError(
            f"{source}: invalid grid.launcher{'.' + key if key else ''}: {str(err).splitlines()[0]}. "
            "Valid: launcher.slurm.{cluster, partition, time_min, gpus_per_cell, cpus_per_cell, mem_gb, array, "
            "array_parallelism, folder, additional}, launcher.ray.{address, cpus_per_cell, gpus_per_cell}."
        ) from None


class WorkerDied(RuntimeError):
    """The process running a cell ended without returning a record (killed, preempted, lost)."""


class Launcher(Protocol):
    """What the grid driver needs from a launcher: submit cells, learn which finished, get records."""

    parallel: int

    def submit(self, payload: dict[str, Any]) -> Any: ...

    def wait(self, handles: list[Any], timeout: float) -> list[Any]: ...

    def result(self, handle: Any) -> dict[str, Any]: ...

    def cancel(self, handle: Any) -> None: ...

    def close(self) -> None: ...


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
