"""Grid wall time by launcher: sequential vs ``--launcher local --jobs 2`` vs Ray with 2 workers.

Runs ``benchmarks/grid_time.py`` three times on the same grid (default: ``launcher_grid.yaml``,
4 smoke-sized cells of 2 epochs) and prints the comparison; per-launcher details go to
``benchmarks/results/grid_time_<launcher>.json``, the comparison to ``launchers.json``. On a
2-core machine two parallel cells get one torch thread each, so the gain comes from overlapping
what does not use both cores (start-up, data loading, Java scoring, decoding).

    python benchmarks/launchers.py [grid.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grid_time  # noqa: E402
from _common import RESULTS, machine, write_result  # noqa: E402

RUNS = (("sequential", "local", 1), ("local --jobs 2", "local", 2), ("ray, 2 workers", "ray", 2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", nargs="?", default=str(Path(__file__).with_name("launcher_grid.yaml")))
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    rows = []
    for label, launcher, jobs in RUNS:
        out = f"grid_time_{label.split(',')[0].replace(' --jobs 2', '_jobs2').replace(' ', '_')}"
        code = grid_time.main([args.grid, "--launcher", launcher, "--jobs", str(jobs), "--out", out])
        data = json.loads((RESULTS / f"{out}.json").read_text())
        rows.append(
            {
                "run": label,
                "launcher": launcher,
                "jobs": jobs,
                "exit_code": code,
                "wall_seconds": data["wall_seconds"],
                "cells_completed": data["cells_completed"],
                "sum_of_cell_wall_seconds": data["sum_of_cell_wall_seconds"],
            }
        )
    base = rows[0]["wall_seconds"]
    table = Table(title=f"grid wall time by launcher: {args.grid}")
    for col in ("run", "cells", "wall s", "speed-up"):
        table.add_column(col, justify="right")
    for r in rows:
        r["speedup"] = base / r["wall_seconds"]
        table.add_row(r["run"], str(r["cells_completed"]), f"{r['wall_seconds']:.1f}", f"x{r['speedup']:.2f}")
    Console(width=120).print(table)
    path = write_result("launchers", {"grid": args.grid, "rows": rows, "machine": machine()})
    print(f"wrote {path}")
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
