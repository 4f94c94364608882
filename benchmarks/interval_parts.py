"""Is the test set large enough? The two sources of a cell's uncertainty, side by side, per configuration.

A cell's test CIDEr-D moves for two reasons: which test images were drawn (image sampling) and how
training went (the seed). A test set is large enough when the first is no larger than the second
(issue #16: "the interval over test images is no wider than the part that comes from seeds"); past
that point more test images narrow nothing a reader cares about, and fewer would let image noise
decide ranks. For every configuration of a finished grid with at least two seeds this prints, on
the CIDEr-D x100 scale of the leaderboard:

- ``images``: the half-width of one seed's 95% percentile-bootstrap interval over its test images
  (``fusionbench.leaderboard.stats.bootstrap_ci``, the same resampler as the leaderboard), averaged
  over the seeds;
- ``seeds``: 1.96 x the sample std of the seeds' scores: the half-width of the same 95% interval
  had the images been fixed and only training repeated;
- their ratio (<= 1: the image part is no wider than the seed part).

Degenerate configurations (collapsed captions) are listed but left out of the summary. Nothing is
trained: it reads ``results.jsonl``, ``metrics.json`` and the ``scores_<split>.json`` files.

    python benchmarks/interval_parts.py                       # runs/shapes-grid
    python benchmarks/interval_parts.py runs/shapes-grid-seeds345 --out interval_parts_seeds345
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, write_result  # noqa: E402

from fusionbench.leaderboard.load import group_configurations, load_per_image, load_runs, read_results  # noqa: E402
from fusionbench.leaderboard.stats import bootstrap_ci, seed_stats  # noqa: E402

Z95 = 1.959963984540054


def parts(config, split: str, n_boot: int) -> dict | None:
    """The image and seed half-widths of one configuration on one split (None without 2 seeds)."""
    scores = [run.metrics.get(split, {}).get("CIDEr") for run in config.runs]
    _, std, n = seed_stats(scores)
    if std is None:
        return None
    widths, n_images = [], 0
    for run in config.runs:
        per_image = load_per_image(run.run_dir, split)
        ci = bootstrap_ci(per_image, n_boot=n_boot) if per_image else None
        if ci is not None:
            widths.append((ci[1] - ci[0]) / 2)
            n_images = n_images or len(per_image)
    if not widths:
        return None
    images, seeds = 100 * statistics.fmean(widths), 100 * Z95 * std
    return {
        "n_seeds": n,
        "n_images": n_images,
        "images_half_width": images,
        "seeds_half_width": seeds,
        "ratio": images / seeds if seeds > 0 else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default=str(ROOT / "runs" / "shapes-grid"))
    parser.add_argument("--splits", nargs="+", default=["test", "test_novel"])
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out", default="interval_parts")
    args = parser.parse_args()

    results_dir = Path(args.results)
    latest, _ = read_results(results_dir)
    runs, _ = load_runs(latest, results_dir)
    configs = group_configurations(runs)
    table, summary = [], {}
    for split in args.splits:
        ratios, images, seeds = [], [], []
        for config in configs:
            row = parts(config, split, args.n_boot)
            if row is None:
                continue
            table.append(
                {"configuration": config.label, "split": split, "degenerate": config.degenerate, **row}
            )
            if not config.degenerate:
                images.append(row["images_half_width"])
                seeds.append(row["seeds_half_width"])
                if row["ratio"] is not None:
                    ratios.append(row["ratio"])
        if ratios:
            summary[split] = {
                "configurations": len(ratios),
                "images_half_width_median": statistics.median(images),
                "seeds_half_width_median": statistics.median(seeds),
                "ratio_median": statistics.median(ratios),
                "share_ratio_le_1": sum(r <= 1 for r in ratios) / len(ratios),
            }

    print(f"{'configuration':34} {'split':10} {'n img':>5} {'images':>7} {'seeds':>7} {'ratio':>6}")
    for row in table:
        flag = "  (degenerate)" if row["degenerate"] else ""
        ratio = f"{row['ratio']:6.2f}" if row["ratio"] is not None else "     -"
        print(
            f"{row['configuration']:34} {row['split']:10} {row['n_images']:5d} "
            f"{row['images_half_width']:7.1f} {row['seeds_half_width']:7.1f} {ratio}{flag}"
        )
    for split, s in summary.items():
        print(
            f"{split}: median 95% half-width over images {s['images_half_width_median']:.1f}, over seeds "
            f"{s['seeds_half_width_median']:.1f} (median ratio {s['ratio_median']:.2f}; "
            f"ratio <= 1 in {100 * s['share_ratio_le_1']:.0f}% of {s['configurations']} configurations)"
        )
    path = write_result(
        args.out, {"machine": machine(), "results": str(results_dir), "rows": table, "summary": summary}
    )
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
