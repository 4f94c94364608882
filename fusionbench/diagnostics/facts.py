"""Fact accuracy on ``shapes``: precision and recall of what a caption states, per fact type.

A ``shapes`` image is fully known, so every claim of a caption can be checked exactly. Four fact
types, parsed with the generator's lexicon (``fusionbench.diagnostics.shapes_text``):

``pairs``
    (colour, shape) of every phrase that names both: true when such an object is in the scene.
``sizes``
    a phrase with a size word: true when an object of that shape (and colour) has that size.
``counts``
    a phrase with a number word ("three circles", "two red shapes", "four objects"): true when the
    scene has exactly that many objects of the pair, shape, colour (and size, if said), or in all.
``relations``
    "A left of B" (and right of, above, below, "side by side", "one above the other"): true when
    some object A names and some object B names stand in that relation by the generator's margin
    rule (``shapes_grammar.pair_relations``: box centres apart by ``RELATION_MARGIN`` of the image
    along the axis and by ``AXIS_RATIO`` of the larger offset); an unnamed A or B makes it false.

Precision is true stated facts / stated facts, micro-averaged over the split. Recall compares
with what the image's five references state (parsed the same way): each true fact covers
concrete items (a pair, an (object, size), a (group, number), an (object, relation, object)
triple), and recall is the share of the references' items that the caption also covers. F1 is
their harmonic mean.

``test_novel`` (compositional generalisation): ``novel_pairs`` reports, for the held-out
(colour, shape) pairs, how often the caption names one (``mentions``), how many of those are in
the image (``precision``) and the share of the images' held-out objects it names
(``accuracy``: does the model describe a "red triangle" it never saw, and correctly?).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fusionbench.diagnostics.shapes_text import Parsed, Scene, count_key

FACT_TYPES = ("pairs", "sizes", "counts", "relations")


@dataclass
class CaptionFacts:
    """What one caption states about one scene: per type the true/false claims and covered items."""

    stated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FACT_TYPES, 0))
    true: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FACT_TYPES, 0))
    items: dict[str, set] = field(default_factory=lambda: {t: set() for t in FACT_TYPES})
    wrong_relations: list[str] = field(default_factory=list)


def caption_facts(parsed: Parsed, scene: Scene) -> CaptionFacts:
    """Check every fact ``parsed`` states against ``scene``."""
    out = CaptionFacts()

    def claim(kind: str, ok: bool, items: Iterable = ()) -> None:
        out.stated[kind] += 1
        if ok:
            out.true[kind] += 1
            out.items[kind].update(items)

    for p in parsed.phrases:
        if p.shape is not None and p.colour is not None:
            claim("pairs", bool(scene.matches(p, use_size=False)), [(p.colour, p.shape)])
        if p.size is not None and p.shape is not None:
            hits = scene.matches(p)
            claim("sizes", bool(hits), [(k, p.size) for k in hits])
        if p.counted and p.count is not None:
            claim("counts", len(scene.matches(p)) == p.count, [(count_key(p), p.size, p.count)])
    for r in parsed.relations:
        subjects = scene.matches(r.subject)
        if r.object is None:  # two identical objects related to each other
            triples = [
                (a, r.relation, b)
                for a in subjects
                for b in subjects
                if a != b and scene.holds(a, r.relation, b)
            ]
        else:
            objects = scene.matches(r.object)
            triples = [
                (a, r.relation, b)
                for a in subjects
                for b in objects
                if a != b and scene.holds(a, r.relation, b)
            ]
        claim("relations", bool(triples), triples)
        if not triples:
            out.wrong_relations.append(r.text)
    return out


def reference_items(references: Iterable[Parsed], scene: Scene) -> dict[str, set]:
    """The items the references state truly, per fact type (the recall denominator)."""
    items: dict[str, set] = {t: set() for t in FACT_TYPES}
    for parsed in references:
        for kind, found in caption_facts(parsed, scene).items.items():
            items[kind] |= found
    return items


def fact_scores(per_image: Mapping[Any, tuple[CaptionFacts, dict[str, set]]]) -> dict[str, Any]:
    """Per fact type: precision, recall, F1 and the counts they come from."""
    out: dict[str, Any] = {}
    for kind in FACT_TYPES:
        stated = sum(f.stated[kind] for f, _ in per_image.values())
        true = sum(f.true[kind] for f, _ in per_image.values())
        ref = sum(len(r[kind]) for _, r in per_image.values())
        covered = sum(len(f.items[kind] & r[kind]) for f, r in per_image.values())
        precision = true / stated if stated else None
        recall = covered / ref if ref else None
        if recall == 0.0:  # states none of the references' facts (or nothing at all): F1 0
            f1: float | None = 0.0
        elif precision is None or recall is None:
            f1 = None
        else:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        out[kind] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "stated": stated,
            "reference_items": ref,
        }
    return out


def novel_pair_scores(
    parsed: Mapping[Any, Parsed], scenes: Mapping[Any, Scene], novel_pairs: Iterable[Iterable[str]]
) -> dict[str, Any]:
    """How the captions of ``test_novel`` name the held-out (colour, shape) pairs."""
    novel = {tuple(p) for p in novel_pairs}
    mentions = right = present = named = 0
    for image, p in parsed.items():
        scene = scenes[image]
        said = {(ph.colour, ph.shape) for ph in p.phrases if (ph.colour, ph.shape) in novel}
        there = {(o.colour, o.shape) for o in scene.objects if (o.colour, o.shape) in novel}
        mentions += sum(1 for ph in p.phrases if (ph.colour, ph.shape) in novel)
        right += sum(
            1 for ph in p.phrases if (ph.colour, ph.shape) in novel and (ph.colour, ph.shape) in there
        )
        present += len(there)
        named += len(there & said)
    return {
        "pairs": sorted(" ".join(p) for p in novel),
        "mentions": mentions,
        "precision": right / mentions if mentions else None,
        "accuracy": named / present if present else None,
        "present": present,
    }
