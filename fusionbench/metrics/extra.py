"""Built-in extra metrics: what the captions look like, beside how well they score.

``caption_stats`` reports mean caption length, the number of distinct words used and
distinct-1/2 (Li et al., 2016: distinct n-grams / all n-grams over the split's captions), the
usual signs of a model that repeats one generic caption. Tokenised like the word vocabulary
(lower-case, punctuation stripped).
"""

from __future__ import annotations

from dataclasses import dataclass

from fusionbench.metrics.base import ExtraMetric
from fusionbench.registry import METRICS
from fusionbench.text import normalize_caption


@METRICS.register("caption_stats")
class CaptionStats(ExtraMetric):
    """Mean caption length, distinct words used, distinct-1/2 (Li et al. 2016)."""

    @dataclass
    class Config:
        pass

    def compute(self, predictions: dict[int, str], references: dict[int, list[str]]) -> dict[str, float]:
        words = [normalize_caption(c) for c in predictions.values()]
        unigrams = [w for ws in words for w in ws]
        bigrams = [tuple(ws[i : i + 2]) for ws in words for i in range(len(ws) - 1)]
        return {
            "length_mean": sum(map(len, words)) / max(1, len(words)),
            "vocab_used": float(len(set(unigrams))),
            "distinct_1": len(set(unigrams)) / max(1, len(unigrams)),
            "distinct_2": len(set(bigrams)) / max(1, len(bigrams)),
        }
