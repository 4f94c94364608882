"""The diagnostics that read captions only: diversity, hallucination and (``shapes``) fact accuracy.

``text_diagnostics`` is shared by a run (``fusionbench.diagnostics.run``) and by
``fusionbench score --diagnostics``; it imports no torch. What it needs besides the captions:

* ``scenes`` (``{image_id: Scene}``) for ``shapes``: from the split (``scenes_of_split``) or from
  an exported references file whose ``images`` carry a ``scene`` (``scenes_from_references``);
* ``instances`` (``{image_id: {category}}``) for COCO CHAIR (``coco_chair.load_instances``);
* ``train`` (normalised train references) for the copied share of ``diversity``;
* ``novel_pairs`` for a split whose images contain held-out pairs (``test_novel``).

Returns ``(summary, per_image)``: the summary goes to ``metrics.json``'s ``diagnostics``, the
per-image lists (hallucinated objects, wrong relations) to the W&B predictions table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fusionbench.diagnostics.chair import chair_scores, shapes_hallucinations
from fusionbench.diagnostics.coco_chair import coco_chair
from fusionbench.diagnostics.diversity import diversity
from fusionbench.diagnostics.facts import caption_facts, fact_scores, novel_pair_scores, reference_items
from fusionbench.diagnostics.shapes_text import Scene, parse

NO_SCENES = "the dataset records no scene of its images (shapes does; COCO CHAIR needs data.instances)"


def scenes_of_split(split) -> dict[int, Scene] | None:
    """``{image_id: Scene}`` of a ``shapes`` split (its ``box_labels`` and ``boxes``); None otherwise."""
    if split.boxes is None or split.box_labels is None or split.images is None:
        return None
    if "relations" not in split.meta:  # only shapes labels its boxes "size colour shape"
        return None
    size = int(split.images.shape[1])
    return {
        int(i): Scene.from_labels(labels, boxes.tolist(), size)
        for i, labels, boxes in zip(split.image_ids, split.box_labels, split.boxes)
    }


def scenes_from_references(data: Mapping[str, Any]) -> dict[int, Scene] | None:
    """Scenes from a references JSON whose ``images`` entries carry ``scene`` (``export_references``)."""
    images = data.get("images") or []
    scenes = {
        int(im["id"]): Scene.from_json(im["scene"]) for im in images if isinstance(im, dict) and "scene" in im
    }
    return scenes or None


def export_references(split, novel_pairs: Sequence[Sequence[str]] | None = None) -> dict[str, Any]:
    """A COCO captions file of ``split`` whose images carry their ``shapes`` scene, so that
    ``fusionbench score --diagnostics`` can check any system's captions against the truth."""
    scenes = scenes_of_split(split) or {}
    images = []
    annotations = []
    for i, caps in zip(split.image_ids, split.captions):
        entry: dict[str, Any] = {"id": int(i)}
        if int(i) in scenes:
            entry["scene"] = scenes[int(i)].to_json()
        images.append(entry)
        annotations += [{"image_id": int(i), "id": len(annotations), "caption": c} for c in caps]
    out: dict[str, Any] = {"images": images, "annotations": annotations}
    pairs = novel_pairs if novel_pairs is not None else split.meta.get("novel_pairs")
    if scenes and pairs and split.name == "test_novel":
        out["novel_pairs"] = [list(p) for p in pairs]
    return out


def text_diagnostics(
    predictions: Mapping[int, str],
    references: Mapping[int, Sequence[str]],
    *,
    scenes: Mapping[int, Scene] | None = None,
    instances: Mapping[int, set[str]] | None = None,
    instances_reason: str | None = None,
    train: frozenset[str] | None = None,
    novel_pairs: Sequence[Sequence[str]] | None = None,
) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """Diversity, CHAIR and fact accuracy of one split's captions; see the module docstring."""
    summary: dict[str, Any] = {"diversity": diversity(predictions, train)}
    per_image: dict[int, dict[str, Any]] = {int(i): {} for i in predictions}
    if scenes is not None:
        parsed = {int(i): parse(c) for i, c in predictions.items()}
        halluc = {}
        facts = {}
        for i, p in parsed.items():
            scene = scenes[i]
            halluc[i] = shapes_hallucinations(p, scene)
            refs = reference_items([parse(r) for r in references.get(i, [])], scene)
            facts[i] = (caption_facts(p, scene), refs)
            per_image[i]["hallucinated"] = halluc[i][1]
            per_image[i]["wrong_relations"] = facts[i][0].wrong_relations
        summary["chair"] = chair_scores(halluc)
        summary["facts"] = fact_scores(facts)
        if novel_pairs:
            summary["novel_pairs"] = novel_pair_scores(parsed, scenes, novel_pairs)
    elif instances is not None:
        summary["chair"], hallucinated = coco_chair(predictions, instances)
        for i, h in hallucinated.items():
            per_image[int(i)]["hallucinated"] = h
    else:
        summary["chair"] = {"unavailable": instances_reason or NO_SCENES}
        summary["facts"] = {"unavailable": "fact accuracy needs a shapes scene per image"}
    return summary, per_image
