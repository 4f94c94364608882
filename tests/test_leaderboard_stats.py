"""Leaderboard statistics: the two-level bootstrap, Holm, verdicts per axis, degenerate cells, one seed.

The procedure is checked against exact enumeration on a table small enough to enumerate (2
configurations x 3 seeds x 4 images), and on grids written by hand where the right answer is known:
one seed looks "significant" image by image while three seeds with large seed variance do not; a
clear winner; a lead inside the uncertainty; a collapsed decoder that scores highest.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from fusionbench.leaderboard import (
    Resamples,
    build_leaderboard,
    compare_configurations,
    compare_levels,
    holm,
    paired_bootstrap_p,
    print_leaderboard,
    two_level_bootstrap,
)
from fusionbench.leaderboard.stats import compare_resampled
from fusionbench.metrics.collapse import caption_collapse

# ------------------------------------------------------------------------------ the procedure

# Two configurations x 3 seeds x 4 images (raw CIDEr), small enough to enumerate every resample.
A = [[1.0, 0.6, 0.9, 0.5], [0.8, 0.7, 1.1, 0.4], [1.2, 0.5, 0.7, 0.6]]
B = [[0.9, 0.5, 0.8, 0.3], [0.6, 0.8, 0.9, 0.5], [1.0, 0.4, 1.0, 0.2]]
IDS = ["i1", "i2", "i3", "i4"]


def _maps(table):
    return [dict(zip(IDS, seed)) for seed in table]


def _exact(table: list[list[float]]) -> np.ndarray:
    """The statistic on every equally likely resample: (27 seed draws, 256 image draws)."""
    t = np.array(table)
    seed_draws = np.array(list(itertools.product(range(3), repeat=3)))  # 27 x 3
    image_draws = np.array(list(itertools.product(range(4), repeat=4)))  # 256 x 4
    per_seed = t[:, image_draws].mean(axis=2)  # 3 seeds x 256 image draws
    return per_seed[seed_draws].mean(axis=1)  # 27 x 256


def test_two_level_bootstrap_matches_exact_enumeration():
    a, b = _exact(A), _exact(B)
    # Images are drawn once for both configurations (paired), seeds independently per configuration.
    diff = a[:, None, :] - b[None, :, :]  # 27 (A seeds) x 27 (B seeds) x 256 (shared images)
    # two-sided: twice the smaller share on either side of zero (the top is picked by the data)
    exact_p = min(1.0, 2 * min(float(np.mean(diff <= 1e-12)), float(np.mean(diff >= -1e-12))))
    exact_ci = np.percentile(a.ravel(), [2.5, 97.5])

    res = two_level_bootstrap([_maps(A), _maps(B)], n_boot=40_000, seed=0)
    assert res.ids == tuple(IDS) and res.n_seeds == [3, 3]
    assert res.observed[0] == pytest.approx(np.mean(A)) and res.observed[1] == pytest.approx(np.mean(B))
    # Each resample's mean has the exact distribution's mean and spread.
    assert res.means[0].mean() == pytest.approx(a.mean(), abs=0.003)
    assert res.means[0].std() == pytest.approx(a.std(), rel=0.03)

    top, other = compare_configurations([_maps(A), _maps(B)], top=0, n_boot=40_000, seed=0)
    assert 0.05 < exact_p < 0.5  # the example is not a foregone conclusion
    assert other.p_vs_top == pytest.approx(exact_p, abs=0.01)
    assert top.ci == pytest.approx(tuple(exact_ci), abs=0.01)
    assert top.seeds_resampled and other.seeds_resampled and top.n_images == 4
    assert other.p_holm == other.p_vs_top  # one comparison: Holm changes nothing
    assert other.tied_with_top is (exact_p > 0.05)


def test_two_level_bootstrap_is_deterministic_and_pairs_images():
    first = two_level_bootstrap([_maps(A), _maps(B)], n_boot=500, seed=3)
    again = two_level_bootstrap([_maps(A), _maps(B)], n_boot=500, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(first.means, again.means))
    other = two_level_bootstrap([_maps(A), _maps(B)], n_boot=500, seed=4)
    assert not np.array_equal(first.means[0], other.means[0])
    # A copy of A with +0.2 on every score: the images' difficulty cancels in the paired difference,
    # so only the seeds' per-image disagreement (drawn independently for the two) is left.
    shifted = [[v + 0.2 for v in seed] for seed in A]
    _, rest = compare_configurations([_maps(shifted), _maps(A)], top=0, n_boot=500, seed=0)
    assert rest.p_vs_top < 0.05 and rest.tied_with_top is False


def _seedy(offsets: list[float], base: list[float]) -> list[dict[str, float]]:
    return [{f"img{j}": b + o for j, b in enumerate(base)} for o in offsets]


BASE = [0.3 + 0.05 * (j % 17) for j in range(40)]  # per-image difficulty, shared by both systems


def test_one_seed_looks_significant_three_noisy_seeds_do_not():
    """The issue's trap: seed 0 alone says "A is better", image by image; the seed spread says otherwise."""
    a = _seedy([0.05, -0.20, 0.30], BASE)  # seed means differ by up to 0.5
    b = _seedy([0.00, 0.15, -0.10], BASE)
    # Seed 0 alone: A beats B by 0.05 on every image, so the image-only paired bootstrap says p = 0.
    assert paired_bootstrap_p(a[0], b[0], n_boot=1000, seed=0) == 0.0
    # The leaderboard's procedure with one seed each makes no comparison at all (no mark).
    single = compare_configurations([[a[0]], [b[0]]], top=0, n_boot=1000, seed=0)
    assert single[1].p_vs_top is None and single[1].tied_with_top is None
    assert single[0].ci is not None and not single[0].seeds_resampled  # image-only interval
    # Three seeds: A's mean is still higher, but within training noise.
    top, other = compare_configurations([a, b], top=0, n_boot=2000, seed=0)
    assert other.p_vs_top > 0.05 and other.tied_with_top is True
    lo, hi = top.ci
    assert hi - lo > 0.3  # the seed spread is in the interval
    # The same lead with seeds that agree is significant: the test can reject.
    calm_a, calm_b = _seedy([0.05, 0.04, 0.06], BASE), _seedy([0.0, 0.01, -0.01], BASE)
    _, calm = compare_configurations([calm_a, calm_b], top=0, n_boot=2000, seed=0)
    assert calm.p_vs_top == 0.0 and calm.tied_with_top is False


