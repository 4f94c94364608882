"""Wall time of a grid on this machine: ``fusionbench run <grid> --force`` into a temporary folder.

The grid runs in a child process exactly as a user would run it (``--force`` so no cell is skipped,
results and leaderboard in a temporary folder so nothing in the repository changes, W&B off unless
``--wandb``). Prints the time per cell (from the grid's ``results.jsonl``) and in all, and writes
``benchmarks/results/grid_time.json``.

    python benchmarks/grid_time.py                          # experiments/grid.yaml, the default grid
    python benchmarks/grid_time.py tests/configs/tiny_grid.yaml --out grid_time_tiny
    python benchmarks/grid_time.py experiments/grid.yaml --jobs 2
    python benchmarks/grid_time.py experiments/grid.yaml --launcher ray --jobs 2

``--compare BEFORE AFTER`` times nothing: it reads two finished grids' results folders (e.g. the
default grid before and after a change of its budget) and prints, per configuration, the mean
cell time, epochs trained and test CIDEr-D (mean +- std over seeds) of each, and their ratio and
difference; written to ``benchmarks/results/grid_time_compare.json`` (``--out`` names it):

    python benchmarks/grid_time.py --compare runs/old-grid runs/shapes-grid --out grid_time_compare
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, write_result  # noqa: E402


def last_records(results_file: Path) -> dict[str, dict]:
    """The last record of every cell in a grid's results.jsonl."""
    records: dict[str, dict] = {}
    if results_file.is_file():
        for line in results_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                records[rec["cell"]] = rec
    return records


def folder_cells(folder: Path) -> dict[str, dict]:
    """Per completed cell of a results folder: its configuration, seed, times, epochs and scores."""
    out: dict[str, dict] = {}
    for name, rec in last_records(folder / "results.jsonl").items():
        if rec.get("status") != "completed":
            continue
        run_dir = Path(str(rec.get("run_dir") or ""))
        if not run_dir.is_absolute() and not run_dir.exists():
            run_dir = folder / run_dir.name
        try:
            metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        cost, training = metrics.get("cost") or {}, metrics.get("training") or {}
        out[name] = {
            "configuration": name.rsplit("-s", 1)[0],
            "seed": rec.get("seed"),
            "wall_seconds": cost.get("wall_seconds"),
            "epochs": training.get("epochs_trained"),
            "test_CIDEr": (metrics.get("test") or {}).get("CIDEr"),
            "test_images": ((metrics.get("data") or {}).get("test") or {}).get("images"),
            "started_at": rec.get("started_at"),
        }
    return out


def grid_span_seconds(folder: Path) -> float | None:
    """First cell start to last cell finish of a results folder (its records' timestamps)."""
    from datetime import datetime

    stamps = []
    for rec in last_records(folder / "results.jsonl").values():
        for key in ("started_at", "finished_at"):
            if rec.get(key):
                stamps.append(datetime.fromisoformat(str(rec[key])))
    return (max(stamps) - min(stamps)).total_seconds() if stamps else None


