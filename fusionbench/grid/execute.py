"""One grid cell's execution: in this process, in a process of its own, or (a multi-process DDP
cell) as its own ``fusionbench run`` command; its results record either way.

``execute_cell`` never raises for a failing cell: an exception, a NaN loss or out of memory is a
``failed`` record with its error (the traceback in ``<run_dir>/error.log``).
``execute_cell_in_own_process`` runs it in a fresh process (``forkserver``), so the cell's cost
figures (peak memory) are its own and a crash or an out-of-memory kill is an ``interrupted`` record
that the next run resumes. ``run_cell_worker`` is the same for a launcher's workers
(``fusionbench.launchers``). Lightning's lines, logging and warnings of a cell go to
``<run_dir>/cell.log``. What to run, skip, resume or re-evaluate, and the grid's progress, are
``fusionbench.grid.runner``'s.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import OmegaConf

from fusionbench.grid.spec import Cell
from fusionbench.logs import log_to_file
from fusionbench.naming import components
from fusionbench.results import git_commit, now_iso, package_versions

log = logging.getLogger(__name__)
CELL_LOG = "cell.log"  # in each cell's run folder: Lightning's lines, logging and warnings of the cell
SUMMARY_KEYS = (
    "val",
    "test",
    "test_novel",
    "params",
    "cost",
    "training",
    "components",
    "decoding",
    "numerics",
)
# What a cell attempt does (the record's ``action``): train (or resume), or test a trained checkpoint.
TRAIN = "train"
REEVALUATE = "re-evaluate"
DIST_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "NODE_RANK",
    "GROUP_RANK",
    "LOCAL_WORLD_SIZE",
)


def cell_run_dir(cell: Cell) -> Path:
    from fusionbench.experiment import run_dir_for

    return run_dir_for(cell.config)


def needs_own_process(cfg) -> bool:
    """True when a cell trains on several processes (DDP over ``trainer.devices``/``num_nodes``).

    Lightning's DDP launcher starts the other ranks by re-running the command line, which must then
    be this one cell, not the whole grid: such a cell runs as ``fusionbench run <cell config>``.
    """
    import torch

    tc = cfg.trainer
    if int(tc.get("num_nodes", 1)) > 1:
        return True
    devices = tc.devices
    if OmegaConf.is_config(devices):
        devices = OmegaConf.to_container(devices)
    if isinstance(devices, (list, tuple)):
        return len(devices) > 1
    text = str(devices).strip()
    if text in ("-1", "auto"):  # every device of the accelerator
        return str(tc.accelerator) in ("gpu", "cuda", "auto") and torch.cuda.device_count() > 1
    if "," in text:
        return len([d for d in text.split(",") if d.strip()]) > 1
    return text.isdigit() and int(text) > 1


def execute_in_subprocess(cell: Cell, resume: bool) -> dict[str, Any]:
    """Run a multi-process cell as its own ``fusionbench run`` command; its metrics.json is the result."""
    import subprocess
    import sys

    from fusionbench.io import atomic_write_text

    run_dir = cell_run_dir(cell)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / "cell.yaml"
    atomic_write_text(config_file, OmegaConf.to_yaml(cell.config, resolve=True))
    cmd = [sys.executable, "-m", "fusionbench.cli", "run", str(config_file), "--no-progress"]
    # A cell run earlier in this process may have left torch.distributed's rendezvous variables
    # (MASTER_PORT, still bound here); the new run must choose its own.
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    proc = subprocess.run(
        cmd + (["--resume"] if resume else []), capture_output=True, text=True, check=False, env=env
    )
    with open(run_dir / CELL_LOG, "a", encoding="utf-8") as f:  # its console output, as its cell log
        f.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        (run_dir / "error.log").write_text(proc.stdout + "\n" + proc.stderr, encoding="utf-8")
        raise RuntimeError(f"`{' '.join(cmd)}` exited with {proc.returncode}: {tail[-1] if tail else ''}")
    import json

    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def execute_cell(
    cell: Cell, *, resume: bool, callbacks: list | None = None, reevaluate: bool = False
) -> dict[str, Any]:
    """Run one cell and return its results record (never raises for a failing cell).

    Lightning's per-run lines, logging and warnings go to ``<run_dir>/cell.log``, not the console
    (``fusionbench.logs.log_to_file``), so a grid's console keeps its own progress display.

    ``reevaluate=True`` tests the cell's trained ``best.ckpt`` with its config's test-time settings
    (``fusionbench.experiment.reevaluate_run``) instead of training.
    """
    from fusionbench.experiment import reevaluate_run, run_experiment

    record = base_record(cell, REEVALUATE if reevaluate else TRAIN)
    start = time.perf_counter()
    try:
        with log_to_file(cell_run_dir(cell) / CELL_LOG):
            log.info(
                "cell %s (config hash %s) %s%s",
                cell.name,
                cell.hash,
                "is re-evaluated" if reevaluate else "starts",
                " (resuming)" if resume else "",
            )
            if reevaluate:
                own = needs_own_process(cell.config)
                metrics = reevaluate_run(cell.config, single_process=own, callbacks=callbacks)
            elif needs_own_process(cell.config):
                metrics = execute_in_subprocess(cell, resume)
            else:
                metrics = run_experiment(cell.config, progress=False, resume=resume, callbacks=callbacks)
        record.update(status="completed", metrics={k: metrics[k] for k in SUMMARY_KEYS if k in metrics})
    except Exception as err:  # a failing cell must not stop the grid
        message = f"{type(err).__name__}: {err}".strip()
        run_dir = cell_run_dir(cell)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        record.update(status="failed", error=message.splitlines()[0][:500] if message else type(err).__name__)
    record.update(finished_at=now_iso(), wall_seconds=time.perf_counter() - start)
    return record


def base_record(cell: Cell, action: str = TRAIN) -> dict[str, Any]:
    """A record's fields known before the attempt: ``hash`` (``config_hash``, decides skipping),
    ``train_hash`` and ``evaluation`` (``training_hash``, ``evaluation_settings``: decide
    re-evaluating) and ``action`` (``train`` or ``re-evaluate``)."""
    cfg = cell.config
    return {
        "cell": cell.name,
        "hash": cell.hash,
        "train_hash": cell.train_hash,
        "evaluation": cell.evaluation,
        "action": action,
        "status": "running",
        "error": None,
        "assignment": cell.assignment,
        "seed": cell.seed,
        "components": components(cfg),
        "run_dir": str(cell_run_dir(cell)),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "started_at": now_iso(),
    }


def run_cell_worker(payload: dict[str, Any], callbacks: list | None = None) -> dict[str, Any]:
    """Run one cell in a worker (a spawned process, a SLURM job, a Ray task); returns its record.

    ``payload``: the cell's resolved config as YAML, its name, assignment and hash, whether to
    resume, torch threads, and the driver's working directory (relative paths in the config mean
    the same thing wherever the worker starts).
    """
    import torch

    torch.set_num_threads(max(1, int(payload.get("threads") or 1)))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if payload.get("cwd"):
        os.chdir(payload["cwd"])
    cell = Cell(
        name=payload["name"],
        assignment=payload["assignment"],
        config=OmegaConf.create(payload["cell_yaml"]),
        hash=payload["hash"],
    )
    return execute_cell(
        cell, resume=bool(payload["resume"]), callbacks=callbacks, reevaluate=bool(payload.get("reevaluate"))
    )


class _SendEpochs(pl.Callback):
    """In a cell's own process: tells the grid process each finished epoch (for its progress bar)."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.conn.send(("epoch", (trainer.current_epoch + 1, trainer.max_epochs)))


