"""The leaderboard's rows: one raw-scale row per configuration, ranked, plus the per-axis summaries.

Rows keep coco-caption's raw scale (the CSV is written from them as they are); renderers show x100.
Every row has the same keys in the same order (the CSV's columns): rank, significance and the
degenerate reason, the identity columns (``dataset`` only when the grid mixes datasets, the
components, one column per extra assignment key), seeds, per split the seed mean/std of every
metric and the CIDEr-D interval, then cost. Degenerate configurations (``Configuration.degenerate``)
come last, unranked: they are neither #1 nor compared with it.

A sweep's leaderboard (``select_on="val"``, ``fusionbench.leaderboard.selection``) ranks by the
validation CIDEr-D of each run's selected checkpoint instead, with ``val_*`` columns after
``seeds``; its marks compare per-seed validation scores (``stats.compare_seed_scores``), and the
test splits keep their intervals but are compared with nothing. Rows ranked on test have no
``val_*`` columns: their CSV is what it was before the option existed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fusionbench.leaderboard.diagnostics import DIAGNOSTIC_COLUMNS, diagnostic_means
from fusionbench.leaderboard.load import Configuration, RunResult, load_per_image
from fusionbench.leaderboard.stats import (
    Resamples,
    compare_resampled,
    compare_seed_scores,
    mean_of,
    seed_stats,
    two_level_bootstrap,
)
from fusionbench.metrics.keys import METRIC_KEYS
from fusionbench.numerics import numerics_label, numerics_summary

IDENTITY_KEYS = ("dataset", "encoder", "fusion", "decoder")
_RESERVED = {
    "rank",
    "not_significant_vs_top",
    "p_vs_top",
    "p_vs_top_holm",
    "degenerate",
    *IDENTITY_KEYS,
    "seeds",
    "n_seeds",
    "cells",
    "label",
    "notes",
    "params_total",
    "train_images_per_s",
    "gflops_per_image",
    "peak_memory_mb",
    "wall_seconds",
    "numerics",
}


def _short_names(keys: Iterable[str], reserved: Iterable[str]) -> dict[str, str]:
    """Column names for extra assignment keys: the last dotted part, longer where it would clash."""
    keys = sorted(set(keys))
    reserved = set(reserved)
    names: dict[str, str] = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            clash = name in reserved or any(o != key and ".".join(o.split(".")[-n:]) == name for o in keys)
            if not clash or n == len(parts):
                names[key] = name
                break
    return names


def identity_columns(row: Mapping[str, Any]) -> list[str]:
    """The keys that say which configuration a row is: dataset?, components, extra assignment keys."""
    keys = list(row)
    if not keys:
        return []
    # Extra assignment columns sit between ``decoder`` and ``n_seeds`` in every row (see ``aggregate``).
    extras = keys[keys.index("decoder") + 1 : keys.index("n_seeds")]
    return [k for k in IDENTITY_KEYS if k in row] + extras


def _cost(run: RunResult) -> dict[str, Any]:
    return run.metrics.get("cost") or {}


def aggregate(
    configs: Sequence[Configuration],
    splits: Sequence[str],
    *,
    n_boot: int,
    seed: int,
    select_on: str = "test",
) -> tuple[list[dict[str, Any]], list[str], dict[str, Resamples]]:
    """One raw-scale row per configuration, ranked by ``select_on`` CIDEr-D; returns (rows, notes,
    resamples).

    ``resamples[split]`` are the two-level bootstrap draws of that split, in the rows' order (the
    verdicts compare axis levels with them). Degenerate configurations follow the ranked ones with
    ``rank`` None and are not compared with #1. With ``select_on="val"`` the rank and the marks come
    from the validation score of each run's selected checkpoint only (module docstring).
    """
    on_val = select_on == "val"
    several_datasets = len({c.dataset for c in configs}) > 1
    extra_keys = sorted({k for c in configs for k in c.extras})
    short = _short_names(extra_keys, _RESERVED)
    rows: list[dict[str, Any]] = []
    # Per split and configuration: the per-seed per-image maps (None: incomplete) and why not.
    scores: dict[str, list[list[dict[str, float]] | None]] = {split: [] for split in splits}
    missing_notes: dict[str, list[str | None]] = {split: [] for split in splits}
    for config in configs:
        row: dict[str, Any] = {
            "rank": None,
            "not_significant_vs_top": None,
            "p_vs_top": None,
            "p_vs_top_holm": None,
            "degenerate": config.degenerate,
        }
        if several_datasets:
            row["dataset"] = config.dataset
        row.update(encoder=config.encoder, fusion=config.fusion, decoder=config.decoder)
        for key in extra_keys:
            row[short[key]] = config.extras.get(key)
        row["n_seeds"] = len(config.runs)
        row["seeds"] = ";".join(str(r.seed) for r in config.runs)
        if on_val:
            row.update(_val_columns(config.runs))
        for split in splits:
            with_split = [r for r in config.runs if isinstance(r.metrics.get(split), dict)]
            for metric in METRIC_KEYS:
                mean, std, _ = seed_stats(r.metrics[split].get(metric) for r in with_split)
                row[f"{split}_{metric}_mean"] = mean
                row[f"{split}_{metric}_std"] = std
            row[f"{split}_n_seeds"] = len(with_split)
            # each seed's own score, full precision: for re-analysis, and what the staleness test
            # compares with a rerun of one seed's cell (``seed:score`` pairs, ``;``-separated)
            row[f"{split}_CIDEr_by_seed"] = ";".join(
                f"{r.seed}:{float(r.metrics[split]['CIDEr'])!r}"
                for r in with_split
                if r.metrics[split].get("CIDEr") is not None
            )
            row[f"{split}_CIDEr_ci_lo"] = row[f"{split}_CIDEr_ci_hi"] = row[f"{split}_n_images"] = None
            row[f"{split}_CIDEr_ci_over"] = None
            maps = [load_per_image(r.run_dir, split) for r in with_split]
            missing = [r for r, m in zip(with_split, maps) if m is None]
            scores[split].append(maps if with_split and not missing else None)  # type: ignore[arg-type]
            note = None
            if missing:
                files = ", ".join(
                    str(r.run_dir / f"scores_{split}.json") if r.run_dir else f"{r.name} (no run_dir)"
                    for r in missing
                )
                note = f"{split}: per-image scores missing ({files}); CI omitted"
            missing_notes[split].append(note)
        row["params_total"] = _round(
            mean_of((r.metrics.get("params") or {}).get("total") for r in config.runs)
        )
        row["train_images_per_s"] = mean_of(_cost(r).get("train_images_per_s") for r in config.runs)
        row["gflops_per_image"] = mean_of(
            None if (f := _cost(r).get("flops_per_image")) is None else f / 1e9 for r in config.runs
        )
        row["peak_memory_mb"] = mean_of(_cost(r).get("peak_memory_mb") for r in config.runs)
        for split in splits:
            row[f"{split}_ms_per_image"] = mean_of(
                (_cost(r).get("inference_ms_per_image") or {}).get(split) for r in config.runs
            )
        row["wall_seconds"] = mean_of(r.record.get("wall_seconds") for r in config.runs)
        labels = {numerics_label(r.metrics.get("numerics")) for r in config.runs} - {None}
        row["numerics"] = ";".join(sorted(labels)) or None  # CPU kernels + precision (fusionbench.numerics)
        row.update(diagnostic_means(config.runs))  # diag_* columns (fusionbench.leaderboard.diagnostics)
        row["cells"] = ";".join(r.name for r in config.runs)
        row["label"] = config.label
        row["notes"] = ""
        rows.append(row)

    def by_score(i: int) -> tuple[bool, float, str]:
        mean = rows[i][f"{select_on}_CIDEr_mean"]
        return (
            rows[i]["degenerate"] is not None,
            -(mean if mean is not None else -math.inf),
            rows[i]["label"],
        )

    order = sorted(range(len(rows)), key=by_score)
    ranked_ids = [i for i in order if rows[i]["degenerate"] is None]
    top = ranked_ids[0] if ranked_ids else None
    row_notes: list[list[str]] = [[] for _ in rows]
    split_notes: list[str] = []
    resamples: dict[str, Resamples] = {}
    mixed_seeds = len({r["n_seeds"] for r in rows}) > 1 and min(r["n_seeds"] for r in rows) == 1
    for split in splits:
        drawn = two_level_bootstrap(scores[split], n_boot=n_boot, seed=seed)
        resamples[split] = drawn.subset(order)
        ranks_here = split == "test" and not on_val
        compared = compare_resampled(drawn, top=top if ranks_here else None, compared=ranked_ids)
        for i, (row, result) in enumerate(zip(rows, compared)):
            if missing_notes[split][i]:
                row_notes[i].append(missing_notes[split][i])  # type: ignore[arg-type]
            elif scores[split][i] is not None and result.n_images is None:
                row_notes[i].append(
                    f"{split}: fewer than 2 images scored by every seed of every configuration; CI omitted"
                )
            elif result.n_images is not None and ranks_here and mixed_seeds and row["n_seeds"] == 1:
                row_notes[i].append(
                    "one seed: its interval covers test images only and it is not compared with #1"
                )
            row[f"{split}_CIDEr_ci_lo"] = result.ci[0] if result.ci else None
            row[f"{split}_CIDEr_ci_hi"] = result.ci[1] if result.ci else None
            row[f"{split}_n_images"] = result.n_images
            if result.ci:
                row[f"{split}_CIDEr_ci_over"] = "seeds+images" if result.seeds_resampled else "images"
            if ranks_here:
                _set_marks(row, result)
        n_used = len(drawn.ids)
        more = [
            rows[i]["label"]
            for i, maps in enumerate(scores[split])
            if maps and n_used and len(set.intersection(*(set(m) for m in maps))) > n_used
        ]
        if more:
            split_notes.append(
                f"{split}: intervals and comparisons use the {n_used} images every configuration scored "
                f"({', '.join(more)} scored more)."
            )
    if on_val:
        _compare_on_val(configs, rows, top, ranked_ids, row_notes, mixed_seeds)
    notes: list[str] = []
    for row, mine in zip(rows, row_notes):
        row["notes"] = "; ".join(mine)
        notes += [f"{row['label']}: {n}" for n in mine]
    notes += split_notes
    ranked = []
    for i in order:
        if rows[i]["degenerate"] is None:
            rows[i]["rank"] = len(ranked) + 1
        ranked.append(rows[i])
    n_ranked = len(ranked_ids)
    if top is not None and n_ranked > 1 and not on_val and rows[top]["test_n_images"] is None:
        notes.append("The top configuration has no per-image test scores, so significance was not tested.")
    elif top is not None and n_ranked > 1 and mixed_seeds and rows[top]["n_seeds"] == 1:
        notes.append("The top configuration has one seed, so no configuration is compared with it.")
    if ranked_ids and len(ranked_ids) < len(rows):
        notes.append(
            f"{len(rows) - len(ranked_ids)} degenerate configuration(s) (‡) are listed unranked below the "
            "ranked ones and left out of #1, the comparisons with #1 and the verdicts."
        )
    elif not ranked_ids and rows:
        notes.append("Every configuration is degenerate (‡): nothing is ranked and no verdict is given.")
    return ranked, notes, resamples


def _set_marks(row: dict[str, Any], result) -> None:
    """A row's comparison with #1 (a ``stats.Comparison``), from whichever test ranked it."""
    row["p_vs_top"] = result.p_vs_top
    row["p_vs_top_holm"] = result.p_holm
    row["not_significant_vs_top"] = result.tied_with_top


