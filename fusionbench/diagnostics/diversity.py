"""Caption diversity, as ImageCaptioning.pytorch's evaluation reports it (Luo et al.; also Dai et
al. 2017, "Towards Diverse and Natural Image Descriptions via a Conditional GAN"; Li et al. 2016,
distinct-n).

* ``distinct_1``/``distinct_2``: distinct unigrams (bigrams) / all unigrams (bigrams) over the
  split's captions;
* ``vocabulary``: distinct words used;
* ``unique_share``: distinct captions / images, and ``modal_share``, from
  ``fusionbench.metrics.collapse.caption_collapse`` (the degenerate-cell flag reads the same
  numbers, so the two never disagree);
* ``novel_share``/``copied_share``: captions that are (not) some train reference verbatim.

Captions are normalised as they are scored (``normalize_caption``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fusionbench.metrics.collapse import caption_collapse
from fusionbench.text.words import normalize_caption


def train_sentences(train_captions: Iterable[Iterable[str]]) -> frozenset[str]:
    """The normalised train references, to tell copied captions from new ones."""
    return frozenset(" ".join(normalize_caption(c)) for caps in train_captions for c in caps)


def diversity(predictions: Mapping[Any, str], train: frozenset[str] | None = None) -> dict[str, Any]:
    """Distinct-1/-2, vocabulary, unique/modal share and (with ``train``) the copied share."""
    tokens = [normalize_caption(c) for c in predictions.values()]
    unigrams = [w for t in tokens for w in t]
    bigrams = [(a, b) for t in tokens for a, b in zip(t, t[1:])]
    collapse = caption_collapse(predictions)
    out: dict[str, Any] = {
        "distinct_1": len(set(unigrams)) / len(unigrams) if unigrams else None,
        "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else None,
        "vocabulary": len(set(unigrams)),
        "unique_share": collapse["unique_share"],
        "modal_share": collapse["modal_share"],
        "mean_length": len(unigrams) / len(tokens) if tokens else None,
    }
    if train is not None:
        copied = sum(1 for t in tokens if " ".join(t) in train)
        out["copied_share"] = copied / len(tokens) if tokens else None
    return out