def _cell_process_main(payload: dict[str, Any], conn) -> None:
    """The body of a cell's own process: the grid process's environment, the cell, its record back."""
    os.environ.clear()
    os.environ.update(payload.pop("environ"))
    _exit_with(payload.pop("grid_pid"))
    try:
        conn.send(("record", run_cell_worker(payload, callbacks=[_SendEpochs(conn)])))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the grid records it
        pass
    finally:
        conn.close()


def _exit_with(pid: int, every: float = 0.5) -> None:
    """End this process soon after process ``pid`` (the grid) ends, e.g. killed with ``kill -9``:
    the next run of the grid resumes the cell, and must not find this one still training it."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(every)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(70)
            except OSError:  # exists, but not ours to signal
                pass

    threading.Thread(target=watch, name="fusionbench grid watch", daemon=True).start()


#: Imported once by the server that forks the cells' processes (only a speed-up: a cell imports what
#: is missing): the run's code and the built-in components of ``fusionbench.registry``.
CELL_PRELOAD = (
    "fusionbench.experiment",
    "fusionbench.data.shapes",
    "fusionbench.encoders.cnn",
    "fusionbench.encoders.vit",
    "fusionbench.encoders.regions",
    "fusionbench.fusion.early",
    "fusionbench.fusion.late",
    "fusionbench.fusion.attention",
    "fusionbench.decoders.lstm",
    "fusionbench.decoders.transformer",
    "fusionbench.decoders.bert",
)


def cell_process_context():
    """The ``multiprocessing`` context of a grid cell's own process: ``forkserver`` where the platform
    has it (a server that imported torch and Lightning once and never computed forks one clean
    process per cell, cheaply; forking the grid process itself could hang in OpenMP after anything
    in it ran a parallel torch operation), ``spawn`` elsewhere."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(CELL_PRELOAD))
        return ctx
    return multiprocessing.get_context("spawn")


