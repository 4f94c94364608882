"""The verdict per axis: which fusion strategy (encoder, decoder) is best on each split, if any.

For one axis and one split, a level's score is the mean corpus CIDEr-D over its configurations,
taken over *the same set of other components for every level*: the combinations of the other
identity columns (``encoder × decoder`` for fusion, plus any extra assignment keys) where every
level has a non-degenerate configuration with per-image scores. Degenerate configurations are left
out (a collapsed decoder is no evidence about a fusion strategy), and so are the combinations they
leave incomplete; the sentence says which. Where no combination is complete (a grid that is not
crossed) each level is averaged over all of its usable configurations, and the sentence says so.

The best level is compared with every other level by ``stats.compare_levels``: the difference of
level scores is resampled with the same two-level draws (seeds within each configuration, test
images shared by all) as the leaderboard's intervals, and the two-sided p-values (``two_sided_p``:
the best level is picked by the same data) are Holm-adjusted
over the other levels. "X wins" only when every other level is worse after Holm, and only when
every compared configuration has more than one seed; otherwise the sentence reads "no clear winner
(X leads by d, 95% interval [lo, hi])" with d the lead over the runner-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fusionbench.leaderboard.stats import (
    ALPHA,
    TIE_TOLERANCE,
    LevelComparison,
    LevelContrast,
    Resamples,
    compare_levels,
)
from fusionbench.leaderboard.table import identity_columns

AXES = ("fusion", "encoder", "decoder")
AXIS_TITLES = {"fusion": "Fusion strategies", "encoder": "Encoders", "decoder": "Decoders"}
_NOUNS = {"fusion": ("fusion strategy", "fusion strategies")}


def axis_nouns(axis: str) -> tuple[str, str]:
    """(singular, plural) for an axis: ``fusion strategy``/``fusion strategies``, ``encoder``/``encoders``."""
    return _NOUNS.get(axis, (axis, f"{axis}s"))


@dataclass(frozen=True)
class AxisVerdict:
    """The verdict for one axis on one split.

    ``levels`` are the axis's levels in the grid; ``groups`` the row indices compared per level
    (one per combination of the other components, same order for every level); ``others`` names
    those other components (``encoder × decoder``); ``balanced`` is False when no combination had
    every level; ``dropped`` says what was left out and why; ``result`` the comparison (None with
    fewer than two comparable levels).
    """

    axis: str
    split: str
    levels: list[str]
    groups: dict[str, list[int]]
    others: str
    balanced: bool
    dropped: list[str] = field(default_factory=list)
    result: LevelComparison | None = None
    one_seed: bool = False

    @property
    def n_combinations(self) -> int:
        return len(next(iter(self.groups.values()))) if self.groups else 0


def axis_verdict(
    rows: Sequence[Mapping[str, Any]],
    resamples: Resamples,
    axis: str,
    split: str,
    *,
    alpha: float = ALPHA,
) -> AxisVerdict:
    """Pick the compared configurations for ``axis`` on ``split`` (module docstring) and compare."""
    levels = sorted({str(r[axis]) for r in rows})
    other_keys = [k for k in (identity_columns(rows[0]) if rows else []) if k != axis]
    others = " × ".join(other_keys) or "nothing else"
    dropped: list[str] = []

    def combo(row: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(str(row[k]) for k in other_keys)

    usable, degenerate, unscored = [], [], []
    for i, row in enumerate(rows):
        if row.get("degenerate") is not None:
            degenerate.append(f"`{row['label']}`")
        elif resamples.means[i] is None:
            unscored.append(f"`{row['label']}`")
        else:
            usable.append(i)
    if degenerate:
        dropped.append(f"degenerate {', '.join(degenerate)}")
    if unscored:
        dropped.append(f"{', '.join(unscored)} (no per-image {split} scores)")
    by_combo: dict[tuple[str, ...], dict[str, int]] = {}
    for i in usable:
        by_combo.setdefault(combo(rows[i]), {})[str(rows[i][axis])] = i
    present = sorted({str(rows[i][axis]) for i in usable})
    absent = [f"`{level}`" for level in levels if level not in present]
    if absent:
        dropped.append(f"{axis} {', '.join(absent)} (no usable configuration)")
    complete = sorted(c for c, found in by_combo.items() if set(found) == set(present))
    balanced = bool(complete)
    if balanced:
        incomplete = sorted(set(by_combo) - set(complete))
        if incomplete:
            dropped.append(
                f"the {', '.join('/'.join(c) for c in incomplete)} {others} combination"
                f"{'s' if len(incomplete) > 1 else ''}, which lack a usable configuration for some {axis}"
            )
        groups = {level: [by_combo[c][level] for c in complete] for level in present}
    else:
        groups = {level: [i for i in usable if str(rows[i][axis]) == level] for level in present}
    result = compare_levels(resamples, groups, alpha=alpha) if len(groups) > 1 else None
    return AxisVerdict(
        axis=axis,
        split=split,
        levels=levels,
        groups=groups,
        others=others,
        balanced=balanced,
        dropped=dropped,
        result=result,
        one_seed=all(resamples.n_seeds[i] <= 1 for idx in groups.values() for i in idx),
    )


def axis_verdicts(
    rows: Sequence[Mapping[str, Any]], resamples: Mapping[str, Resamples], splits: Sequence[str]
) -> list[AxisVerdict]:
    """Verdicts for every axis with more than one level in the grid (fusion always), every split."""
    out = []
    for axis in AXES:
        if axis != "fusion" and len({r[axis] for r in rows}) < 2:
            continue
        out += [axis_verdict(rows, resamples[split], axis, split) for split in splits if split in resamples]
    return out


def _x100(value: float) -> str:
    return f"{100 * value:.1f}"


def _contrast(c: LevelContrast) -> str:
    return f"`{c.level}` by {_x100(c.diff)} [{_x100(c.ci[0])}, {_x100(c.ci[1])}], Holm p = {c.p_holm:.3f}"


def verdict_sentence(v: AxisVerdict) -> str:
    """The verdict as Markdown sentences (backticks around names; x100 scores)."""
    one, many = axis_nouns(v.axis)
    if len(v.levels) < 2:
        return f"{v.split}: only one {one} in the grid (`{v.levels[0]}`)." if v.levels else ""
    r = v.result
    left_out = f" Left out: {'; '.join(v.dropped)}." if v.dropped else ""
    if r is None:
        return f"{v.split}: no verdict: fewer than two {many} have usable, non-degenerate results.{left_out}"
    n = v.n_combinations
    if v.balanced:
        over = f"over the {n} {v.others} combination{'s' if n != 1 else ''} where every {one} has a usable result"
    else:
        over = (
            f"over each {one}'s own configurations (no {v.others} combination has every {one}, "
            "so the levels are averaged over different configurations)"
        )
    means = ", ".join(f"`{k}` {_x100(r.means[k])}" for k in sorted(r.means, key=lambda k: (-r.means[k], k)))
    means = f" Mean CIDEr-D {over}: {means}."
    runner, rest = r.contrasts[0], r.contrasts[1:]
    interval = f"95% interval [{_x100(runner.ci[0])}, {_x100(runner.ci[1])}]"
    if runner.diff > TIE_TOLERANCE:
        lead = f"`{r.best}` leads `{runner.level}` by {_x100(runner.diff)}, {interval}"
    else:
        lead = f"`{r.best}` and `{runner.level}` are level (difference {_x100(runner.diff)}, {interval})"
    if not r.seeds_resampled:
        which = "per configuration" if v.one_seed else "for some configuration"
        return (
            f"{v.split}: no clear winner: {lead} (over test images only), but with one seed {which} "
            f"the {many} cannot be separated from training noise.{means}{left_out}"
        )
    if r.winner is not None:
        head = (
            f"{v.split}: `{r.winner}` wins: it is ahead of every other {one} after Holm correction, "
            + "; ".join(_contrast(c) for c in r.contrasts)
        )
    else:
        head = f"{v.split}: no clear winner ({lead}, Holm p = {runner.p_holm:.3f})"
        if rest:
            head += f"; `{r.best}` is also ahead of " + "; ".join(_contrast(c) for c in rest)
    return f"{head}.{means}{left_out}"


METHOD_SENTENCE = (
    "A level wins only when its mean CIDEr-D beats every other level after Holm correction "
    f"(α = {ALPHA}), testing the differences with the leaderboard's two-level bootstrap (seeds within each "
    "configuration, then test images shared by all); the means are taken over the same combinations "
    "of the other components for every level, degenerate configurations excluded. Otherwise: "
    "no clear winner."
)
"""How the verdict sentences are decided (printed above them)."""