def test_holm_on_known_p_values():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1, never decreasing
    assert holm([0.2]) == [0.2] and holm([]) == []


def test_holm_decides_the_tied_marks():
    """Two comparisons with raw p 0.03 and 0.04 are each below 0.05, but not after Holm."""
    n = 200
    top = np.ones(n)
    first, second = np.zeros(n), np.zeros(n)
    first[:3] = 2.0  # #1 not ahead in 3 of 200 resamples: two-sided p 0.03
    second[:4] = 2.0  # ... in 4 of 200: 0.04
    res = Resamples(ids=("a", "b"), means=[top, first, second], observed=[1.0, 0.0, 0.0], n_seeds=[3, 3, 3])
    _, one, two = compare_resampled(res, top=0)
    assert (one.p_vs_top, two.p_vs_top) == (0.03, 0.04)
    assert one.p_holm == pytest.approx(0.06) and two.p_holm == pytest.approx(0.06)
    assert one.tied_with_top is True and two.tied_with_top is True
    # Leaving the second out of the family (e.g. degenerate) leaves the first alone: significant.
    _, alone, skipped = compare_resampled(res, top=0, compared=[0, 1])
    assert alone.p_holm == 0.03 and alone.tied_with_top is False and skipped.p_vs_top is None


def test_compare_levels_winner_and_no_clear_winner():
    n = 1000
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, size=n)
    means = [1.0 + noise, 1.1 + noise, 0.5 + noise, 0.6 + noise]  # level x: rows 0, 2; level y: 1, 3
    res = Resamples(ids=("a", "b"), means=means, observed=[1.0, 1.1, 0.5, 0.6], n_seeds=[3] * 4)
    clear = compare_levels(res, {"x": [0, 2], "y": [1, 3]})
    assert clear.best == "y" and clear.winner == "y"
    assert clear.means == pytest.approx({"x": 0.75, "y": 0.85})
    (c,) = clear.contrasts
    assert c.level == "x" and c.diff == pytest.approx(0.1) and c.p == 0.0 and c.ci[0] > 0
    # The same means with independent noise as large as the lead: no winner.
    wide = [1.0 + rng.normal(0, 0.2, n), 1.1 + rng.normal(0, 0.2, n), 0.5 + noise, 0.6 + noise]
    res = Resamples(ids=("a", "b"), means=wide, observed=[1.0, 1.1, 0.5, 0.6], n_seeds=[3] * 4)
    unclear = compare_levels(res, {"x": [0, 2], "y": [1, 3]})
    assert unclear.best == "y" and unclear.winner is None and unclear.contrasts[0].ci[0] < 0
    # One seed somewhere: training noise is not in the draws, so no winner is declared.
    res = Resamples(ids=("a", "b"), means=means, observed=[1.0, 1.1, 0.5, 0.6], n_seeds=[3, 1, 3, 3])
    assert compare_levels(res, {"x": [0, 2], "y": [1, 3]}).winner is None


