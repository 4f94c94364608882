"""Leaderboards from a grid results folder: aggregate seeds, bootstrap intervals, significance, verdicts.

``build_leaderboard("runs/<grid>")`` reads the grid's ``results.jsonl`` (the last line per cell
wins), groups completed runs into *configurations* (the cell's assignment without ``seed``) and
writes ``<name>.md``, ``<name>.csv`` and a self-contained ``<name>.html`` (sortable table and inline
SVG plots, plus ``<name>_heatmap.svg`` / ``<name>_cost.svg`` beside it) into ``out_dir``. The
command line is ``fusionbench leaderboard runs/<grid>`` (``python -m fusionbench.leaderboard`` is
the same command); it also prints the ranking as tables that fit an 80-column terminal.

One concern per module, arrows pointing down: ``load`` (results.jsonl, run folders, per-image
scores, degenerate reasons, validation histories) and ``stats`` (seed statistics, the two-level
bootstrap over seeds and test images, Holm; see its docstring for what the numbers mean) feed
``table`` (ranked raw-scale rows, degenerate ones unranked, per-axis summaries) and ``verdict``
(is there a best fusion strategy / encoder / decoder on each split?), which ``render`` (Markdown,
CSV, HTML), ``plots`` (SVG) and ``terminal`` (rich tables) present; ``build`` runs them in order.
``selection`` says which split ranks: ``test`` for a benchmark, ``val`` for a hyper-parameter sweep
(``grid.leaderboard.select_on``; the test splits are then shown for reference only).
Nothing here imports torch.
"""

from fusionbench.leaderboard.build import Leaderboard, build_leaderboard
from fusionbench.leaderboard.load import Configuration, RunResult, latest_records, read_results
from fusionbench.leaderboard.render import DEGENERATE, NOT_SIGNIFICANT, SCALE_SENTENCE
from fusionbench.leaderboard.stats import (
    ALPHA,
    Comparison,
    LevelComparison,
    Resamples,
    average_per_image,
    bootstrap_ci,
    compare_configurations,
    compare_levels,
    holm,
    paired_bootstrap_p,
    seed_stats,
    two_level_bootstrap,
)
from fusionbench.leaderboard.terminal import print_leaderboard, terminal_tables
from fusionbench.leaderboard.verdict import AxisVerdict, axis_verdict

__all__ = [
    "ALPHA",
    "DEGENERATE",
    "NOT_SIGNIFICANT",
    "SCALE_SENTENCE",
    "AxisVerdict",
    "Comparison",
    "Configuration",
    "Leaderboard",
    "LevelComparison",
    "Resamples",
    "RunResult",
    "average_per_image",
    "axis_verdict",
    "bootstrap_ci",
    "build_leaderboard",
    "compare_configurations",
    "compare_levels",
    "holm",
    "latest_records",
    "paired_bootstrap_p",
    "print_leaderboard",
    "read_results",
    "seed_stats",
    "terminal_tables",
    "two_level_bootstrap",
]
