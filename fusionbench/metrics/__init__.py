"""Caption metrics equal to coco-caption's (pycocoevalcap): BLEU-1..4, METEOR, ROUGE-L, CIDEr (+ SPICE if its jars exist).

``CaptionMetric`` (the torchmetrics ``Metric``) is imported on first use, so scoring files and
reading ``METRIC_KEYS`` (e.g. the leaderboard) need no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fusionbench.metrics.coco import (
    METRIC_KEYS,
    ScoreResult,
    check_java,
    clear_meteor_cache,
    close_meteor,
    score_captions,
    score_captions_reference,
    start_meteor,
)
from fusionbench.metrics.files import load_predictions, load_references, score_files
from fusionbench.metrics.ptb import PreparedReferences, clear_reference_cache, prepare_references

if TYPE_CHECKING:  # pragma: no cover
    from fusionbench.metrics.caption_metric import CaptionMetric

__all__ = [
    "METRIC_KEYS",
    "CaptionMetric",
    "PreparedReferences",
    "ScoreResult",
    "check_java",
    "clear_meteor_cache",
    "clear_reference_cache",
    "close_meteor",
    "load_predictions",
    "load_references",
    "prepare_references",
    "score_captions",
    "score_captions_reference",
    "score_files",
    "start_meteor",
]


def __getattr__(name: str) -> Any:
    if name == "CaptionMetric":
        from fusionbench.metrics.caption_metric import CaptionMetric

        return CaptionMetric
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
