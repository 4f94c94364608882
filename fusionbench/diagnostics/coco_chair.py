"""CHAIR on COCO (Rohrbach et al., 2018): caption words mapped to the 80 instance categories.

Rohrbach et al.'s ``utils/chair.py`` maps every word of a caption (singularised, with a few
two-word names such as "hot dog" and "teddy bear" read as one) through a synonym list to a COCO
category, and counts a mention as hallucinated when the category is not among the image's
instance annotations (``instances_val2014.json``). ``SYNONYMS`` is their ``data/synonyms.txt``
(``coco_synonyms.txt`` here); plurals are read by stripping a final "s"/"es" (they singularise
with ``pattern.en``). Their rules for "baby"/"adult" animals, "passenger" vehicles, "bow tie" and
"toilet seat" are kept. Without instance annotations (``data.instances`` unset) the
diagnostic is reported unavailable with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fusionbench.diagnostics.chair import chair_scores
from fusionbench.errors import DataError
from fusionbench.text.words import normalize_caption

#: Rohrbach et al.'s synonym list (``coco_synonyms.txt``, their ``data/synonyms.txt``).
SYNONYMS_FILE = Path(__file__).with_name("coco_synonyms.txt")


def _read_synonyms(path: Path) -> dict[str, tuple[str, ...]]:
    """``{category: (its name, synonyms...)}``: one line per category, its name first."""
    out: dict[str, tuple[str, ...]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            words = tuple(dict.fromkeys(w.strip().lower() for w in line.split(",") if w.strip()))
            out[words[0]] = words
    return out


#: category: synonyms (the category's own name first).
SYNONYMS: dict[str, tuple[str, ...]] = _read_synonyms(SYNONYMS_FILE)
CATEGORY_OF: dict[str, str] = {w: cat for cat, words in SYNONYMS.items() for w in words}
CATEGORY_OF["bow tie"] = "tie"  # their two-word rules: a bow tie is a tie, a toilet seat a toilet
CATEGORY_OF["toilet seat"] = "toilet"
#: Their qualifier rules: "baby bird" is a bird and "passenger jet" a jet, not a person as well.
_QUALIFIED = {
    **{q: {"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub"}
       for q in ("baby", "adult")},
    "passenger": {"jet", "train"},
}  # fmt: skip


def _singular(word: str) -> str:
    if word in CATEGORY_OF:
        return word
    for cut in ("es", "s"):
        if word.endswith(cut) and word[: -len(cut)] in CATEGORY_OF:
            return word[: -len(cut)]
    return word


def coco_mentions(caption: str) -> list[str]:
    """The COCO categories ``caption`` mentions, one per mention (two-word names first)."""
    words = [_singular(w) for w in normalize_caption(caption)]
    if "toilet" in words and "seat" in words:  # "the seat of the toilet" names no chair
        words = [w for w in words if w != "seat"]
    out: list[str] = []
    i = 0
    while i < len(words):
        two = " ".join(words[i : i + 2])
        if two in CATEGORY_OF:
            out.append(CATEGORY_OF[two])
            i += 2
            continue
        if i + 1 < len(words) and words[i + 1] in _QUALIFIED.get(words[i], ()):
            i += 1  # the qualifier is not an object of its own
            continue
        if words[i] in CATEGORY_OF:
            out.append(CATEGORY_OF[words[i]])
        i += 1
    return out


def load_instances(path: str | Path) -> dict[int, set[str]]:
    """``{image_id: {category names}}`` from a COCO instances file (``instances_val2014.json``)."""
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        out: dict[int, set[str]] = {int(im["id"]): set() for im in data.get("images", [])}
        for ann in data["annotations"]:
            out.setdefault(int(ann["image_id"]), set()).add(names[int(ann["category_id"])])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(
            f"Cannot read COCO instance annotations {p} ({err}). Point data.instances (or --instances) at "
            "instances_val2014.json (or _train2014) of the COCO 2014 annotations."
        ) from None
    return out


def coco_chair(
    predictions: Mapping[int, str], instances: Mapping[int, set[str]]
) -> tuple[dict[str, Any], dict]:
    """(CHAIR summary, ``{image_id: hallucinated categories}``) of captions with instance annotations."""
    per_image = {}
    for image_id, caption in predictions.items():
        if int(image_id) not in instances:
            continue
        found = coco_mentions(caption)
        truth = instances[int(image_id)]
        per_image[image_id] = (len(found), [c for c in found if c not in truth])
    summary = chair_scores(per_image)
    summary["images_without_instances"] = len(predictions) - len(per_image)
    return summary, {i: h for i, (_, h) in per_image.items()}