# ------------------------------------------------------------------------------ grids on disk

N_IMAGES = 12
SPLIT_IMAGES = {"test": [f"t{j}" for j in range(N_IMAGES)], "test_novel": [f"n{j}" for j in range(N_IMAGES)]}
DIFFICULTY = [0.1 * (j % 5) for j in range(N_IMAGES)]


def _collapsed_reason(split: str) -> str:
    """The reason the real collapse detector gives for one caption written for every image."""
    info = caption_collapse(
        {i: "there is a purple triangle on a dark background" for i in SPLIT_IMAGES[split]}
    )
    assert info["degenerate"]
    return f"{split}: {info['reason']}"


def _write(
    root: Path,
    records: list,
    *,
    encoder,
    fusion,
    decoder,
    seed,
    level,
    degenerate=False,
    source=None,
    val=None,
):
    """One completed cell whose per-image CIDEr is ``level + difficulty``; the record carries only the
    grid runner's metrics summary, so ``degenerate`` and ``val_history`` come from metrics.json.

    ``val``: the validation CIDEr-D of the selected checkpoint (epoch 1 of 3, as ``metrics.json``'s
    ``val`` and the peak of ``val_history``); without it the history rises to ``level``."""
    cell = f"{encoder}-{fusion}-{decoder}-s{seed}"
    run_dir = root / cell
    run_dir.mkdir(parents=True)
    metrics = {"components": {"dataset": "shapes", "encoder": encoder, "fusion": fusion, "decoder": decoder}}
    for split, ids in SPLIT_IMAGES.items():
        values = [level + d for d in DIFFICULTY]
        (run_dir / f"scores_{split}.json").write_text(
            json.dumps({i: {"CIDEr": v} for i, v in zip(ids, values)})
        )
        metrics[split] = {"Bleu_4": 0.2, "METEOR": 0.2, "ROUGE_L": 0.4, "CIDEr": sum(values) / len(values)}
    metrics["cost"] = {"peak_memory_mb": 100.0, **({"peak_memory_source": source} if source else {})}
    metrics["params"] = {"total": 1000}
    metrics["val_history"] = [{"epoch": e, "CIDEr": level * (e + 1) / 3} for e in range(3)]
    if val is not None:
        metrics["val_history"] = [{"epoch": e, "CIDEr": val * f} for e, f in enumerate((0.8, 1.0, 0.9))]
        metrics["val"] = {"epoch": 1, "Bleu_4": 0.2, "CIDEr": val}
    metrics["degenerate"] = _collapsed_reason("test") if degenerate else None
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    keys = ("val", "test", "test_novel", "params", "cost", "components")
    summary = {k: metrics[k] for k in keys if k in metrics}
    assignment = {
        "model.encoder.name": encoder,
        "model.fusion.name": fusion,
        "model.decoder.name": decoder,
        "seed": seed,
    }
    records.append(
        {
            "cell": cell,
            "status": "completed",
            "assignment": assignment,
            "seed": seed,
            "run_dir": str(run_dir),
            "metrics": summary,
        }
    )


def _board(tmp_path: Path, cells: dict, *, seeds=(0, 1, 2), n_boot=400, select_on=None, **kwargs):
    """``cells[(encoder, fusion, decoder)] = [level per seed]`` (or a dict with ``degenerate`` and
    ``val``, the validation score per seed)."""
    root = tmp_path / "runs"
    records: list = []
    for (encoder, fusion, decoder), spec in cells.items():
        spec = spec if isinstance(spec, dict) else {"levels": spec}
        vals = spec.get("val") or [None] * len(spec["levels"])
        for seed, level, val in zip(seeds, spec["levels"], vals):
            _write(
                root,
                records,
                encoder=encoder,
                fusion=fusion,
                decoder=decoder,
                seed=seed,
                level=level,
                degenerate=spec.get("degenerate", False),
                source=kwargs.get("source"),
                val=val,
            )
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return build_leaderboard(root, out_dir=tmp_path / "lb", n_boot=n_boot, seed=0, select_on=select_on)