def _val_columns(runs: Sequence[RunResult]) -> dict[str, Any]:
    """A val-ranked row's ``val_*`` columns: the seed mean/std of the selected checkpoints' validation
    CIDEr-D, how many seeds recorded one, and each seed's selected (best) epoch, 0-based."""
    selected = [r.selected_val for r in runs]
    mean, std, n = seed_stats(s[0] if s else None for s in selected)
    epochs = ";".join("" if s is None or s[1] is None else str(s[1]) for s in selected)
    return {"val_CIDEr_mean": mean, "val_CIDEr_std": std, "val_n_seeds": n, "val_best_epochs": epochs}


def _compare_on_val(
    configs: Sequence[Configuration],
    rows: list[dict[str, Any]],
    top: int | None,
    ranked_ids: Sequence[int],
    row_notes: list[list[str]],
    mixed_seeds: bool,
) -> None:
    """The marks of a val-ranked leaderboard: Welch over per-seed validation scores vs #1, Holm."""
    scores = [[s[0] for r in c.runs if (s := r.selected_val) is not None] for c in configs]
    compared = compare_seed_scores(scores, top=top, compared=ranked_ids)
    for i, (row, result) in enumerate(zip(rows, compared)):
        _set_marks(row, result)
        if not scores[i]:
            row_notes[i].append(
                "val: no validation score recorded (metrics.json val / val_history); ranked last"
            )
        elif len(scores[i]) < len(configs[i].runs):
            row_notes[i].append(
                f"val: {len(configs[i].runs) - len(scores[i])} of {len(configs[i].runs)} seeds recorded "
                "no validation score; the mean is over the others"
            )
        if mixed_seeds and row["n_seeds"] == 1 and i in ranked_ids:
            row_notes[i].append("one seed: not compared with #1")


