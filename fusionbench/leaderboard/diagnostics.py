"""The leaderboard's diagnostics columns, table and plot (``metrics.json``'s ``diagnostics``).

Six numbers per configuration, the mean over its seeds (``fusionbench.diagnostics`` says how each
is made): the visual gap (test CIDEr-D with the true minus with permuted images), CHAIR-i (test),
relation F1 (test), the held-out-pair accuracy of ``test_novel``, grounding (attention mass in
the named object's box, test; attention fusion only) and distinct-2 (test). The CSV carries them
as ``diag_*`` columns; Markdown and HTML show them in a table of their own (the main table already
fills 80 columns), per configuration and per fusion strategy; the HTML page adds CIDEr-D against
the visual gap. Runs written before diagnostics existed leave the cells empty.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fusionbench.leaderboard.formatting import MISSING, esc
from fusionbench.leaderboard.stats import mean_of


def _get(*path: str) -> Callable[[Mapping[str, Any]], Any]:
    def read(diagnostics: Mapping[str, Any]) -> Any:
        node: Any = diagnostics
        for key in path:
            if not isinstance(node, Mapping):
                return None
            node = node.get(key)
        return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None

    return read


#: (csv column, table header, reader of a run's ``diagnostics``)
COLUMNS: tuple[tuple[str, str, Callable[[Mapping[str, Any]], Any]], ...] = (
    ("diag_visual_gap", "vis gap", _get("test", "visual", "gap")),
    ("diag_chair_i", "CHAIR-i", _get("test", "chair", "CHAIR_i")),
    ("diag_relation_f1", "rel F1", _get("test", "facts", "relations", "f1")),
    ("diag_novel_accuracy", "novel acc", _get("test_novel", "novel_pairs", "accuracy")),
    ("diag_grounding", "grounding", _get("test", "grounding", "mass")),
    ("diag_distinct_2", "distinct-2", _get("test", "diversity", "distinct_2")),
)
DIAGNOSTIC_COLUMNS: tuple[str, ...] = tuple(c for c, _, _ in COLUMNS)
CAPTION = (
    "Diagnostics (x100, mean over seeds; fusionbench.diagnostics): vis gap = test CIDEr-D with the "
    "true images minus with the images permuted among themselves (near 0: the image is ignored); "
    "CHAIR-i = share of object mentions not in the image (lower is better); rel F1 = spatial "
    "relations checked against the boxes; novel acc = share of test_novel's held-out colour-shape "
    "objects named correctly; grounding = attention mass inside the named object's box (attention "
    "fusion only); distinct-2 = distinct bigrams / bigrams."
)


def diagnostic_means(runs: Sequence[Any]) -> dict[str, float | None]:
    """The ``diag_*`` columns of one configuration: each diagnostic's mean over its seeds."""
    found = [r.metrics.get("diagnostics") for r in runs]
    found = [d for d in found if isinstance(d, Mapping)]
    return {column: mean_of(read(d) for d in found) for column, _, read in COLUMNS}


def has_diagnostics(rows: Sequence[Mapping[str, Any]]) -> bool:
    return any(r.get(c) is not None for r in rows for c, _, _ in COLUMNS)


def _fmt(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}"


def diagnostics_table(
    rows: Sequence[Mapping[str, Any]], key: str = "label"
) -> tuple[list[str], list[list[tuple[str, Any]]]]:
    """Header and cells: one row per configuration (``key="label"``) or per summary level."""
    header = [key if key != "label" else "config", *[h for _, h, _ in COLUMNS]]
    body = [[(str(r[key]), r[key]), *[(_fmt(r.get(c)), r.get(c)) for c, _, _ in COLUMNS]] for r in rows]
    return header, body


def gap_svg(rows: Sequence[Mapping[str, Any]], split: str = "test") -> str | None:
    """Test CIDEr-D x100 against the visual gap x100, colour = fusion; None without diagnostics."""
    from fusionbench.leaderboard.plots import _PALETTE, _marker, _nice_ticks

    points = [
        r for r in rows if r.get("diag_visual_gap") is not None and r.get(f"{split}_CIDEr_mean") is not None
    ]
    if not points:
        return None
    fusions = sorted({r["fusion"] for r in rows})
    colour = {f: _PALETTE[i % len(_PALETTE)] for i, f in enumerate(fusions)}
    width, height, ml, mr, mt, mb = 640, 380, 60, 150, 20, 50
    pw, ph = width - ml - mr, height - mt - mb
    xs = [100 * r["diag_visual_gap"] for r in points]
    ys = [100 * r[f"{split}_CIDEr_mean"] for r in points]
    x_lo, x_hi, y_lo, y_hi = min(min(xs), 0.0), max(xs), min(ys), max(ys)
    x_pad, y_pad = max((x_hi - x_lo) * 0.08, 1.0), max((y_hi - y_lo) * 0.08, 1.0)
    x_lo, x_hi, y_lo, y_hi = x_lo - x_pad, x_hi + x_pad, y_lo - y_pad, y_hi + y_pad

    def px(v: float) -> float:
        return ml + (v - x_lo) / (x_hi - x_lo) * pw

    def py(v: float) -> float:
        return mt + ph - (v - y_lo) / (y_hi - y_lo) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{esc(split)} CIDEr-D x100 vs visual gap x100</title>",
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>',
    ]
    for t in _nice_ticks(x_lo, x_hi):
        x = px(t)
        parts.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{mt + ph}" stroke="#ddd"/>')
        parts.append(f'<text x="{x:.1f}" y="{mt + ph + 16}" text-anchor="middle">{t:g}</text>')
    for t in _nice_ticks(y_lo, y_hi):
        y = py(t)
        parts.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    parts.append(
        f'<line x1="{px(0):.1f}" y1="{mt}" x2="{px(0):.1f}" y2="{mt + ph}" stroke="#999" stroke-dasharray="4,3"/>'
    )
    parts.append(
        f'<text x="{ml + pw / 2}" y="{height - 10}" text-anchor="middle">visual gap x100 '
        "(CIDEr-D true - permuted images; 0 = image ignored)</text>"
    )
    parts.append(
        f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {mt + ph / 2})">'
        f"{esc(split)} CIDEr-D x100</text>"
    )
    for r in points:
        x, y = px(100 * r["diag_visual_gap"]), py(100 * r[f"{split}_CIDEr_mean"])
        tip = f"{r['label']}: CIDEr-D {100 * r[f'{split}_CIDEr_mean']:.1f}, gap {100 * r['diag_visual_gap']:.1f}"
        if r.get("degenerate") is not None:
            tip += " (degenerate captions)"
        parts.append(_marker("circle", round(x, 1), round(y, 1), colour[r["fusion"]], tip))
    lx, ly = ml + pw + 16, mt + 10
    parts.append(f'<text x="{lx}" y="{ly}" font-weight="bold">fusion (colour)</text>')
    for i, f in enumerate(fusions):
        parts.append(_marker("circle", lx + 6, ly + 18 + 18 * i, colour[f], f))
        parts.append(f'<text x="{lx + 18}" y="{ly + 22 + 18 * i}">{esc(f)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
