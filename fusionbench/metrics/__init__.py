"""Caption metrics equal to coco-caption's (pycocoevalcap): BLEU-1..4, METEOR, ROUGE-L, CIDEr (+ SPICE if its jars exist).

The names are imported on first use (module ``__getattr__``, PEP 562): scoring files
(``score_files``, ``fusionbench score``) needs pycocoevalcap and Java but not torch, while
``CaptionMetric`` is a torchmetrics ``Metric``. Importing this package, or any module of it other
than ``caption_metric``, imports no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fusionbench.metrics.keys import METRIC_KEYS

if TYPE_CHECKING:  # pragma: no cover
    from fusionbench.metrics.caption_metric import CaptionMetric
    from fusionbench.metrics.coco import (
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

_LAZY = {
    "CaptionMetric": "fusionbench.metrics.caption_metric",
    "ScoreResult": "fusionbench.metrics.coco",
    "check_java": "fusionbench.metrics.coco",
    "clear_meteor_cache": "fusionbench.metrics.coco",
    "close_meteor": "fusionbench.metrics.coco",
    "score_captions": "fusionbench.metrics.coco",
    "score_captions_reference": "fusionbench.metrics.coco",
    "start_meteor": "fusionbench.metrics.coco",
    "load_predictions": "fusionbench.metrics.files",
    "load_references": "fusionbench.metrics.files",
    "score_files": "fusionbench.metrics.files",
    "PreparedReferences": "fusionbench.metrics.ptb",
    "clear_reference_cache": "fusionbench.metrics.ptb",
    "prepare_references": "fusionbench.metrics.ptb",
}

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
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fusionbench.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
