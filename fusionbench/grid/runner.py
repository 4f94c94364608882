"""Running a grid: every cell in turn, or through a launcher (``--jobs N`` processes, SLURM via
submitit, Ray; ``fusionbench.launchers``), failures isolated, resumable.

Each cell runs in a process of its own (``execute_cell_in_own_process``; a launcher's workers do
the same), so its cost figures (peak memory) are the cell's alone. A cell that raises (an
exception, a NaN loss, out of memory) is recorded as ``failed`` with its error and the traceback
in ``<run_dir>/error.log``; one whose process dies (killed, crashed) as ``interrupted`` with the
reason, to be resumed by the next run; the grid goes on. A cell's Lightning lines,
logging and warnings go to ``<run_dir>/cell.log``; the console keeps the grid's progress and one
line per finished cell. Running the same grid again skips cells whose last record is
``completed`` with the same config hash, re-evaluates a finished cell whose config differs only
in test-time settings (same ``training_hash``: e.g. another ``decoding.beam_size``) from its
``checkpoints/best.ckpt`` without training, and continues an interrupted cell from its
``last.ckpt``. Ctrl-C records the current cell as ``interrupted`` (no result file is
half-written: every file is written atomically) and stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
from omegaconf import OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fusionbench.grid import Cell, Grid
from fusionbench.grid.spec import config_hash, training_hash
from fusionbench.logs import log_to_file, quiet_known_noise
from fusionbench.metrics.coco import serve_meteor, start_meteor
from fusionbench.naming import components
from fusionbench.results import ResultsStore, git_commit, now_iso, package_versions

log = logging.getLogger(__name__)
CELL_LOG = "cell.log"  # in each cell's run folder: Lightning's lines, logging and warnings of the cell
SUMMARY_KEYS = ("val", "test", "test_novel", "params", "cost", "training", "components", "decoding")
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


@dataclass
class GridSummary:
    completed: list[str] = field(default_factory=list)  # trained, or re-evaluated, in this invocation
    skipped: list[str] = field(default_factory=list)
    reevaluated: list[str] = field(default_factory=list)  # of ``completed``: tested again, not trained
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: str | None = None
    seconds: float = 0.0
    wandb: dict[str, Any] | None = None  # the W&B grid summary run (fusionbench.tracking), if logged


def _run_dir(cell: Cell) -> Path:
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

    run_dir = _run_dir(cell)
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

    record = _base_record(cell, REEVALUATE if reevaluate else TRAIN)
    start = time.perf_counter()
    try:
        with log_to_file(_run_dir(cell) / CELL_LOG):
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
        run_dir = _run_dir(cell)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        record.update(status="failed", error=message.splitlines()[0][:500] if message else type(err).__name__)
    record.update(finished_at=now_iso(), wall_seconds=time.perf_counter() - start)
    return record


def _base_record(cell: Cell, action: str = TRAIN) -> dict[str, Any]:
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
        "run_dir": str(_run_dir(cell)),
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
        **_payload(cell, resume, reevaluate),
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
        record = _died_record(cell, REEVALUATE if reevaluate else TRAIN, proc.exitcode)
    return record


def _died_record(cell: Cell, action: str, exitcode: int | None) -> dict[str, Any]:
    """The record of a cell whose process ended without a result (killed, crashed): ``interrupted``
    with the reason, as a launcher's dead worker is, so the next run resumes it from ``last.ckpt``."""
    import signal

    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        why = f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        why = f"exited with code {exitcode}"
    error = f"worker died: the cell's process {why} before it finished"
    return {**_base_record(cell, action), "status": "interrupted", "error": error, "finished_at": now_iso()}


def _payload(cell: Cell, resume: bool, reevaluate: bool = False) -> dict[str, Any]:
    return {
        "cell_yaml": OmegaConf.to_yaml(cell.config),
        "name": cell.name,
        "assignment": cell.assignment,
        "hash": cell.hash,
        "resume": resume,
        "reevaluate": reevaluate,
        "cwd": os.getcwd(),
    }


class Plan(NamedTuple):
    """What running a grid again does with each cell: ``todo`` (to run, in order), ``skip``
    (finished with this config), and the names in ``todo`` to ``resume`` from ``last.ckpt`` or to
    ``reevaluate`` from ``best.ckpt`` (trained with the same ``training_hash``)."""

    todo: list[Cell]
    skip: list[Cell]
    resume: set[str]
    reevaluate: set[str]

    def action(self, cell: Cell) -> str:
        """``skip``, ``re-evaluate``, ``resume`` or ``train``."""
        if cell.name in self.reevaluate:
            return REEVALUATE
        if cell.name in self.resume:
            return "resume"
        return "skip" if any(c.name == cell.name for c in self.skip) else TRAIN