def _round(value: float | None) -> int | None:
    return None if value is None else int(round(value))


def csv_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Row keys in first-seen order (every row has the same keys)."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


def axis_summary(rows: Sequence[Mapping[str, Any]], splits: Sequence[str], axis: str) -> list[dict[str, Any]]:
    """Per level of ``axis`` (``fusion``, ``encoder``, ``decoder``): mean CIDEr-D per split over its
    non-degenerate configurations (i.e. over the other axes), their mean seed std, the mean of
    each diagnostic (``diag_*``), and how many configurations were left out as degenerate."""
    out: list[dict[str, Any]] = []
    for level in sorted({r[axis] for r in rows}):
        mine = [r for r in rows if r[axis] == level and r.get("degenerate") is None]
        entry: dict[str, Any] = {
            axis: level,
            "n_configurations": len(mine),
            "n_degenerate": sum(1 for r in rows if r[axis] == level and r.get("degenerate") is not None),
        }
        for split in splits:
            entry[f"{split}_CIDEr_mean"] = mean_of(r[f"{split}_CIDEr_mean"] for r in mine)
            entry[f"{split}_CIDEr_seed_std"] = mean_of(r[f"{split}_CIDEr_std"] for r in mine)
        entry.update({c: mean_of(r.get(c) for r in mine) for c in DIAGNOSTIC_COLUMNS})
        out.append(entry)
    return out


