"""Caption metrics equal to coco-caption's (pycocoevalcap): BLEU-1..4, METEOR, ROUGE-L, CIDEr (+ SPICE if its jars exist)."""

from fusionbench.metrics.caption_metric import CaptionMetric
from fusionbench.metrics.coco import METRIC_KEYS, ScoreResult, check_java, close_meteor, score_captions
from fusionbench.metrics.files import load_predictions, load_references, score_files

__all__ = [
    "METRIC_KEYS",
    "CaptionMetric",
    "ScoreResult",
    "check_java",
    "close_meteor",
    "load_predictions",
    "load_references",
    "score_captions",
    "score_files",
]
