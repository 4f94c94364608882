"""The leaderboard as files: a Markdown page, a CSV of the raw-scale rows, a self-contained HTML page.

The Markdown and HTML tables share one layout (``display_table``): scores x100, CIDEr-D as
``mean ± std [95% CI]``, ``†`` after the rank of a configuration tied with #1. The HTML page adds
click-to-sort columns (inline JS, no network) and the SVG plots.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from fusionbench.leaderboard.formatting import MISSING, esc, fmt_num, fmt_params, fmt_score, fmt_value
from fusionbench.leaderboard.stats import ALPHA
from fusionbench.leaderboard.table import fusion_sentences, identity_columns

SCALE_SENTENCE = "Scores are x100 (coco-caption raw scale x 100); CIDEr-D uses document frequencies from the test references"
NOT_SIGNIFICANT = "†"
"""Marks a configuration whose rank-1 advantage is not significant (``tied_with_top``)."""


def display_table(
    rows: Sequence[Mapping[str, Any]], splits: Sequence[str]
) -> tuple[list[str], list[list[tuple[str, Any]]]]:
    """Header and cells (display text, sort value) shared by the Markdown and HTML tables."""
    id_cols = identity_columns(rows[0]) if rows else []
    header = ["rank", *id_cols, "test CIDEr-D", "test BLEU-4", "test METEOR", "test ROUGE-L"]
    header += ["params", "GFLOPs/img", "train img/s", "ms/image", "peak MB", "seeds", "p vs #1"]
    others = [s for s in splits if s != "test"]
    for split in others:
        header += [f"{split} CIDEr-D", f"{split} BLEU-4"]
    body = []
    for row in rows:
        marker = NOT_SIGNIFICANT if row.get("not_significant_vs_top") else ""
        cells: list[tuple[str, Any]] = [(f"{row['rank']}{marker}", row["rank"])]
        cells += [(MISSING if row[k] is None else fmt_value(row[k]), row[k]) for k in id_cols]
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
        cells.append((fmt_num(row.get("gflops_per_image"), 3), row.get("gflops_per_image")))
        cells.append((fmt_num(row["train_images_per_s"], 0), row["train_images_per_s"]))
        cells.append((fmt_num(row["test_ms_per_image"], 2), row["test_ms_per_image"]))
        cells.append((fmt_num(row.get("peak_memory_mb"), 0), row.get("peak_memory_mb")))
        cells.append((str(row["n_seeds"]), row["n_seeds"]))
        p = row["p_vs_top"]
        cells.append((MISSING if p is None else f"{p:.3f}", p))
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
    """What the table's marks, intervals and cost columns mean (printed below the table)."""
    return (
        f"{NOT_SIGNIFICANT} not significantly different from the top: rank 1 is not significantly better than "
        f"this configuration (paired bootstrap over test images, {n_boot} resamples, p ≥ {ALPHA}; p vs #1 column). "
        "CIDEr-D cells are mean ± sample std over seeds [95% bootstrap CI over test images]; "
        "other scores are mean ± std over seeds. Cost: GFLOPs/img is one teacher-forced forward pass "
        "(torch FlopCounterMode), train img/s steady-state training throughput, ms/image test decoding with the "
        "configured beam, peak MB the process's peak memory (RSS on CPU, max allocated on CUDA)."
    )


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
    """The Markdown page: provenance, the ranked table and its legend, notes, the fusion summary."""
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


def render_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """The rows as CSV on the raw scale, floats as ``repr`` so they read back exactly."""
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
        out.append(f'<th{align[i]} title="click to sort">{esc(h)}</th>')
    out.append("</tr></thead><tbody>")
    for cells in body:
        out.append(
            "<tr>"
            + "".join(
                f'<td{align[i]} data-v="{esc(sort_attr(v))}">{esc(t)}</td>' for i, (t, v) in enumerate(cells)
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
    """The HTML page: the Markdown page's content with sortable tables and the inline SVG plots."""
    header, body = display_table(rows, splits)
    info = "".join(f"<li><b>{esc(k)}</b>: {esc(v.replace('`', ''))}</li>" for k, v in items)
    if failed:
        info += f"<li><b>Not completed ({len(failed)})</b>:<ul>"
        info += "".join(
            f"<li><code>{esc(f['cell'])}</code> ({esc(f['status'])})"
            + (f": {esc(f['error'])}" if f["error"] else "")
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
        ('<p><b>Notes</b></p><ul class="note">' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
        if notes
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Leaderboard: {esc(title)}</title>
<style>{_CSS}</style></head>
<body>
<h1>Leaderboard: {esc(title)}</h1>
<ul>{info}</ul>
<p><b>{esc(SCALE_SENTENCE)}.</b></p>
{_html_table(header, body)}
<p class="note">{esc(legend_line(n_boot))} Click a column header to sort.</p>
{notes_html}
<h2>Fusion strategies</h2>
<p>Mean CIDEr-D (x100) per fusion strategy, averaged over the configurations that use it (the other axes).</p>
{_html_table(fus_header, fus_body)}
<ul>{"".join(f"<li>{esc(t.replace('`', ''))}</li>" for t in fusion_sentences(summary, rows, splits))}</ul>
<h2>Test CIDEr-D by encoder × fusion, per decoder</h2>
<figure>{heatmap}</figure>
<h2>Quality vs cost</h2>
<figure>{cost}<figcaption class="note">Error bars: 95% bootstrap CI over test images.</figcaption></figure>
<script>{_JS}</script>
</body></html>
"""