def _sentences(board, axis: str) -> dict[str, str]:
    from fusionbench.leaderboard.verdict import verdict_sentence

    return {v.split: verdict_sentence(v) for v in board.verdicts if v.axis == axis}


def _printed(board) -> str:
    console = Console(width=80, record=True)
    print_leaderboard(board, console)
    return console.export_text()


def test_degenerate_configuration_marked_unranked_and_out_of_the_verdict(tmp_path):
    cells = {
        ("cnn", "attention", "lstm"): [0.80, 0.82, 0.81],
        ("cnn", "late", "lstm"): [0.60, 0.61, 0.59],
        # The highest score, but one caption for every image: not a result.
        ("cnn", "early", "lstm"): {"levels": [0.95, 0.95, 0.95], "degenerate": True},
    }
    board = _board(tmp_path, cells)
    assert [r["fusion"] for r in board.rows] == ["attention", "late", "early"]
    assert [r["rank"] for r in board.rows] == [1, 2, None]
    assert board.best["fusion"] == "attention"
    early = board.rows[2]
    reason = _collapsed_reason("test")
    assert early["degenerate"] == f"3 of 3 seeds; seeds 0, 1, 2: {reason}"
    assert "12 of 12 images get the same caption" in reason
    # Not compared with #1 (not in Holm's family), but its interval is still shown.
    assert early["p_vs_top"] is None and early["not_significant_vs_top"] is None
    assert early["test_CIDEr_ci_lo"] is not None
    assert board.rows[1]["p_vs_top"] == 0.0 and board.method.n_compared == 1

    md = board.markdown_path.read_text()
    table = [ln for ln in md.split("## Fusion")[0].splitlines() if ln.startswith("| ")]
    assert table[3].startswith("| ‡ | cnn | early | lstm |")
    assert "‡ degenerate: (nearly) one caption for every image" in md
    assert f"- cnn-early-lstm: 3 of 3 seeds; seeds 0, 1, 2: {reason}" in md
    with board.csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[2]["rank"] == "" and rows[2]["degenerate"].startswith(
        "3 of 3 seeds; seeds 0, 1, 2: test: 12 of 12"
    )
    assert rows[0]["degenerate"] == ""
    page = board.html_path.read_text()
    assert "Degenerate (unranked)" in page and "12 of 12 images get the same caption" in page
    assert "Degenerate (unranked)" in md and "‡" in _printed(board)

    # The fusion summary and the verdict leave it out, and say so.
    summary = {s["fusion"]: s for s in board.fusion_summary}
    assert summary["early"]["n_configurations"] == 0 and summary["early"]["n_degenerate"] == 1
    assert summary["early"]["test_CIDEr_mean"] is None
    test = _sentences(board, "fusion")["test"]
    assert test.startswith("test: `attention` wins")
    assert "`early`" not in test.split("Left out")[0]
    assert "Left out: degenerate `cnn-early-lstm`; fusion `early` (no usable configuration)." in test


def test_one_seed_header_no_marks_image_only_intervals(tmp_path):
    cells = {
        ("cnn", "attention", "lstm"): [0.90],
        ("cnn", "late", "lstm"): [0.60],
        ("vit", "attention", "lstm"): [0.85],
        ("vit", "late", "lstm"): [0.58],
    }
    board = _board(tmp_path, cells, seeds=(0,))
    assert board.method.one_seed
    for row in board.rows:
        assert row["not_significant_vs_top"] is None and row["p_vs_top"] is None
        assert row["test_CIDEr_ci_lo"] is not None and row["test_CIDEr_ci_over"] == "images"
    md = board.markdown_path.read_text()
    assert (
        "**One seed per configuration: differences between configurations cannot be separated from "
        "training noise" in md
    )
    assert "bootstrap interval over test images only" in md
    table = [ln for ln in md.split("## Fusion")[0].splitlines() if ln.startswith("| ")]
    assert all("†" not in ln for ln in table)
    assert [ln.split("|")[1].strip() for ln in table[1:]] == ["1", "2", "3", "4"]
    assert "resamples of the test images (one seed per configuration: no seed level)" in md
    # A lead of 29 points over late is still "no clear winner": one seed cannot separate it from noise.
    test = _sentences(board, "fusion")["test"]
    assert test.startswith("test: no clear winner: `attention` leads `late` by 28.5")
    assert (
        "but with one seed per configuration the fusion strategies cannot be separated from training noise"
        in test
    )
    assert "cannot be separated from training noise" in board.html_path.read_text()
    assert "One seed per configuration" in _printed(board)


