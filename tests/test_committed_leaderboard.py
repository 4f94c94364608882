"""The committed leaderboard is what HEAD produces.

A change that alters numerics (random-number consumption, a default, a layer) silently makes
``leaderboards/shapes.*`` stale. This test reruns the cheapest committed cell of the default grid
(its first seed) for its full budget and compares its test CIDEr-D with that seed's committed
number (``test_CIDEr_by_seed``). When it fails, regenerate the leaderboard with the README's main
command on an idle machine and commit it.

A run is deterministic on CPU for a given config, seed and host numerics, not across them
(``fusionbench.numerics``): where this host computes with the CPU kernels, precision and
fingerprint the committed row records (its ``numerics`` column), the numbers must agree to the last
bit; on any other host (or where the row predates the fingerprint) training rounds differently and
the rerun is a perturbed draw of the same cell, so it must land within ``CROSS_HOST_STDS`` of the
row's own seed standard deviation: a weaker check, which still catches a change of defaults or of
random-number consumption that moves the cell by more than its seed spread.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fusionbench.numerics import numerics_label

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "leaderboards" / "shapes.csv"
GRID = ROOT / "experiments" / "grid.yaml"
REGENERATE = "fusionbench run experiments/grid.yaml  (on an idle machine, at your final commit; then commit leaderboards/)"
CROSS_HOST_STDS = 3.0
"""How far (in the committed row's seed standard deviations) a rerun with other numerics may land:
a cross-host rerun perturbs training by rounding only, so it scores like a draw of the same cell
(measured: regions-late-lstm-s0 125.2 on an AVX2 host vs 123.8 committed from AVX512, 0.4 std;
cnn-early-lstm-s0 106.5 on an Intel AVX512/AMX host vs 103.7 on an AMD AVX512 one, 0.4 std)."""


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


def stale_message(csv_path: Path, cell: str, produced: float, numerics: str) -> str | None:
    """Why the committed leaderboard does not match ``produced`` for ``cell``, computed with
    ``numerics`` (``fusionbench.numerics.numerics_label``) on this host; None when it does."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = {first_cell(r): r for r in csv.DictReader(f)}
    row = rows[cell]
    committed = seed_score(row, cell)
    recorded = row.get("numerics") or None
    if recorded == numerics:
        if committed == produced:
            return None
        how = f"bit for bit (both computed with {numerics})"
    else:
        allowed = CROSS_HOST_STDS * float(row["test_CIDEr_std"])
        if abs(produced - committed) <= allowed:
            return None
        how = (
            f"within {CROSS_HOST_STDS:g} seed std = {100 * allowed:.2f} points x100 (committed with "
            f"{recorded or 'unrecorded numerics'}, this host computes with {numerics})"
        )
    return (
        f"{csv_path.name} is stale: cell {cell} has test CIDEr-D {committed!r} there, but HEAD produces "
        f"{produced!r}, which does not match {how}. Regenerate the committed leaderboard: {REGENERATE}"
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
    return row["cell"], float(metrics["test"]["CIDEr"]), numerics_label(metrics["numerics"])


def test_the_committed_leaderboard_matches_what_head_produces(rerun):
    cell, produced, numerics = rerun
    message = stale_message(COMMITTED, cell, produced, numerics)
    assert message is None, message


def tampered_copy(tmp_path: Path, cell: str, *, score: float, numerics: str) -> Path:
    """The committed CSV with ``cell``'s seed score set to ``score`` and its row's ``numerics``."""
    tampered = tmp_path / f"shapes-{score!r}-{numerics.replace(' ', '_')}.csv"
    with open(COMMITTED, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if first_cell(row) == cell:
            row["test_CIDEr_by_seed"] = ";".join(
                f"{seed}:{score!r}" if seed == cell.rsplit("-s", 1)[1] else f"{seed}:{value}"
                for seed, value in (pair.split(":", 1) for pair in row["test_CIDEr_by_seed"].split(";"))
            )
            row["numerics"] = numerics
    with open(tampered, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys([*rows[0], "numerics"])))
        writer.writeheader()
        writer.writerows(rows)
    return tampered


def test_a_changed_committed_number_is_caught(rerun, tmp_path):
    """Committed with this host's numerics, a change in the last digits is stale; committed with
    other numerics, a change beyond the cross-host allowance is, and one within it is not."""
    cell, produced, numerics = rerun
    exact = tampered_copy(tmp_path, cell, score=produced + 1e-6, numerics=numerics)
    message = stale_message(exact, cell, produced, numerics)
    assert message is not None and REGENERATE in message and cell in message and "bit for bit" in message
    assert stale_message(exact, cell, produced + 1e-6, numerics) is None

    with open(COMMITTED, newline="", encoding="utf-8") as f:
        std = float(next(r for r in csv.DictReader(f) if first_cell(r) == cell)["test_CIDEr_std"])
    allowed, elsewhere = CROSS_HOST_STDS * std, "AVX9000 32-true"
    near = tampered_copy(tmp_path, cell, score=produced + 0.5 * allowed, numerics=elsewhere)
    assert stale_message(near, cell, produced, numerics) is None
    far = tampered_copy(tmp_path, cell, score=produced + 1.5 * allowed, numerics=elsewhere)
    message = stale_message(far, cell, produced, numerics)
    assert message is not None and elsewhere in message and REGENERATE in message
