"""Read coco-caption files and score them.

* Predictions: the COCO results format, a JSON list ``[{"image_id": int, "caption": str}, ...]``.
* References: the COCO captions annotation format,
  ``{"images": [{"id": int, ...}, ...], "annotations": [{"image_id": int, "caption": str, ...}, ...]}``.

Every problem with a file raises ``ScoreInputError`` naming the file and saying how to fix it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fusionbench.errors import ScoreInputError
from fusionbench.metrics.coco import listed_ids, score_captions

_PRED_FORMAT = 'a JSON list of {"image_id": <int>, "caption": <str>} objects (the COCO results format)'
_REF_FORMAT = (
    'a JSON object {"images": [{"id": <int>}, ...], "annotations": [{"image_id": <int>, "caption": <str>}, ...]} '
    "(the COCO captions annotation format, e.g. captions_val2014.json)"
)


def _read_json(path: str | os.PathLike, kind: str, expected: str) -> Any:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ScoreInputError(f"{kind} file {p} does not exist. Check the path; it should be {expected}.")
    if os.path.isdir(p):
        raise ScoreInputError(f"{kind} file {p} is a directory. Pass the path of the JSON file: {expected}.")
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ScoreInputError(
            f"{kind} file {p} cannot be read ({e.strerror or e}). Check its permissions."
        ) from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ScoreInputError(
            f"{kind} file {p} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}, line {line}). "
            "Re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`, or json.dump(..., ensure_ascii=True))."
        ) from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ScoreInputError(
            f"{kind} file {p} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
            f"Fix the JSON there; the file should be {expected}."
        ) from e


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _entry_field(entry: Any, index: int, key: str, kind: str, p: str, where: str, fmt: str) -> Any:
    if not isinstance(entry, dict):
        raise ScoreInputError(
            f"{kind} file {p}: {where}[{index}] is a {type(entry).__name__} ({entry!r:.60}), not an object. "
            f"Each entry must be an object; the file should be {fmt}."
        )
    if key not in entry:
        raise ScoreInputError(
            f"{kind} file {p}: {where}[{index}] has no {key!r} key (its keys: {sorted(entry)!r:.100}). "
            f"Add {key!r} to every entry; the file should be {fmt}."
        )
    value = entry[key]
    if key in ("image_id", "id") and not _is_int(value):
        raise ScoreInputError(
            f"{kind} file {p}: {where}[{index}][{key!r}] is {value!r:.60} ({type(value).__name__}), not an int. "
            "Image ids must be the integer COCO ids (e.g. 391895, not '391895' or 'COCO_val2014_...jpg')."
        )
    if key == "caption" and not isinstance(value, str):
        raise ScoreInputError(
            f"{kind} file {p}: {where}[{index}]['caption'] is {value!r:.60} ({type(value).__name__}), "
            "not a string. Write the decoded caption text."
        )
    return value


def load_predictions(path: str | os.PathLike) -> dict[int, str]:
    """``{image_id: caption}`` from a COCO results file; each image id must appear once."""
    p = os.fspath(path)
    data = _read_json(p, "Predictions", _PRED_FORMAT)
    if isinstance(data, dict):
        hint = (
            " It looks like a COCO annotation file; pass it as the references instead."
            if "annotations" in data
            else ""
        )
        raise ScoreInputError(f"Predictions file {p} holds a JSON object; it should be {_PRED_FORMAT}.{hint}")
    if not isinstance(data, list):
        raise ScoreInputError(
            f"Predictions file {p} holds a JSON {type(data).__name__}; it should be {_PRED_FORMAT}."
        )
    if not data:
        raise ScoreInputError(
            f"Predictions file {p} is an empty list: there is nothing to score. Write one "
            '{"image_id": ..., "caption": ...} entry per predicted image.'
        )
    predictions: dict[int, str] = {}
    first_index: dict[int, int] = {}
    for i, entry in enumerate(data):
        image_id = _entry_field(entry, i, "image_id", "Predictions", p, "entry", _PRED_FORMAT)
        caption = _entry_field(entry, i, "caption", "Predictions", p, "entry", _PRED_FORMAT)
        if image_id in predictions:
            raise ScoreInputError(
                f"Predictions file {p}: image_id {image_id} appears twice (entries {first_index[image_id]} and {i}). "
                "Write exactly one caption per image (e.g. drop duplicates from a padded distributed sampler)."
            )
        predictions[image_id] = caption
        first_index[image_id] = i
    return predictions


def load_references(path: str | os.PathLike) -> dict[int, list[str]]:
    """``{image_id: [caption, ...]}`` from a COCO captions annotation file.

    Every image in ``"images"`` gets an entry (an empty list if it has no annotation); an annotation
    whose image_id is not in ``"images"`` is an error. Without ``"images"``, the ids of the annotations
    are used.
    """
    p = os.fspath(path)
    data = _read_json(p, "References", _REF_FORMAT)
    if isinstance(data, list):
        raise ScoreInputError(
            f"References file {p} holds a JSON list; it should be {_REF_FORMAT}. "
            "(A list of {image_id, caption} objects is a predictions/results file.)"
        )
    if not isinstance(data, dict):
        raise ScoreInputError(
            f"References file {p} holds a JSON {type(data).__name__}; it should be {_REF_FORMAT}."
        )
    if "annotations" not in data:
        raise ScoreInputError(
            f"References file {p} has no 'annotations' key (its keys: {sorted(data)!r:.120}); it should be {_REF_FORMAT}."
        )
    annotations = data["annotations"]
    if not isinstance(annotations, list):
        raise ScoreInputError(
            f"References file {p}: 'annotations' is a {type(annotations).__name__}, not a list; it should be {_REF_FORMAT}."
        )
    references: dict[int, list[str]] = {}
    images = data.get("images")
    if images is not None:
        if not isinstance(images, list):
            raise ScoreInputError(
                f"References file {p}: 'images' is a {type(images).__name__}, not a list; it should be {_REF_FORMAT}."
            )
        for i, img in enumerate(images):
            references.setdefault(_entry_field(img, i, "id", "References", p, "images", _REF_FORMAT), [])
    for i, ann in enumerate(annotations):
        image_id = _entry_field(ann, i, "image_id", "References", p, "annotations", _REF_FORMAT)
        caption = _entry_field(ann, i, "caption", "References", p, "annotations", _REF_FORMAT)
        if images is None:
            references.setdefault(image_id, [])
        elif image_id not in references:
            raise ScoreInputError(
                f"References file {p}: annotations[{i}] refers to image_id {image_id}, which is not in 'images'. "
                "Add the image to 'images' or remove the annotation."
            )
        references[image_id].append(caption)
    if not any(references.values()):
        raise ScoreInputError(f"References file {p} has no annotations: there is nothing to score against.")
    return references


def score_files(
    predictions_path: str | os.PathLike,
    references_path: str | os.PathLike,
    *,
    spice_jar_dir: str | os.PathLike | None = None,
    spice: bool = True,
) -> dict[str, Any]:
    """Score a COCO results file against a COCO captions file; returns ``ScoreResult.to_dict()``."""
    predictions = load_predictions(predictions_path)
    references = load_references(references_path)
    pp, rp = os.fspath(predictions_path), os.fspath(references_path)
    unknown = [i for i in predictions if i not in references]
    if unknown:
        raise ScoreInputError(
            f"Predictions file {pp} has image ids that are not in references file {rp}: {listed_ids(unknown)}. "
            "Score against the annotation file of the split you predicted (e.g. val vs. test), or drop those ids."
        )
    no_refs = [i for i in predictions if not references[i]]
    if no_refs:
        raise ScoreInputError(
            f"Predictions file {pp} has image ids whose images have no captions in references file {rp}: "
            f"{listed_ids(no_refs)}. Add their annotations or drop those predictions."
        )
    return score_captions(predictions, references, spice_jar_dir=spice_jar_dir, spice=spice).to_dict()