def fusion_summary(rows: Sequence[Mapping[str, Any]], splits: Sequence[str]) -> list[dict[str, Any]]:
    """``axis_summary`` for the fusion strategies (what the W&B summary run logs)."""
    return axis_summary(rows, splits, "fusion")


@dataclass(frozen=True)
class Method:
    """How the leaderboard's numbers were made: what its header and legend say.

    ``seed_counts`` are the distinct numbers of seeds per configuration; ``n_compared`` the
    comparisons with #1 in Holm's family; ``memory_sources`` the distinct ``cost.peak_memory_source``
    values of the runs (how ``peak MB`` was measured).
    """

    n_boot: int
    seed: int
    seed_counts: tuple[int, ...]
    n_compared: int
    n_degenerate: int
    memory_sources: tuple[str, ...]
    select_on: str = "test"

    @property
    def on_val(self) -> bool:
        """Ranked on validation (a sweep): the test splits are shown for reference only."""
        return self.select_on == "val"

    @property
    def one_seed(self) -> bool:
        """Every configuration has one seed: no training noise in any interval, no marks."""
        return max(self.seed_counts, default=1) <= 1

    @property
    def mixed_seeds(self) -> bool:
        """Some configurations have one seed and others more."""
        return min(self.seed_counts, default=1) <= 1 < max(self.seed_counts, default=1)


def method_of(
    rows: Sequence[Mapping[str, Any]],
    configs: Sequence[Configuration],
    *,
    n_boot: int,
    seed: int,
    select_on: str = "test",
) -> Method:
    """The ``Method`` of rows aggregated from ``configs``."""
    sources = {_cost(r).get("peak_memory_source") for c in configs for r in c.runs}
    return Method(
        n_boot=n_boot,
        seed=seed,
        seed_counts=tuple(sorted({int(r["n_seeds"]) for r in rows})),
        n_compared=sum(1 for r in rows if r.get("p_vs_top") is not None),
        n_degenerate=sum(1 for r in rows if r.get("degenerate") is not None),
        memory_sources=tuple(sorted(str(s) for s in sources if s)),
        select_on=select_on,
    )


