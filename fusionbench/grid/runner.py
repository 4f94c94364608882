"""Running a grid: every cell in turn, or through a launcher (``--jobs N`` processes, SLURM via
submitit, Ray; ``fusionbench.launchers``), failures isolated, resumable.

Each cell runs in a process of its own (``fusionbench.grid.execute``; a launcher's workers do
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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

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

from fusionbench.grid.execute import (
    REEVALUATE,
    TRAIN,
    base_record,
    cell_payload,
    cell_run_dir,
    execute_cell_in_own_process,
    run_cell_worker,
)
from fusionbench.grid.spec import Cell, Grid, config_hash, training_hash
from fusionbench.logs import quiet_known_noise
from fusionbench.metrics.coco import serve_meteor, start_meteor
from fusionbench.results import ResultsStore, now_iso

log = logging.getLogger(__name__)


@dataclass
class GridSummary:
    completed: list[str] = field(default_factory=list)  # trained, or re-evaluated, in this invocation
    skipped: list[str] = field(default_factory=list)
    reevaluated: list[str] = field(default_factory=list)  # of ``completed``: tested again, not trained
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: str | None = None
    seconds: float = 0.0
    wandb: dict[str, Any] | None = None  # the W&B grid summary run (fusionbench.tracking), if logged


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
        run_dir = cell_run_dir(cell)
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
                store.append(base_record(cell, action))
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
                    rec = {**base_record(cell, action), "status": "interrupted", "finished_at": now_iso()}
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
            store.append(base_record(cell, action(cell)))
        payloads = [cell_payload(c, c.name in resume, c.name in reevaluate) for c in cells]
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
                    rec = base_record(cell, action(cell))
                    rec.update(status="interrupted", error=f"worker died: {err}", finished_at=now_iso())
                    finish(rec)
    except KeyboardInterrupt:
        for handle, cell in pending.items():
            runner.cancel(handle)
            store.append(
                {**base_record(cell, action(cell)), "status": "interrupted", "finished_at": now_iso()}
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
