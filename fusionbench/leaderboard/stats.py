"""Leaderboard statistics: seed mean/std, a two-level bootstrap over seeds and test images, Holm.

Pure numpy and the standard library. A configuration's test score moves for two reasons, and an
interval or a "better than" claim that leaves one out says too much.

*Training noise*: a configuration trained with another seed scores differently (at smoke size,
regions-early-bert gave 95.9 / 90.7 / 85.1 for seeds 0/1/2). The table shows the mean over seeds
of every corpus metric and the sample standard deviation (``ddof=1``; empty with a single seed).

*Test-set sampling*: the test images are a sample of the images the system could be asked to
caption. coco-caption's corpus CIDEr-D is exactly the mean of the per-image CIDEr-D values (its
document frequencies come from the test references and are the same for every system), so it can
be resampled image by image. BLEU is not decomposable over images (its brevity penalty and n-gram
counts are corpus-level), so only CIDEr-D gets an interval.

**The two-level bootstrap** (``two_level_bootstrap``) resamples both, as for hierarchical data
(Davison & Hinkley 1997, *Bootstrap Methods and their Application*, §3.8); Dror, Shlomov & Reichart
2019 ("Deep Dominance", ACL) make the case that seeds belong in any comparison of deep models. A
configuration's statistic is its corpus-mean CIDEr-D, the mean over its seeds of the mean over the
test images. Each of ``n_boot`` resamples (``numpy.random.default_rng(seed)``, so the result is
deterministic) draws

1. the test images with replacement, *the same draw for every configuration*: image difficulty is
   shared (an image that is hard for one system is hard for all), so comparisons are paired over
   images and that shared part cancels out of a difference;
2. then, independently per configuration, its seeds with replacement (seeds of different
   configurations are unrelated trainings).

The 95% interval of a configuration is the 2.5th/97.5th percentile of its resampled statistics.
``p`` against the top configuration is twice the share of resamples where ``top − other <= 0`` (a
two-sided bootstrap p-value, ``two_sided_p``: the top is picked by the same data). Comparing #1 with many configurations makes some "significant" by
chance, so the p-values are Holm–Bonferroni adjusted over the comparisons with #1 (``holm``), and a
configuration is "tied with #1" when its adjusted p exceeds ``ALPHA``. The same resamples compare
the levels of an axis (fusion strategies, encoders, decoders; ``compare_levels``).

What this can and cannot say, honestly:

* With *one seed* per configuration the seed level cannot be resampled: the interval covers test
  images only and the comparison is conditional on the trained models, so a difference between
  configurations cannot be separated from training noise. No comparison is made for a configuration
  with one seed (``p_vs_top`` is None) and the leaderboard says so in its header.
* With *few seeds* the seed level is coarse and too narrow. Resampling ``k`` seeds with replacement
  shrinks their variance by ``(k − 1)/k`` (2/3 for 3 seeds), and the resampled seed mean can never
  leave the range of the ``k`` seed scores (3 seeds give 10 distinct multisets), whereas a
  t-interval for the mean of 3 seed scores reaches ±2.5 sample stds. Read the interval next to the
  seed std, and run more seeds where a verdict is close.
* Resampling both axes of a seeds × images table counts the seed-by-image interaction about three
  times; that term is divided by seeds × images, so it adds little.

**Ranking on validation** (a sweep, ``grid.leaderboard.select_on: val``): only each run's corpus
validation CIDEr-D is saved (no per-image validation scores), so there is nothing to bootstrap over
images. With at least two seeds on both sides, #1 is compared with each configuration by Welch's
t-test on the per-seed scores (``welch_p``: two-sided, unequal variances, Welch–Satterthwaite degrees
of freedom; Welch 1947), Holm-adjusted over the comparisons with #1 (``compare_seed_scores``). It
covers training noise only, not the sampling of the validation images; with one seed nothing is
compared.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ALPHA = 0.05
"""Familywise significance level of the Holm-adjusted comparisons with the top (and of verdicts)."""
TIE_TOLERANCE = 1e-12
"""A resampled difference this close to zero counts as "not better" (float rounding of equal means)."""


def two_sided_p(differences: np.ndarray) -> float:
    """The bootstrap p of every comparison here: twice the smaller share of resampled differences
    (the leader minus the other) on either side of zero (``TIE_TOLERANCE`` counts as both), capped
    at 1.

    Two-sided because the leader is chosen by the same data it is tested on: the observed top of
    two equal configurations is "ahead" by construction, and a one-sided test of that direction
    calls it significant twice as often as ``ALPHA`` says. It also agrees with the 95% percentile
    interval shown next to it: the unadjusted p is below 0.05 exactly when that interval excludes 0
    (a one-sided p could read 0.04 beside an interval of [-0.3, 5.9]).
    """
    d = np.asarray(differences, dtype=float)
    below, above = float(np.mean(d <= TIE_TOLERANCE)), float(np.mean(d >= -TIE_TOLERANCE))
    return min(1.0, 2.0 * min(below, above))


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
    common = _common_ids(score_maps)
    return {i: sum(float(s[i]) for s in score_maps) / len(score_maps) for i in sorted(common)}


def _common_ids(score_maps: Iterable[Mapping[str, float]]) -> set[str]:
    maps = list(score_maps)
    common = set(maps[0]) if maps else set()
    for scores in maps[1:]:
        common &= set(scores)
    return common


def bootstrap_indices(n_images: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n_images)`` image indices drawn with replacement by ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_images, size=(n_boot, n_images))


def bootstrap_ci(
    per_image: Mapping[str, float], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Image-only percentile-bootstrap interval of the mean over images; None with fewer than 2 images.

    Conditional on the trained model: it ignores training noise (see the module docstring).
    """
    ids = sorted(per_image)
    if len(ids) < 2 or n_boot < 1:
        return None
    values = np.array([per_image[i] for i in ids], dtype=float)
    return percentiles(values[bootstrap_indices(len(ids), n_boot, seed)].mean(axis=1), level)


