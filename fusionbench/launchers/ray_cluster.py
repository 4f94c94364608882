"""``--launcher ray``: cells as Ray tasks with CPU/GPU resources, on a local or an existing cluster.

Without an address a local Ray instance is started with ``--jobs`` x ``cpus_per_cell`` CPUs (so
``--jobs 2`` runs two cells at once); ``--address auto`` or ``ray://host:10001`` joins a running
cluster, whose scheduler then places each cell where ``cpus_per_cell``/``gpus_per_cell`` are free.
A task is never retried by Ray (``max_retries=0``): a lost worker becomes an ``interrupted`` cell
that the next grid run resumes from its checkpoint, like with every other launcher.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from fusionbench.errors import ConfigError
from fusionbench.launchers.base import RayConfig, WorkerDied

ENV_PREFIXES = ("FUSIONBENCH_", "HF_", "WANDB_", "TRANSFORMERS_", "TORCH_HOME", "PYTHONPATH")


class RayLauncher:
    def __init__(
        self, worker: Callable[[dict[str, Any]], dict[str, Any]], config: RayConfig, *, jobs: int = 1
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "--launcher ray needs Ray: pip install ray (or fusionbench[cluster])."
            ) from None
        self.ray = ray
        env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
        self.started = not ray.is_initialized()
        if self.started:
            kwargs: dict[str, Any] = dict(
                include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env}
            )
            if config.address:
                kwargs["address"] = config.address
            else:
                kwargs["num_cpus"] = max(1, jobs) * max(1.0, config.cpus_per_cell)
            ray.init(**kwargs)
        # max_calls=1: a fresh worker process per cell, so its peak memory is the cell's own
        self.task = ray.remote(max_calls=1)(worker).options(
            num_cpus=config.cpus_per_cell, num_gpus=config.gpus_per_cell, max_retries=0
        )
        self.threads = max(1, int(config.cpus_per_cell))
        self.parallel = max(1, jobs) if not config.address else 10**6

    def submit(self, payload: dict[str, Any]):
        return self.task.remote({**payload, "threads": self.threads})

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        done, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        return list(done)

    def result(self, handle) -> dict[str, Any]:
        try:
            return self.ray.get(handle)
        except (
            self.ray.exceptions.WorkerCrashedError,
            self.ray.exceptions.NodeDiedError,
            self.ray.exceptions.TaskCancelledError,
        ) as err:
            raise WorkerDied(f"Ray worker lost: {str(err).splitlines()[0]}") from None
        except self.ray.exceptions.RayTaskError as err:  # the cell function itself raised (should not)
            raise WorkerDied(f"Ray task failed: {str(err).splitlines()[0]}") from None

    def cancel(self, handle) -> None:
        self.ray.cancel(handle, force=True)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
