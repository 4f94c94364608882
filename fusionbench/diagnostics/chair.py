"""Object hallucination: CHAIR-i and CHAIR-s (Rohrbach et al., 2018, "Object Hallucination in
Image Captioning", EMNLP; their code: github.com/LisaAnne/Hallucination, ``utils/chair.py``).

CHAIR-i is the share of object mentions that name an object not in the image; CHAIR-s the share
of captions with at least one such mention. As in their code every mention counts (a caption
that names "a blue star" twice has two hallucinated mentions) and a caption with no object word
still counts as a caption for CHAIR-s.

``shapes``: an object mention is a noun phrase with a shape word, read with the generator's own
synonyms (``fusionbench.diagnostics.shapes_text``); it is present when some object of the scene has
that shape and, if the phrase says one, that colour ("a blue circle" in a scene with a red circle
and a blue square is hallucinated). Sizes and counts are facts (``facts``), not objects.

COCO: the 80 categories with synonyms after Rohrbach et al.'s ``data/synonyms.txt``
(``coco_chair``), checked against the image's instance annotations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fusionbench.diagnostics.shapes_text import Parsed, Scene


def shapes_hallucinations(parsed: Parsed, scene: Scene) -> tuple[int, list[str]]:
    """(object mentions, the hallucinated ones as text) of one parsed caption."""
    mentions = [p for p in parsed.phrases if p.shape is not None]
    bad = [p.text for p in mentions if not scene.matches(p, use_size=False)]
    return len(mentions), bad


def chair_scores(per_image: Mapping[Any, tuple[int, list[str]]]) -> dict[str, Any]:
    """CHAIR-i, CHAIR-s and the counts they come from, over ``{image: (mentions, hallucinated)}``."""
    mentions = sum(m for m, _ in per_image.values())
    bad = sum(len(h) for _, h in per_image.values())
    captions = len(per_image)
    with_bad = sum(1 for _, h in per_image.values() if h)
    return {
        "CHAIR_i": bad / mentions if mentions else None,
        "CHAIR_s": with_bad / captions if captions else None,
        "object_mentions": mentions,
        "hallucinated_mentions": bad,
        "captions": captions,
    }
