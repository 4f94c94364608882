"""``--launcher slurm``: one SLURM job per cell (or one job array) through submitit.

submitit pickles the cell function and its payload into ``folder``, writes the sbatch script
(partition, time limit, GPUs and CPUs per cell from ``grid.launcher.slurm``) and returns a job
handle the driver polls; stdout/stderr of every cell stay in ``folder`` for post-mortems.
``cluster: local`` uses submitit's local executor (each cell a subprocess of this machine), which
is how the tests exercise this path without a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fusionbench.errors import ConfigError
from fusionbench.launchers.base import SlurmConfig, WorkerDied


class SlurmLauncher:
    def __init__(
        self,
        worker: Callable[[dict[str, Any]], dict[str, Any]],
        config: SlurmConfig,
        results_dir: Path,
        *,
        jobs: int = 1,
    ) -> None:
        self.worker = worker
        try:
            import submitit
        except ImportError:
            raise ConfigError(
                "--launcher slurm needs submitit: pip install submitit (or fusionbench[cluster])."
            ) from None
        self.submitit = submitit
        self.config = config
        folder = Path(config.folder).expanduser() if config.folder else Path(results_dir) / "submitit"
        self.executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=config.cluster)
        params: dict[str, Any] = {
            "timeout_min": int(config.time_min),
            "gpus_per_node": int(config.gpus_per_cell),
            "cpus_per_task": int(config.cpus_per_cell),
            "tasks_per_node": 1,
            "nodes": 1,
            "name": "fusionbench",
        }
        if config.mem_gb:
            params["mem_gb"] = float(config.mem_gb)
        if self.executor.cluster == "slurm":
            if config.partition:
                params["slurm_partition"] = config.partition
            params["slurm_array_parallelism"] = int(config.array_parallelism)
            params.update({f"slurm_{k}": v for k, v in (config.additional or {}).items()})
        self.executor.update_parameters(**params)
        # A cluster runs every submitted cell as the scheduler allows; the local executor runs
        # them all at once, so cap it at --jobs.
        self.parallel = max(1, jobs) if self.executor.cluster != "slurm" else 10**6
        self.threads = max(1, int(config.cpus_per_cell))

    def submit(self, payload: dict[str, Any]):
        return self.executor.submit(self.worker, {**payload, "threads": self.threads})

    def submit_batch(self, payloads: list[dict[str, Any]]) -> list[Any]:
        """All cells at once; as one job array when ``array: true`` on a SLURM cluster."""
        if self.config.array and self.executor.cluster == "slurm":
            with self.executor.batch():
                jobs = [self.submit(p) for p in payloads]
            return jobs
        return [self.submit(p) for p in payloads]

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            done = [h for h in handles if h.done()]
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))

    def result(self, handle) -> dict[str, Any]:
        try:
            return handle.result()
        except (self.submitit.core.utils.UncompletedJobError, self.submitit.core.utils.FailedJobError) as err:
            raise WorkerDied(
                f"SLURM job {handle.job_id} ended without a result: {str(err).splitlines()[0]}"
            ) from None

    def cancel(self, handle) -> None:
        try:
            handle.cancel(check=False)
        except Exception:  # already finished or not cancellable: nothing to do
            pass

    def close(self) -> None:
        pass
