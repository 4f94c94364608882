"""Extra metrics: scores computed next to (never instead of) the coco-caption metrics.

A registered ``ExtraMetric`` sees a split's predictions and references after decoding and returns
named values (e.g. caption length, diversity). Its keys are stored beside the coco-caption keys in
``metrics.json`` and are labelled as extra metrics, not coco-caption scores.
"""

from __future__ import annotations


class ExtraMetric:
    """Base class of registered extra metrics. Subclasses declare a ``Config`` dataclass.

    ``higher_is_better`` tells tables which way to rank.
    """

    higher_is_better: bool = True

    def __init__(self, config=None) -> None:
        self.config = config

    def compute(self, predictions: dict[int, str], references: dict[int, list[str]]) -> dict[str, float]:
        """``{key: value}`` for one evaluation split."""
        raise NotImplementedError