def _trained_with(record: dict[str, Any], run_dir: Path) -> str | None:
    """The training hash of the checkpoint a completed record left in ``run_dir``.

    Records written before training hashes were stored lack ``train_hash``; for those it is
    computed from the run folder's ``config.yaml``, provided that file is the config the record
    ran (its ``config_hash`` equals the record's ``hash``). Otherwise None: the cell is retrained.
    """
    if record.get("train_hash"):
        return str(record["train_hash"])
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return None
    try:
        cfg = OmegaConf.load(saved)
        return training_hash(cfg) if config_hash(cfg) == record.get("hash") else None
    except Exception:  # an unreadable or foreign config.yaml: retrain rather than guess
        return None


def plan(grid: Grid, store: ResultsStore, force: bool) -> Plan:
    """Which cells to skip (finished, unchanged), which to run, and which of those to resume or to
    re-evaluate (finished, trained as this config would train, tested differently)."""
    latest = store.latest()
    trained = store.trained()
    todo, skip, resume, reevaluate = [], [], set(), set()
    for cell in grid.cells:
        rec = latest.get(cell.name)
        run_dir = _run_dir(cell)
        finished = (
            rec is not None
            and rec.get("status") == "completed"
            and rec.get("hash") == cell.hash
            and (run_dir / "metrics.json").is_file()
        )
        if finished and not force:
            skip.append(cell)
            continue
        todo.append(cell)
        if force:
            continue
        base = trained.get(cell.name)
        if (
            base is not None
            and (run_dir / "checkpoints" / "best.ckpt").is_file()
            and (run_dir / "metrics.json").is_file()
            and _trained_with(base, run_dir) == cell.train_hash
        ):
            reevaluate.add(cell.name)
        elif (
            rec is not None
            and rec.get("hash") == cell.hash
            and rec.get("status") in ("running", "interrupted")
            and (run_dir / "checkpoints" / "last.ckpt").is_file()
        ):
            resume.add(cell.name)
    return Plan(todo, skip, resume, reevaluate)


def run_grid(
    grid: Grid,
    *,
    jobs: int = 1,
    force: bool = False,
    progress: bool = True,
    console: Console | None = None,
    launcher: str = "local",
    address: str | None = None,
) -> GridSummary:
    """Run every cell of ``grid`` not already finished; returns what happened.

    ``launcher='local'`` with ``jobs=1`` runs the cells one after another, each in a fresh process
    of its own (``execute_cell_in_own_process``), with a progress bar per epoch; otherwise cells go
    to ``fusionbench.launchers`` (``local`` processes, ``slurm``, ``ray``), at most ``jobs`` at once
    on this machine. As in any ``multiprocessing`` program, a script that calls this guards its
    top level with ``if __name__ == "__main__":`` (the cell's process imports the main module).
    """
    console = console or Console(stderr=True)
    quiet_known_noise()
    store = ResultsStore(grid.results_dir)
    store.claim(
        grid.name,
        grid.source,
        force=force,
        leaderboard=dataclasses.asdict(grid.leaderboard),
        settings=grid.settings,
    )
    todo, skipped, resume, reevaluate = plan(grid, store, force)
    summary = GridSummary(skipped=[c.name for c in skipped])
    start = time.perf_counter()
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    # One METEOR JVM, in this process, for every cell's process (fusionbench.metrics.meteor_service);
    # it boots while the first cell trains.
    meteor = serve_meteor() if todo else contextlib.nullcontext()
    with meteor, Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        if todo:
            start_meteor(warm=True)
        overall = bar.add_task(
            _describe(summary, len(grid.cells), reevaluate), total=len(grid.cells), completed=len(skipped)
        )

        def finish(record: dict[str, Any]) -> None:
            store.append(record)
            if record["status"] == "completed":
                summary.completed.append(record["cell"])
                if record.get("action") == REEVALUATE:
                    summary.reevaluated.append(record["cell"])
                console.print(finished_line(record), highlight=False)
            else:
                summary.failed[record["cell"]] = record.get("error") or "failed"
                where = Path(record.get("run_dir") or ".") / "error.log"
                console.print(
                    f"[red]cell {record['cell']} failed:[/red] {escape(str(record.get('error')))}"
                    + (f" (traceback in {where})" if record["status"] == "failed" else ""),
                    highlight=False,
                )
            bar.update(overall, advance=1, description=_describe(summary, len(grid.cells), reevaluate))

        if jobs <= 1:
            for cell in todo:
                again = cell.name in reevaluate
                action = REEVALUATE if again else TRAIN
                store.append(_base_record(cell, action))
                epochs = bar.add_task(
                    f"  {cell.name} (re-evaluate: no training)" if again else f"  {cell.name}",
                    total=1 if again else int(cell.config.trainer.max_epochs),
                )
                try:
                    record = execute_cell_in_own_process(
                        cell,
                        resume=cell.name in resume,
                        reevaluate=again,
                        on_epoch=lambda done, total, task=epochs: bar.update(
                            task, completed=done, total=total
                        ),
                    )
                except (KeyboardInterrupt, SystemExit):
                    rec = {**_base_record(cell, action), "status": "interrupted", "finished_at": now_iso()}
                    store.append(rec)
                    summary.interrupted = cell.name
                    break
                finally:
                    bar.remove_task(epochs)
                finish(record)
        else:
            _run_launched(
                grid,
                store,
                todo,
                resume,
                finish,
                summary,
                jobs=jobs,
                launcher=launcher,
                address=address,
                reevaluate=reevaluate,
            )
    summary.seconds = time.perf_counter() - start
    if not summary.interrupted and (summary.completed or summary.skipped):
        from fusionbench.tracking import log_grid_summary  # no-op when logger.wandb.mode is disabled

        summary.wandb = log_grid_summary(grid)
    return summary