def paired_bootstrap_p(
    top: Mapping[str, float], other: Mapping[str, float], *, n_boot: int = 1000, seed: int = 0
) -> float | None:
    """Image-only paired bootstrap: the two-sided p (``two_sided_p``) of mean(top) − mean(other) over
    resamples of the same image ids.

    Uses the images present in both; None with fewer than 2 shared images. Conditional on the two
    trained models, so it says nothing about a rerun with other seeds; the leaderboard uses
    ``compare_configurations`` instead.
    """
    ids = sorted(set(top) & set(other))
    if len(ids) < 2 or n_boot < 1:
        return None
    diff = np.array([top[i] - other[i] for i in ids], dtype=float)
    resampled = diff[bootstrap_indices(len(ids), n_boot, seed)].mean(axis=1)
    return two_sided_p(resampled)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (Holm 1979), in the input order.

    The ``j``-th smallest of ``m`` p-values is multiplied by ``m − j + 1``, made non-decreasing and
    capped at 1; rejecting where the adjusted value is ``<= alpha`` controls the familywise error
    rate at ``alpha`` without assuming independence.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted


def percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Resamples:
    """Two-level bootstrap draws of every configuration's corpus-mean score on one split.

    ``ids`` are the images every usable configuration scored (each resample draws from these, the
    same draw for all); ``means[i]`` the ``(n_boot,)`` resampled statistics of configuration ``i``
    and ``observed[i]`` its statistic on the data (mean over seeds of the mean over ``ids``), both
    None when its per-image scores are incomplete; ``n_seeds[i]`` the seeds it has.
    """

    ids: tuple[str, ...]
    means: list[np.ndarray | None]
    observed: list[float | None]
    n_seeds: list[int]

    def subset(self, order: Sequence[int]) -> Resamples:
        """The same draws for the configurations ``order`` (e.g. rank order)."""
        return Resamples(
            ids=self.ids,
            means=[self.means[i] for i in order],
            observed=[self.observed[i] for i in order],
            n_seeds=[self.n_seeds[i] for i in order],
        )


def two_level_bootstrap(
    scores: Sequence[Sequence[Mapping[str, float]] | None], *, n_boot: int, seed: int
) -> Resamples:
    """Resample seeds within each configuration and test images shared by all (module docstring).

    ``scores[i]`` holds configuration ``i``'s ``{image_id: score}`` maps, one per seed, or None when
    its per-image scores are incomplete. The images are those every seed of every such configuration
    scored; with fewer than 2 of them nothing is resampled. Draws: the image indices first
    (``(n_boot, n_images)``), then each configuration's seed indices in order.
    """
    k = [len(maps) if maps else 0 for maps in scores]
    usable = [i for i, maps in enumerate(scores) if maps and all(m is not None for m in maps)]
    ids = tuple(sorted(_common_ids(m for i in usable for m in scores[i]))) if usable else ()
    means: list[np.ndarray | None] = [None] * len(scores)
    observed: list[float | None] = [None] * len(scores)
    if len(ids) < 2 or n_boot < 1:
        return Resamples(ids=(), means=means, observed=observed, n_seeds=k)
    rng = np.random.default_rng(seed)
    n = len(ids)
    images = rng.integers(0, n, size=(n_boot, n))
    # How often each image is drawn in each resample: a seed's mean on the drawn images is then
    # one matrix product, without materialising seeds x resamples x images.
    rows = np.arange(n_boot)[:, None]
    weights = np.bincount((images + n * rows).ravel(), minlength=n_boot * n).reshape(n_boot, n) / n
    for i in usable:
        table = np.array([[float(m[j]) for j in ids] for m in scores[i]])  # seeds x images
        per_seed = weights @ table.T  # (n_boot, seeds): each seed's mean on the drawn images
        drawn = rng.integers(0, table.shape[0], size=(n_boot, table.shape[0]))
        means[i] = per_seed[rows, drawn].mean(axis=1)
        observed[i] = float(table.mean())
    return Resamples(ids=ids, means=means, observed=observed, n_seeds=k)