def test_verdict_clear_winner_per_axis(tmp_path):
    """attention beats late by 20 points in every encoder, with seeds that agree: a winner."""
    cells = {}
    for encoder, shift in (("cnn", 0.0), ("vit", -0.05)):
        cells[(encoder, "attention", "lstm")] = [0.80 + shift, 0.81 + shift, 0.79 + shift]
        cells[(encoder, "late", "lstm")] = [0.60 + shift, 0.61 + shift, 0.59 + shift]
    board = _board(tmp_path, cells)
    fusion = _sentences(board, "fusion")
    for split in ("test", "test_novel"):
        assert fusion[split].startswith(
            f"{split}: `attention` wins: it is ahead of every other fusion strategy"
        )
        assert "over the 2 encoder × decoder combinations" in fusion[split]
    # Encoders: cnn is 5 points ahead of vit with seeds within ±1: also a clear winner.
    encoder = _sentences(board, "encoder")
    assert encoder["test"].startswith("test: `cnn` wins")
    md = board.markdown_path.read_text()
    assert "## Encoders" in md and "## Decoders" not in md  # one decoder: no decoder section
    assert "A level wins only when its mean CIDEr-D beats every other level after Holm correction" in md


def test_verdict_no_clear_winner_inside_the_uncertainty(tmp_path):
    """A 2-point lead with seeds spread over 20 points: no clear winner, with the lead and its interval."""
    cells = {
        ("cnn", "attention", "lstm"): [0.90, 0.70, 0.80],
        ("cnn", "late", "lstm"): [0.68, 0.88, 0.78],
        ("vit", "attention", "lstm"): [0.85, 0.65, 0.75],
        ("vit", "late", "lstm"): [0.63, 0.83, 0.73],
    }
    board = _board(tmp_path, cells)
    test = _sentences(board, "fusion")["test"]
    assert test.startswith("test: no clear winner (`attention` leads `late` by 2.0, 95% interval [")
    (v,) = [v for v in board.verdicts if v.axis == "fusion" and v.split == "test"]
    (contrast,) = v.result.contrasts
    assert contrast.ci[0] < 0 < contrast.ci[1] and contrast.p_holm > 0.05
    assert board.rows[1]["not_significant_vs_top"] is True  # the leaderboard agrees: tied with #1
    assert "no clear winner" in board.html_path.read_text()


def test_validation_curves_and_memory_source_in_the_html(tmp_path):
    cells = {("cnn", "attention", "lstm"): [0.8, 0.7, 0.9], ("vit", "late", "bert"): [0.5, 0.6, 0.4]}
    board = _board(tmp_path, cells, source="torch.cuda.max_memory_allocated")
    curves = tmp_path / "lb" / "shapes_val_curves.svg"
    assert curves in board.plot_paths
    svg = curves.read_text()
    # Per configuration: a thin line per seed and a thick mean line; a panel per decoder.
    assert svg.count("<polyline") == 2 * (3 + 1)
    assert "cnn-attention-lstm, seed 1" in svg and "cnn-attention-lstm, mean over seeds" in svg
    assert "decoder: bert" in svg and "decoder: lstm" in svg and "epochs trained" in svg
    page = board.html_path.read_text()
    assert "<h2>Validation curves</h2>" in page and svg.strip() in page
    md = board.markdown_path.read_text()
    assert (
        "peak MB: torch.cuda.max_memory_allocated, as recorded in metrics.json cost.peak_memory_source" in md
    )
    assert "torch.cuda.max_memory_allocated" in _printed(board)


def test_degenerate_reason_per_seed_and_from_an_older_collapse_block():
    from fusionbench.leaderboard import Configuration, RunResult

    def run(seed, metrics):
        return RunResult(name=f"c-s{seed}", record={"seed": seed}, metrics=metrics, run_dir=None)

    reason = _collapsed_reason("test")
    config = Configuration(dataset="shapes", encoder="cnn", fusion="early", decoder="lstm", extras={})
    config.runs = [
        run(0, {"degenerate": None}),
        run(1, {"degenerate": reason}),
        # written before metrics.json had "degenerate": read from its collapse block
        run(2, {"collapse": {"test_novel": {"degenerate": True, "reason": "only 1 distinct captions"}}}),
    ]
    assert (
        config.degenerate == f"2 of 3 seeds; seed 1: {reason}; seed 2: test_novel: only 1 distinct captions"
    )
    config.runs = config.runs[:1]
    assert config.degenerate is None