def bootstrap_item(method: Method) -> str:
    """The header's ``Bootstrap`` line: how many resamples of what, from which generator."""
    if method.one_seed:
        what = "resamples of the test images (one seed per configuration: no seed level)"
    else:
        what = "two-level resamples (each configuration's seeds, then the test images, shared by all)"
    used = " (the test intervals only: ranking and marks use validation)" if method.on_val else ""
    return f"{method.n_boot} {what}, numpy default_rng({method.seed}){used}"


SELECTION_ITEM = (
    "on the validation split (grid.leaderboard.select_on: val): ranks, tied marks and #1 come from the "
    "validation CIDEr-D of the checkpoint each run selected (its best validation epoch), mean over "
    "seeds; the test splits were not used for any selection and are shown for reference only"
)
"""The header's ``Selection`` line of a leaderboard ranked on validation."""


def packages_item(runs: Sequence[RunResult]) -> str:
    """The versions of the packages that set the numbers (``results.NUMERICS_PACKAGES``), as the
    cells recorded them; several sets are named as such (cells from different installs)."""
    sets = {tuple(sorted(r.record["packages"].items())) for r in runs if r.record.get("packages")}
    if not sets:
        return "not recorded"
    text = "; ".join(", ".join(f"{k} {v}" for k, v in versions) for versions in sorted(sets))
    note = " (cells come from several installs)" if len(sets) > 1 else " (constraints.txt pins them)"
    return text + note


def header_items(
    *,
    results_dir: Path,
    command: str | None,
    runs: Sequence[RunResult],
    configs: Sequence[Configuration],
    latest: Mapping[str, Mapping[str, Any]],
    method: Method,
    manifest: Mapping[str, Any] | None,
) -> list[tuple[str, str]]:
    """(label, text) lines describing how the leaderboard was produced; ``manifest`` is the grid
    runner's ``grid.json`` (which grid file owns the folder, its family settings), None without one."""
    commits = sorted({str(r.record["git_commit"]) for r in runs if r.record.get("git_commit")})
    seeds = sorted({str(r.seed) for r in runs})
    seed_counts = sorted({len(c.runs) for c in configs})
    started = sorted(str(r.record["started_at"]) for r in runs if r.record.get("started_at"))
    finished = sorted(str(r.record["finished_at"]) for r in runs if r.record.get("finished_at"))
    items = [
        (
            "Command",
            f"`{command}`" if command else f"build_leaderboard({str(results_dir)!r}) (command not recorded)",
        ),
        ("Results", f"`{results_dir / 'results.jsonl'}`"),
        (
            "Git commit",
            ", ".join(f"`{c}`" for c in commits)
            + (" (cells come from several commits)" if len(commits) > 1 else "")
            if commits
            else "unknown (not recorded)",
        ),
        ("Packages", packages_item(runs)),
        ("Numerics", numerics_summary(r.metrics.get("numerics") for r in runs)),
        ("Built", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        (
            "Cells",
            f"{len(runs)} completed of {len(latest)} in the grid; {len(configs)} configurations × "
            f"{'/'.join(map(str, seed_counts))} seed(s) (seeds {', '.join(seeds)})",
        ),
        ("Bootstrap", bootstrap_item(method)),
    ]
    if method.on_val:
        items.insert(-1, ("Selection", SELECTION_ITEM))
    if started and finished:
        items.append(("Ran", f"{started[0]} to {finished[-1]}"))
    if manifest is not None:
        items.insert(2, ("Grid", f"{manifest.get('grid')} (from {manifest.get('source')})"))
        if manifest.get("settings"):
            items.insert(3, ("Family settings", settings_item(manifest["settings"])))
    return items


def settings_item(rules: Sequence[Mapping[str, Any]]) -> str:
    """The header's line for a grid's ``grid.settings``: which cells train with which settings."""

    def pairs(mapping: Mapping[str, Any]) -> str:
        return ", ".join(f"{k.removeprefix('model.').removesuffix('.name')} {v}" for k, v in mapping.items())

    text = "; ".join(f"{pairs(r.get('when') or {})}: {pairs(r.get('set') or {})}" for r in rules)
    return text + " (grid.settings: per-family defaults, in each cell's config and hash, not in its name)"
