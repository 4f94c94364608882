"""The top of the leaderboard compared pairwise: which of its first configurations the data can order.

The table compares every configuration with #1 only, so two configurations below #1 can swap
places between reruns while the page said nothing about their order. For the top ``k`` ranked
configurations (3 by default) every pair is compared with the same two-level bootstrap draws as the
table's intervals (seeds within each configuration, then the test images shared by all): the
difference higher-ranked minus lower-ranked, its 95% interval, and the two-sided p (twice the share
of resamples where the higher one is not ahead: the ranks come from the same data), Holm-adjusted
over the ``k(k-1)/2`` pairs. A pair whose adjusted p exceeds α is *tied*: a rerun with other
seeds may swap it. With one seed for either side a pair is not compared (its interval would cover
test images only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from fusionbench.leaderboard.stats import ALPHA, Resamples, holm, percentiles, two_sided_p

TOP_K = 3


@dataclass(frozen=True)
class PairContrast:
    """Rank ``higher`` minus rank ``lower`` (ranks 1-based): observed difference, interval, p."""

    higher: int
    lower: int
    labels: tuple[str, str]
    diff: float
    ci: tuple[float, float]
    p: float
    p_holm: float

    @property
    def tied(self) -> bool:
        return self.p_holm > ALPHA


def podium_contrasts(
    rows: Sequence[Mapping[str, Any]], res: Resamples, *, k: int = TOP_K, level: float = 0.95
) -> list[PairContrast]:
    """Every pair of the first ``k`` ranked rows (``rows`` and ``res`` in rank order, as
    ``table.aggregate`` returns them); empty when fewer than two of them have multi-seed draws."""
    top = [i for i, r in enumerate(rows) if r.get("rank") is not None][:k]
    usable = [i for i in top if res.means[i] is not None and res.n_seeds[i] > 1]
    if len(top) < 2 or usable != top:  # a one-seed or unscored row among them: no pairwise claims
        return []
    pairs = list(combinations(usable, 2))
    raw = [two_sided_p(res.means[a] - res.means[b]) for a, b in pairs]  # type: ignore[operator]
    return [
        PairContrast(
            higher=int(rows[a]["rank"]),
            lower=int(rows[b]["rank"]),
            labels=(str(rows[a]["label"]), str(rows[b]["label"])),
            diff=float(res.observed[a] - res.observed[b]),  # type: ignore[operator]
            ci=percentiles(res.means[a] - res.means[b], level),  # type: ignore[operator]
            p=p,
            p_holm=p_adj,
        )
        for (a, b), p, p_adj in zip(pairs, raw, holm(raw))
    ]


def podium_sentences(contrasts: Sequence[PairContrast]) -> list[str]:
    """One Markdown line per pair (x100 scores), then which ranks a rerun may swap."""
    if not contrasts:
        return []
    lines = [
        f"#{c.higher} `{c.labels[0]}` − #{c.lower} `{c.labels[1]}`: {100 * c.diff:.1f} "
        f"[{100 * c.ci[0]:.1f}, {100 * c.ci[1]:.1f}], Holm p = {c.p_holm:.3f}: "
        + ("tied (a rerun may swap them)" if c.tied else "ordered")
        for c in contrasts
    ]
    tied = [f"#{c.higher}/#{c.lower}" for c in contrasts if c.tied]
    lines.append(
        f"Tied pairs among the top {len({c.higher for c in contrasts} | {c.lower for c in contrasts})}: "
        + (", ".join(tied) if tied else "none: the data order all of them")
        + "."
    )
    return lines


PODIUM_CAPTION = (
    "Every pair of the top configurations on test, the higher-ranked minus the lower (x100), with "
    "the table's two-level bootstrap (seeds, then test images shared by all) and Holm correction over "
    f"the pairs (α = {ALPHA}); a tied pair may swap places in a rerun with other seeds."
)