@dataclass(frozen=True)
class Comparison:
    """What the significance procedure says about one configuration on one split.

    ``n_images`` is the number of images resampled (None when its per-image scores are incomplete
    or fewer than 2, so no interval); ``ci`` the interval of its corpus-mean score, ``seeds_resampled``
    whether that interval includes training noise (False: one seed, images only). ``p_vs_top``
    (raw), ``p_holm`` (Holm-adjusted over every comparison with the top) and ``tied_with_top``
    compare it with the top configuration; None for the top itself, for configurations not compared,
    and where either side has one seed or lacks per-image scores.
    """

    n_images: int | None
    ci: tuple[float, float] | None
    p_vs_top: float | None = None
    tied_with_top: bool | None = None
    p_holm: float | None = None
    seeds_resampled: bool = False


def compare_resampled(
    res: Resamples,
    *,
    top: int | None,
    compared: Collection[int] | None = None,
    level: float = 0.95,
    alpha: float = ALPHA,
) -> list[Comparison]:
    """Intervals, and the Holm-adjusted comparison of ``compared`` (default: all) with ``top``."""
    n = len(res.means)
    candidates = set(range(n)) if compared is None else set(compared)
    raw: dict[int, float] = {}
    top_means = res.means[top] if top is not None else None
    if top_means is not None and res.n_seeds[top] > 1:  # type: ignore[index]
        for i in sorted(candidates - {top}):
            other = res.means[i]
            if other is not None and res.n_seeds[i] > 1:
                raw[i] = two_sided_p(top_means - other)
    adjusted = dict(zip(raw, holm(list(raw.values()))))
    out = []
    for i in range(n):
        means = res.means[i]
        out.append(
            Comparison(
                n_images=len(res.ids) if means is not None else None,
                ci=percentiles(means, level) if means is not None else None,
                p_vs_top=raw.get(i),
                tied_with_top=None if i not in adjusted else adjusted[i] > alpha,
                p_holm=adjusted.get(i),
                seeds_resampled=means is not None and res.n_seeds[i] > 1,
            )
        )
    return out


def welch_p(top: Sequence[float], other: Sequence[float]) -> float | None:
    """Two-sided Welch t-test p that ``top``'s and ``other``'s means differ (``P(|T| >= |t|)``;
    two-sided for the reason ``two_sided_p`` gives).

    Unequal variances, Welch–Satterthwaite degrees of freedom. None with fewer than 2 values on
    either side. When both sides have zero variance the p is 0 if the means differ (by more than
    ``TIE_TOLERANCE``) and 1 otherwise, as the bootstrap's would be.
    """
    a, b = [float(v) for v in top], [float(v) for v in other]
    if len(a) < 2 or len(b) < 2:
        return None
    (ma, sa, na), (mb, sb, nb) = seed_stats(a), seed_stats(b)
    va, vb = sa**2 / na, sb**2 / nb  # type: ignore[operator]
    diff = ma - mb  # type: ignore[operator]
    if va + vb <= 0.0:
        return 0.0 if abs(diff) > TIE_TOLERANCE else 1.0
    from scipy.stats import ttest_ind  # imported here: only val-ranked leaderboards need it

    with warnings.catch_warnings():  # a side whose seeds tie exactly is fine here, not "precision loss"
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=False, alternative="two-sided").pvalue)