# ------------------------------------------------------------------------------ ranking on validation
# A sweep (grid.leaderboard.select_on: val) ranks by the validation CIDEr-D of each run's selected
# checkpoint. Here the validation and test orders are reversed: the test split's best configuration
# is the validation split's worst.
SWEEP = {
    ("cnn", "attention", "lstm"): {"levels": [0.90, 0.91, 0.89], "val": [0.50, 0.52, 0.48]},
    ("vit", "attention", "bert"): {"levels": [0.70, 0.71, 0.69], "val": [0.68, 0.70, 0.66]},
    ("regions", "attention", "transformer"): {"levels": [0.50, 0.52, 0.48], "val": [0.70, 0.72, 0.68]},
}


def _t4_sf(t: float) -> float:
    """``P(T >= t)`` of Student's t with 4 degrees of freedom, in closed form."""
    x = 1 + t * t / 4
    return 0.5 - 3 / 8 * (t / math.sqrt(x)) * (1 - t * t / (12 * x))


def test_welch_p_by_hand():
    from fusionbench.leaderboard.stats import compare_seed_scores, welch_p

    # Two-sided: p = 2 P(T >= |t|).
    # 2 seeds each, equal variances: df = 2 and P(T >= t) = 1/2 - t / (2 sqrt(t^2 + 2)); t = sqrt(2).
    assert welch_p([1.0, 1.2], [0.8, 1.0]) == pytest.approx(1 - math.sqrt(2) / 2, abs=1e-12)
    # 3 seeds each, equal variances: df = 4; t = 0.02 / sqrt(2 * 0.02^2 / 3) = sqrt(1.5).
    assert welch_p([0.70, 0.72, 0.68], [0.68, 0.70, 0.66]) == pytest.approx(
        2 * _t4_sf(math.sqrt(1.5)), abs=1e-12
    )
    # Unequal variances: one side constant, so the Welch-Satterthwaite df is the other side's n - 1 = 1
    # (Student's t with 1 df is Cauchy: P(T >= t) = 1/2 - atan(t) / pi); t = 0.5 / sqrt(0.08 / 2) = 2.5.
    assert welch_p([1.2, 0.8], [0.5, 0.5]) == pytest.approx(1 - 2 * math.atan(2.5) / math.pi, abs=1e-12)
    assert welch_p([0.5], [0.4, 0.3]) is None  # one seed: no test
    assert welch_p([0.5, 0.5], [0.4, 0.4]) == 0.0 and welch_p([0.4, 0.4], [0.4, 0.4]) == 1.0
    # Holm over the comparisons with #1 (index 0); the one-seed configuration is not compared.
    scores = [[0.70, 0.72, 0.68], [0.68, 0.70, 0.66], [0.50, 0.52, 0.48], [0.9]]
    top_row, close, far, single = compare_seed_scores(scores, top=0)
    assert top_row.p_vs_top is None and single.p_vs_top is None and single.tied_with_top is None
    assert close.p_vs_top == pytest.approx(2 * _t4_sf(math.sqrt(1.5)), abs=1e-12)
    assert far.p_holm == pytest.approx(2 * far.p_vs_top) and close.p_holm == pytest.approx(close.p_vs_top)
    assert close.tied_with_top is True and far.tied_with_top is False
    assert close.ci is None and close.n_images is None  # no intervals from per-seed scores


