"""Reading a grid's results folder: ``results.jsonl``, each run's folder, its per-image scores.

The grid runner appends one JSON line per cell event to ``results.jsonl``; the last line of a
cell wins (a failed attempt followed by a completed rerun is completed). A completed cell's
scores come from its record, else from ``<run_dir>/metrics.json``; per-image CIDEr-D, which the
bootstrap needs, from ``<run_dir>/scores_<split>.json``. The record's metrics are ``metrics.json``'s
content, so a run's ``degenerate`` reason and ``val_history`` are read from there too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusionbench import naming
from fusionbench.errors import DataError
from fusionbench.leaderboard.formatting import fmt_value

COMPONENT_KEYS = {key: kind for kind, key in naming.COMPONENT_KEYS.items()}
"""Assignment keys that name a configuration's components, and the column each becomes."""
SEED_KEY = "seed"
FILE_ONLY_KEYS = ("degenerate", "collapse", "val_history", "diagnostics")
"""``metrics.json`` keys the leaderboard reads that a grid record's metrics summary may leave out."""
GRID_HINT = (
    "run the grid first (`fusionbench run <grid.yaml>`), which appends one line per cell to results.jsonl"
)


@dataclass
class RunResult:
    """One completed grid cell (one training run): its last record, its metrics and its run folder.

    Not a ``fusionbench.grid.Cell``, which is the cell's *spec* before it ran.
    """

    name: str
    record: dict[str, Any]
    metrics: dict[str, Any]
    run_dir: Path | None

    @property
    def seed(self) -> Any:
        return self.record.get("seed", (self.record.get("assignment") or {}).get(SEED_KEY))

    @property
    def degenerate(self) -> str | None:
        """Why the run's captions are degenerate (``"<split>: <reason>; ..."``), None when they are not.

        ``metrics.json``'s ``degenerate`` (``fusionbench.metrics.collapse``); a file written before
        that key existed is read from its ``collapse`` block, and one with neither is not flagged.
        """
        reason = self.metrics.get("degenerate")
        if isinstance(reason, str) and reason:
            return reason
        collapse = self.metrics.get("collapse")
        if "degenerate" in self.metrics or not isinstance(collapse, dict):
            return None
        found = [
            f"{split}: {c.get('reason', 'degenerate')}"
            for split, c in collapse.items()
            if isinstance(c, dict) and c.get("degenerate")
        ]
        return "; ".join(found) or None

    @property
    def val_history(self) -> list[tuple[int, float]]:
        """(epoch, validation CIDEr-D) per validation pass, from ``metrics.json``'s ``val_history``."""
        points = []
        for entry in self.metrics.get("val_history") or []:
            if not isinstance(entry, dict):
                continue
            epoch, cider = entry.get("epoch"), entry.get("CIDEr")
            if isinstance(epoch, (int, float)) and isinstance(cider, (int, float)) and math.isfinite(cider):
                points.append((int(epoch), float(cider)))
        return points

    @property
    def selected_val(self) -> tuple[float, int | None] | None:
        """(validation CIDEr-D, epoch) of the checkpoint the run selected and tested: its best
        validation epoch. ``metrics.json``'s ``val`` (the best validation pass, what ``best.ckpt``
        holds), else the best point of ``val_history``; None when the run recorded neither."""
        best = self.metrics.get("val")
        cider = best.get("CIDEr") if isinstance(best, dict) else None
        if isinstance(cider, (int, float)) and math.isfinite(cider):
            epoch = best.get("epoch")
            return float(cider), int(epoch) if isinstance(epoch, (int, float)) else None
        history = self.val_history
        if not history:
            return None
        epoch, cider = max(history, key=lambda point: (point[1], -point[0]))  # first best, as training
        return cider, epoch


@dataclass
class Configuration:
    """Runs that share everything but the seed."""

    dataset: str
    encoder: str
    fusion: str
    decoder: str
    extras: dict[str, Any]
    runs: list[RunResult] = field(default_factory=list)

    @property
    def label(self) -> str:
        parts = [self.encoder, self.fusion, self.decoder]
        parts += [f"{k.rsplit('.', 1)[-1]}={fmt_value(v)}" for k, v in sorted(self.extras.items())]
        return "-".join(parts)

    @property
    def degenerate(self) -> str | None:
        """Why the configuration is degenerate: the reason of every seed whose captions collapsed.

        One collapsed seed is enough: its score is in the configuration's mean, which then is no
        real result, so the configuration stays out of the ranking, the comparisons and the verdicts.
        """
        seeds_by_reason: dict[str, list[str]] = {}
        for run in self.runs:
            if run.degenerate:
                seeds_by_reason.setdefault(run.degenerate, []).append(str(run.seed))
        if not seeds_by_reason:
            return None
        n_bad = sum(len(seeds) for seeds in seeds_by_reason.values())
        head = f"{n_bad} of {len(self.runs)} seeds; " if len(self.runs) > 1 else ""
        return head + "; ".join(
            f"seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}: {reason}"
            for reason, seeds in seeds_by_reason.items()
        )


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
        raise DataError(f"Results folder '{results_dir}' does not exist; {GRID_HINT}.")
    if not path.is_file():
        raise DataError(f"'{results_dir}' has no results.jsonl, so there is nothing to rank; {GRID_HINT}.")
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


