"""What every launcher shares: its settings (from a grid's ``launcher:`` section), the
``Launcher`` protocol the grid driver talks to, and ``WorkerDied``. The concrete launchers import
this module, never the package, so the package may import them without a cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from omegaconf import OmegaConf

from fusionbench.errors import ConfigError


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
