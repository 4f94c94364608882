"""Leaderboards from a grid results folder: aggregate seeds, bootstrap intervals, significance.

``build_leaderboard("runs/<grid>")`` reads the grid's ``results.jsonl`` (the last line per cell
wins), groups completed cells into *configurations* (the cell's assignment without ``seed``) and
writes ``<name>.md``, ``<name>.csv`` and a self-contained ``<name>.html`` (sortable table and inline
SVG plots, plus ``<name>_heatmap.svg`` / ``<name>_cost.svg`` beside it) into ``out_dir``.

Statistics
----------
Two different sources of uncertainty are reported, and they answer different questions.

*Seed noise* (``mean ± std``): each configuration is trained with several seeds; the table shows
the mean over seeds of every corpus metric and the sample standard deviation (``ddof=1``; empty
with a single seed). This is the variation of *training*: how much a rerun would move the number.

*Test-set sampling* (``[CI lo, hi]``): the test images are a sample of all images the system could
be asked to caption. coco-caption's corpus CIDEr-D is exactly the mean of the per-image CIDEr-D
values (its document frequencies come from the test references and are the same for every system),
so it can be resampled image by image. For each configuration the per-image CIDEr-D is first
averaged over its seeds; the image ids are then resampled with replacement ``n_boot`` times
(``numpy.random.default_rng(seed)``, so the result is deterministic) and the 2.5th/97.5th
percentiles of the resampled means give a 95% percentile-bootstrap interval. BLEU is not
decomposable over images (its brevity penalty and n-gram counts are corpus-level), so only CIDEr-D
gets an interval.

*Is the top configuration really better?* Two intervals overlapping does not mean two systems are
indistinguishable: most of the spread of a single system's interval is image difficulty (some
images are easy for every system), which is shared by both. A *paired* bootstrap removes it: the
same resampled image ids are applied to both systems, and the statistic is the difference of means
(top − other) on each resample. ``p`` is the fraction of resamples where that difference is
``<= 0`` (a one-sided bootstrap p-value); a configuration with ``p >= 0.05`` is marked ``†``,
"not significantly different from the top". Only images scored for both configurations are used.
This test is conditional on the trained models (it does not include seed noise), so read it next
to the seed std.
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fusionbench.errors import DataError, FusionbenchError
from fusionbench.io import atomic_write_text

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
"""coco-caption keys aggregated for every evaluation split (raw scale)."""

SCALE_SENTENCE = "Scores are x100 (coco-caption raw scale x 100); CIDEr-D uses document frequencies from the test references"
NOT_SIGNIFICANT = "†"
ALPHA = 0.05
COMPONENT_KEYS = {
    "model.encoder.name": "encoder",
    "model.fusion.name": "fusion",
    "model.decoder.name": "decoder",
    "data.name": "dataset",
}
SEED_KEY = "seed"
_GRID_HINT = (
    "run the grid first (`fusionbench run <grid.yaml>`), which appends one line per cell to results.jsonl"
)


# --------------------------------------------------------------------------------------------- data


@dataclass
class Cell:
    """One completed cell: its last record, its metrics.json content and its run folder."""

    name: str
    record: dict[str, Any]
    metrics: dict[str, Any]
    run_dir: Path | None

    @property
    def seed(self) -> Any:
        return self.record.get("seed", (self.record.get("assignment") or {}).get(SEED_KEY))


@dataclass
class Configuration:
    """Cells that share everything but the seed."""

    dataset: str
    encoder: str
    fusion: str
    decoder: str
    extras: dict[str, Any]
    cells: list[Cell] = field(default_factory=list)

    @property
    def label(self) -> str:
        parts = [self.encoder, self.fusion, self.decoder]
        parts += [f"{k.rsplit('.', 1)[-1]}={_fmt_value(v)}" for k, v in sorted(self.extras.items())]
        return "-".join(parts)


@dataclass
class Leaderboard:
    """What ``build_leaderboard`` computed and wrote.

    ``rows`` are the CSV rows (raw scale), in rank order; ``columns`` their keys in CSV order.
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

    @property
    def paths(self) -> list[Path]:
        return [self.markdown_path, self.csv_path, self.html_path, *self.plot_paths]


# ------------------------------------------------------------------------------------ loading


