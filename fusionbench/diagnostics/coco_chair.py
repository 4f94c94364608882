"""CHAIR on COCO (Rohrbach et al., 2018): caption words mapped to the 80 instance categories.

Rohrbach et al.'s ``utils/chair.py`` maps every word of a caption (singularised, with a few
two-word names such as "hot dog" and "teddy bear" read as one) through a synonym list to a COCO
category, and counts a mention as hallucinated when the category is not among the image's
instance annotations (``instances_val2014.json``). ``SYNONYMS`` below follows the categories of
their ``data/synonyms.txt`` with its most frequent synonyms (the full list is not vendored);
plurals are read by stripping a final "s"/"es". Their rules for "baby"/"adult" animals and
"passenger" vehicles are kept. Without instance annotations (``data.instances`` unset) the
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

#: category: synonyms (the category's own name first).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": (
        "person",
        "man",
        "woman",
        "boy",
        "girl",
        "child",
        "kid",
        "people",
        "men",
        "women",
        "player",
        "lady",
        "guy",
        "baby",
        "adult",
        "rider",
        "skier",
        "surfer",
        "skateboarder",
        "snowboarder",
    ),
    "bicycle": ("bicycle", "bike", "cycle"),
    "car": ("car", "automobile", "van", "taxi", "suv"),
    "motorcycle": ("motorcycle", "motor bike", "motor cycle", "scooter", "motorbike"),
    "airplane": ("airplane", "jet", "plane", "air plane", "aircraft", "airliner"),
    "bus": ("bus", "trolley"),
    "train": ("train", "locomotive", "tram"),
    "truck": ("truck", "pickup"),
    "boat": ("boat", "ship", "kayak", "canoe", "sailboat", "yacht"),
    "traffic light": ("traffic light", "traffic signal", "stop light", "street light"),
    "fire hydrant": ("fire hydrant", "hydrant"),
    "stop sign": ("stop sign",),
    "parking meter": ("parking meter", "meter"),
    "bench": ("bench",),
    "bird": ("bird", "duck", "pigeon", "seagull"),
    "cat": ("cat", "kitten", "kitty"),
    "dog": ("dog", "puppy", "pup"),
    "horse": ("horse", "pony"),
    "sheep": ("sheep", "lamb"),
    "cow": ("cow", "cattle", "bull", "calf"),
    "elephant": ("elephant",),
    "bear": ("bear",),
    "zebra": ("zebra",),
    "giraffe": ("giraffe",),
    "backpack": ("backpack",),
    "umbrella": ("umbrella", "parasol"),
    "handbag": ("handbag", "purse"),
    "tie": ("tie", "necktie", "bow tie"),
    "suitcase": ("suitcase", "suit case", "luggage"),
    "frisbee": ("frisbee",),
    "skis": ("skis", "ski"),
    "snowboard": ("snowboard",),
    "sports ball": ("sports ball", "ball", "football", "baseball", "soccer"),
    "kite": ("kite",),
    "baseball bat": ("baseball bat", "bat"),
    "baseball glove": ("baseball glove", "glove", "mitt"),
    "skateboard": ("skateboard", "board"),
    "surfboard": ("surfboard",),
    "tennis racket": ("tennis racket", "racket"),
    "bottle": ("bottle",),
    "wine glass": ("wine glass",),
    "cup": ("cup", "mug"),
    "fork": ("fork",),
    "knife": ("knife",),
    "spoon": ("spoon",),
    "bowl": ("bowl",),
    "banana": ("banana",),
    "apple": ("apple",),
    "sandwich": ("sandwich", "burger", "sub"),
    "orange": ("orange",),
    "broccoli": ("broccoli",),
    "carrot": ("carrot",),
    "hot dog": ("hot dog",),
    "pizza": ("pizza",),
    "donut": ("donut", "doughnut"),
    "cake": ("cake", "cupcake"),
    "chair": ("chair", "seat", "stool"),
    "couch": ("couch", "sofa"),
    "potted plant": ("potted plant", "plant", "houseplant"),
    "bed": ("bed",),
    "dining table": ("dining table", "table", "desk"),
    "toilet": ("toilet",),
    "tv": ("tv", "television", "monitor"),
    "laptop": ("laptop", "laptop computer", "computer"),
    "mouse": ("mouse",),
    "remote": ("remote", "controller"),
    "keyboard": ("keyboard",),
    "cell phone": ("cell phone", "phone", "mobile phone", "cellphone", "smartphone"),
    "microwave": ("microwave",),
    "oven": ("oven", "stove"),
    "toaster": ("toaster",),
    "sink": ("sink",),
    "refrigerator": ("refrigerator", "fridge"),
    "book": ("book", "novel"),
    "clock": ("clock",),
    "vase": ("vase",),
    "scissors": ("scissors",),
    "teddy bear": ("teddy bear", "teddy"),
    "hair drier": ("hair drier", "hairdryer", "hair dryer"),
    "toothbrush": ("toothbrush",),
}
CATEGORY_OF: dict[str, str] = {w: cat for cat, words in SYNONYMS.items() for w in words}
_QUALIFIERS = {"baby", "adult", "passenger"}  # "baby bird" is a bird, not a person (Rohrbach et al.)


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
    out: list[str] = []
    i = 0
    while i < len(words):
        two = " ".join(words[i : i + 2])
        if two in CATEGORY_OF:
            out.append(CATEGORY_OF[two])
            i += 2
            continue
        if words[i] in _QUALIFIERS and i + 1 < len(words) and words[i + 1] in CATEGORY_OF:
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
