"""The leaderboard's SVG plots: an encoder x fusion heatmap per decoder, quality vs cost, and the
validation curves (validation CIDEr-D per epoch, a panel per decoder, a line per configuration).

Hand-written SVG (no plotting library): the HTML page stays self-contained, the files diff as text,
and building a leaderboard needs no matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fusionbench.leaderboard.formatting import esc, fmt_params
from fusionbench.leaderboard.stats import mean_of

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
_DASHES = ["", "6,3", "2,2", "8,3,2,3", "1,3"]
DEGENERATE_MARK = "‡"


def _viridis(t: float) -> tuple[int, int, int]:
    t = min(max(t, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    f = t - i
    a, b = _VIRIDIS[i], _VIRIDIS[i + 1]
    return tuple(int(round(a[k] + (b[k] - a[k]) * f)) for k in range(3))  # type: ignore[return-value]


def heatmap_svg(rows: Sequence[Mapping[str, Any]], split: str = "test") -> str:
    """Encoder (rows) × fusion (columns) test CIDEr-D x100, one panel per decoder, shared colour scale.

    Configurations that differ in other axes are averaged into one cell.
    """
    decoders = sorted({r["decoder"] for r in rows})
    encoders = sorted({r["encoder"] for r in rows})
    fusions = sorted({r["fusion"] for r in rows})
    values: dict[tuple[str, str, str], float] = {}
    degenerate: set[tuple[str, str, str]] = set()
    for d in decoders:
        for e in encoders:
            for f in fusions:
                mine = [r for r in rows if (r["decoder"], r["encoder"], r["fusion"]) == (d, e, f)]
                v = mean_of(r[f"{split}_CIDEr_mean"] for r in mine)
                if v is not None:
                    values[(d, e, f)] = 100 * v
                if any(r.get("degenerate") is not None for r in mine):
                    degenerate.add((d, e, f))
    # Degenerate cells are drawn grey and kept out of the colour scale, which is for real results.
    scaled = [v for k, v in values.items() if k not in degenerate] or list(values.values())
    lo, hi = (min(scaled), max(scaled)) if scaled else (0.0, 1.0)
    cw, ch, left, top, gap = 78, 36, 90, 44, 30
    panel_w = left + cw * len(fusions)
    width = panel_w * len(decoders) + gap * (len(decoders) - 1) + 20
    height = top + ch * len(encoders) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{esc(split)} CIDEr-D x100 by encoder and fusion, per decoder</title>",
    ]
    for p, d in enumerate(decoders):
        x0 = p * (panel_w + gap)
        parts.append(
            f'<text x="{x0 + left + cw * len(fusions) / 2}" y="16" text-anchor="middle" font-weight="bold">'
            f"decoder: {esc(d)}</text>"
        )
        for j, f in enumerate(fusions):
            parts.append(
                f'<text x="{x0 + left + cw * j + cw / 2}" y="{top - 8}" text-anchor="middle">{esc(f)}</text>'
            )
        for i, e in enumerate(encoders):
            y = top + ch * i
            parts.append(f'<text x="{x0 + left - 6}" y="{y + ch / 2 + 4}" text-anchor="end">{esc(e)}</text>')
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
                bad = (d, e, f) in degenerate
                if bad:
                    r, g, b, ink = 221, 221, 221, "#555"
                mark = DEGENERATE_MARK if bad else ""
                tip = f"{esc(e)} / {esc(f)} / {esc(d)}: {v:.1f}" + (" (degenerate captions)" if bad else "")
                parts.append(
                    f'<rect x="{x}" y="{y}" width="{cw}" height="{ch}" fill="rgb({r},{g},{b})" stroke="#fff">'
                    f"<title>{tip}</title></rect>"
                    f'<text x="{x + cw / 2}" y="{y + ch / 2 + 4}" text-anchor="middle" fill="{ink}">{v:.1f}{mark}</text>'
                )
    legend = f"{esc(split)} CIDEr-D x100 (colour scale {lo:.1f} to {hi:.1f})"
    if degenerate:
        legend += f"; grey {DEGENERATE_MARK}: degenerate captions, not in the scale"
    parts.append(f'<text x="10" y="{height - 12}" fill="#555">{legend}</text>')
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
    title = f"<title>{esc(tip)}</title>"
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
        f"<title>{esc(split)} CIDEr-D x100 vs total parameters</title>",
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
        f"{esc(split)} CIDEr-D x100</text>"
    )
    for r in points:
        x, y = px(math.log10(r["params_total"])), py(100 * r[f"{split}_CIDEr_mean"])
        lo, hi = r.get(f"{split}_CIDEr_ci_lo"), r.get(f"{split}_CIDEr_ci_hi")
        if lo is not None and hi is not None:
            parts.append(
                f'<line x1="{x:.1f}" y1="{py(100 * lo):.1f}" x2="{x:.1f}" y2="{py(100 * hi):.1f}" '
                f'stroke="{colour[r["fusion"]]}" stroke-width="1.5"/>'
            )
        place = f"#{r['rank']}" if r.get("rank") is not None else f"{DEGENERATE_MARK} degenerate"
        tip = f"{place} {r['label']}: {100 * r[f'{split}_CIDEr_mean']:.1f}, {fmt_params(r['params_total'])} params"
        parts.append(_marker(shape[r["decoder"]], round(x, 1), round(y, 1), colour[r["fusion"]], tip))
    lx, ly = ml + pw + 16, mt + 10
    parts.append(f'<text x="{lx}" y="{ly}" font-weight="bold">fusion (colour)</text>')
    for i, f in enumerate(fusions):
        parts.append(_marker("circle", lx + 6, ly + 18 + 18 * i, colour[f], f))
        parts.append(f'<text x="{lx + 18}" y="{ly + 22 + 18 * i}">{esc(f)}</text>')
    ly += 18 * len(fusions) + 36
    parts.append(f'<text x="{lx}" y="{ly}" font-weight="bold">decoder (marker)</text>')
    for i, d in enumerate(decoders):
        parts.append(_marker(shape[d], lx + 6, ly + 18 + 18 * i, "#fff", d))
        parts.append(f'<text x="{lx + 18}" y="{ly + 22 + 18 * i}">{esc(d)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _polyline(
    points: Sequence[tuple[float, float]], colour: str, width: float, dash: str, opacity: float
) -> str:
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="{width}"'
        f'{dash_attr} stroke-opacity="{opacity}"'
    )


def val_curves_svg(histories: Sequence[Mapping[str, Any]]) -> str | None:
    """Validation CIDEr-D x100 per epoch: a panel per decoder, a line per configuration.

    Colour = fusion strategy (as in the cost plot), dash = encoder; the thick line is the mean over
    the configuration's seeds at the epochs every seed reached, the thin lines are the seeds. The
    x axis counts epochs trained (``val_history``'s 0-based ``epoch`` + 1). None without histories.
    """
    curves = [h for h in histories if any(h["seeds"])]
    if not curves:
        return None
    decoders = sorted({h["decoder"] for h in curves})
    fusions = sorted({h["fusion"] for h in curves})
    encoders = sorted({h["encoder"] for h in curves})
    colour = {f: _PALETTE[i % len(_PALETTE)] for i, f in enumerate(fusions)}
    dash = {e: _DASHES[i % len(_DASHES)] for i, e in enumerate(encoders)}
    xs = [epoch + 1 for h in curves for seed in h["seeds"] for epoch, _ in seed]
    ys = [100 * v for h in curves for seed in h["seeds"] for _, v in seed]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    y_pad = max((max(ys) - min(ys)) * 0.08, 1.0)
    y_lo, y_hi = min(ys) - y_pad, max(ys) + y_pad
    pw, ph, ml, mt, mb, gap, legend_w = 300, 220, 50, 30, 44, 30, 150
    width = ml + (pw + gap) * len(decoders) + legend_w
    height = mt + ph + mb

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        "<title>validation CIDEr-D x100 per epoch, per decoder</title>",
    ]
    for p, d in enumerate(decoders):
        x0 = ml + p * (pw + gap)

        def px(v: float, x0: float = x0) -> float:
            return x0 + (v - x_lo) / (x_hi - x_lo) * pw

        def py(v: float) -> float:
            return mt + ph - (v - y_lo) / (y_hi - y_lo) * ph

        parts.append(f'<rect x="{x0}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
        parts.append(
            f'<text x="{x0 + pw / 2}" y="{mt - 10}" text-anchor="middle" font-weight="bold">decoder: {esc(d)}</text>'
        )
        for t in _nice_ticks(y_lo, y_hi):
            parts.append(f'<line x1="{x0}" y1="{py(t):.1f}" x2="{x0 + pw}" y2="{py(t):.1f}" stroke="#ddd"/>')
            if p == 0:
                parts.append(f'<text x="{x0 - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
        for t in _nice_ticks(x_lo, x_hi, n=min(6, max(1, int(x_hi - x_lo)))):
            if float(t).is_integer():
                parts.append(f'<text x="{px(t):.1f}" y="{mt + ph + 16}" text-anchor="middle">{int(t)}</text>')
        parts.append(f'<text x="{x0 + pw / 2}" y="{height - 10}" text-anchor="middle">epochs trained</text>')
        for h in (h for h in curves if h["decoder"] == d):
            bad = h.get("degenerate") is not None
            tip = esc(h["label"] + (f" ({DEGENERATE_MARK} degenerate)" if bad else ""))
            c, ds = colour[h["fusion"]], dash[h["encoder"]]
            seeds = h["seeds"]
            if len(seeds) > 1:
                for n, seed in enumerate(seeds):
                    pts = [(px(e + 1), py(100 * v)) for e, v in sorted(seed)]
                    parts.append(
                        _polyline(pts, c, 0.8, ds, 0.45) + f"><title>{tip}, seed {n + 1}</title></polyline>"
                    )
            common = set.intersection(*({e for e, _ in seed} for seed in seeds))
            mean = [
                (px(e + 1), py(100 * sum(dict(seed)[e] for seed in seeds) / len(seeds)))
                for e in sorted(common)
            ]
            what = "mean over seeds" if len(seeds) > 1 else "one seed"
            if len(mean) == 1:
                ((x, y),) = mean
                parts.append(
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{c}"><title>{tip}, {what}</title></circle>'
                )
            elif mean:
                parts.append(_polyline(mean, c, 2.0, ds, 0.95) + f"><title>{tip}, {what}</title></polyline>")
    parts.append(
        f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {mt + ph / 2})">'
        "val CIDEr-D x100</text>"
    )
    lx, ly = ml + (pw + gap) * len(decoders), mt + 10
    parts.append(f'<text x="{lx}" y="{ly}" font-weight="bold">fusion (colour)</text>')
    for i, f in enumerate(fusions):
        y = ly + 18 + 18 * i
        parts.append(
            f'<line x1="{lx}" y1="{y - 4}" x2="{lx + 22}" y2="{y - 4}" stroke="{colour[f]}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{lx + 28}" y="{y}">{esc(f)}</text>')
    ly += 18 * len(fusions) + 36
    parts.append(f'<text x="{lx}" y="{ly}" font-weight="bold">encoder (dash)</text>')
    for i, e in enumerate(encoders):
        y = ly + 18 + 18 * i
        dash_attr = f' stroke-dasharray="{dash[e]}"' if dash[e] else ""
        parts.append(
            f'<line x1="{lx}" y1="{y - 4}" x2="{lx + 22}" y2="{y - 4}" stroke="#222" stroke-width="2"{dash_attr}/>'
        )
        parts.append(f'<text x="{lx + 28}" y="{y}">{esc(e)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
