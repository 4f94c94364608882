"""The leaderboard in a terminal: rich tables that fit the console's width (80 columns included).

The Markdown table has ~20 columns, which no terminal shows whole; here the same numbers are
split into tables keyed by rank: the ranking (identity, test CIDEr-D, interval, Holm p vs #1), the
other test metrics, cost, then one table per extra split. A table too wide for the console is split
again by columns (the rank repeated, the identity in the first part), so no cell is cut to "…";
a legend below says what the marks and columns mean, then the degenerate configurations' reasons
and the per-axis verdicts. Widths are measured by rich, not guessed. A leaderboard ranked on
validation (a sweep) starts with a validation table (the selection) and labels the test split's
tables as reference only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from fusionbench.leaderboard.build import Leaderboard
from fusionbench.leaderboard.formatting import MISSING, fmt_num, fmt_params, fmt_score, fmt_value
from fusionbench.leaderboard.podium import TOP_K, podium_sentences
from fusionbench.leaderboard.render import (
    DEGENERATE,
    NO_VERDICTS,
    NOT_SIGNIFICANT,
    degenerate_lines,
    memory_sentence,
    rank_text,
    seed_warning,
    selection_warning,
)
from fusionbench.leaderboard.stats import ALPHA
from fusionbench.leaderboard.table import Method, identity_columns
from fusionbench.leaderboard.verdict import AXIS_TITLES, AxisVerdict, verdict_sentence


@dataclass(frozen=True)
class _Column:
    header: str
    cells: list[str]
    text: bool = False  # identity text: left-aligned, may fold; numbers are right-aligned, never wrap


def _ci(row: Mapping[str, Any], split: str) -> str:
    lo, hi = row[f"{split}_CIDEr_ci_lo"], row[f"{split}_CIDEr_ci_hi"]
    return MISSING if lo is None or hi is None else f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def _score(row: Mapping[str, Any], split: str, metric: str) -> str:
    return fmt_score(row[f"{split}_{metric}_mean"], row[f"{split}_{metric}_std"])


def _sections(
    rows: Sequence[Mapping[str, Any]], splits: Sequence[str], on_val: bool = False
) -> list[tuple[str, list[_Column], list[_Column]]]:
    """(title, identity columns, score columns) per table before width-splitting.

    Every table starts with the rank; the identity columns go in the first table of a section only.
    ``on_val``: a validation table first (score, best epochs, Holm p), the test split for reference.
    """
    identity = [
        _Column(k, [MISSING if r[k] is None else fmt_value(r[k]) for r in rows], text=True)
        for k in identity_columns(rows[0])
    ]

    def p_text(p: float | None) -> str:
        return MISSING if p is None else f"{p:.3f}"

    holm_p = _Column("Holm p", [p_text(r["p_vs_top_holm"]) for r in rows])
    test_scores = [
        _Column("CIDEr-D", [_score(r, "test", "CIDEr") for r in rows]),
        _Column("95% CI", [_ci(r, "test") for r in rows]),
    ]
    if on_val:
        first = [
            (
                "Validation split: the selection (x100)",
                identity,
                [
                    _Column("val CIDEr-D", [_score(r, "val", "CIDEr") for r in rows]),
                    _Column("best epoch", [r["val_best_epochs"] or MISSING for r in rows]),
                    holm_p,
                ],
            ),
            ("Test split (x100): reference only, not used to rank", [], test_scores),
        ]
    else:
        first = [("Test split (x100)", identity, [*test_scores, holm_p])]
    sections = [
        *first,
        (
            "Test split: other metrics (x100)",
            [],
            [
                _Column("BLEU-4", [_score(r, "test", "Bleu_4") for r in rows]),
                _Column("METEOR", [_score(r, "test", "METEOR") for r in rows]),
                _Column("ROUGE-L", [_score(r, "test", "ROUGE_L") for r in rows]),
                _Column("seeds", [str(r["n_seeds"]) for r in rows]),
            ],
        ),
        (
            "Cost",
            [],
            [
                _Column("params", [fmt_params(r["params_total"]) for r in rows]),
                _Column("GFLOPs/img", [fmt_num(r.get("gflops_per_image"), 3) for r in rows]),
                _Column("train img/s", [fmt_num(r["train_images_per_s"], 0) for r in rows]),
                _Column("ms/image", [fmt_num(r["test_ms_per_image"], 2) for r in rows]),
                _Column("peak MB", [fmt_num(r.get("peak_memory_mb"), 0) for r in rows]),
            ],
        ),
    ]
    for split in splits:
        if split == "test":
            continue
        sections.append(
            (
                f"{split} split (x100)",
                [],
                [
                    _Column("CIDEr-D", [_score(r, split, "CIDEr") for r in rows]),
                    _Column("95% CI", [_ci(r, split) for r in rows]),
                    _Column("BLEU-4", [_score(r, split, "Bleu_4") for r in rows]),
                ],
            )
        )
    return sections


def _table(title: str, columns: Sequence[_Column]) -> Table:
    # min_width: a table narrower than its title would wrap the title; widen the table instead.
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        min_width=cell_len(title),
        collapse_padding=True,
    )
    for column in columns:
        table.add_column(
            column.header,
            justify="left" if column.text else "right",
            no_wrap=not column.text,
            overflow="fold",
        )
    for i in range(len(columns[0].cells)):
        table.add_row(*(c.cells[i] for c in columns))
    return table


def _natural_width(console: Console, table: Table) -> int:
    return Measurement.get(console, console.options.update(max_width=10_000), table).maximum


def legend_text(method: Method) -> str:
    """The terminal tables' legend: marks, intervals, columns."""
    if method.on_val and method.one_seed:
        marks = (
            "#: rank by validation CIDEr-D of each run's selected checkpoint (best validation epoch); "
            "test numbers not used; no significance marks (one seed per configuration)"
        )
        ci = "95% CI: test only, bootstrap over test images (reference)"
    elif method.on_val:
        marks = (
            "#: rank by validation CIDEr-D of each run's selected checkpoint (best validation epoch); "
            f"test numbers not used; {NOT_SIGNIFICANT}: tied with #1 (Holm p vs #1 > {ALPHA}, over "
            f"{method.n_compared} comparisons; Welch's t-test over per-seed validation scores)"
        )
        ci = "95% CI: test only, two-level bootstrap of seeds, then test images (reference)"
    elif method.one_seed:
        marks = "#: rank by test CIDEr-D, no significance marks (one seed per configuration)"
        ci = "95% CI: bootstrap over test images only (no training noise)"
    else:
        marks = (
            f"#: rank by test CIDEr-D; {NOT_SIGNIFICANT}: tied with #1 (Holm p vs #1 > {ALPHA}, over "
            f"{method.n_compared} comparisons; two-level bootstrap, {method.n_boot} resamples of seeds, "
            "then test images)"
        )
        ci = "95% CI: the same bootstrap (too narrow with few seeds: read it next to the std)"
    degenerate = f"; {DEGENERATE}: degenerate, unranked" if method.n_degenerate else ""
    if degenerate and method.on_val:
        degenerate += " (flagged from the test captions' diversity, not a test score)"
    return (
        f"{marks}{degenerate}. Scores: mean ± std over seeds; {ci}. GFLOPs/img: one "
        "teacher-forced forward pass; train img/s: training throughput; ms/image: test decoding with "
        f"the configured beam; {memory_sentence(method)}. The .md/.html/.csv files have every column."
    )