def latest_records(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record for every ``cell`` (later lines win), in order of first appearance."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        cell = record.get("cell")
        if cell is None:
            continue
        latest[str(cell)] = dict(record)
    return latest


def read_results(results_dir: str | Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Parse ``results_dir/results.jsonl``; returns (last record per cell, notes about skipped lines)."""
    results_dir = Path(results_dir)
    path = results_dir / "results.jsonl"
    if not results_dir.is_dir():
        raise DataError(f"Results folder '{results_dir}' does not exist; {_GRID_HINT}.")
    if not path.is_file():
        raise DataError(f"'{results_dir}' has no results.jsonl, so there is nothing to rank; {_GRID_HINT}.")
    records, bad = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad.append(number)
            continue
        if not isinstance(record, dict) or "cell" not in record:
            bad.append(number)
            continue
        records.append(record)
    notes = []
    if bad:
        notes.append(
            f"Skipped {len(bad)} malformed line(s) of {path} (line {', '.join(map(str, bad))}); "
            "a line being written while the grid runs looks like this."
        )
    return latest_records(records), notes


def resolve_run_dir(run_dir: str | None, results_dir: Path) -> Path | None:
    """A record's ``run_dir``: absolute, relative to the current directory, or inside ``results_dir``."""
    if not run_dir:
        return None
    path = Path(run_dir)
    if path.is_absolute() or path.exists():
        return path
    for candidate in (results_dir / path, results_dir / path.name):
        if candidate.exists():
            return candidate
    return path


def load_cells(latest: Mapping[str, Mapping[str, Any]], results_dir: Path) -> tuple[list[Cell], list[str]]:
    """Completed cells with their metrics (from the record, else ``run_dir/metrics.json``)."""
    cells, notes = [], []
    for name, record in latest.items():
        if record.get("status") != "completed":
            continue
        run_dir = resolve_run_dir(record.get("run_dir"), results_dir)
        metrics = record.get("metrics")
        if not isinstance(metrics, dict) and run_dir is not None and (run_dir / "metrics.json").is_file():
            try:
                metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                metrics = None
        if not isinstance(metrics, dict) or not isinstance(metrics.get("test"), dict):
            notes.append(f"Cell {name} is marked completed but has no readable test metrics; left out.")
            continue
        cells.append(Cell(name=name, record=dict(record), metrics=metrics, run_dir=run_dir))
    return cells, notes


def group_configurations(cells: Iterable[Cell]) -> list[Configuration]:
    """Group cells whose assignment, minus ``seed``, is equal (components included)."""
    groups: dict[str, Configuration] = {}
    for cell in cells:
        assignment = dict(cell.record.get("assignment") or {})
        components = dict(cell.record.get("components") or cell.metrics.get("components") or {})
        named = {role: assignment.get(key, components.get(role)) for key, role in COMPONENT_KEYS.items()}
        extras = {k: v for k, v in assignment.items() if k != SEED_KEY and k not in COMPONENT_KEYS}
        key = json.dumps([named, extras], sort_keys=True, default=str)
        if key not in groups:
            groups[key] = Configuration(
                dataset=str(named["dataset"] or "unknown"),
                encoder=str(named["encoder"] or "?"),
                fusion=str(named["fusion"] or "?"),
                decoder=str(named["decoder"] or "?"),
                extras=extras,
            )
        groups[key].cells.append(cell)
    for config in groups.values():
        config.cells.sort(key=lambda c: (str(c.seed), c.name))
    return list(groups.values())


def evaluation_splits(cells: Iterable[Cell]) -> list[str]:
    """``test`` first, then every other split (e.g. ``test_novel``) that has scores in some cell."""
    found: set[str] = set()
    for cell in cells:
        for key, value in cell.metrics.items():
            if key.startswith("test") and isinstance(value, dict) and "CIDEr" in value:
                found.add(key)
    return ["test", *sorted(found - {"test"})]


def load_per_image(run_dir: Path | None, split: str, metric: str = "CIDEr") -> dict[str, float] | None:
    """``{image_id: score}`` from ``run_dir/scores_<split>.json``; None when missing or unreadable."""
    if run_dir is None:
        return None
    path = run_dir / f"scores_{split}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(image): float(scores[metric]) for image, scores in data.items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


# ---------------------------------------------------------------------------------- statistics


def seed_stats(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std with ddof=1 or None for one value, count), ignoring None/NaN values."""
    clean = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(float(v))]
    n = len(clean)
    if n == 0:
        return None, None, 0
    mean = sum(clean) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in clean) / (n - 1)) if n > 1 else None
    return mean, std, n


def average_per_image(score_maps: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-image mean over seeds, on the image ids every seed has (sorted ids)."""
    if not score_maps:
        return {}
    common = set(score_maps[0])
    for scores in score_maps[1:]:
        common &= set(scores)
    return {i: sum(float(s[i]) for s in score_maps) / len(score_maps) for i in sorted(common)}


def bootstrap_indices(n_images: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n_images)`` image indices drawn with replacement by ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_images, size=(n_boot, n_images))


def bootstrap_ci(
    per_image: Mapping[str, float], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the mean over images; None with fewer than 2 images."""
    ids = sorted(per_image)
    if len(ids) < 2 or n_boot < 1:
        return None
    values = np.array([per_image[i] for i in ids], dtype=float)
    means = values[bootstrap_indices(len(ids), n_boot, seed)].mean(axis=1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_bootstrap_p(
    top: Mapping[str, float], other: Mapping[str, float], *, n_boot: int = 1000, seed: int = 0
) -> float | None:
    """Fraction of paired resamples (same image ids) where mean(top) − mean(other) <= 0.

    Uses the images present in both; None with fewer than 2 shared images.
    """
    ids = sorted(set(top) & set(other))
    if len(ids) < 2 or n_boot < 1:
        return None
    diff = np.array([top[i] - other[i] for i in ids], dtype=float)
    resampled = diff[bootstrap_indices(len(ids), n_boot, seed)].mean(axis=1)
    # Differences that are zero up to float rounding count as "not better".
    return float(np.mean(resampled <= 1e-12))


# ------------------------------------------------------------------------------------ the rows


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


def _mean_of(values: Iterable[Any]) -> float | None:
    return seed_stats(values)[0]


def aggregate(
    configs: Sequence[Configuration], splits: Sequence[str], *, n_boot: int, seed: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """One raw-scale row per configuration, ranked; returns (rows, notes)."""
    notes: list[str] = []
    several_datasets = len({c.dataset for c in configs}) > 1
    extra_keys = sorted({k for c in configs for k in c.extras})
    reserved = {"rank", "not_significant_vs_top", "p_vs_top", "dataset", "encoder", "fusion", "decoder"}
    reserved |= {
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
    short = _short_names(extra_keys, reserved)
    rows: list[dict[str, Any]] = []
    per_image_test: list[dict[str, float] | None] = []
    for config in configs:
        row: dict[str, Any] = {"rank": None, "not_significant_vs_top": None, "p_vs_top": None}
        if several_datasets:
            row["dataset"] = config.dataset
        row.update(encoder=config.encoder, fusion=config.fusion, decoder=config.decoder)
        for key in extra_keys:
            row[short[key]] = config.extras.get(key)
        row["n_seeds"] = len(config.cells)
        row["seeds"] = ";".join(str(c.seed) for c in config.cells)
        row_notes: list[str] = []
        for split in splits:
            with_split = [c for c in config.cells if isinstance(c.metrics.get(split), dict)]
            for metric in METRICS:
                mean, std, _ = seed_stats(c.metrics[split].get(metric) for c in with_split)
                row[f"{split}_{metric}_mean"] = mean
                row[f"{split}_{metric}_std"] = std
            row[f"{split}_n_seeds"] = len(with_split)
            maps = [load_per_image(c.run_dir, split) for c in with_split]
            missing = [c for c, m in zip(with_split, maps) if m is None]
            per_image = None
            if with_split and not missing:
                per_image = average_per_image(maps)  # type: ignore[arg-type]
                if len(per_image) < 2:
                    row_notes.append(f"{split}: fewer than 2 images shared by all seeds; CI omitted")
                    per_image = None
            elif missing:
                files = ", ".join(
                    str(c.run_dir / f"scores_{split}.json") if c.run_dir else f"{c.name} (no run_dir)"
                    for c in missing
                )
                row_notes.append(f"{split}: per-image scores missing ({files}); CI omitted")
            ci = bootstrap_ci(per_image, n_boot=n_boot, seed=seed) if per_image else None
            row[f"{split}_CIDEr_ci_lo"] = ci[0] if ci else None
            row[f"{split}_CIDEr_ci_hi"] = ci[1] if ci else None
            row[f"{split}_n_images"] = len(per_image) if per_image else None
            if split == "test":
                per_image_test.append(per_image)
        row["params_total"] = _round(
            _mean_of((c.metrics.get("params") or {}).get("total") for c in config.cells)
        )
        row["train_images_per_s"] = _mean_of(
            (c.metrics.get("cost") or {}).get("train_images_per_s") for c in config.cells
        )
        row["gflops_per_image"] = _mean_of(
            None if (f := (c.metrics.get("cost") or {}).get("flops_per_image")) is None else f / 1e9
            for c in config.cells
        )
        row["peak_memory_mb"] = _mean_of(
            (c.metrics.get("cost") or {}).get("peak_memory_mb") for c in config.cells
        )
        for split in splits:
            row[f"{split}_ms_per_image"] = _mean_of(
                ((c.metrics.get("cost") or {}).get("inference_ms_per_image") or {}).get(split)
                for c in config.cells
            )
        row["wall_seconds"] = _mean_of(c.record.get("wall_seconds") for c in config.cells)
        row["cells"] = ";".join(c.name for c in config.cells)
        row["label"] = config.label
        row["notes"] = "; ".join(row_notes)
        notes += [f"{config.label}: {n}" for n in row_notes]
        rows.append(row)

    order = sorted(
        range(len(rows)),
        key=lambda i: (
            -(rows[i]["test_CIDEr_mean"] if rows[i]["test_CIDEr_mean"] is not None else -math.inf),
            rows[i]["label"],
        ),
    )
    ranked = []
    top_scores = per_image_test[order[0]] if order else None
    for rank, i in enumerate(order, start=1):
        row = rows[i]
        row["rank"] = rank
        if rank > 1 and top_scores is not None and per_image_test[i] is not None:
            p = paired_bootstrap_p(top_scores, per_image_test[i], n_boot=n_boot, seed=seed)
            row["p_vs_top"] = p
            row["not_significant_vs_top"] = None if p is None else p >= ALPHA
        ranked.append(row)
    if ranked and top_scores is None and len(ranked) > 1:
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
            entry[f"{split}_CIDEr_mean"] = _mean_of(r[f"{split}_CIDEr_mean"] for r in mine)
            entry[f"{split}_CIDEr_seed_std"] = _mean_of(r[f"{split}_CIDEr_std"] for r in mine)
        out.append(entry)
    return out


def fusion_spread(
    summary: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], split: str
) -> dict:
    """Best fusion, spread (max − min of the per-fusion means) and mean seed std for one split."""
    means = {s["fusion"]: s[f"{split}_CIDEr_mean"] for s in summary if s[f"{split}_CIDEr_mean"] is not None}
    seed_std = _mean_of(r[f"{split}_CIDEr_std"] for r in rows)
    if not means:
        return {"best": None, "spread": None, "seed_std": seed_std}
    best = max(means, key=lambda k: means[k])
    spread = max(means.values()) - min(means.values()) if len(means) > 1 else None
    return {"best": best, "spread": spread, "seed_std": seed_std}


# --------------------------------------------------------------------------------- formatting


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def fmt_score(
    mean: float | None, std: float | None = None, ci: tuple[float | None, float | None] | None = None
) -> str:
    """``96.1 ± 1.2 [94.0, 98.3]`` on the x100 scale; ``–`` for a missing mean."""
    if mean is None:
        return "–"
    text = f"{100 * mean:.1f}"
    if std is not None:
        text += f" ± {100 * std:.1f}"
    if ci is not None and ci[0] is not None and ci[1] is not None:
        text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return text


def fmt_params(n: float | None) -> str:
    """``1.63M``, ``850K``, ``1.2B``."""
    if n is None:
        return "–"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return str(int(n))


def _fmt_num(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def display_table(
    rows: Sequence[Mapping[str, Any]], splits: Sequence[str]
) -> tuple[list[str], list[list[tuple[str, Any]]]]:
    """Header and cells (display text, sort value) shared by the Markdown and HTML tables."""
    first = rows[0] if rows else {}
    label_cols = [k for k in ("dataset", "encoder", "fusion", "decoder") if k in first]
    keys = list(first)
    # Extra assignment columns sit between ``decoder`` and ``n_seeds`` in every row (see ``aggregate``).
    extra_cols = keys[keys.index("decoder") + 1 : keys.index("n_seeds")] if keys else []
    header = ["rank", *label_cols, *extra_cols, "test CIDEr-D", "test BLEU-4", "test METEOR", "test ROUGE-L"]
    header += ["params", "GFLOPs/img", "train img/s", "ms/image", "peak MB", "seeds", "p vs #1"]
    others = [s for s in splits if s != "test"]
    for split in others:
        header += [f"{split} CIDEr-D", f"{split} BLEU-4"]
    body = []
    for row in rows:
        marker = NOT_SIGNIFICANT if row.get("not_significant_vs_top") else ""
        cells: list[tuple[str, Any]] = [(f"{row['rank']}{marker}", row["rank"])]
        cells += [("–" if row[k] is None else _fmt_value(row[k]), row[k]) for k in label_cols + extra_cols]
        cells.append(
            (
                fmt_score(
                    row["test_CIDEr_mean"],
                    row["test_CIDEr_std"],
                    (row["test_CIDEr_ci_lo"], row["test_CIDEr_ci_hi"]),
                ),
                row["test_CIDEr_mean"],
            )
        )
        for metric in ("Bleu_4", "METEOR", "ROUGE_L"):
            cells.append(
                (fmt_score(row[f"test_{metric}_mean"], row[f"test_{metric}_std"]), row[f"test_{metric}_mean"])
            )
        cells.append((fmt_params(row["params_total"]), row["params_total"]))
        cells.append((_fmt_num(row.get("gflops_per_image"), 3), row.get("gflops_per_image")))
        cells.append((_fmt_num(row["train_images_per_s"], 0), row["train_images_per_s"]))
        cells.append((_fmt_num(row["test_ms_per_image"], 2), row["test_ms_per_image"]))
        cells.append((_fmt_num(row.get("peak_memory_mb"), 0), row.get("peak_memory_mb")))
        cells.append((str(row["n_seeds"]), row["n_seeds"]))
        p = row["p_vs_top"]
        cells.append(("–" if p is None else f"{p:.3f}", p))
        for split in others:
            cells.append(
                (
                    fmt_score(
                        row[f"{split}_CIDEr_mean"],
                        row[f"{split}_CIDEr_std"],
                        (row[f"{split}_CIDEr_ci_lo"], row[f"{split}_CIDEr_ci_hi"]),
                    ),
                    row[f"{split}_CIDEr_mean"],
                )
            )
            cells.append(
                (
                    fmt_score(row[f"{split}_Bleu_4_mean"], row[f"{split}_Bleu_4_std"]),
                    row[f"{split}_Bleu_4_mean"],
                )
            )
        body.append(cells)
    return header, body


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], body: Sequence[Sequence[tuple[str, Any]]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(_md_escape(text) for text, _ in cells) + " |" for cells in body]
    return "\n".join(lines)


def legend_line(n_boot: int) -> str:
    return (
        f"{NOT_SIGNIFICANT} not significantly different from the top: rank 1 is not significantly better than "
        f"this configuration (paired bootstrap over test images, {n_boot} resamples, p ≥ {ALPHA}; p vs #1 column). "
        "CIDEr-D cells are mean ± sample std over seeds [95% bootstrap CI over test images]; "
        "other scores are mean ± std over seeds. Cost: GFLOPs/img is one teacher-forced forward pass "
        "(torch FlopCounterMode), train img/s steady-state training throughput, ms/image test decoding with the "
        "configured beam, peak MB the process's peak memory (RSS on CPU, max allocated on CUDA)."
    )


def _first_line(text: Any) -> str:
    if not text:
        return "(no error message)"
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else "(no error message)"


def header_items(
    *,
    results_dir: Path,
    command: str | None,
    cells: Sequence[Cell],
    configs: Sequence[Configuration],
    latest: Mapping[str, Mapping[str, Any]],
    n_boot: int,
    seed: int,
) -> list[tuple[str, str]]:
    """(label, text) lines describing how the leaderboard was produced."""
    commits = sorted({str(c.record["git_commit"]) for c in cells if c.record.get("git_commit")})
    seeds = sorted({str(c.seed) for c in cells})
    seed_counts = sorted({len(c.cells) for c in configs})
    started = sorted(str(c.record["started_at"]) for c in cells if c.record.get("started_at"))
    finished = sorted(str(c.record["finished_at"]) for c in cells if c.record.get("finished_at"))
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
            f"{len(cells)} completed of {len(latest)} in the grid; {len(configs)} configurations × "
            f"{'/'.join(map(str, seed_counts))} seed(s) (seeds {', '.join(seeds)})",
        ),
        ("Bootstrap", f"{n_boot} resamples of the test images, numpy default_rng({seed})"),
    ]
    if started and finished:
        items.append(("Ran", f"{started[0]} to {finished[-1]}"))
    try:  # the grid runner's manifest, when present: which grid file owns the folder
        manifest = json.loads((results_dir / "grid.json").read_text(encoding="utf-8"))
        items.insert(2, ("Grid", f"{manifest.get('grid')} (from {manifest.get('source')})"))
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    return items


def not_completed(latest: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Cells whose last record is not ``completed``: name, status and the error's first line."""
    return [
        {
            "cell": name,
            "status": str(r.get("status")),
            "error": _first_line(r.get("error")) if r.get("error") else None,
        }
        for name, r in latest.items()
        if r.get("status") != "completed"
    ]


def render_markdown(
    *,
    title: str,
    items: Sequence[tuple[str, str]],
    failed: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    splits: Sequence[str],
    summary: Sequence[Mapping[str, Any]],
    notes: Sequence[str],
    n_boot: int,
) -> str:
    out = [f"# Leaderboard: {title}", ""]
    out += [f"- {label}: {text}" for label, text in items]
    if failed:
        out.append(f"- Not completed ({len(failed)}):")
        for f in failed:
            out.append(
                f"  - `{f['cell']}` ({f['status']})" + (f": {_md_escape(f['error'])}" if f["error"] else "")
            )
    out += ["", SCALE_SENTENCE + ".", ""]
    header, body = display_table(rows, splits)
    out += [markdown_table(header, body), "", legend_line(n_boot), ""]
    if notes:
        out += ["Notes:", ""] + [f"- {_md_escape(n)}" for n in notes] + [""]
    out += ["## Fusion strategies", ""]
    out += [_fusion_markdown(summary, rows, splits), ""]
    return "\n".join(out)


def _fusion_markdown(
    summary: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], splits: Sequence[str]
) -> str:
    header = [
        "fusion",
        "configurations",
        *[f"{s} CIDEr-D" for s in splits],
        *[f"{s} mean seed std" for s in splits],
    ]
    body = [
        [(s["fusion"], None), (str(s["n_configurations"]), None)]
        + [(fmt_score(s[f"{sp}_CIDEr_mean"]), None) for sp in splits]
        + [(fmt_score(s[f"{sp}_CIDEr_seed_std"]), None) for sp in splits]
        for s in summary
    ]
    lines = [
        "Mean CIDEr-D (x100) per fusion strategy, averaged over the configurations that use it (the other axes).",
        "",
        markdown_table(header, body),
        "",
    ]
    lines += [f"- {t}" for t in fusion_sentences(summary, rows, splits)]
    return "\n".join(lines)


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


def render_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    return buf.getvalue()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


# ------------------------------------------------------------------------------------- SVG plots

_VIRIDIS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
_PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]
_SHAPES = ["circle", "square", "triangle", "diamond"]


