"""Is a cell's output degenerate? One caption (or a handful) written for every image.

A decoder that ignores the image collapses onto the caption that best fits the training
distribution on average ("there is a purple triangle on a dark background" for all 200 test
images). Its corpus scores are not zero (a frequent caption shares many n-grams with every
reference), so ranking it like a real result would mislead; the leaderboard marks it instead and
keeps it out of its "best" lines. Two signs, either is enough:

* ``modal_share``: the share of images that get the most frequent caption, at least
  ``MODAL_SHARE_LIMIT`` (half the split written with one sentence);
* ``unique_share``: distinct captions / images, at most ``UNIQUE_SHARE_LIMIT``.

Captions are compared after the usual normalisation (lower case, punctuation stripped), as they
are scored. A split of fewer than ``MIN_IMAGES`` images is never called degenerate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from fusionbench.text.words import normalize_caption

MODAL_SHARE_LIMIT = 0.5
UNIQUE_SHARE_LIMIT = 0.05
MIN_IMAGES = 10


def caption_collapse(predictions: Mapping[Any, str]) -> dict[str, Any]:
    """``unique_share``, ``modal_share``, ``modal_caption``, ``degenerate`` and, if so, ``reason``."""
    captions = [" ".join(normalize_caption(c)) for c in predictions.values()]
    n = len(captions)
    if not n:
        return {
            "images": 0,
            "unique_share": None,
            "modal_share": None,
            "modal_caption": None,
            "degenerate": False,
        }
    counts = Counter(captions)
    modal, modal_count = counts.most_common(1)[0]
    out: dict[str, Any] = {
        "images": n,
        "unique_share": len(counts) / n,
        "modal_share": modal_count / n,
        "modal_caption": modal,
        "degenerate": False,
    }
    if n < MIN_IMAGES:
        return out
    if out["modal_share"] >= MODAL_SHARE_LIMIT:
        out["degenerate"] = True
        out["reason"] = f"{modal_count} of {n} images get the same caption ({modal!r})"
    elif out["unique_share"] <= UNIQUE_SHARE_LIMIT:
        out["degenerate"] = True
        out["reason"] = f"only {len(counts)} distinct captions for {n} images"
    return out