def execute_cell_in_own_process(
    cell: Cell, *, resume: bool, reevaluate: bool = False, on_epoch=None
) -> dict[str, Any]:
    """``execute_cell`` in a new process of its own; returns its record (never raises for the cell).

    Each cell gets a fresh process, so what it measures is its own (``cost.peak_memory_mb`` is the
    cell's peak RSS, not the high-water mark of every cell before it), and a crash or an
    out-of-memory kill of the cell is an ``interrupted`` record (resumed by the next run), not the
    end of the grid. The process
    gets this one's environment, working directory and torch threads, so it computes what
    ``execute_cell`` here would, bit for bit. ``on_epoch(done, total)`` is called here after each
    of its training epochs. Ctrl-C stops it and is raised here.
    """
    import torch

    ctx = cell_process_context()
    receive, send = ctx.Pipe(duplex=False)
    payload = {
        **cell_payload(cell, resume, reevaluate),
        "threads": torch.get_num_threads(),
        "environ": {k: v for k, v in os.environ.items() if k not in DIST_ENV},
        "grid_pid": os.getpid(),
    }
    proc = ctx.Process(target=_cell_process_main, args=(payload, send), name=f"fusionbench cell {cell.name}")
    record = None
    proc.start()
    send.close()
    try:
        while True:
            try:
                kind, value = receive.recv()
            except EOFError:  # the process has ended (its end of the pipe is closed)
                break
            if kind == "epoch" and on_epoch is not None:
                on_epoch(*value)
            elif kind == "record":
                record = value
        proc.join()
    except BaseException:
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        raise
    finally:
        receive.close()
    if record is None:
        record = died_record(cell, REEVALUATE if reevaluate else TRAIN, proc.exitcode)
    return record


def died_record(cell: Cell, action: str, exitcode: int | None) -> dict[str, Any]:
    """The record of a cell whose process ended without a result (killed, crashed): ``interrupted``
    with the reason, as a launcher's dead worker is, so the next run resumes it from ``last.ckpt``."""
    import signal

    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        why = f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        why = f"exited with code {exitcode}"
    error = f"worker died: the cell's process {why} before it finished"
    return {**base_record(cell, action), "status": "interrupted", "error": error, "finished_at": now_iso()}


def cell_payload(cell: Cell, resume: bool, reevaluate: bool = False) -> dict[str, Any]:
    return {
        "cell_yaml": OmegaConf.to_yaml(cell.config),
        "name": cell.name,
        "assignment": cell.assignment,
        "hash": cell.hash,
        "resume": resume,
        "reevaluate": reevaluate,
        "cwd": os.getcwd(),
    }