def compare(before: Path, after: Path, out: str) -> int:
    """Per configuration: mean cell time, epochs and test CIDEr-D of two results folders."""
    import statistics

    from rich.console import Console
    from rich.table import Table

    def by_config(cells: dict[str, dict]) -> dict[str, list[dict]]:
        groups: dict[str, list[dict]] = {}
        for cell in cells.values():
            groups.setdefault(cell["configuration"], []).append(cell)
        return groups

    def mean(values):
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else None

    def std(values):
        values = [v for v in values if v is not None]
        return statistics.stdev(values) if len(values) > 1 else None

    old, new = by_config(folder_cells(before)), by_config(folder_cells(after))
    rows = []
    for config in sorted(set(old) & set(new)):
        row = {"configuration": config}
        for side, groups in (("before", old), ("after", new)):
            cells = groups[config]
            row[side] = {
                "seeds": sorted(c["seed"] for c in cells),
                "wall_seconds": mean(c["wall_seconds"] for c in cells),
                "epochs": mean(c["epochs"] for c in cells),
                "test_CIDEr_mean": mean(c["test_CIDEr"] for c in cells),
                "test_CIDEr_std": std(c["test_CIDEr"] for c in cells),
                "test_images": cells[0]["test_images"],
            }
        b, a = row["before"], row["after"]
        row["time_ratio"] = a["wall_seconds"] / b["wall_seconds"] if b["wall_seconds"] else None
        row["test_CIDEr_change"] = (
            a["test_CIDEr_mean"] - b["test_CIDEr_mean"]
            if a["test_CIDEr_mean"] is not None and b["test_CIDEr_mean"] is not None
            else None
        )
        rows.append(row)
    console = Console(width=140)
    table = Table(
        title=f"{before} -> {after}: mean cell wall s, epochs trained, test CIDEr-D x100 (mean ± std over seeds)"
    )
    for col in (
        "configuration",
        "s before",
        "s after",
        "ratio",
        "epochs",
        "CIDEr before",
        "CIDEr after",
        "change",
    ):
        table.add_column(col, justify="left" if col == "configuration" else "right")

    def score(side: dict) -> str:
        m, s = side["test_CIDEr_mean"], side["test_CIDEr_std"]
        return "-" if m is None else f"{100 * m:.1f}" + ("" if s is None else f" ± {100 * s:.1f}")

    for r in rows:
        b, a = r["before"], r["after"]
        table.add_row(
            r["configuration"],
            f"{b['wall_seconds']:.0f}",
            f"{a['wall_seconds']:.0f}",
            f"{r['time_ratio']:.2f}",
            f"{b['epochs']:.1f} -> {a['epochs']:.1f}",
            score(b),
            score(a),
            "-" if r["test_CIDEr_change"] is None else f"{100 * r['test_CIDEr_change']:+.1f}",
        )
    console.print(table)
    spans = {"before": grid_span_seconds(before), "after": grid_span_seconds(after)}
    cells = {"before": sum(len(v) for v in old.values()), "after": sum(len(v) for v in new.values())}
    changes = [r["test_CIDEr_change"] for r in rows if r["test_CIDEr_change"] is not None]
    summary = {
        "configurations": len(rows),
        "cells": cells,
        "grid_seconds": spans,
        "median_time_ratio": statistics.median(r["time_ratio"] for r in rows) if rows else None,
        "median_test_CIDEr_change": statistics.median(changes) if changes else None,
        "configurations_better": sum(c > 0 for c in changes),
    }
    console.print(
        f"grid: {cells['before']} cells in {(spans['before'] or 0) / 60:.1f} min -> {cells['after']} cells in "
        f"{(spans['after'] or 0) / 60:.1f} min; median cell time ratio {summary['median_time_ratio']:.2f}; "
        f"median test CIDEr-D change {100 * (summary['median_test_CIDEr_change'] or 0):+.1f} "
        f"({summary['configurations_better']} of {len(changes)} configurations higher)"
    )
    path = write_result(
        out,
        {
            "benchmark": "grid_time_compare",
            "before": str(before),
            "after": str(after),
            "summary": summary,
            "rows": rows,
            "machine": machine(),
        },
    )
    console.print(f"written {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("grid", nargs="?", default=str(ROOT / "experiments" / "grid.yaml"))
    parser.add_argument("overrides", nargs="*", help="dotlist overrides passed to fusionbench run")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--launcher", default="local", choices=["local", "slurm", "ray"])
    parser.add_argument("--wandb", action="store_true", help="keep the grid's W&B logging (default: off)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary output folder")
    parser.add_argument("--out", default="grid_time", help="results file stem in benchmarks/results/")
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("BEFORE", "AFTER"),
        help="compare two finished grids' results folders (no timing run)",
    )
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare, out=args.out if args.out != "grid_time" else "grid_time_compare")

    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    grid = Path(args.grid)
    if not grid.is_file():
        console.print(
            f"[red]grid file {grid} does not exist[/red]; pass the grid YAML as the first argument."
        )
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="fusionbench-grid-time-"))
    cmd = [
        sys.executable,
        "-c",
        "import sys; from fusionbench.cli import main; sys.exit(main())",
        "run",
        str(grid),
        f"output_dir={tmp / 'runs'}",
        *args.overrides,
        "--force",
        "--no-progress",
        "--jobs",
        str(args.jobs),
        "--launcher",
        args.launcher,
        "--leaderboard-dir",
        str(tmp / "leaderboards"),
    ]
    env = dict(os.environ)
    if not args.wandb:
        env["WANDB_MODE"] = "disabled"
    console.print(f"running: fusionbench {' '.join(cmd[3:])}")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, check=False)
    wall = time.perf_counter() - start

    results = sorted((tmp / "runs").glob("*/results.jsonl"))
    records = last_records(results[0]) if results else {}
    cells = [
        {
            "cell": name,
            "status": rec.get("status"),
            "wall_seconds": rec.get("wall_seconds"),
            "train_seconds": ((rec.get("metrics") or {}).get("cost") or {}).get("train_seconds"),
            "epochs": ((rec.get("metrics") or {}).get("cost") or {}).get("epochs"),
        }
        for name, rec in records.items()
    ]
    table = Table(
        title=f"Grid wall time: {grid} ({len(cells)} cells, --launcher {args.launcher} --jobs {args.jobs})"
    )
    for col in ("cell", "status", "wall s", "train s", "epochs"):
        table.add_column(col, justify="left" if col in ("cell", "status") else "right")
    for c in cells:
        fmt = lambda v: f"{v:.1f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
        table.add_row(
            c["cell"], str(c["status"]), fmt(c["wall_seconds"]), fmt(c["train_seconds"]), str(c["epochs"])
        )
    cell_sum = sum(c["wall_seconds"] or 0.0 for c in cells)
    table.add_row("[b]whole grid (process wall time)[/b]", f"exit {proc.returncode}", f"{wall:.1f}", "", "")
    console.print(table)
    console.print(
        f"sum of cell times {cell_sum:.1f} s; start-up, scheduling and leaderboard {wall - cell_sum:.1f} s"
        if args.jobs == 1
        else f"sum of cell times {cell_sum:.1f} s over {args.jobs} parallel jobs"
    )
    path = write_result(
        args.out,
        {
            "benchmark": "grid_time",
            "grid": str(grid),
            "overrides": list(args.overrides),
            "jobs": args.jobs,
            "launcher": args.launcher,
            "wandb": bool(args.wandb),
            "exit_code": proc.returncode,
            "wall_seconds": wall,
            "cells": cells,
            "cells_completed": sum(c["status"] == "completed" for c in cells),
            "cells_failed": sum(c["status"] == "failed" for c in cells),
            "sum_of_cell_wall_seconds": cell_sum,
            "machine": machine(),
        },
    )
    console.print(f"written {path}")
    if args.keep:
        console.print(f"outputs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
