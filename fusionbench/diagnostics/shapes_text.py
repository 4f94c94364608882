"""Reading a ``shapes`` caption back into what it claims, with the generator's own lexicon.

The caption grammar (``fusionbench.data.shapes_grammar``) writes every object as
``[number] [size] colour shape`` from a closed vocabulary (``SHAPE_WORDS``, ``SIZE_WORDS``,
``COLOURS``, ``NUMBERS``) and every relation as ``A <phrase> B`` (``RELATION_WORDS``,
``SELF_RELATION_WORDS``). Because the vocabulary is closed, a caption, generated or reference,
can be parsed back exactly, the way Rohrbach et al. (2018) map COCO words to categories through
a synonym list; here the synonym list is the generator's (``disc``/``disk`` -> circle, ``box``/
``block`` -> square, ``rhombus`` -> diamond, ``little``/``tiny`` -> small, ``big`` -> large).

``parse`` returns the noun phrases (``Phrase``: colour, shape, size, count and word span) and the
relations between them (``Relation``). A phrase without a shape word ("two red shapes", "four
objects") counts objects of a colour or in total. ``Scene`` holds the truth of one image (from a
``shapes`` split's ``box_labels`` and ``boxes``, or from an exported references file) and
answers which objects a phrase names and whether a relation holds by the generator's rule
(``shapes_grammar.pair_relations``). Imports no torch: ``fusionbench score --diagnostics`` uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fusionbench.data.shapes_grammar import (
    NUMBERS,
    RELATION_WORDS,
    SELF_RELATION_WORDS,
    SHAPE_NOUNS,
    SHAPE_WORDS,
    SIZE_WORDS,
    pair_relations,
)
from fusionbench.data.shapes_scene import COLOURS
from fusionbench.text.words import normalize_caption

#: word -> (canonical shape, plural?)
SHAPE_OF: dict[str, tuple[str, bool]] = {
    w: (shape, plural)
    for shape, forms in SHAPE_WORDS.items()
    for sing, plur in forms
    for w, plural in ((sing, False), (plur, True))
}
#: Shape nouns a caption of another system may use that ``shapes`` never draws: read as objects,
#: so that they count as hallucinated ("a blue star"), never silently skipped.
FOREIGN_SHAPES: tuple[str, ...] = (
    "star",
    "heart",
    "rectangle",
    "oval",
    "ellipse",
    "hexagon",
    "pentagon",
    "cross",
    "ring",
    "cube",
    "sphere",
    "ball",
    "dot",
    "arrow",
    "crescent",
)
for _w in FOREIGN_SHAPES:
    SHAPE_OF.setdefault(_w, (_w, False))
    SHAPE_OF.setdefault(_w + ("es" if _w.endswith("x") else "s"), (_w, True))
SIZE_OF: dict[str, str] = {w: size for size, words in SIZE_WORDS.items() for w in words}
#: Words that state how many objects a phrase names ("a"/"an" say one but state no count).
COUNT_OF: dict[str, int] = {**{w: n for n, w in NUMBERS.items()}, "single": 1}
ARTICLES = frozenset({"a", "an"})
#: Nouns that name objects without a shape ("two red shapes", "four objects").
GENERIC_NOUNS = frozenset(SHAPE_NOUNS) | {"shape", "object", "figure"}
#: Relation phrases as word tuples, longest first so "to the left of" wins over "left of".
_RELATION_PHRASES: list[tuple[tuple[str, ...], str, bool]] = sorted(
    [(tuple(p.split()), rel, False) for rel, ps in RELATION_WORDS.items() for p in ps]
    + [(tuple(p.split()), rel, True) for rel, ps in SELF_RELATION_WORDS.items() for p in ps],
    key=lambda item: -len(item[0]),
)
#: "A right of B" is "B left of A": relations are stored in these two directions only.
INVERSE = {"right of": "left of", "below": "above"}


@dataclass(frozen=True)
class Phrase:
    """A noun phrase: ``two small red circles`` is count 2, size small, colour red, shape circle.

    ``shape`` is None for a generic noun ("shapes", "objects"); ``count`` is None when the phrase
    does not say how many (a plural without a number); ``counted`` is True when a number word
    states it ("two", "single"; not "a"). ``start``/``end`` index the caption's words.
    """

    colour: str | None
    shape: str | None
    size: str | None
    count: int | None
    plural: bool
    start: int
    end: int
    counted: bool = False

    @property
    def text(self) -> str:
        words = [NUMBERS.get(self.count or 0, "")] if self.count and self.count > 1 else []
        words += [w for w in (self.size, self.colour, self.shape or "shape") if w]
        return " ".join(w for w in words if w) + ("s" if self.plural else "")


@dataclass(frozen=True)
class Relation:
    """``subject <relation> object`` (``object`` None for "two red circles side by side")."""

    subject: Phrase
    relation: str
    object: Phrase | None

    @property
    def text(self) -> str:
        if self.object is None:
            return f"{self.subject.text} {'side by side' if self.relation == 'left of' else 'one above the other'}"
        return f"{self.subject.text} {self.relation} {self.object.text}"


@dataclass
class Parsed:
    words: list[str]
    phrases: list[Phrase] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)


def parse(caption: str) -> Parsed:
    """The noun phrases and relations ``caption`` states (normalised as it is scored)."""
    words = normalize_caption(caption)
    out = Parsed(words)
    i = 0
    while i < len(words):
        w = words[i]
        if w in SHAPE_OF or w in GENERIC_NOUNS:
            out.phrases.append(_phrase(words, i))
        i += 1
    out.relations = _relations(words, out.phrases)
    return out


def _phrase(words: list[str], head: int) -> Phrase:
    """The phrase ending at ``head`` (a shape word or generic noun), read backwards."""
    shape, plural = SHAPE_OF.get(words[head], (None, words[head].endswith("s")))
    colour = size = None
    count: int | None = None
    j = head - 1
    # "[number] [size] colour shape"; accept size and colour in either order, a few words back
    while j >= 0 and head - j <= 3:
        w = words[j]
        if w in COLOURS and colour is None:
            colour = w
        elif w in SIZE_OF and size is None:
            size = SIZE_OF[w]
        elif w == "colored":
            pass
        else:
            break
        j -= 1
    counted = j >= 0 and words[j] in COUNT_OF
    if counted:
        count = COUNT_OF[words[j]]
        start = j
    else:
        start = j if j >= 0 and words[j] in ARTICLES else j + 1
    if count is None and not plural:
        count = 1
    return Phrase(colour, shape, size, count, plural, start, head + 1, counted)


def _relations(words: list[str], phrases: list[Phrase]) -> list[Relation]:
    out: list[Relation] = []
    i = 0
    while i < len(words):
        match = next(
            (
                (p, rel, self_rel)
                for p, rel, self_rel in _RELATION_PHRASES
                if tuple(words[i : i + len(p)]) == p
            ),
            None,
        )
        if match is None:
            i += 1
            continue
        p, rel, self_rel = match
        before = [ph for ph in phrases if ph.end <= i and ph.shape is not None]
        after = [ph for ph in phrases if ph.start >= i + len(p) and ph.shape is not None]
        if self_rel:
            if before and before[-1].plural:
                out.append(Relation(before[-1], rel, None))
        elif before and after:
            subject, obj = before[-1], after[0]
            canonical = INVERSE.get(rel)
            out.append(Relation(obj, canonical, subject) if canonical else Relation(subject, rel, obj))
        i += len(p)
    return out


# -- the truth of one image -----------------------------------------------------------------------
@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: str
    box: tuple[float, float, float, float]


@dataclass
class Scene:
    """The objects of one ``shapes`` image and the image size the relation rule needs."""

    objects: list[SceneObject]
    image_size: int

    @classmethod
    def from_labels(cls, labels: Sequence[str], boxes: Sequence[Sequence[float]], image_size: int) -> Scene:
        """From ``box_labels`` (``"large red circle"``) and ``boxes`` (x1, y1, x2, y2 pixels)."""
        objects = []
        for label, box in zip(labels, boxes):
            size, colour, shape = label.split()
            objects.append(SceneObject(colour, shape, size, tuple(float(v) for v in box)))
        return cls(objects, int(image_size))

    def to_json(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "objects": [
                {"label": f"{o.size} {o.colour} {o.shape}", "box": [float(v) for v in o.box]}
                for o in self.objects
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scene:
        objs = data["objects"]
        return cls.from_labels([o["label"] for o in objs], [o["box"] for o in objs], int(data["image_size"]))

    def matches(self, phrase: Phrase, *, use_size: bool = True) -> list[int]:
        """Indices of the objects ``phrase`` can name (shape, colour and, if said, size agree)."""
        return [
            k
            for k, o in enumerate(self.objects)
            if (phrase.shape is None or o.shape == phrase.shape)
            and (phrase.colour is None or o.colour == phrase.colour)
            and (not use_size or phrase.size is None or o.size == phrase.size)
        ]

    def holds(self, a: int, relation: str, b: int) -> bool:
        """Does "object a <relation> object b" clearly hold (the generator's margin rule)?"""
        return relation in pair_relations(self.objects[a].box, self.objects[b].box, self.image_size)

    def counts(self) -> dict[tuple, int]:
        """How many objects of each pair, shape and colour there are, and in all."""
        out: dict[tuple, int] = {("all",): len(self.objects)}
        for o in self.objects:
            for key in (("pair", o.colour, o.shape), ("shape", o.shape), ("colour", o.colour)):
                out[key] = out.get(key, 0) + 1
        return out


def count_key(phrase: Phrase) -> tuple:
    """Which count a phrase states: of a pair, a shape, a colour, or of all objects."""
    if phrase.shape and phrase.colour:
        return ("pair", phrase.colour, phrase.shape)
    if phrase.shape:
        return ("shape", phrase.shape)
    if phrase.colour:
        return ("colour", phrase.colour)
    return ("all",)