def read_manifest(results_dir: Path) -> dict[str, Any] | None:
    """The grid runner's ``grid.json`` (which grid file owns the folder); None when absent or unreadable."""
    try:
        manifest = json.loads((results_dir / "grid.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


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


def load_runs(
    latest: Mapping[str, Mapping[str, Any]], results_dir: Path
) -> tuple[list[RunResult], list[str]]:
    """Completed cells with their metrics (from the record, else ``run_dir/metrics.json``)."""
    runs, notes = [], []
    for name, record in latest.items():
        if record.get("status") != "completed":
            continue
        run_dir = resolve_run_dir(record.get("run_dir"), results_dir)
        from_file = _read_metrics(run_dir)
        metrics = record.get("metrics")
        if not isinstance(metrics, dict):
            metrics = from_file
        elif from_file is not None:  # the record carries a summary; the rest is in the file
            metrics = {**{k: from_file[k] for k in FILE_ONLY_KEYS if k in from_file}, **metrics}
        if not isinstance(metrics, dict) or not isinstance(metrics.get("test"), dict):
            notes.append(f"Cell {name} is marked completed but has no readable test metrics; left out.")
            continue
        runs.append(RunResult(name=name, record=dict(record), metrics=metrics, run_dir=run_dir))
    return runs, notes


def _read_metrics(run_dir: Path | None) -> dict[str, Any] | None:
    """``run_dir/metrics.json`` as a dict; None when missing or unreadable."""
    if run_dir is None:
        return None
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if isinstance(metrics, dict) else None


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


def _first_line(text: Any) -> str:
    if not text:
        return "(no error message)"
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else "(no error message)"


TRAINING_AXIS = "scst.enabled"
"""The assignment key of a grid over cross-entropy vs cross-entropy + SCST (``experiments/scst.yaml``)."""


def _training_axis(extras: dict[str, Any]) -> dict[str, Any]:
    """An ``scst.enabled`` axis as the ``training`` column: ``xe`` or ``xe+scst``."""
    if TRAINING_AXIS not in extras:
        return extras
    out = {k: v for k, v in extras.items() if k != TRAINING_AXIS}
    out["training"] = "xe+scst" if extras[TRAINING_AXIS] in (True, "true", "True") else "xe"
    return out


def group_configurations(runs: Iterable[RunResult]) -> list[Configuration]:
    """Group runs whose assignment, minus ``seed``, is equal (components included)."""
    groups: dict[str, Configuration] = {}
    for run in runs:
        assignment = dict(run.record.get("assignment") or {})
        components = dict(run.record.get("components") or run.metrics.get("components") or {})
        named = {role: assignment.get(key, components.get(role)) for key, role in COMPONENT_KEYS.items()}
        extras = _training_axis(
            {k: v for k, v in assignment.items() if k != SEED_KEY and k not in COMPONENT_KEYS}
        )
        key = json.dumps([named, extras], sort_keys=True, default=str)
        if key not in groups:
            groups[key] = Configuration(
                dataset=str(named["dataset"] or "unknown"),
                encoder=str(named["encoder"] or "?"),
                fusion=str(named["fusion"] or "?"),
                decoder=str(named["decoder"] or "?"),
                extras=extras,
            )
        groups[key].runs.append(run)
    for config in groups.values():
        config.runs.sort(key=lambda r: (str(r.seed), r.name))
    return list(groups.values())


def evaluation_splits(runs: Iterable[RunResult]) -> list[str]:
    """``test`` first, then every other split (e.g. ``test_novel``) that has scores in some run."""
    found: set[str] = set()
    for run in runs:
        for key, value in run.metrics.items():
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


def validation_histories(configs: Iterable[Configuration]) -> list[dict[str, Any]]:
    """Per configuration with a recorded ``val_history``: its components, degenerate reason and one
    ``[(epoch, CIDEr), ...]`` list per seed (what the validation-curve plot draws)."""
    out = []
    for config in configs:
        seeds = [run.val_history for run in config.runs]
        if not any(seeds):
            continue
        out.append(
            {
                "label": config.label,
                "encoder": config.encoder,
                "fusion": config.fusion,
                "decoder": config.decoder,
                "degenerate": config.degenerate,
                "seeds": [s for s in seeds if s],
            }
        )
    return out
