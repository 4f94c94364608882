"""The committed leaderboard is what HEAD produces.

A change that alters numerics (random-number consumption, a default, a layer) silently makes
``leaderboards/shapes.*`` stale. This test reruns the cheapest committed cell of the default grid
(its first seed) for its full budget and compares its test CIDEr-D with that seed's committed
number (``test_CIDEr_by_seed``), to the last bit (a run is deterministic on CPU for a given config
and seed). When it fails, regenerate the
leaderboard with the README's main command on an idle machine and commit it.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "leaderboards" / "shapes.csv"
GRID = ROOT / "experiments" / "grid.yaml"
REGENERATE = "fusionbench run experiments/grid.yaml  (on an idle machine, at your final commit; then commit leaderboards/)"


def first_cell(row: dict[str, str]) -> str:
    return row["cells"].split()[0].split(";")[0]


def seed_score(row: dict[str, str], cell: str) -> float:
    """The committed test CIDEr-D of one seed's cell of a row (``test_CIDEr_by_seed``)."""
    by_seed = dict(pair.split(":", 1) for pair in row["test_CIDEr_by_seed"].split(";"))
    seed = cell.rsplit("-s", 1)[1]
    return float(by_seed[seed])


def cheapest_cell(csv_path: Path) -> dict[str, str]:
    """The committed row that took the least wall time, with the name of its first seed's cell."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("wall_seconds") and r.get("test_CIDEr_by_seed")]
    row = min(rows, key=lambda r: float(r["wall_seconds"]))
    return {**row, "cell": first_cell(row)}


def stale_message(csv_path: Path, cell: str, produced: float) -> str | None:
    """Why the committed leaderboard does not match ``produced`` for ``cell`` (None when it does)."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = {first_cell(r): r for r in csv.DictReader(f)}
    committed = seed_score(rows[cell], cell)
    if committed == produced:
        return None
    return (
        f"{csv_path.name} is stale: cell {cell} has test CIDEr-D {committed!r} there, but HEAD produces "
        f"{produced!r}. Regenerate the committed leaderboard: {REGENERATE}"
    )


@pytest.fixture(scope="module")
def rerun(tmp_path_factory):
    """The cheapest committed cell, trained again from the default grid for its full budget.

    As ``fusionbench run`` in a fresh process, as the grid runs each cell: this test process's
    state (e.g. torch's thread count, which other test modules lower) must not change the numbers."""
    from fusionbench.grid import load_grid
    from fusionbench.grid.execute import execute_in_subprocess

    row = cheapest_cell(COMMITTED)
    out = tmp_path_factory.mktemp("committed")
    grid = load_grid(GRID, [f"output_dir={out}", "logger.wandb.mode=disabled"])
    (cell,) = [c for c in grid.cells if c.name == row["cell"]]
    metrics = execute_in_subprocess(cell, resume=False)
    return row["cell"], float(metrics["test"]["CIDEr"])


def test_the_committed_leaderboard_matches_what_head_produces(rerun):
    cell, produced = rerun
    message = stale_message(COMMITTED, cell, produced)
    assert message is None, message


def test_a_changed_committed_number_is_caught(rerun, tmp_path):
    cell, produced = rerun
    tampered = tmp_path / "shapes.csv"
    shutil.copy(COMMITTED, tampered)
    with open(tampered, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if first_cell(row) == cell:
            changed = repr(seed_score(row, cell) + 1e-6)
            row["test_CIDEr_by_seed"] = ";".join(
                f"{seed}:{changed if seed == cell.rsplit('-s', 1)[1] else value}"
                for seed, value in (pair.split(":", 1) for pair in row["test_CIDEr_by_seed"].split(";"))
            )
    with open(tampered, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    message = stale_message(tampered, cell, produced)
    assert message is not None and "fusionbench run experiments/grid.yaml" in message and cell in message