def _viridis(t: float) -> tuple[int, int, int]:
    t = min(max(t, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    f = t - i
    a, b = _VIRIDIS[i], _VIRIDIS[i + 1]
    return tuple(int(round(a[k] + (b[k] - a[k]) * f)) for k in range(3))  # type: ignore[return-value]


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def heatmap_svg(rows: Sequence[Mapping[str, Any]], split: str = "test") -> str:
    """Encoder (rows) × fusion (columns) test CIDEr-D x100, one panel per decoder, shared colour scale.

    Configurations that differ in other axes are averaged into one cell.
    """
    decoders = sorted({r["decoder"] for r in rows})
    encoders = sorted({r["encoder"] for r in rows})
    fusions = sorted({r["fusion"] for r in rows})
    values: dict[tuple[str, str, str], float] = {}
    for d in decoders:
        for e in encoders:
            for f in fusions:
                v = _mean_of(
                    r[f"{split}_CIDEr_mean"]
                    for r in rows
                    if (r["decoder"], r["encoder"], r["fusion"]) == (d, e, f)
                )
                if v is not None:
                    values[(d, e, f)] = 100 * v
    lo, hi = (min(values.values()), max(values.values())) if values else (0.0, 1.0)
    cw, ch, left, top, gap = 78, 36, 90, 44, 30
    panel_w = left + cw * len(fusions)
    width = panel_w * len(decoders) + gap * (len(decoders) - 1) + 20
    height = top + ch * len(encoders) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{_esc(split)} CIDEr-D x100 by encoder and fusion, per decoder</title>",
    ]
    for p, d in enumerate(decoders):
        x0 = p * (panel_w + gap)
        parts.append(
            f'<text x="{x0 + left + cw * len(fusions) / 2}" y="16" text-anchor="middle" font-weight="bold">'
            f"decoder: {_esc(d)}</text>"
        )
        for j, f in enumerate(fusions):
            parts.append(
                f'<text x="{x0 + left + cw * j + cw / 2}" y="{top - 8}" text-anchor="middle">{_esc(f)}</text>'
            )
        for i, e in enumerate(encoders):
            y = top + ch * i
            parts.append(f'<text x="{x0 + left - 6}" y="{y + ch / 2 + 4}" text-anchor="end">{_esc(e)}</text>')
            for j, f in enumerate(fusions):
                x = x0 + left + cw * j
                v = values.get((d, e, f))
                if v is None:
                    parts.append(
                        f'<rect x="{x}" y="{y}" width="{cw}" height="{ch}" fill="#eee" stroke="#fff"/>'
                        f'<text x="{x + cw / 2}" y="{y + ch / 2 + 4}" text-anchor="middle" fill="#999">–</text>'
                    )
                    continue
                r, g, b = _viridis((v - lo) / (hi - lo) if hi > lo else 0.5)
                ink = "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"
                parts.append(
                    f'<rect x="{x}" y="{y}" width="{cw}" height="{ch}" fill="rgb({r},{g},{b})" stroke="#fff">'
                    f"<title>{_esc(e)} / {_esc(f)} / {_esc(d)}: {v:.1f}</title></rect>"
                    f'<text x="{x + cw / 2}" y="{y + ch / 2 + 4}" text-anchor="middle" fill="{ink}">{v:.1f}</text>'
                )
    parts.append(
        f'<text x="10" y="{height - 12}" fill="#555">{_esc(split)} CIDEr-D x100 (colour scale {lo:.1f} to {hi:.1f})</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step) * step
    ticks, t = [], start
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks at 1, 2, 5 × 10^k inside [10^lo, 10^hi] (log10 bounds)."""
    ticks = []
    for k in range(math.floor(lo) - 1, math.ceil(hi) + 1):
        for m in (1, 2, 5):
            v = m * 10**k
            if lo - 1e-9 <= math.log10(v) <= hi + 1e-9:
                ticks.append(v)
    return ticks


def _marker(shape: str, x: float, y: float, colour: str, tip: str) -> str:
    s = 6
    title = f"<title>{_esc(tip)}</title>"
    if shape == "square":
        return f'<rect x="{x - s}" y="{y - s}" width="{2 * s}" height="{2 * s}" fill="{colour}" stroke="#222">{title}</rect>'
    if shape == "triangle":
        pts = f"{x},{y - s - 1} {x - s},{y + s} {x + s},{y + s}"
        return f'<polygon points="{pts}" fill="{colour}" stroke="#222">{title}</polygon>'
    if shape == "diamond":
        pts = f"{x},{y - s - 1} {x + s + 1},{y} {x},{y + s + 1} {x - s - 1},{y}"
        return f'<polygon points="{pts}" fill="{colour}" stroke="#222">{title}</polygon>'
    return f'<circle cx="{x}" cy="{y}" r="{s}" fill="{colour}" stroke="#222">{title}</circle>'


def cost_svg(rows: Sequence[Mapping[str, Any]], split: str = "test") -> str:
    """Test CIDEr-D x100 (with its bootstrap CI as error bar) against total parameters on a log axis.

    Colour = fusion strategy, marker = decoder.
    """
    points = [r for r in rows if r.get("params_total") and r.get(f"{split}_CIDEr_mean") is not None]
    fusions = sorted({r["fusion"] for r in rows})
    decoders = sorted({r["decoder"] for r in rows})
    colour = {f: _PALETTE[i % len(_PALETTE)] for i, f in enumerate(fusions)}
    shape = {d: _SHAPES[i % len(_SHAPES)] for i, d in enumerate(decoders)}
    width, height, ml, mr, mt, mb = 640, 380, 60, 150, 20, 50
    pw, ph = width - ml - mr, height - mt - mb
    if points:
        xs = [math.log10(r["params_total"]) for r in points]
        ys = [100 * r[f"{split}_CIDEr_mean"] for r in points]
        ys += [100 * r[f"{split}_CIDEr_ci_lo"] for r in points if r.get(f"{split}_CIDEr_ci_lo") is not None]
        ys += [100 * r[f"{split}_CIDEr_ci_hi"] for r in points if r.get(f"{split}_CIDEr_ci_hi") is not None]
        x_lo, x_hi = min(xs), max(xs)
        y_lo, y_hi = min(ys), max(ys)
    else:
        x_lo, x_hi, y_lo, y_hi = 5.0, 7.0, 0.0, 100.0
    x_pad = max((x_hi - x_lo) * 0.08, 0.15)
    y_pad = max((y_hi - y_lo) * 0.08, 1.0)
    x_lo, x_hi, y_lo, y_hi = x_lo - x_pad, x_hi + x_pad, y_lo - y_pad, y_hi + y_pad

    def px(v: float) -> float:
        return ml + (v - x_lo) / (x_hi - x_lo) * pw

    def py(v: float) -> float:
        return mt + ph - (v - y_lo) / (y_hi - y_lo) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{_esc(split)} CIDEr-D x100 vs total parameters</title>",
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>',
    ]
    for t in _log_ticks(x_lo, x_hi):
        x = px(math.log10(t))
        parts.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{mt + ph}" stroke="#ddd"/>')
        parts.append(f'<text x="{x:.1f}" y="{mt + ph + 16}" text-anchor="middle">{fmt_params(t)}</text>')
    for t in _nice_ticks(y_lo, y_hi):
        y = py(t)
        parts.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    parts.append(
        f'<text x="{ml + pw / 2}" y="{height - 10}" text-anchor="middle">total parameters (log scale)</text>'
    )
    parts.append(
        f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {mt + ph / 2})">'
        f"{_esc(split)} CIDEr-D x100</text>"
    )
    for r in points:
        x, y = px(math.log10(r["params_total"])), py(100 * r[f"{split}_CIDEr_mean"])
        lo, hi = r.get(f"{split}_CIDEr_ci_lo"), r.get(f"{split}_CIDEr_ci_hi")
        if lo is not None and hi is not None:
            parts.append(
                f'<line x1="{x:.1f}" y1="{py(100 * lo):.1f}" x2="{x:.1f}" y2="{py(100 * hi):.1f}" '
                f'stroke="{colour[r["fusion"]]}" stroke-width="1.5"/>'
            )
        tip = f"#{r['rank']} {r['label']}: {100 * r[f'{split}_CIDEr_mean']:.1f}, {fmt_params(r['params_total'])} params"
        parts.append(_marker(shape[r["decoder"]], round(x, 1), round(y, 1), colour[r["fusion"]], tip))
    lx, ly = ml + pw + 16, mt + 10
    parts.append(f'<text x="{lx}" y="{ly}" font-weight="bold">fusion (colour)</text>')
    for i, f in enumerate(fusions):
        parts.append(_marker("circle", lx + 6, ly + 18 + 18 * i, colour[f], f))
        parts.append(f'<text x="{lx + 18}" y="{ly + 22 + 18 * i}">{_esc(f)}</text>')
    ly += 18 * len(fusions) + 36
    parts.append(f'<text x="{lx}" y="{ly}" font-weight="bold">decoder (marker)</text>')
    for i, d in enumerate(decoders):
        parts.append(_marker(shape[d], lx + 6, ly + 18 + 18 * i, "#fff", d))
        parts.append(f'<text x="{lx + 18}" y="{ly + 22 + 18 * i}">{_esc(d)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;cursor:pointer;user-select:none}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td.t,th.t{text-align:left}tr:nth-child(even) td{background:#fafafa}
.note{color:#555;font-size:13px}figure{margin:1em 0}
"""

_JS = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var asc = !th.classList.contains('asc');
      table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc ? 'asc' : 'desc');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function(a, b){
        var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
        if (x === '' && y === '') return 0; if (x === '') return 1; if (y === '') return -1;
        var nx = Number(x), ny = Number(y), r;
        if (!isNaN(nx) && !isNaN(ny)) r = nx - ny;
        else r = x.localeCompare(y);
        return asc ? r : -r;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def _html_table(
    header: Sequence[str], body: Sequence[Sequence[tuple[str, Any]]], sortable: bool = True
) -> str:
    def sort_attr(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return str(int(value))
        if isinstance(value, (int, float)):
            return repr(float(value)) if isinstance(value, float) else str(value)
        return str(value)

    cls = ' class="sortable"' if sortable else ""
    out = [f"<table{cls}><thead><tr>"]
    numeric = [
        all(isinstance(c[i][1], (int, float)) or c[i][1] is None for c in body) for i in range(len(header))
    ]
    align = ["" if n else ' class="t"' for n in numeric]
    for i, h in enumerate(header):
        out.append(f'<th{align[i]} title="click to sort">{_esc(h)}</th>')
    out.append("</tr></thead><tbody>")
    for cells in body:
        out.append(
            "<tr>"
            + "".join(
                f'<td{align[i]} data-v="{_esc(sort_attr(v))}">{_esc(t)}</td>'
                for i, (t, v) in enumerate(cells)
            )
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def render_html(
    *,
    title: str,
    items: Sequence[tuple[str, str]],
    failed: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    splits: Sequence[str],
    summary: Sequence[Mapping[str, Any]],
    notes: Sequence[str],
    n_boot: int,
    heatmap: str,
    cost: str,
) -> str:
    header, body = display_table(rows, splits)
    info = "".join(f"<li><b>{_esc(k)}</b>: {_esc(v.replace('`', ''))}</li>" for k, v in items)
    if failed:
        info += f"<li><b>Not completed ({len(failed)})</b>:<ul>"
        info += "".join(
            f"<li><code>{_esc(f['cell'])}</code> ({_esc(f['status'])})"
            + (f": {_esc(f['error'])}" if f["error"] else "")
            + "</li>"
            for f in failed
        )
        info += "</ul></li>"
    fus_header = [
        "fusion",
        "configurations",
        *[f"{s} CIDEr-D" for s in splits],
        *[f"{s} mean seed std" for s in splits],
    ]
    fus_body = [
        [(s["fusion"], s["fusion"]), (str(s["n_configurations"]), s["n_configurations"])]
        + [(fmt_score(s[f"{sp}_CIDEr_mean"]), s[f"{sp}_CIDEr_mean"]) for sp in splits]
        + [(fmt_score(s[f"{sp}_CIDEr_seed_std"]), s[f"{sp}_CIDEr_seed_std"]) for sp in splits]
        for s in summary
    ]
    notes_html = (
        ('<p><b>Notes</b></p><ul class="note">' + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
        if notes
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Leaderboard: {_esc(title)}</title>
<style>{_CSS}</style></head>
<body>
<h1>Leaderboard: {_esc(title)}</h1>
<ul>{info}</ul>
<p><b>{_esc(SCALE_SENTENCE)}.</b></p>
{_html_table(header, body)}
<p class="note">{_esc(legend_line(n_boot))} Click a column header to sort.</p>
{notes_html}
<h2>Fusion strategies</h2>
<p>Mean CIDEr-D (x100) per fusion strategy, averaged over the configurations that use it (the other axes).</p>
{_html_table(fus_header, fus_body)}
<ul>{"".join(f"<li>{_esc(t.replace('`', ''))}</li>" for t in fusion_sentences(summary, rows, splits))}</ul>
<h2>Test CIDEr-D by encoder × fusion, per decoder</h2>
<figure>{heatmap}</figure>
<h2>Quality vs cost</h2>
<figure>{cost}<figcaption class="note">Error bars: 95% bootstrap CI over test images.</figcaption></figure>
<script>{_JS}</script>
</body></html>
"""


# ----------------------------------------------------------------------------------------- build


def build_leaderboard(
    results_dir: str | Path,
    *,
    out_dir: str | Path = "leaderboards",
    name: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    command: str | None = None,
) -> Leaderboard:
    """Aggregate a grid's results folder and write ``<name>.md/.csv/.html`` (+ SVG plots) into ``out_dir``."""
    results_dir = Path(results_dir)
    latest, notes = read_results(results_dir)
    cells, load_notes = load_cells(latest, results_dir)
    notes += load_notes
    if not cells:
        statuses = ", ".join(sorted({str(r.get("status")) for r in latest.values()})) or "none"
        raise DataError(
            f"'{results_dir / 'results.jsonl'}' has no completed cell ({len(latest)} cell(s), statuses: {statuses}); "
            f"{_GRID_HINT}, and check the failed cells' errors there."
        )
    configs = group_configurations(cells)
    splits = evaluation_splits(cells)
    rows, agg_notes = aggregate(configs, splits, n_boot=n_boot, seed=seed)
    notes += agg_notes
    datasets = sorted({c.dataset for c in configs})
    if len(datasets) > 1:
        notes.append(f"The grid mixes datasets ({', '.join(datasets)}); ranks compare across them.")
    name = name or "_".join(datasets)
    failed = not_completed(latest)
    summary = fusion_summary(rows, splits)
    items = header_items(
        results_dir=results_dir,
        command=command,
        cells=cells,
        configs=configs,
        latest=latest,
        n_boot=n_boot,
        seed=seed,
    )
    columns = csv_columns(rows)

    out = Path(out_dir)
    md_path, csv_path, html_path = out / f"{name}.md", out / f"{name}.csv", out / f"{name}.html"
    heat_path, cost_path = out / f"{name}_heatmap.svg", out / f"{name}_cost.svg"
    heatmap, cost = heatmap_svg(rows), cost_svg(rows)
    common = dict(
        title=name,
        items=items,
        failed=failed,
        rows=rows,
        splits=splits,
        summary=summary,
        notes=notes,
        n_boot=n_boot,
    )
    atomic_write_text(md_path, render_markdown(**common))
    atomic_write_text(csv_path, render_csv(rows, columns))
    atomic_write_text(heat_path, heatmap + "\n")
    atomic_write_text(cost_path, cost + "\n")
    atomic_write_text(html_path, render_html(**common, heatmap=heatmap, cost=cost))
    return Leaderboard(
        name=name,
        rows=rows,
        columns=columns,
        splits=splits,
        fusion_summary=summary,
        failed=failed,
        notes=notes,
        markdown_path=md_path,
        csv_path=csv_path,
        html_path=html_path,
        plot_paths=[heat_path, cost_path],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fusionbench.leaderboard runs/<grid>``: build and print where the files went."""
    parser = argparse.ArgumentParser(
        prog="python -m fusionbench.leaderboard", description=__doc__.splitlines()[0]
    )
    parser.add_argument("results_dir", help="grid results folder holding results.jsonl (runs/<grid>)")
    parser.add_argument("--out-dir", default="leaderboards")
    parser.add_argument("--name", default=None, help="file stem (default: the dataset name)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    command = "python -m fusionbench.leaderboard " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        board = build_leaderboard(
            args.results_dir,
            out_dir=args.out_dir,
            name=args.name,
            n_boot=args.n_boot,
            seed=args.seed,
            command=command,
        )
    except FusionbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    for path in board.paths:
        print(os.fspath(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
