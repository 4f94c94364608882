"""The leaderboard as files: a Markdown page, a CSV of the raw-scale rows, a self-contained HTML page.

The Markdown and HTML tables share one layout (``display_table``): scores x100, CIDEr-D as
``mean ± std [95% CI]``, ``†`` after the rank of a configuration tied with #1, ``‡`` instead of a
rank for a degenerate configuration (its reason listed below the table). Then one section per axis
(fusion strategies, and encoders/decoders where the grid has several) with the axis summary and
the verdict sentences. The HTML page adds click-to-sort columns (inline JS, no network) and the SVG
plots, validation curves included.

A leaderboard ranked on validation (a sweep, ``Method.on_val``) says so above its table and in its
legend, puts the validation CIDEr-D of the selected checkpoints first, labels the test columns as
reference only, and has no verdict sections.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from fusionbench.leaderboard.diagnostics import (
    CAPTION as DIAGNOSTICS_CAPTION,
)
from fusionbench.leaderboard.diagnostics import diagnostics_table, has_diagnostics
from fusionbench.leaderboard.formatting import MISSING, esc, fmt_num, fmt_params, fmt_score, fmt_value
from fusionbench.leaderboard.podium import PODIUM_CAPTION, TOP_K
from fusionbench.leaderboard.stats import ALPHA
from fusionbench.leaderboard.table import Method, identity_columns
from fusionbench.leaderboard.verdict import (
    AXIS_TITLES,
    METHOD_SENTENCE,
    AxisVerdict,
    axis_nouns,
    verdict_sentence,
)

SCALE_SENTENCE = "Scores are x100 (coco-caption raw scale x 100); CIDEr-D uses document frequencies from the test references"
NOT_SIGNIFICANT = "†"
"""Marks a configuration whose rank-1 advantage is not significant (``tied_with_top``)."""
DEGENERATE = "‡"
"""Stands in for the rank of a degenerate configuration (one caption for (nearly) every image)."""


def rank_text(row: Mapping[str, Any]) -> str:
    """``3``, ``3†`` (tied with #1) or ``‡`` (degenerate, unranked)."""
    if row.get("degenerate") is not None:
        return DEGENERATE
    return f"{row['rank']}{NOT_SIGNIFICANT if row.get('not_significant_vs_top') else ''}"


def seed_warning(method: Method) -> str | None:
    """The header's warning when training noise is not (fully) in the intervals; None when it is."""
    if method.one_seed:
        return (
            "One seed per configuration: differences between configurations cannot be separated from "
            "training noise, so there are no significance marks and no winners, and the intervals cover "
            "test-image sampling only. Indicative only (a first look, not a verdict): run the grid with "
            "several seeds (`--seeds 0 1 2`) to compare."
        )
    if method.mixed_seeds:
        return (
            "Some configurations have one seed: their intervals cover test-image sampling only and they "
            "are not compared with #1 (their differences cannot be separated from training noise)."
        )
    return None


def selection_warning(method: Method) -> str | None:
    """The header's statement that a sweep's leaderboard selects on validation only; None on test."""
    if not method.on_val:
        return None
    return (
        "Ranked on the validation split: the ranks, the tied-with-#1 marks and #1 (the best "
        "configuration) come from the validation CIDEr-D of the checkpoint each run selected (its best "
        "validation epoch). The test and test_novel columns are shown for reference only; they were not "
        "used to rank, mark or select anything, and no per-axis verdict is drawn from them."
    )


NO_VERDICTS = (
    "No per-axis verdicts: this leaderboard selects settings on the validation split, and its test "
    "numbers are for reference only (a benchmark grid ranked on test gives the verdicts)."
)
"""What stands in for the verdict sections of a leaderboard ranked on validation."""


def memory_sentence(method: Method) -> str:
    """How ``peak MB`` was measured, from the runs' ``cost.peak_memory_source``."""
    if not method.memory_sources:
        return "peak MB: how it was measured is not recorded (no cost.peak_memory_source in metrics.json)"
    sources = "; ".join(method.memory_sources)
    several = " (differs between cells)" if len(method.memory_sources) > 1 else ""
    return f"peak MB: {sources}{several}, as recorded in metrics.json cost.peak_memory_source"


def _val_stats(method: Method) -> str:
    """The legend's first sentences for a leaderboard ranked on validation."""
    ranked = (
        "Ranked by val CIDEr-D: the validation CIDEr-D of the checkpoint each run selected (its best "
        "validation epoch, metrics.json val; best epoch counts from 0), mean ± sample std over seeds. "
        "Test numbers were not used for the ranking, the marks or #1. "
    )
    test = (
        f"Test CIDEr-D cells (reference only) are mean ± std [95% bootstrap interval, {method.n_boot} "
        f"resamples{' of the test images only' if method.one_seed else ' of seeds, then test images'}]. "
    )
    if method.one_seed:
        return (
            ranked + "No significance marks: one seed per configuration, and per-image validation scores are "
            "not saved, so neither training noise nor validation-image sampling can be estimated. " + test
        )
    marks = (
        f"{NOT_SIGNIFICANT} tied with #1: rank 1's lead on validation is not significant after Holm "
        f"correction over the {method.n_compared} comparisons with #1 (Holm p vs #1 > {ALPHA}); the test is "
        "Welch's t-test (two-sided, unequal variances) over the per-seed validation scores, so it covers "
        "training noise only (per-image validation scores are not saved: no bootstrap over validation "
        "images). "
    )
    if method.mixed_seeds:
        marks += "Configurations with one seed are not compared. "
    return ranked + marks + test


def legend_line(method: Method) -> str:
    """What the table's marks, intervals and cost columns mean (printed below the table)."""
    if method.on_val:
        stats = _val_stats(method)
    elif method.one_seed:
        stats = (
            f"No significance marks: one seed per configuration. CIDEr-D cells are the score [95% bootstrap "
            f"interval over test images only, {method.n_boot} resamples: it leaves out training noise]. "
        )
    else:
        stats = (
            f"{NOT_SIGNIFICANT} tied with #1: rank 1's lead over this configuration is not significant after "
            f"Holm correction over the {method.n_compared} comparisons with #1 (Holm p vs #1 > {ALPHA}). "
            f"The test is a two-level bootstrap ({method.n_boot} resamples): each resample draws every "
            "configuration's seeds with replacement, then the test images with replacement (the same images for "
            "all, so comparisons are paired over images), and compares corpus-mean CIDEr-D; p is two-sided, twice the "
            "share of resamples where #1 is not ahead (#1 is picked by the same data), so p < 0.05 exactly when "
            "the 95% interval of the difference excludes 0. CIDEr-D cells are mean ± sample std over seeds [95% interval of "
            "that bootstrap]. With few seeds the interval is too narrow: resampling k seeds shrinks their "
            "variance by (k−1)/k, and with 3 seeds it cannot leave the seeds' range, so read it next to the "
            "seed std. "
        )
        if method.mixed_seeds:
            stats += "Configurations with one seed: interval over test images only, not compared. "
    degenerate = (
        f"{DEGENERATE} degenerate: (nearly) one caption for every image of a split (reasons below); listed "
        "unranked and left out of #1, the comparisons and the verdicts. "
        if method.n_degenerate
        else ""
    )
    if degenerate and method.on_val:
        degenerate += (
            "The flag is read from the diversity of the test captions (validation captions are not saved), "
            "never from a test score. "
        )
    return (
        stats
        + degenerate
        + "Other scores are mean ± std over seeds. Cost: GFLOPs/img is one teacher-forced forward pass "
        "(torch FlopCounterMode), train img/s steady-state training throughput, ms/image test decoding with the "
        f"configured beam, {memory_sentence(method)}."
    )


def degenerate_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``label: reason`` for every degenerate configuration, in table order."""
    return [f"{r['label']}: {r['degenerate']}" for r in rows if r.get("degenerate") is not None]


def display_table(
    rows: Sequence[Mapping[str, Any]], splits: Sequence[str], *, on_val: bool = False
) -> tuple[list[str], list[list[tuple[str, Any]]]]:
    """Header and cells (display text, sort value) shared by the Markdown and HTML tables.

    ``on_val``: ranked on validation, so the validation score and best epochs come first, the rank
    and p columns say they are validation's, and the test columns say they are for reference."""
    id_cols = identity_columns(rows[0]) if rows else []
    first = (
        ["rank (val)", *id_cols, "val CIDEr-D (selection)", "best epoch"] if on_val else ["rank", *id_cols]
    )
    test_cider = "test CIDEr-D (reference only)" if on_val else "test CIDEr-D"
    header = [*first, test_cider, "test BLEU-4", "test METEOR", "test ROUGE-L"]
    p_header = "Holm p vs #1 (val, Welch)" if on_val else "Holm p vs #1"
    header += ["params", "GFLOPs/img", "train img/s", "ms/image", "peak MB", "seeds", p_header]
    others = [s for s in splits if s != "test"]
    for split in others:
        header += [f"{split} CIDEr-D", f"{split} BLEU-4"]
    body = []
    for row in rows:
        cells: list[tuple[str, Any]] = [(rank_text(row), row["rank"])]
        cells += [(MISSING if row[k] is None else fmt_value(row[k]), row[k]) for k in id_cols]
        if on_val:
            cells.append((fmt_score(row["val_CIDEr_mean"], row["val_CIDEr_std"]), row["val_CIDEr_mean"]))
            cells.append((row["val_best_epochs"] or MISSING, row["val_best_epochs"]))
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
        p = row["p_vs_top_holm"]
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


def axis_sections(
    summaries: Mapping[str, Sequence[Mapping[str, Any]]], verdicts: Sequence[AxisVerdict]
) -> list[tuple[str, str, list[str]]]:
    """(axis, title, verdict sentences) per axis section: fusion always, the others when verdicts exist."""
    out = []
    for axis, title in AXIS_TITLES.items():
        mine = [v for v in verdicts if v.axis == axis]
        if axis in summaries and (axis == "fusion" or mine):
            out.append((axis, title, [t for t in (verdict_sentence(v) for v in mine) if t]))
    return out


def summary_table(
    summary: Sequence[Mapping[str, Any]], axis: str, splits: Sequence[str]
) -> tuple[list[str], list[list[tuple[str, Any]]]]:
    """Header and cells of one axis summary (mean CIDEr-D per level over its non-degenerate configurations)."""
    header = [
        axis,
        "configurations",
        *[f"{s} CIDEr-D" for s in splits],
        *[f"{s} mean seed std" for s in splits],
    ]
    if any(s.get("n_degenerate") for s in summary):
        header.insert(2, "degenerate (left out)")
    body = []
    for s in summary:
        cells: list[tuple[str, Any]] = [
            (str(s[axis]), s[axis]),
            (str(s["n_configurations"]), s["n_configurations"]),
        ]
        if len(header) > 2 + 2 * len(splits):
            cells.append((str(s.get("n_degenerate", 0)), s.get("n_degenerate", 0)))
        cells += [(fmt_score(s[f"{sp}_CIDEr_mean"]), s[f"{sp}_CIDEr_mean"]) for sp in splits]
        cells += [(fmt_score(s[f"{sp}_CIDEr_seed_std"]), s[f"{sp}_CIDEr_seed_std"]) for sp in splits]
        body.append(cells)
    return header, body


def summary_caption(axis: str) -> str:
    """The sentence above an axis summary table."""
    one = axis_nouns(axis)[0]
    return (
        f"Mean CIDEr-D (x100) per {one}, averaged over the non-degenerate configurations that use it "
        "(the other axes). The verdicts below compare the levels on a common set of the other components, "
        "so their means can differ from these."
    )


def render_markdown(
    *,
    title: str,
    items: Sequence[tuple[str, str]],
    failed: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    splits: Sequence[str],
    summaries: Mapping[str, Sequence[Mapping[str, Any]]],
    verdicts: Sequence[AxisVerdict],
    notes: Sequence[str],
    method: Method,
    podium: Sequence[str] = (),
) -> str:
    """The Markdown page: provenance, the ranked table and its legend, notes, the top configurations
    compared pairwise (``podium``: ``podium.podium_sentences``), the per-axis verdicts."""
    out = [f"# Leaderboard: {title}", ""]
    out += [f"- {label}: {text}" for label, text in items]
    if failed:
        out.append(f"- Not completed ({len(failed)}):")
        for f in failed:
            out.append(
                f"  - `{f['cell']}` ({f['status']})" + (f": {_md_escape(f['error'])}" if f["error"] else "")
            )
    out += [""]
    for warning in (selection_warning(method), seed_warning(method)):
        if warning:
            out += [f"**{warning}**", ""]
    out += [SCALE_SENTENCE + ".", ""]
    header, body = display_table(rows, splits, on_val=method.on_val)
    out += [markdown_table(header, body), "", legend_line(method), ""]
    degenerate = degenerate_lines(rows)
    if degenerate:
        out += (
            [f"{DEGENERATE} Degenerate (unranked):", ""] + [f"- {_md_escape(d)}" for d in degenerate] + [""]
        )
    if notes:
        out += ["Notes:", ""] + [f"- {_md_escape(n)}" for n in notes] + [""]
    if podium:
        out += (
            [f"## Top {TOP_K}, pairwise", "", PODIUM_CAPTION, ""]
            + [f"- {_md_escape(t)}" for t in podium]
            + [""]
        )
    diagnostics = has_diagnostics(rows)
    if diagnostics:
        out += ["## Diagnostics", "", DIAGNOSTICS_CAPTION, "", markdown_table(*diagnostics_table(rows)), ""]
    if method.on_val:
        out += [NO_VERDICTS, ""]
    for n, (axis, heading, sentences) in enumerate(_sections(summaries, verdicts, method)):
        out += [f"## {heading}", ""]
        if n == 0:
            out += [METHOD_SENTENCE, ""]
        out += [summary_caption(axis), "", markdown_table(*summary_table(summaries[axis], axis, splits)), ""]
        if axis == "fusion" and diagnostics:
            per_fusion = diagnostics_table(summaries["fusion"], "fusion")
            out += ["Diagnostics per fusion strategy (x100, non-degenerate configurations):", ""]
            out += [markdown_table(*per_fusion), ""]
        out += [f"- {_md_escape(t)}" for t in sentences] + ([""] if sentences else [])
    return "\n".join(out)


def _sections(
    summaries: Mapping[str, Sequence[Mapping[str, Any]]], verdicts: Sequence[AxisVerdict], method: Method
) -> list[tuple[str, str, list[str]]]:
    """``axis_sections``, or none for a leaderboard ranked on validation (``NO_VERDICTS``)."""
    return [] if method.on_val else axis_sections(summaries, verdicts)


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
.warn{background:#fff4e5;border-left:4px solid #e69500;padding:6px 10px;font-weight:bold}
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
    summaries: Mapping[str, Sequence[Mapping[str, Any]]],
    verdicts: Sequence[AxisVerdict],
    notes: Sequence[str],
    method: Method,
    heatmap: str,
    cost: str,
    curves: str | None = None,
    gap: str | None = None,
    podium: Sequence[str] = (),
) -> str:
    """The HTML page: the Markdown page's content with sortable tables and the inline SVG plots."""
    header, body = display_table(rows, splits, on_val=method.on_val)
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
    warning_html = "".join(
        f'<p class="warn">{esc(warning.replace("`", ""))}</p>'
        for warning in (selection_warning(method), seed_warning(method))
        if warning
    )
    degenerate = degenerate_lines(rows)
    degenerate_html = (
        f'<p><b>{DEGENERATE} Degenerate (unranked)</b></p><ul class="note">'
        + "".join(f"<li>{esc(d)}</li>" for d in degenerate)
        + "</ul>"
        if degenerate
        else ""
    )
    notes_html = (
        ('<p><b>Notes</b></p><ul class="note">' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
        if notes
        else ""
    )
    podium_html = (
        f"<h2>Top {TOP_K}, pairwise</h2><p>{esc(PODIUM_CAPTION)}</p><ul>"
        + "".join(f"<li>{esc(t.replace('`', ''))}</li>" for t in podium)
        + "</ul>"
        if podium
        else ""
    )
    diagnostics_html = (
        f"<h2>Diagnostics</h2><p>{esc(DIAGNOSTICS_CAPTION)}</p>" + _html_table(*diagnostics_table(rows))
        if has_diagnostics(rows)
        else ""
    )
    if gap:
        diagnostics_html += (
            f'<figure>{gap}<figcaption class="note">Test CIDEr-D against the visual gap: a cell near '
            "0 on the x axis writes the same captions whatever the image.</figcaption></figure>"
        )
    sections = [f"<p>{esc(NO_VERDICTS)}</p>"] if method.on_val else []
    for n, (axis, heading, sentences) in enumerate(_sections(summaries, verdicts, method)):
        part = f"<h2>{esc(heading)}</h2>"
        if n == 0:
            part += f"<p>{esc(METHOD_SENTENCE)}</p>"
        part += f"<p>{esc(summary_caption(axis))}</p>" + _html_table(
            *summary_table(summaries[axis], axis, splits)
        )
        if axis == "fusion" and has_diagnostics(rows):
            part += "<p>Diagnostics per fusion strategy (x100, non-degenerate configurations):</p>"
            part += _html_table(*diagnostics_table(summaries["fusion"], "fusion"))
        part += "<ul>" + "".join(f"<li>{esc(t.replace('`', ''))}</li>" for t in sentences) + "</ul>"
        sections.append(part)
    curves_html = (
        f'<figure>{curves}<figcaption class="note">Validation CIDEr-D after each epoch (metrics.json '
        "val_history): the mean over seeds as a thick line, each seed as a thin one.</figcaption></figure>"
        if curves
        else '<p class="note">No run recorded a validation history (metrics.json val_history).</p>'
    )
    interval = (
        "over test images only" if method.one_seed else "two-level bootstrap over seeds and test images"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Leaderboard: {esc(title)}</title>
<style>{_CSS}</style></head>
<body>
<h1>Leaderboard: {esc(title)}</h1>
<ul>{info}</ul>
{warning_html}
<p><b>{esc(SCALE_SENTENCE)}.</b></p>
{_html_table(header, body)}
<p class="note">{esc(legend_line(method))} Click a column header to sort.</p>
{degenerate_html}
{notes_html}
{podium_html}
{diagnostics_html}
{"".join(sections)}
<h2>Test CIDEr-D by encoder × fusion, per decoder</h2>
<figure>{heatmap}</figure>
<h2>Quality vs cost</h2>
<figure>{cost}<figcaption class="note">Error bars: 95% interval ({interval}).</figcaption></figure>
<h2>Validation curves</h2>
{curves_html}
<script>{_JS}</script>
</body></html>
"""
