"""The leaderboard's rows: one raw-scale row per configuration, ranked, plus the fusion summary.

Rows keep coco-caption's raw scale (the CSV is written from them as they are); renderers show x100.
Every row has the same keys in the same order (the CSV's columns): rank and significance, the
identity columns (``dataset`` only when the grid mixes datasets, the components, one column per
extra assignment key), seeds, per split the seed mean/std of every metric and the CIDEr-D interval,
then cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fusionbench.leaderboard.load import Configuration, RunResult, load_per_image, read_manifest
from fusionbench.leaderboard.stats import compare_configurations, mean_of, seed_stats
from fusionbench.metrics.keys import METRIC_KEYS

IDENTITY_KEYS = ("dataset", "encoder", "fusion", "decoder")
_RESERVED = {
    "rank",
    "not_significant_vs_top",
    "p_vs_top",
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
    configs: Sequence[Configuration], splits: Sequence[str], *, n_boot: int, seed: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """One raw-scale row per configuration, ranked by test CIDEr-D; returns (rows, notes)."""
    several_datasets = len({c.dataset for c in configs}) > 1
    extra_keys = sorted({k for c in configs for k in c.extras})
    short = _short_names(extra_keys, _RESERVED)
    rows: list[dict[str, Any]] = []
    # Per split and configuration: the per-seed per-image maps (None: incomplete) and why not.
    scores: dict[str, list[list[dict[str, float]] | None]] = {split: [] for split in splits}
    missing_notes: dict[str, list[str | None]] = {split: [] for split in splits}
    for config in configs:
        row: dict[str, Any] = {"rank": None, "not_significant_vs_top": None, "p_vs_top": None}
        if several_datasets:
            row["dataset"] = config.dataset
        row.update(encoder=config.encoder, fusion=config.fusion, decoder=config.decoder)
        for key in extra_keys:
            row[short[key]] = config.extras.get(key)
        row["n_seeds"] = len(config.runs)
        row["seeds"] = ";".join(str(r.seed) for r in config.runs)
        for split in splits:
            with_split = [r for r in config.runs if isinstance(r.metrics.get(split), dict)]
            for metric in METRIC_KEYS:
                mean, std, _ = seed_stats(r.metrics[split].get(metric) for r in with_split)
                row[f"{split}_{metric}_mean"] = mean
                row[f"{split}_{metric}_std"] = std
            row[f"{split}_n_seeds"] = len(with_split)
            row[f"{split}_CIDEr_ci_lo"] = row[f"{split}_CIDEr_ci_hi"] = row[f"{split}_n_images"] = None
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
        row["cells"] = ";".join(r.name for r in config.runs)
        row["label"] = config.label
        row["notes"] = ""
        rows.append(row)

    order = sorted(
        range(len(rows)),
        key=lambda i: (
            -(rows[i]["test_CIDEr_mean"] if rows[i]["test_CIDEr_mean"] is not None else -math.inf),
            rows[i]["label"],
        ),
    )
    top = order[0] if order else None
    row_notes: list[list[str]] = [[] for _ in rows]
    for split in splits:
        compared = compare_configurations(
            scores[split], top=top if split == "test" else None, n_boot=n_boot, seed=seed
        )
        for i, (row, result) in enumerate(zip(rows, compared)):
            if missing_notes[split][i]:
                row_notes[i].append(missing_notes[split][i])  # type: ignore[arg-type]
            elif scores[split][i] is not None and result.n_images is None:
                row_notes[i].append(f"{split}: fewer than 2 images shared by all seeds; CI omitted")
            row[f"{split}_CIDEr_ci_lo"] = result.ci[0] if result.ci else None
            row[f"{split}_CIDEr_ci_hi"] = result.ci[1] if result.ci else None
            row[f"{split}_n_images"] = result.n_images
            if split == "test":
                row["p_vs_top"] = result.p_vs_top
                row["not_significant_vs_top"] = result.tied_with_top
    notes: list[str] = []
    for row, mine in zip(rows, row_notes):
        row["notes"] = "; ".join(mine)
        notes += [f"{row['label']}: {n}" for n in mine]
    ranked = []
    for rank, i in enumerate(order, start=1):
        rows[i]["rank"] = rank
        ranked.append(rows[i])
    if top is not None and len(ranked) > 1 and rows[top]["test_n_images"] is None:
        notes.append("The top configuration has no per-image test scores, so significance was not tested.")
    return ranked, notes


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


def fusion_summary(rows: Sequence[Mapping[str, Any]], splits: Sequence[str]) -> list[dict[str, Any]]:
    """Per fusion strategy: mean CIDEr-D (over configurations, i.e. over the other axes) per split."""
    out: list[dict[str, Any]] = []
    for fusion in sorted({r["fusion"] for r in rows}):
        mine = [r for r in rows if r["fusion"] == fusion]
        entry: dict[str, Any] = {"fusion": fusion, "n_configurations": len(mine)}
        for split in splits:
            entry[f"{split}_CIDEr_mean"] = mean_of(r[f"{split}_CIDEr_mean"] for r in mine)
            entry[f"{split}_CIDEr_seed_std"] = mean_of(r[f"{split}_CIDEr_std"] for r in mine)
        out.append(entry)
    return out


def fusion_spread(
    summary: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], split: str
) -> dict[str, Any]:
    """Best fusion, spread (max − min of the per-fusion means) and mean seed std for one split."""
    means = {s["fusion"]: s[f"{split}_CIDEr_mean"] for s in summary if s[f"{split}_CIDEr_mean"] is not None}
    seed_std = mean_of(r[f"{split}_CIDEr_std"] for r in rows)
    if not means:
        return {"best": None, "spread": None, "seed_std": seed_std}
    best = max(means, key=lambda k: means[k])
    spread = max(means.values()) - min(means.values()) if len(means) > 1 else None
    return {"best": best, "spread": spread, "seed_std": seed_std}


def fusion_sentences(
    summary: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], splits: Sequence[str]
) -> list[str]:
    """Best fusion per split and whether the spread across fusions exceeds seed noise."""
    out = []
    for split in splits:
        info = fusion_spread(summary, rows, split)
        if info["best"] is None:
            continue
        text = f"{split}: best fusion `{info['best']}`"
        if info["spread"] is None:
            out.append(text + " (only one fusion strategy in the grid).")
            continue
        text += f"; spread across fusion strategies (max − min) {100 * info['spread']:.1f}"
        if info["seed_std"] is None:
            out.append(text + "; seed std unknown (one seed per configuration).")
            continue
        ratio = info["spread"] / info["seed_std"] if info["seed_std"] > 0 else math.inf
        if ratio >= 2:
            verdict = "well above seed noise"
        elif ratio >= 1:
            verdict = "comparable to seed noise (between 1x and 2x the seed std)"
        else:
            verdict = "within seed noise"
        out.append(
            text
            + f" vs mean seed std {100 * info['seed_std']:.1f} (ratio {ratio:.1f}): the spread is {verdict}."
        )
    return out


def header_items(
    *,
    results_dir: Path,
    command: str | None,
    runs: Sequence[RunResult],
    configs: Sequence[Configuration],
    latest: Mapping[str, Mapping[str, Any]],
    n_boot: int,
    seed: int,
) -> list[tuple[str, str]]:
    """(label, text) lines describing how the leaderboard was produced."""
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
        ("Built", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        (
            "Cells",
            f"{len(runs)} completed of {len(latest)} in the grid; {len(configs)} configurations × "
            f"{'/'.join(map(str, seed_counts))} seed(s) (seeds {', '.join(seeds)})",
        ),
        ("Bootstrap", f"{n_boot} resamples of the test images, numpy default_rng({seed})"),
    ]
    if started and finished:
        items.append(("Ran", f"{started[0]} to {finished[-1]}"))
    manifest = read_manifest(results_dir)  # the grid runner's: which grid file owns the folder
    if manifest is not None:
        items.insert(2, ("Grid", f"{manifest.get('grid')} (from {manifest.get('source')})"))
    return items
