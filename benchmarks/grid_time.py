"""Wall time of a grid on this machine: ``fusionbench run <grid> --force`` into a temporary folder.

The grid runs in a child process exactly as a user would run it (``--force`` so no cell is skipped,
results and leaderboard in a temporary folder so nothing in the repository changes, W&B off unless
``--wandb``). Prints the time per cell (from the grid's ``results.jsonl``) and in all, and writes
``benchmarks/results/grid_time.json``.

    python benchmarks/grid_time.py                          # experiments/grid.yaml, the default grid
    python benchmarks/grid_time.py tests/configs/tiny_grid.yaml --out grid_time_tiny
    python benchmarks/grid_time.py experiments/grid.yaml --jobs 2
    python benchmarks/grid_time.py experiments/grid.yaml --launcher ray --jobs 2
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
    args = parser.parse_args(argv)

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