def compare_seed_scores(
    scores: Sequence[Sequence[float]],
    *,
    top: int | None,
    compared: Collection[int] | None = None,
    alpha: float = ALPHA,
) -> list[Comparison]:
    """Compare configurations with ``top`` over per-seed scores (``scores[i]``: one value per seed).

    Welch's two-sided t-test (``welch_p``) for every configuration in ``compared`` (default: all)
    with at least two seeds, when ``top`` has at least two; the p-values are Holm-adjusted over those
    comparisons. No intervals (``ci`` None): this is for scores saved per run only, such as the
    validation CIDEr-D of the selected checkpoint (module docstring).
    """
    candidates = set(range(len(scores))) if compared is None else set(compared)
    raw: dict[int, float] = {}
    if top is not None:
        for i in sorted(candidates - {top}):
            p = welch_p(scores[top], scores[i])
            if p is not None:
                raw[i] = p
    adjusted = dict(zip(raw, holm(list(raw.values()))))
    return [
        Comparison(
            n_images=None,
            ci=None,
            p_vs_top=raw.get(i),
            tied_with_top=None if i not in adjusted else adjusted[i] > alpha,
            p_holm=adjusted.get(i),
        )
        for i in range(len(scores))
    ]


def compare_configurations(
    scores: Sequence[Sequence[Mapping[str, float]] | None],
    *,
    top: int | None,
    n_boot: int,
    seed: int,
    level: float = 0.95,
    alpha: float = ALPHA,
    compared: Collection[int] | None = None,
) -> list[Comparison]:
    """Intervals and "tied with #1" marks from per-configuration, per-seed, per-image scores.

    ``scores[i]`` holds configuration ``i``'s ``{image_id: score}`` maps, one per seed, or None
    when its per-image scores are incomplete (it then gets no interval). ``top`` is the index of the
    rank-1 configuration; with ``top=None`` no configuration is compared (intervals only);
    ``compared`` limits the comparisons (and so Holm's family) to those indices. The procedure is
    the two-level bootstrap of the module docstring.
    """
    res = two_level_bootstrap(scores, n_boot=n_boot, seed=seed)
    return compare_resampled(res, top=top, compared=compared, level=level, alpha=alpha)


@dataclass(frozen=True)
class LevelContrast:
    """The best level minus one other level: observed difference, its interval and (adjusted) p."""

    level: str
    diff: float
    ci: tuple[float, float]
    p: float
    p_holm: float


@dataclass(frozen=True)
class LevelComparison:
    """Which level of an axis is best, and whether it beats every other level (``winner``).

    ``means`` are the observed level scores (mean over the level's configurations); ``contrasts``
    the best level against each other level, closest first; ``winner`` the best level when every
    contrast is significant after Holm and training noise was resampled (``seeds_resampled``),
    else None ("no clear winner").
    """

    means: dict[str, float]
    best: str
    contrasts: list[LevelContrast]
    winner: str | None
    seeds_resampled: bool


def compare_levels(
    res: Resamples, groups: Mapping[str, Sequence[int]], *, level: float = 0.95, alpha: float = ALPHA
) -> LevelComparison | None:
    """Compare the levels of an axis: each level's score is the mean over its configurations.

    ``groups`` maps a level to configuration indices into ``res`` (ideally the same set of other
    components for every level). The difference between the best level and each other level is
    resampled with the same two-level draws as the configurations, so it keeps the pairing over
    images and includes training noise; the p-values are Holm-adjusted over the other levels. None
    with fewer than two levels that have resampled scores.
    """
    usable = {
        name: list(idx) for name, idx in groups.items() if idx and all(res.means[i] is not None for i in idx)
    }
    if len(usable) < 2:
        return None
    means = {name: float(np.mean([res.observed[i] for i in idx])) for name, idx in usable.items()}
    boot = {name: np.mean([res.means[i] for i in idx], axis=0) for name, idx in usable.items()}
    best = max(sorted(means), key=lambda name: means[name])
    others = [name for name in sorted(means) if name != best]
    raw = [two_sided_p(boot[best] - boot[name]) for name in others]
    adjusted = holm(raw)
    contrasts = sorted(
        (
            LevelContrast(
                level=name,
                diff=means[best] - means[name],
                ci=percentiles(boot[best] - boot[name], level),
                p=p,
                p_holm=p_adj,
            )
            for name, p, p_adj in zip(others, raw, adjusted)
        ),
        key=lambda c: (c.diff, c.level),
    )
    seeds_resampled = all(res.n_seeds[i] > 1 for idx in usable.values() for i in idx)
    winner = best if seeds_resampled and all(c.p_holm <= alpha for c in contrasts) else None
    return LevelComparison(
        means=means, best=best, contrasts=contrasts, winner=winner, seeds_resampled=seeds_resampled
    )
