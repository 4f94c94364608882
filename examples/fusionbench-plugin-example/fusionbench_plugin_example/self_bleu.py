"""Self-BLEU: how similar a system's captions are to each other (lower = more diverse).

Zhu et al. (2018), "Texygen": each caption is scored with BLEU-n against all the *other* captions
of the split as references, and the scores are averaged. Computed with pycocoevalcap's BLEU
scorer on lower-cased, whitespace-tokenised text; captions are subsampled (seeded) to bound cost.
It is a diversity statistic, not a coco-caption quality metric.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pycocoevalcap.bleu.bleu_scorer import BleuScorer

from fusionbench.metrics.base import ExtraMetric
from fusionbench.text import normalize_caption


class SelfBleu(ExtraMetric):
    """Self-BLEU diversity of a split's captions (Zhu et al. 2018); lower is more diverse."""

    higher_is_better = False

    @dataclass
    class Config:
        n: int = 4
        max_captions: int = 200
        seed: int = 0

    def compute(self, predictions: dict[int, str], references: dict[int, list[str]]) -> dict[str, float]:
        captions = [" ".join(normalize_caption(c)) for _, c in sorted(predictions.items())]
        if len(captions) < 2:
            return {f"self_BLEU_{self.config.n}": 0.0}
        rng = random.Random(self.config.seed)
        picked = rng.sample(range(len(captions)), min(self.config.max_captions, len(captions)))
        scorer = BleuScorer(n=self.config.n)
        for i in picked:
            scorer += (captions[i], [c for j, c in enumerate(captions) if j != i])
        _, per_caption = scorer.compute_score(option="closest", verbose=0)
        scores = per_caption[self.config.n - 1]
        return {f"self_BLEU_{self.config.n}": float(sum(scores) / len(scores))}
