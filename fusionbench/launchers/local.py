"""``--launcher local --jobs N``: cells in N spawned processes on this machine."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from fusionbench.launchers.base import WorkerDied


class ProcessLauncher:
    """A spawn-context process pool; each worker gets ``cpu_count // N`` torch threads and runs one
    cell only (a fresh process per cell: its peak memory is the cell's own)."""

    def __init__(self, worker: Callable[[dict[str, Any]], dict[str, Any]], jobs: int) -> None:
        self.worker = worker
        self.parallel = max(1, jobs)
        self.threads = max(1, (os.cpu_count() or 1) // self.parallel)
        self.pool = ProcessPoolExecutor(
            max_workers=self.parallel, mp_context=get_context("spawn"), max_tasks_per_child=1
        )

    def submit(self, payload: dict[str, Any]) -> Future:
        return self.pool.submit(self.worker, {**payload, "threads": self.threads})

    def wait(self, handles: list[Future], timeout: float) -> list[Future]:
        done, _ = wait_futures(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, handle: Future) -> dict[str, Any]:
        try:
            return handle.result()
        except BrokenProcessPool as err:
            raise WorkerDied(f"a worker process died ({err})") from None

    def cancel(self, handle: Future) -> None:
        handle.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