def test_val_selection_ranks_on_validation_not_test(tmp_path):
    from fusionbench.leaderboard.render import NO_VERDICTS

    board = _board(tmp_path, SWEEP, select_on="val")
    assert [r["encoder"] for r in board.rows] == ["regions", "vit", "cnn"]  # the test order reversed
    assert [r["rank"] for r in board.rows] == [1, 2, 3] and board.best["encoder"] == "regions"
    top, vit, cnn = board.rows
    assert top["val_CIDEr_mean"] == pytest.approx(0.70) and top["val_CIDEr_std"] == pytest.approx(0.02)
    assert top["val_best_epochs"] == "1;1;1" and top["val_n_seeds"] == 3
    # Welch over the per-seed validation scores vs #1, Holm over the 2 comparisons.
    assert vit["p_vs_top"] == pytest.approx(2 * _t4_sf(math.sqrt(1.5)), abs=1e-12)
    assert vit["not_significant_vs_top"] is True and cnn["not_significant_vs_top"] is False
    assert cnn["p_vs_top_holm"] == pytest.approx(2 * cnn["p_vs_top"]) and board.method.n_compared == 2
    # The test split keeps its intervals, compares nothing and draws no verdict.
    assert all(r["test_CIDEr_ci_lo"] is not None for r in board.rows)
    assert board.verdicts == [] and board.method.on_val

    md = board.markdown_path.read_text()
    assert "- Selection: on the validation split (grid.leaderboard.select_on: val)" in md
    assert "the test splits were not used for any selection" in md
    assert "**Ranked on the validation split:" in md and "they were not used to rank, mark or select" in md
    assert "Test numbers were not used for the ranking, the marks or #1." in md
    assert "Welch's t-test (two-sided, unequal variances) over the per-seed validation scores" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert table[0].startswith(
        "| rank (val) | encoder | fusion | decoder | val CIDEr-D (selection) | best epoch | "
        "test CIDEr-D (reference only) |"
    )
    # test CIDEr-D = level + the mean image difficulty (0.175): shown, but not what ranks
    assert table[1].startswith("| 1 | regions | attention | transformer | 70.0 ± 2.0 | 1;1;1 | 67.5 ± 2.0 [")
    assert table[2].startswith("| 2† | vit |") and table[3].startswith("| 3 | cnn |")
    assert NO_VERDICTS in md and "## Fusion strategies" not in md
    page = board.html_path.read_text()
    assert "Ranked on the validation split" in page and "val CIDEr-D (selection)" in page
    assert "Fusion strategies" not in page
    printed = _printed(board)
    assert "Validation split: the selection (x100)" in printed
    assert "reference only, not used to rank" in printed and "rank by validation CIDEr-D" in printed
    with board.csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["encoder"] for r in rows] == ["regions", "vit", "cnn"] and float(
        rows[0]["val_CIDEr_mean"]
    ) == top["val_CIDEr_mean"]

    # The same results ranked on test (the default) put the test split's best first.
    on_test = build_leaderboard(tmp_path / "runs", out_dir=tmp_path / "lb-test", n_boot=400)
    assert [r["encoder"] for r in on_test.rows] == ["cnn", "vit", "regions"]
    assert "val_CIDEr_mean" not in on_test.columns


def test_val_selection_with_one_seed_has_no_marks_and_says_why(tmp_path):
    cells = {key: {"levels": spec["levels"][:1], "val": spec["val"][:1]} for key, spec in SWEEP.items()}
    board = _board(tmp_path, cells, seeds=(0,), select_on="val")
    assert [r["encoder"] for r in board.rows] == ["regions", "vit", "cnn"]
    assert all(r["p_vs_top"] is None and r["not_significant_vs_top"] is None for r in board.rows)
    md = board.markdown_path.read_text()
    assert (
        "No significance marks: one seed per configuration, and per-image validation scores are not saved"
        in md
    )
    assert "†" not in "".join(ln for ln in md.splitlines() if ln.startswith("| "))
    assert "no significance marks (one seed per configuration)" in " ".join(_printed(board).split())


