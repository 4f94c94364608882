"""The caption grammar of the ``shapes`` benchmark: five truthful reference captions per scene.

Captions are written from varied templates and synonyms, like COCO's five human captions, and
name only what holds in the scene (``fusionbench.data.shapes_scene``). The lexicon below
(``SHAPE_WORDS``, ``SIZE_WORDS``, ``RELATION_WORDS``, ...) is public so that captions, reference
or generated, can be parsed back into objects and relations.

Objects are named unambiguously: "[size] colour shape" for one object (the size whenever it
is needed to tell it apart), "two [size] red circles" for identical objects, and a relation
involving a group must hold for every member. Most captions of a multi-object image state a
spatial relation between two objects ("a red circle to the left of a blue box"), computed from
the object positions and stated only when it clearly holds (``RELATION_MARGIN``, ``AXIS_RATIO``).
``Captioner.captions`` returns, beside the texts, the objects whose colour and shape each caption
names and the relations it states, so tests and analyses can check captions against the boxes.

Every choice is drawn from the ``random.Random`` passed in, in a fixed order: changing a template,
a synonym or the order of draws changes the generated data (bump
``fusionbench.data.shapes.GENERATOR_VERSION``).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from fusionbench.data.shapes_scene import Obj

# -- caption vocabulary (truthful synonyms only) ------------------------------------------------
#: (singular, plural) words per shape.
SHAPE_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "circle": (("circle", "circles"), ("disc", "discs"), ("disk", "disks")),
    "square": (("square", "squares"), ("box", "boxes"), ("block", "blocks")),
    "triangle": (("triangle", "triangles"),),
    "diamond": (("diamond", "diamonds"), ("rhombus", "rhombuses")),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
#: Phrases per canonical relation; "A <phrase> B" means A's centre is left of / above ... B's.
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above",),
    "below": ("below", "beneath", "under"),
}
#: Phrases relating two identical objects to each other ("two red circles side by side").
SELF_RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "above": ("one above the other", "stacked one above the other"),
    "left of": ("side by side", "next to each other"),
}
SINGULAR_VERBS = ("is", "sits", "lies", "is placed")
PLURAL_VERBS = ("are", "sit", "lie", "are placed")
#: A relation is stated only when the box centres differ by this fraction of the image size
#: along that axis, and by at least ``AXIS_RATIO`` of the larger of the two differences.
RELATION_MARGIN = 0.1
AXIS_RATIO = 0.4

NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
BACKGROUNDS = (
    "on a dark background",
    "on a black background",
    "against a dark backdrop",
    "on a plain dark background",
)
IMAGE_OF = ("an image of", "a picture of", "a simple drawing of", "a rendering of")
SHAPE_NOUNS = ("shapes", "objects", "shapes", "figures")


def pair_relations(box_a, box_b, image_size: int) -> list[str]:
    """Relations that clearly hold for "the object in box_a <relation> the object in box_b".

    The rule every caption's relations follow (``RELATION_MARGIN``, ``AXIS_RATIO`` on the box
    centres); public so that stated relations, reference or generated, are checked by the same rule.
    """
    margin = RELATION_MARGIN * image_size
    dx = (box_b[0] + box_b[2]) / 2 - (box_a[0] + box_a[2]) / 2
    dy = (box_b[1] + box_b[3]) / 2 - (box_a[1] + box_a[3]) / 2
    big = max(abs(dx), abs(dy))
    rels = []
    if abs(dx) >= margin and abs(dx) >= AXIS_RATIO * big:
        rels.append("left of" if dx > 0 else "right of")
    if abs(dy) >= margin and abs(dy) >= AXIS_RATIO * big:
        rels.append("above" if dy > 0 else "below")
    return rels


# -- phrases ------------------------------------------------------------------------------------
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _finish(rng: random.Random, text: str) -> str:
    """COCO-like raw text: usually capitalised, often (not always) with a final period."""
    text = " ".join(text.split())
    if rng.random() < 0.8:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.65:
        text += "."
    return text


class Captioner:
    """Writes the five reference captions of one scene and records what each one states.

    Captions refer to *entities*: a single object ("a large red circle", the size included
    whenever it is needed to single the object out) or a group of identical objects ("two
    small red circles"). A relation between entities is stated only if it clearly holds for
    every member, so no relation is ambiguous; two identical objects can still be related to
    each other ("two red circles side by side").
    """

    def __init__(self, rng: random.Random, objs: list[Obj], image_size: int, focus: set[int]) -> None:
        self.rng = rng
        self.objs = objs
        self.size = image_size
        self.focus = focus
        by_label: dict[str, list[int]] = {}
        for i, o in enumerate(objs):
            by_label.setdefault(o.label, []).append(i)
        self.entities: list[list[int]] = list(by_label.values())
        self.entity_of = {i: e for e, members in enumerate(self.entities) for i in members}
        cs = Counter((o.colour, o.shape) for o in objs)
        self.need_size = [cs[(objs[m[0]].colour, objs[m[0]].shape)] > len(m) for m in self.entities]
        self.referable = [len(self.entities[self.entity_of[i]]) == 1 for i in range(len(objs))]
        self.rels = self._relations()
        items: list[tuple[int, int]] = sorted({(min(p), max(p)) for p in self.rels})
        # (e, e): two identical objects related to each other ("one above the other").
        items += [(e, e) for e, m in enumerate(self.entities) if len(m) == 2 and self._pair_rels(*m)]
        rng.shuffle(items)
        focus_entities = {self.entity_of[i] for i in focus}
        items.sort(key=lambda p: not (p[0] in focus_entities or p[1] in focus_entities))  # stable
        self.items = items
        self.next_item = 0

    def _pair_rels(self, a: int, b: int) -> list[str]:
        """Relations that clearly hold for "object a <relation> object b"."""
        return pair_relations(self.objs[a].box, self.objs[b].box, self.size)

    def _relations(self) -> dict[tuple[int, int], list[str]]:
        """Relations holding for every member pair, per ordered pair of distinct entities."""
        out: dict[tuple[int, int], list[str]] = {}
        for e1, m1 in enumerate(self.entities):
            for e2, m2 in enumerate(self.entities):
                if e1 == e2:
                    continue
                common: list[str] | None = None
                for a in m1:
                    for b in m2:
                        here = self._pair_rels(a, b)
                        common = here if common is None else [r for r in common if r in here]
                if common:
                    out[(e1, e2)] = common
        return out

    # -- noun phrases ---------------------------------------------------------------------------
    def noun(self, e: int, article: str = "a") -> str:
        """ "a large red circle", "the red disc", "two small red boxes": entity ``e``."""
        members = self.entities[e]
        o, n = self.objs[members[0]], len(members)
        words = [NUMBERS[n]] if n > 1 else []
        if self.need_size[e] or self.rng.random() < 0.4:
            words.append(self.rng.choice(SIZE_WORDS[o.size]))
        sing, plur = self.rng.choice(SHAPE_WORDS[o.shape])
        words += [o.colour, plur if n > 1 else sing]
        phrase = " ".join(words)
        if n > 1:
            return f"the {phrase}" if article == "the" else phrase
        if article == "a":
            return f"{_article(phrase)} {phrase}"
        return f"{article} {phrase}" if article else phrase

    def obj_noun(self, i: int, article: str = "a") -> str:
        return self.noun(self.entity_of[i], article)

    def position(self, i: int) -> str | None:
        """Absolute position phrase, only where the object is clearly in that part of the image."""
        o = self.objs[i]
        fx, fy = o.cx / self.size, o.cy / self.size

        def bucket(f: float, lo: str, hi: str, mid: str) -> str | None:
            if f < 0.35:
                return lo
            if f > 0.65:
                return hi
            return mid if 0.42 <= f <= 0.58 else None

        h = bucket(fx, "left", "right", "center")
        v = bucket(fy, "top", "bottom", "middle")
        rng = self.rng
        if v in ("top", "bottom") and h in ("left", "right"):
            vw = rng.choice(("top", "upper")) if v == "top" else rng.choice(("bottom", "lower"))
            return rng.choice((f"in the {vw} {h} corner", f"in the {vw} {h}", f"at the {v} {h}"))
        if v in ("top", "bottom"):
            return rng.choice((f"at the {v}", f"near the {v}", f"at the {v} of the image"))
        if h in ("left", "right"):
            return rng.choice((f"on the {h}", f"on the {h} side", f"on the {h} side of the image"))
        if v == "middle" and h == "center":
            return rng.choice(("in the center", "in the middle", "in the middle of the image"))
        return None

    def groups(self, key: str) -> list[tuple[list[int], str]]:
        """Objects grouped by ``"pair"``, ``"shape"`` or ``"colour"`` with a counted phrase each."""
        order: dict[Any, list[int]] = {}
        for i, o in enumerate(self.objs):
            k = {"pair": (o.colour, o.shape), "shape": o.shape, "colour": o.colour}[key]
            order.setdefault(k, []).append(i)
        out = []
        for idx in order.values():
            o, c = self.objs[idx[0]], len(idx)
            shape_sing, shape_plur = self.rng.choice(SHAPE_WORDS[o.shape])
            if key == "pair":
                phrase = f"{NUMBERS[c]} {o.colour} {shape_plur}" if c > 1 else self.obj_noun(idx[0])
            elif key == "shape":
                phrase = f"{NUMBERS[c]} {shape_plur}" if c > 1 else f"{_article(shape_sing)} {shape_sing}"
            else:
                phrase = (
                    f"{NUMBERS[c]} {o.colour} shapes" if c > 1 else f"{_article(o.colour)} {o.colour} shape"
                )
            out.append((idx, phrase))
        return out

    # -- caption kinds: each returns (text, mentioned object indices, relations) ----------------
    def _pick_relation(
        self, article: str, with_verb: bool
    ) -> tuple[str, bool, set[int], list[tuple[int, str, int]]]:
        """ "a red circle [is] to the left of two blue boxes", from the next unused entity pair.

        Returns the clause, whether its subject is plural, the mentioned objects and the
        relations stated, expanded to object pairs.
        """
        rng = self.rng
        e1, e2 = self.items[self.next_item % len(self.items)]
        self.next_item += 1
        if e1 == e2:  # two identical objects: "two red circles side by side"
            i, j = self.entities[e1]
            here = self._pair_rels(i, j)
            options = []
            for rel, other in (("above", "below"), ("left of", "right of")):
                if rel in here or other in here:
                    first, second = (i, j) if rel in here else (j, i)
                    options += [(p, (first, rel, second)) for p in SELF_RELATION_WORDS[rel]]
            phrase, triple = rng.choice(options)
            verb = rng.choice(PLURAL_VERBS) + " " if with_verb else ""
            return f"{self.noun(e1, article)} {verb}{phrase}", True, {i, j}, [triple]
        if rng.random() < 0.5:
            e1, e2 = e2, e1
        rel = rng.choice(self.rels[(e1, e2)])
        plural = len(self.entities[e1]) > 1
        verb = rng.choice(PLURAL_VERBS if plural else SINGULAR_VERBS) + " " if with_verb else ""
        text = f"{self.noun(e1, article)} {verb}{rng.choice(RELATION_WORDS[rel])} {self.noun(e2, article)}"
        m1, m2 = self.entities[e1], self.entities[e2]
        return text, plural, set(m1) | set(m2), [(a, rel, b) for a in m1 for b in m2]

    def rel(self) -> tuple[str, set[int], list[tuple[int, str, int]]]:
        rng = self.rng
        t = rng.randrange(6)
        if t == 1:  # "The red circle is to the left of the blue box."
            clause, _, mentioned, rels = self._pick_relation("the" if rng.random() < 0.7 else "a", True)
            return clause, mentioned, rels
        clause, plural, mentioned, rels = self._pick_relation("a", False)
        if t == 2:
            text = f"there {'are' if plural else 'is'} {clause}"
        elif t == 3:
            text = f"{NUMBERS[len(self.objs)]} {rng.choice(SHAPE_NOUNS)}, with {clause}"
        elif t == 4:
            text = f"{clause} {rng.choice(BACKGROUNDS)}"
        elif t == 5:
            text = f"{rng.choice(IMAGE_OF)} {clause}"
        else:
            text = clause
        return text, mentioned, rels

    def rel2(self) -> tuple[str, set[int], list[tuple[int, str, int]]]:
        c1, _, m1, r1 = self._pick_relation("a", False)
        c2, _, m2, r2 = self._pick_relation("a", False)
        sep = self.rng.choice((", and ", " and "))
        return c1 + sep + c2, m1 | m2, r1 + r2

    def listing(self) -> tuple[str, set[int], list[tuple[int, str, int]]]:
        rng = self.rng
        groups = self.groups("pair")
        body = _join([p for _, p in groups])
        t = rng.randrange(4)
        if t == 0:
            text = f"{body} {rng.choice(BACKGROUNDS)}"
        elif t == 1:
            text = f"{rng.choice(IMAGE_OF)} {body}"
        elif t == 2 and len(self.objs) > 1:
            text = f"{NUMBERS[len(self.objs)]} {rng.choice(SHAPE_NOUNS)}: {body}"
        else:
            text = body
        return text, set(range(len(self.objs))), []

    def count(self) -> tuple[str, set[int], list[tuple[int, str, int]]]:
        rng = self.rng
        n = NUMBERS[len(self.objs)]
        noun = rng.choice(SHAPE_NOUNS)
        t = rng.randrange(5)
        if t == 0:
            text = f"{n} {noun} {rng.choice(BACKGROUNDS)}"
        elif t == 1:
            text = f"there are {n} {noun} in the image"
        elif t == 2:
            text = f"a group of {n} {noun}"
        elif t == 3:
            text = f"{n} colored {noun} {rng.choice(BACKGROUNDS)}"
        else:
            text = f"{rng.choice(IMAGE_OF)} {n} {noun}"
        return text, set(), []

    def shape_count(self) -> tuple[str, set[int], list[tuple[int, str, int]]]:
        key = "shape" if self.rng.random() < 0.6 else "colour"
        body = _join([p for _, p in self.groups(key)])
        if self.rng.random() < 0.5:
            body = f"{body} {self.rng.choice(BACKGROUNDS)}"
        return body, set(), []

    def pos(
        self, candidates: list[int] | None = None
    ) -> tuple[str, set[int], list[tuple[int, str, int]]] | None:
        """ "A red circle in the top left corner." for one identifiable, clearly placed object."""
        rng = self.rng
        idx = [i for i in (candidates or range(len(self.objs))) if self.referable[i]]
        rng.shuffle(idx)
        idx.sort(key=lambda i: i not in self.focus)
        for i in idx:
            where = self.position(i)
            if where is None:
                continue
            t = rng.randrange(3)
            if t == 0:
                text = f"{self.obj_noun(i)} {where}"
            elif t == 1:
                text = f"there is {self.obj_noun(i)} {where}"
            else:
                text = f"{where} there is {self.obj_noun(i)}"
            return text, {i}, []
        return None

    def single(self) -> tuple[str, set[int], list[tuple[int, str, int]]]:
        """Attribute caption of a one-object image."""
        rng = self.rng
        t = rng.randrange(5)
        if t == 0:
            text = self.noun(0)
            if rng.random() < 0.5:
                text += " " + rng.choice(BACKGROUNDS)
        elif t == 1:
            text = f"there is {self.noun(0)} {rng.choice(BACKGROUNDS)}"
        elif t == 2:
            text = f"{rng.choice(IMAGE_OF)} {self.noun(0)}"
        elif t == 3:
            text = f"a single {self.noun(0, '')} {rng.choice(BACKGROUNDS)}"
        else:
            text = f"one {self.noun(0, '')} {rng.choice(BACKGROUNDS)}"
        return text, {0}, []

    # -- the five captions ----------------------------------------------------------------------
    def captions(self) -> tuple[list[str], list[list[int]], list[tuple[int, int, str, int]]]:
        """Five captions, the objects whose colour and shape each names, and the relations stated."""
        rng = self.rng
        n = len(self.objs)
        if n == 1:
            kinds = ["pos" if rng.random() < 0.5 else "single" for _ in range(5)]
        elif self.items:
            # At least three of five captions state a relation; the rest vary.
            extra = [
                "rel",
                "rel2" if n >= 3 and len(self.items) >= 2 else "rel",
                "list",
                "count",
                "shapes",
                "pos",
            ]
            kinds = ["rel"] * 3 + rng.choices(extra, weights=(3, 2, 3, 1, 1, 1), k=2)
            rng.shuffle(kinds)
        else:
            kinds = rng.choices(["list", "count", "shapes", "pos"], weights=(4, 1, 1, 2), k=5)
        made = [self._make(k) for k in kinds]
        if self.focus and not any(m & self.focus for _, m, _ in made):
            # test_novel: make sure at least one caption names the held-out object.
            j = max((k for k, kind in enumerate(kinds) if kind not in ("rel", "rel2")), default=4)
            made[j] = self.listing() if n > 1 else self.single()
        texts = [_finish(rng, t) for t, _, _ in made]
        mentions = [sorted(m) for _, m, _ in made]
        rels = [(k, a, rel, b) for k, (_, _, rs) in enumerate(made) for a, rel, b in rs]
        return texts, mentions, rels

    def _make(self, kind: str) -> tuple[str, set[int], list[tuple[int, str, int]]]:
        if kind == "rel":
            return self.rel()
        if kind == "rel2":
            return self.rel2()
        if kind == "count":
            return self.count()
        if kind == "shapes":
            return self.shape_count()
        if kind == "pos":
            made = self.pos()
            if made is not None:
                return made
        return self.single() if len(self.objs) == 1 else self.listing()