def terminal_tables(
    rows: Sequence[Mapping[str, Any]],
    splits: Sequence[str],
    *,
    method: Method,
    console: Console,
    verdicts: Sequence[AxisVerdict] = (),
    podium: Sequence[str] = (),
) -> list[RenderableType]:
    """The leaderboard as tables no wider than ``console.width``, then their legend, the top
    configurations compared pairwise (``podium.podium_sentences``) and the verdicts."""
    if not rows:
        return []
    rank = _Column("#", [rank_text(r) for r in rows])
    out: list[RenderableType] = []
    for warning in (selection_warning(method), seed_warning(method)):
        if warning:
            out.append(Text(warning.replace("`", ""), style="bold yellow"))
    for title, identity, columns in _sections(rows, splits, method.on_val):
        groups: list[list[_Column]] = [[rank, *identity]]
        for column in columns:
            trial = _table(title, [*groups[-1], column])
            if len(groups[-1]) > 1 and _natural_width(console, trial) > console.width:
                groups.append([rank])
            groups[-1].append(column)
        for n, group in enumerate(groups):
            suffix = f" ({n + 1}/{len(groups)})" if len(groups) > 1 else ""
            out.append(_table(title + suffix, group))
    out.append(Text(legend_text(method), style="dim"))
    for line in degenerate_lines(rows):
        out.append(Text(f"{DEGENERATE} {line}", style="dim"))
    if podium:
        out.append(Text(f"Top {TOP_K}, pairwise (x100, Holm over the pairs):", style="bold"))
        out += [Text(f"  {t.replace('`', '')}") for t in podium]
    if method.on_val:
        out.append(Text(NO_VERDICTS))
    for axis, title in AXIS_TITLES.items():
        sentences = [verdict_sentence(v).replace("`", "") for v in verdicts if v.axis == axis]
        if any(sentences):
            out.append(Text(f"{title} (x100):", style="bold"))
            out += [Text(f"  {t}") for t in sentences if t]
    return out


def print_leaderboard(board: Leaderboard, console: Console) -> None:
    """Print a leaderboard's terminal tables, their legend and the verdicts."""
    method = board.method or Method(
        n_boot=board.n_boot, seed=0, seed_counts=(), n_compared=0, n_degenerate=0, memory_sources=()
    )
    for renderable in terminal_tables(
        board.rows,
        board.splits,
        method=method,
        console=console,
        verdicts=board.verdicts,
        podium=podium_sentences(board.podium),
    ):
        console.print(renderable)