def test_the_results_folder_remembers_val_selection_and_the_cli_can_override(tmp_path, capsys):
    from fusionbench.cli import main

    _board(tmp_path, SWEEP)  # ranked on test: the folder records nothing yet
    root = tmp_path / "runs"
    (root / "grid.json").write_text(
        json.dumps({"grid": "sweep", "source": "sweep.yaml", "leaderboard": {"select_on": "val"}})
    )
    again = build_leaderboard(root, out_dir=tmp_path / "lb2", n_boot=50)
    assert again.method.on_val and again.best["encoder"] == "regions"
    assert main(["leaderboard", str(root), "--out", str(tmp_path / "lb3"), "--n-boot", "50"]) == 0
    assert "Validation split: the selection" in capsys.readouterr().out
    args = ["leaderboard", str(root), "--out", str(tmp_path / "lb4"), "--n-boot", "50", "--select-on", "test"]
    assert main(args) == 0
    assert "Validation split" not in capsys.readouterr().out
    assert main([*args[:-1], "vall"]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "Invalid value 'vall' for --select-on. Did you mean 'val'? Allowed values: test, val." in err


def test_default_ranking_on_test_is_unchanged(tmp_path):
    """Without the option a leaderboard is what it was: the committed leaderboard's columns, table
    header and legend, and no validation column or statement; ``select_on='test'`` is the same."""
    committed = Path(__file__).resolve().parents[1] / "leaderboards"
    cells = {key: {"levels": spec["levels"][:1], "val": spec["val"][:1]} for key, spec in SWEEP.items()}
    board = _board(tmp_path, cells, seeds=(0,))
    assert [r["encoder"] for r in board.rows] == ["cnn", "vit", "regions"] and not board.method.on_val
    with (committed / "shapes.csv").open(newline="") as f:
        columns = next(csv.reader(f))
    assert board.columns == columns
    md, page = board.markdown_path.read_text(), board.html_path.read_text()
    committed_md = (committed / "shapes.md").read_text()
    header = next(ln for ln in md.splitlines() if ln.startswith("| rank"))
    assert header == next(ln for ln in committed_md.splitlines() if ln.startswith("| rank"))
    legend = next(ln for ln in md.splitlines() if ln.startswith("No significance marks"))
    cost = "Other scores are mean ± std over seeds. Cost: GFLOPs/img is one teacher-forced forward pass"
    assert cost in legend and cost in committed_md  # (the committed one has 3 seeds: marks, another legend)
    for text in ("validation", "Selection", "Welch", "reference only"):
        assert text not in md.replace("Validation curves", "") and text not in page.split("<h2>Validation")[0]

    def without_built(path: Path) -> str:
        return "\n".join(ln for ln in path.read_text().splitlines() if not ln.startswith("- Built"))

    explicit = build_leaderboard(
        tmp_path / "runs", out_dir=tmp_path / "explicit", n_boot=400, select_on="test"
    )
    for a, b in zip(board.paths, explicit.paths):
        assert without_built(a) == without_built(b)


def test_the_top_three_are_compared_pairwise_and_a_swappable_pair_is_tied(tmp_path):
    """#1 leads clearly; #2 and #3 are 1 point apart with seeds spread by 10: a rerun may swap them,
    and the page must say so (the table alone compares each with #1 only)."""
    cells = {
        ("cnn", "attention", "lstm"): [0.90, 0.91, 0.89],
        ("cnn", "late", "lstm"): [0.66, 0.56, 0.61],
        ("cnn", "early", "lstm"): [0.55, 0.65, 0.60],
        ("vit", "early", "lstm"): [0.30, 0.31, 0.29],
    }
    board = _board(tmp_path, cells, n_boot=1000)
    pairs = {(c.higher, c.lower): c for c in board.podium}
    assert set(pairs) == {(1, 2), (1, 3), (2, 3)}  # the top 3 only: rank 4 is in no pair
    assert pairs[(1, 2)].labels == ("cnn-attention-lstm", "cnn-late-lstm")
    assert not pairs[(1, 2)].tied and not pairs[(1, 3)].tied
    assert pairs[(2, 3)].tied and pairs[(2, 3)].ci[0] < 0 < pairs[(2, 3)].ci[1]
    assert pairs[(2, 3)].diff == pytest.approx(0.01)
    # Holm over the 3 pairs: the largest raw p is not adjusted, the smallest is tripled (capped at 1).
    raw = sorted(c.p for c in board.podium)
    assert max(c.p_holm for c in board.podium) == pytest.approx(raw[-1])
    md = board.markdown_path.read_text()
    assert "## Top 3, pairwise" in md
    assert "#2 `cnn-late-lstm` − #3 `cnn-early-lstm`: 1.0 [" in md and "tied (a rerun may swap them)" in md
    assert "Tied pairs among the top 3: #2/#3." in md
    assert "Top 3, pairwise" in board.html_path.read_text()
    assert "Tied pairs among the top 3: #2/#3." in _printed(board).replace("\n", " ")


def test_no_pairwise_top_three_with_one_seed(tmp_path):
    cells = {("cnn", f, "lstm"): [level] for f, level in (("attention", 0.9), ("late", 0.6), ("early", 0.5))}
    board = _board(tmp_path, cells, seeds=(0,))
    assert board.podium == [] and "## Top 3, pairwise" not in board.markdown_path.read_text()
