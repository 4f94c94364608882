"""Leaderboard statistics: seed mean/std, bootstrap intervals over test images, ties with the top.

Pure numpy and the standard library. Two different sources of uncertainty are reported, and they
answer different questions.

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

The procedure is behind one function, ``compare_configurations``: per-configuration, per-seed,
per-image scores in; an interval and a "tied with #1" mark per configuration out. A procedure that
also resamples seeds replaces that function and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ALPHA = 0.05
"""Significance level of the paired test against the top configuration."""


def seed_stats(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std with ddof=1 or None for one value, count), ignoring None/NaN values."""
    clean = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(float(v))]
    n = len(clean)
    if n == 0:
        return None, None, 0
    mean = sum(clean) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in clean) / (n - 1)) if n > 1 else None
    return mean, std, n


def mean_of(values: Iterable[Any]) -> float | None:
    """Mean of the numeric, non-NaN values; None when there are none."""
    return seed_stats(values)[0]


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


@dataclass(frozen=True)
class Comparison:
    """What the significance procedure says about one configuration on one split.

    ``n_images`` is the number of images every seed scored (None when fewer than 2, so no
    interval); ``ci`` the interval of the mean score over those images; ``p_vs_top`` and
    ``tied_with_top`` compare it with the top configuration (None for the top itself, or when
    either side lacks per-image scores).
    """

    n_images: int | None
    ci: tuple[float, float] | None
    p_vs_top: float | None = None
    tied_with_top: bool | None = None


def compare_configurations(
    scores: Sequence[Sequence[Mapping[str, float]] | None],
    *,
    top: int | None,
    n_boot: int,
    seed: int,
    level: float = 0.95,
    alpha: float = ALPHA,
) -> list[Comparison]:
    """Intervals and "tied with #1" marks from per-configuration, per-seed, per-image scores.

    ``scores[i]`` holds configuration ``i``'s ``{image_id: score}`` maps, one per seed, or None
    when its per-image scores are incomplete (it then gets no interval). ``top`` is the index of the
    rank-1 configuration; with ``top=None`` no configuration is compared (intervals only).
    """
    averaged = [None if maps is None else average_per_image(maps) for maps in scores]
    usable = [a if a is not None and len(a) >= 2 else None for a in averaged]
    top_scores = usable[top] if top is not None else None
    out: list[Comparison] = []
    for i, per_image in enumerate(usable):
        ci = bootstrap_ci(per_image, n_boot=n_boot, seed=seed, level=level) if per_image else None
        p = None
        if i != top and top_scores is not None and per_image is not None:
            p = paired_bootstrap_p(top_scores, per_image, n_boot=n_boot, seed=seed)
        out.append(
            Comparison(
                n_images=len(per_image) if per_image else None,
                ci=ci,
                p_vs_top=p,
                tied_with_top=None if p is None else p >= alpha,
            )
        )
    return out
