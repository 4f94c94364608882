"""``build_leaderboard``: read a results folder, aggregate, write the files; what it computed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusionbench.errors import DataError
from fusionbench.io import atomic_write_text
from fusionbench.leaderboard.diagnostics import gap_svg
from fusionbench.leaderboard.load import (
    GRID_HINT,
    evaluation_splits,
    group_configurations,
    load_runs,
    not_completed,
    read_manifest,
    read_results,
    validation_histories,
)
from fusionbench.leaderboard.plots import cost_svg, heatmap_svg, val_curves_svg
from fusionbench.leaderboard.podium import PairContrast, podium_contrasts, podium_sentences
from fusionbench.leaderboard.render import render_csv, render_html, render_markdown
from fusionbench.leaderboard.selection import check_select_on, manifest_settings
from fusionbench.leaderboard.table import (
    Method,
    aggregate,
    axis_summary,
    csv_columns,
    header_items,
    method_of,
)
from fusionbench.leaderboard.verdict import AXES, AxisVerdict, axis_verdicts


@dataclass
class Leaderboard:
    """What ``build_leaderboard`` computed and wrote.

    ``rows`` are the CSV rows (raw scale), in rank order (degenerate configurations last, unranked);
    ``columns`` their keys in CSV order; ``summaries`` the per-level summary of every axis
    (``fusion_summary`` is ``summaries["fusion"]``); ``verdicts`` the per-axis, per-split verdicts
    (none when ranked on validation: a sweep compares settings, and its test numbers decide nothing);
    ``method`` how the numbers were made (seeds, resamples, Holm family, memory source);
    ``podium`` every pair of the top 3 on test compared (``fusionbench.leaderboard.podium``).
    """

    name: str
    rows: list[dict[str, Any]]
    columns: list[str]
    splits: list[str]
    fusion_summary: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    notes: list[str]
    markdown_path: Path
    csv_path: Path
    html_path: Path
    plot_paths: list[Path]
    n_boot: int = 1000
    summaries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    verdicts: list[AxisVerdict] = field(default_factory=list)
    method: Method | None = None
    podium: list[PairContrast] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [self.markdown_path, self.csv_path, self.html_path, *self.plot_paths]

    @property
    def best(self) -> dict[str, Any] | None:
        """The rank-1 row; None when every configuration is degenerate (or there is none)."""
        return next((r for r in self.rows if r.get("rank") == 1), None)


def build_leaderboard(
    results_dir: str | Path,
    *,
    out_dir: str | Path = "leaderboards",
    name: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    command: str | None = None,
    select_on: str | None = None,
) -> Leaderboard:
    """Aggregate a grid's results folder and write ``<name>.md/.csv/.html`` (+ SVG plots) into ``out_dir``.

    ``select_on`` is the split that ranks the configurations (``test`` or ``val``,
    ``fusionbench.leaderboard.selection``); None takes what the grid recorded in the folder's
    ``grid.json`` (its ``grid.leaderboard.select_on``), ``test`` when it recorded nothing.
    """
    results_dir = Path(results_dir)
    manifest = read_manifest(results_dir)
    if select_on is None:
        select_on = manifest_settings(manifest, str(results_dir / "grid.json")).select_on
    select_on = check_select_on(select_on, "select_on")
    latest, notes = read_results(results_dir)
    runs, load_notes = load_runs(latest, results_dir)
    notes += load_notes
    if not runs:
        statuses = ", ".join(sorted({str(r.get("status")) for r in latest.values()})) or "none"
        raise DataError(
            f"'{results_dir / 'results.jsonl'}' has no completed cell ({len(latest)} cell(s), statuses: {statuses}); "
            f"{GRID_HINT}, and check the failed cells' errors there."
        )
    configs = group_configurations(runs)
    splits = evaluation_splits(runs)
    rows, agg_notes, resamples = aggregate(configs, splits, n_boot=n_boot, seed=seed, select_on=select_on)
    notes += agg_notes
    datasets = sorted({c.dataset for c in configs})
    if len(datasets) > 1:
        notes.append(f"The grid mixes datasets ({', '.join(datasets)}); ranks compare across them.")
    name = name or "_".join(datasets)
    failed = not_completed(latest)
    summaries = {axis: axis_summary(rows, splits, axis) for axis in AXES}
    verdicts = axis_verdicts(rows, resamples, splits) if select_on == "test" else []
    podium = podium_contrasts(rows, resamples["test"]) if select_on == "test" and "test" in resamples else []
    method = method_of(rows, configs, n_boot=n_boot, seed=seed, select_on=select_on)
    items = header_items(
        results_dir=results_dir,
        command=command,
        runs=runs,
        configs=configs,
        latest=latest,
        method=method,
        manifest=manifest,
    )
    columns = csv_columns(rows)

    out = Path(out_dir)
    md_path, csv_path, html_path = out / f"{name}.md", out / f"{name}.csv", out / f"{name}.html"
    heat_path, cost_path = out / f"{name}_heatmap.svg", out / f"{name}_cost.svg"
    curves_path = out / f"{name}_val_curves.svg"
    heatmap, cost = heatmap_svg(rows), cost_svg(rows)
    curves = val_curves_svg(validation_histories(configs))
    common = dict(
        title=name,
        items=items,
        failed=failed,
        rows=rows,
        splits=splits,
        summaries=summaries,
        verdicts=verdicts,
        notes=notes,
        method=method,
        podium=podium_sentences(podium),
    )
    atomic_write_text(md_path, render_markdown(**common))
    atomic_write_text(csv_path, render_csv(rows, columns))
    atomic_write_text(heat_path, heatmap + "\n")
    atomic_write_text(cost_path, cost + "\n")
    plot_paths = [heat_path, cost_path]
    if curves is not None:
        atomic_write_text(curves_path, curves + "\n")
        plot_paths.append(curves_path)
    else:
        curves_path.unlink(missing_ok=True)  # a previous build's curves would be stale
    gap = gap_svg(rows)
    gap_path = out / f"{name}_gap.svg"
    if gap is not None:
        atomic_write_text(gap_path, gap + "\n")
        plot_paths.append(gap_path)
    else:
        gap_path.unlink(missing_ok=True)
    atomic_write_text(html_path, render_html(**common, heatmap=heatmap, cost=cost, curves=curves, gap=gap))
    return Leaderboard(
        name=name,
        rows=rows,
        columns=columns,
        splits=splits,
        fusion_summary=summaries["fusion"],
        failed=failed,
        notes=notes,
        markdown_path=md_path,
        csv_path=csv_path,
        html_path=html_path,
        plot_paths=plot_paths,
        n_boot=n_boot,
        summaries=summaries,
        verdicts=verdicts,
        method=method,
        podium=podium,
    )
