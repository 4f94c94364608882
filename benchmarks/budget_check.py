"""Does a verdict survive a longer budget? Two committed leaderboards, side by side, per axis.

Issue #16 asks that doubling the maximum training budget reverse no order that the default
leaderboard calls different. This script lines up, for every pair of levels of every axis
(encoder, fusion, decoder), the gap ``A - B`` in mean test CIDEr-D (x100) on the default
leaderboard and on the longer-budget one (``experiments/grid_budget_x2.yaml``), over the same
configurations: the combinations of the other axes where both levels have a non-degenerate result
on both leaderboards (the longer grid runs only the top two fusion strategies, so the default's
gaps are recomputed on that common set, which is why they can differ from its own verdict lines).

Each gap gets a 95% interval from a bootstrap over seeds (each configuration's per-seed scores,
from the leaderboards' ``*_CIDEr_by_seed`` column, resampled with replacement). It leaves out the
test-image part of the leaderboards' two-level bootstrap (the CSVs do not carry per-image scores),
so it is narrower than theirs: the leaderboards' own verdict sections stay the authority on
"wins" and "no clear winner"; this table answers "is the order kept".

Rows are oriented so that the base budget's gap is >= 0. A pair whose base interval includes 0 has
``no order to keep``; otherwise it is ``kept`` when the longer budget's gap is > 0 too, ``reversed``
when it is < 0 with an interval that excludes 0, and ``reversed, tied`` when it is < 0 inside an
interval that includes 0. Exit code 1 when any order is reversed (tied or not). Prints a table
and writes ``benchmarks/results/budget_check.json``.

    python benchmarks/budget_check.py                                         # the committed pair
    python benchmarks/budget_check.py --base leaderboards/shapes.csv --longer leaderboards/budget-x2/shapes.csv
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, write_result  # noqa: E402

AXES = ("encoder", "fusion", "decoder")


def read_board(path: Path, split: str) -> dict[tuple[str, str, str], list[float]]:
    """Per (encoder, fusion, decoder) of a leaderboard CSV: the per-seed CIDEr-D x100 of ``split``,
    degenerate configurations left out."""
    board: dict[tuple[str, str, str], list[float]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("degenerate") or not row.get(f"{split}_CIDEr_by_seed"):
                continue
            scores = [100 * float(p.split(":")[1]) for p in row[f"{split}_CIDEr_by_seed"].split(";")]
            board[(row["encoder"], row["fusion"], row["decoder"])] = scores
    return board


def gap(
    board: dict[tuple[str, str, str], list[float]],
    pairs: list[tuple[tuple, tuple]],
    rng: np.random.Generator,
    resamples: int,
) -> tuple[float, float, float]:
    """Mean over ``pairs`` of (mean seed score of A - of B), and its 95% seed-bootstrap interval."""
    a = [np.asarray(board[x]) for x, _ in pairs]
    b = [np.asarray(board[y]) for _, y in pairs]
    point = float(np.mean([x.mean() - y.mean() for x, y in zip(a, b)]))
    draws = np.empty(resamples)
    for i in range(resamples):
        draws[i] = np.mean(
            [rng.choice(x, x.size).mean() - rng.choice(y, y.size).mean() for x, y in zip(a, b)]
        )
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return point, float(lo), float(hi)


def compare(base: dict, longer: dict, resamples: int = 2000, seed: int = 0) -> list[dict]:
    """Every pair of levels of every axis, on the configurations both leaderboards share."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, axis in enumerate(AXES):
        levels = sorted({key[k] for key in base} & {key[k] for key in longer})
        others = sorted({key[:k] + key[k + 1 :] for key in base})  # the other axes' combinations
        for x, y in itertools.combinations(levels, 2):
            pairs = []
            for o in others:
                ka, kb = o[:k] + (x,) + o[k:], o[:k] + (y,) + o[k:]
                if all(c in base and c in longer for c in (ka, kb)):
                    pairs.append((ka, kb))
            if not pairs:
                continue
            b, blo, bhi = gap(base, pairs, rng, resamples)
            g, glo, ghi = gap(longer, pairs, rng, resamples)
            if b >= 0:  # orient every row as "the base budget's leader minus the other"
                a_name, b_name = x, y
            else:
                a_name, b_name = y, x
                b, blo, bhi, g, glo, ghi = -b, -bhi, -blo, -g, -ghi, -glo
            if blo <= 0:
                status = "no order to keep"  # the base budget cannot tell them apart either
            elif g > 0:
                status = "kept"
            elif ghi < 0:
                status = "reversed"
            else:
                status = "reversed, tied"
            rows.append(
                {
                    "axis": axis,
                    "leader": a_name,
                    "other": b_name,
                    "configurations": len(pairs),
                    "base_gap": b,
                    "base_interval": [blo, bhi],
                    "base_separated": blo > 0,
                    "longer_gap": g,
                    "longer_interval": [glo, ghi],
                    "longer_separated": glo > 0 or ghi < 0,
                    "status": status,
                }
            )
    return rows


def _mark(separated: bool) -> str:
    return " *" if separated else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default=str(ROOT / "leaderboards" / "shapes.csv"))
    parser.add_argument("--longer", default=str(ROOT / "leaderboards" / "budget-x2" / "shapes.csv"))
    parser.add_argument("--splits", nargs="+", default=["test", "test_novel"])
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--out", default="budget_check", help="results file stem in benchmarks/results/")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    result = {"base": args.base, "longer": args.longer, "resamples": args.resamples, "splits": {}}
    for split in args.splits:
        base, longer = read_board(Path(args.base), split), read_board(Path(args.longer), split)
        rows = compare(base, longer, args.resamples)
        result["splits"][split] = rows
        table = Table(
            title=f"{split}: leader's lead in mean CIDEr-D x100, base budget vs longer [seed-bootstrap 95%]"
        )
        for col in ("axis", "leader - other", "configs", "base gap", "longer gap", "order"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                r["axis"],
                f"{r['leader']} - {r['other']}",
                str(r["configurations"]),
                f"{r['base_gap']:+.1f} [{r['base_interval'][0]:+.1f}, {r['base_interval'][1]:+.1f}]"
                + _mark(r["base_separated"]),
                f"{r['longer_gap']:+.1f} [{r['longer_interval'][0]:+.1f}, {r['longer_interval'][1]:+.1f}]"
                + _mark(r["longer_separated"]),
                r["status"],
            )
        console.print(table)
    console.print(
        "* the interval excludes 0 (seeds only; the leaderboards' own verdicts also resample test images)"
    )
    result["machine"] = machine()
    path = write_result(args.out, result)
    console.print(f"written: {path}")
    reversed_ = [r for rows in result["splits"].values() for r in rows if r["status"].startswith("reversed")]
    return 1 if reversed_ else 0


if __name__ == "__main__":
    raise SystemExit(main())