def _run_launched(
    grid: Grid,
    store: ResultsStore,
    todo: list[Cell],
    resume: set[str],
    finish,
    summary: GridSummary,
    *,
    jobs: int,
    launcher: str,
    address: str | None,
    reevaluate: set[str] | None = None,
) -> None:
    """Submit cells to a launcher (at most ``launcher.parallel`` outstanding) and record each result."""
    from fusionbench.launchers import LauncherConfig, WorkerDied, make_launcher

    runner = make_launcher(
        launcher,
        run_cell_worker,
        jobs=jobs,
        config=grid.launcher or LauncherConfig(),
        results_dir=grid.results_dir,
        address=address,
    )
    reevaluate = reevaluate or set()
    queue = list(todo)
    pending: dict[Any, Cell] = {}

    def action(cell: Cell) -> str:
        return REEVALUATE if cell.name in reevaluate else TRAIN

    def submit(cells: list[Cell]) -> None:
        for cell in cells:
            store.append(_base_record(cell, action(cell)))
        payloads = [_payload(c, c.name in resume, c.name in reevaluate) for c in cells]
        batch = getattr(runner, "submit_batch", None)
        handles = batch(payloads) if batch and len(cells) > 1 else [runner.submit(p) for p in payloads]
        pending.update(zip(handles, cells))

    try:
        if runner.parallel >= len(queue):
            submit(queue)
            queue = []
        while queue or pending:
            room = runner.parallel - len(pending)
            if queue and room > 0:
                submit(queue[:room])
                queue = queue[room:]
            for handle in runner.wait(list(pending), timeout=5.0):
                cell = pending.pop(handle)
                try:
                    finish(runner.result(handle))
                except WorkerDied as err:
                    # Not the cell's fault: record it as interrupted so the next run resumes it.
                    rec = _base_record(cell, action(cell))
                    rec.update(status="interrupted", error=f"worker died: {err}", finished_at=now_iso())
                    finish(rec)
    except KeyboardInterrupt:
        for handle, cell in pending.items():
            runner.cancel(handle)
            store.append(
                {**_base_record(cell, action(cell)), "status": "interrupted", "finished_at": now_iso()}
            )
        summary.interrupted = ", ".join(c.name for c in [*pending.values(), *queue]) or "the grid"
    finally:
        runner.close()


def finished_line(record: dict[str, Any]) -> str:
    """The one console line of a finished cell: validation and test CIDEr-D (x100), wall time.

    Short enough for an 80-column terminal with the default grid's longest cell name.
    """
    metrics = record.get("metrics") or {}
    scores = [
        f"{split} {100 * metrics[split]['CIDEr']:.1f}"
        for split in ("val", "test")
        if isinstance((metrics.get(split) or {}).get("CIDEr"), (int, float))
    ]
    shown = f": CIDEr x100 {' '.join(scores)}" if scores else ""
    seconds = record.get("wall_seconds")
    took = f" ({seconds:.0f}s)" if isinstance(seconds, (int, float)) else ""
    return f"[green]done[/green] {record['cell']}{shown}{took}"


def _describe(summary: GridSummary, total: int, reevaluate: set[str] | None = None) -> str:
    done = len(summary.completed) + len(summary.skipped)
    again = len(set(reevaluate or ()) - set(summary.completed) - set(summary.failed))
    to_go = total - done - len(summary.failed)
    return (
        f"grid: {done} done ({len(summary.skipped)} skipped, {len(summary.reevaluated)} re-evaluated), "
        f"[red]{len(summary.failed)} failed[/red], {to_go} to go"
        + (f" ({again} to re-evaluate, without training)" if again > 0 else "")
    )
