"""The embedded ``shapes`` benchmark: seeded procedural scenes of coloured shapes with captions.

``shapes`` is the default dataset: it needs no download, generates 5,000 images in one to two
seconds on one core and is cached on disk. Each 64x64 (by default) RGB image shows one to four
non-overlapping objects on a dark, mildly noisy background. An object has a shape (circle,
square, triangle, diamond), a colour (red, green, blue, yellow, purple, orange), a size (small or
large, about a factor two apart) and a position. Every image comes with the tight pixel box and
the label (``"large red circle"``) of each object, and five reference captions written from
varied templates and synonyms, like COCO's five human captions.

Why it discriminates fusion strategies
    Most captions of a multi-object image state a spatial relation between two objects ("a red
    circle to the left of a blue box"), computed from the real object positions and stated only
    when it clearly holds. Which object is where is exactly what a single pooled image vector
    blurs away and what attention over region features keeps, so early/late fusion of a pooled
    vector should score lower than attention fusion on these captions, while attribute words
    (colours, shapes, counts) remain learnable by all of them. Which objects and relations each
    of the five captions mentions varies, so the references reward any correct description.

The ``test_novel`` split (compositional generalisation)
    Four (colour, shape) pairs, ``NOVEL_PAIRS``, never occur in ``train``, ``val`` or ``test``,
    although each of their colours and shapes does occur with other partners. Every
    ``test_novel`` image contains at least one of them and at least one of its captions names it.
    A model that composes attributes describes a "red triangle" it has never seen; one that
    memorised whole object labels does not.

Determinism
    Each split has its own random streams, seeded from ``(seed, split)`` through
    ``np.random.SeedSequence``: a numpy ``Generator`` draws the background pixels in bulk, and a
    ``random.Random`` seeded from the same sequence draws the scalar layout and caption choices
    (Python's generator is much faster than numpy's for single draws). The same config therefore
    gives byte-identical images and identical captions and boxes, and changing ``num_train``
    leaves the test splits unchanged. Change ``GENERATOR_VERSION`` whenever the output changes,
    so that stale caches are not reused.

Objects are named unambiguously: "[size] colour shape" for one object (the size whenever it
is needed to tell it apart), "two [size] red circles" for identical objects, and a relation
involving a group must hold for every member. Every caption's relations are recorded in
``split.meta["relations"]`` (per image a list of ``{"caption", "subject", "relation",
"object"}``, object indices into the image's boxes, a group relation expanded to its members),
and ``split.meta["mentions"]`` lists per caption the objects whose colour and shape it names,
so tests and analyses can check captions against the boxes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import zipfile
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from fusionbench.data.base import CaptionDataset, CaptionSplit
from fusionbench.errors import ConfigError, DataError
from fusionbench.io import atomic_write
from fusionbench.paths import cache_dir
from fusionbench.registry import DATASETS

log = logging.getLogger(__name__)

#: Bump whenever the generated images, captions or boxes change for a given config.
GENERATOR_VERSION = 1

#: Split names, in the order ``splits()`` returns them.
SPLITS: tuple[str, ...] = ("train", "val", "test", "test_novel")
#: image id = split offset * ID_STRIDE + index, so ids are unique across splits.
ID_STRIDE = 1_000_000
SPLIT_OFFSETS: dict[str, int] = {"train": 1, "val": 2, "test": 3, "test_novel": 4}

#: Palette, chosen to stay distinguishable under the per-object jitter (``COLOUR_JITTER``).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 45),
    "green": (55, 190, 70),
    "blue": (55, 100, 240),
    "yellow": (235, 215, 45),
    "purple": (160, 65, 210),
    "orange": (245, 145, 35),
}
#: Each object's colour is shifted by at most this much per channel (so colour is not a lookup).
COLOUR_JITTER = 12
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: tuple[str, ...] = ("small", "large")

#: Held-out (colour, shape) pairs: only in ``test_novel``. Each colour and shape is seen otherwise.
NOVEL_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "diamond"),
    ("blue", "circle"),
    ("yellow", "square"),
)
ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)
SEEN_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in ALL_PAIRS if p not in NOVEL_PAIRS)

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
_SINGULAR_VERBS = ("is", "sits", "lies", "is placed")
_PLURAL_VERBS = ("are", "sit", "lie", "are placed")
#: A relation is stated only when the box centres differ by this fraction of the image size
#: along that axis, and by at least ``_AXIS_RATIO`` of the larger of the two differences.
RELATION_MARGIN = 0.1
_AXIS_RATIO = 0.4

_NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
_BACKGROUNDS = (
    "on a dark background",
    "on a black background",
    "against a dark backdrop",
    "on a plain dark background",
)
_IMAGE_OF = ("an image of", "a picture of", "a simple drawing of", "a rendering of")
_SHAPE_NOUNS = ("shapes", "objects", "shapes", "figures")

# -- geometry -----------------------------------------------------------------------------------
# Half-extents in pixels at image_size 64 (scaled linearly): large objects are ~2x small ones.
_SMALL_R = (4, 5, 6)
_LARGE_R = (10, 11, 12, 13)
_P_LARGE = 0.5
_P_DUPLICATE = 0.25  # chance an extra object repeats an earlier (colour, shape): enables counts
_GAP = 2  # minimum pixels between object boxes
_PLACE_TRIES = 40
_LAYOUT_ATTEMPTS = 12
_BG_BASE = (6, 40)  # per-image dark tint per channel, [low, high)
_BG_NOISE = 14  # per-pixel noise per channel, [0, _BG_NOISE)

_MIN_IMAGE_SIZE = 32
_MAX_IMAGE_SIZE = 1024


@cache
def _template(shape: str, r: int) -> np.ndarray:
    """Boolean mask of ``shape`` with half-extent ``r``, cropped to its tight bounding box.

    Masks depend only on (shape, r), so they are computed once over a coordinate grid and then
    stamped into images by slicing; drawing needs no per-pixel Python work.
    """
    d = np.arange(-r, r + 1, dtype=np.float32)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    if shape == "circle":
        mask = dx * dx + dy * dy <= (r + 0.35) ** 2
    elif shape == "square":
        h = round(0.85 * r)
        mask = (np.abs(dx) <= h) & (np.abs(dy) <= h)
    elif shape == "diamond":
        mask = np.abs(dx) + np.abs(dy) <= r
    elif shape == "triangle":  # apex up, base as wide as it is tall
        mask = np.abs(dx) <= (dy + r) / 2 + 0.35
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(f"unknown shape {shape!r}")
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    out = np.ascontiguousarray(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    out.setflags(write=False)
    return out


@dataclass
class _Obj:
    """One placed object; ``box`` is tight (x1, y1, x2, y2) in pixels, exclusive ends."""

    colour: str
    shape: str
    size: str
    r: int
    box: tuple[int, int, int, int]

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def cy(self) -> float:
        return (self.box[1] + self.box[3]) / 2

    @property
    def label(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


def _separated(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[2] + _GAP <= b[0] or b[2] + _GAP <= a[0] or a[3] + _GAP <= b[1] or b[3] + _GAP <= a[1]


def _layout(rng: random.Random, pairs: list[tuple[str, str]], image_size: int) -> list[_Obj]:
    """Place the objects without overlap (rejection sampling; large ones first, shrink on failure)."""
    scale = image_size / 64
    radii = {
        "small": tuple(max(2, round(k * scale)) for k in _SMALL_R),
        "large": tuple(max(4, round(k * scale)) for k in _LARGE_R),
    }
    n = len(pairs)
    for attempt in range(_LAYOUT_ATTEMPTS):
        # After a few failures, make everything small: four small objects always fit.
        all_small = attempt >= _LAYOUT_ATTEMPTS // 2
        sizes = ["small" if all_small or rng.random() >= _P_LARGE else "large" for _ in range(n)]
        placed: list[_Obj | None] = [None] * n
        order = sorted(range(n), key=lambda i: sizes[i] != "large")
        for i in order:
            obj = None
            for size in ("large", "small") if sizes[i] == "large" else ("small",):
                obj = _place(rng, pairs[i], size, rng.choice(radii[size]), image_size, placed)
                if obj is not None:
                    break
            if obj is None:
                break
            placed[i] = obj
        else:
            return [o for o in placed if o is not None]
    raise RuntimeError(f"shapes: could not place {n} objects in a {image_size}px image")  # pragma: no cover


def _place(
    rng: random.Random,
    pair: tuple[str, str],
    size: str,
    r: int,
    image_size: int,
    placed: list[_Obj | None],
) -> _Obj | None:
    colour, shape = pair
    h, w = _template(shape, r).shape
    others = [o.box for o in placed if o is not None]
    for _ in range(_PLACE_TRIES):
        x = rng.randint(1, image_size - 1 - w)
        y = rng.randint(1, image_size - 1 - h)
        box = (x, y, x + w, y + h)
        if all(_separated(box, b) for b in others):
            return _Obj(colour, shape, size, r, box)
    return None


# -- captions -----------------------------------------------------------------------------------
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


class _Captioner:
    """Writes the five reference captions of one scene and records what each one states.

    Captions refer to *entities*: a single object ("a large red circle", the size included
    whenever it is needed to single the object out) or a group of identical objects ("two
    small red circles"). A relation between entities is stated only if it clearly holds for
    every member, so no relation is ambiguous; two identical objects can still be related to
    each other ("two red circles side by side").
    """

    def __init__(self, rng: random.Random, objs: list[_Obj], image_size: int, focus: set[int]) -> None:
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
        oa, ob = self.objs[a], self.objs[b]
        margin = RELATION_MARGIN * self.size
        dx, dy = ob.cx - oa.cx, ob.cy - oa.cy
        big = max(abs(dx), abs(dy))
        rels = []
        if abs(dx) >= margin and abs(dx) >= _AXIS_RATIO * big:
            rels.append("left of" if dx > 0 else "right of")
        if abs(dy) >= margin and abs(dy) >= _AXIS_RATIO * big:
            rels.append("above" if dy > 0 else "below")
        return rels

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
        words = [_NUMBERS[n]] if n > 1 else []
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
                phrase = f"{_NUMBERS[c]} {o.colour} {shape_plur}" if c > 1 else self.obj_noun(idx[0])
            elif key == "shape":
                phrase = f"{_NUMBERS[c]} {shape_plur}" if c > 1 else f"{_article(shape_sing)} {shape_sing}"
            else:
                phrase = (
                    f"{_NUMBERS[c]} {o.colour} shapes" if c > 1 else f"{_article(o.colour)} {o.colour} shape"
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
            verb = rng.choice(_PLURAL_VERBS) + " " if with_verb else ""
            return f"{self.noun(e1, article)} {verb}{phrase}", True, {i, j}, [triple]
        if rng.random() < 0.5:
            e1, e2 = e2, e1
        rel = rng.choice(self.rels[(e1, e2)])
        plural = len(self.entities[e1]) > 1
        verb = rng.choice(_PLURAL_VERBS if plural else _SINGULAR_VERBS) + " " if with_verb else ""
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
            text = f"{_NUMBERS[len(self.objs)]} {rng.choice(_SHAPE_NOUNS)}, with {clause}"
        elif t == 4:
            text = f"{clause} {rng.choice(_BACKGROUNDS)}"
        elif t == 5:
            text = f"{rng.choice(_IMAGE_OF)} {clause}"
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
            text = f"{body} {rng.choice(_BACKGROUNDS)}"
        elif t == 1:
            text = f"{rng.choice(_IMAGE_OF)} {body}"
        elif t == 2 and len(self.objs) > 1:
            text = f"{_NUMBERS[len(self.objs)]} {rng.choice(_SHAPE_NOUNS)}: {body}"
        else:
            text = body
        return text, set(range(len(self.objs))), []

    def count(self) -> tuple[str, set[int], list[tuple[int, str, int]]]:
        rng = self.rng
        n = _NUMBERS[len(self.objs)]
        noun = rng.choice(_SHAPE_NOUNS)
        t = rng.randrange(5)
        if t == 0:
            text = f"{n} {noun} {rng.choice(_BACKGROUNDS)}"
        elif t == 1:
            text = f"there are {n} {noun} in the image"
        elif t == 2:
            text = f"a group of {n} {noun}"
        elif t == 3:
            text = f"{n} colored {noun} {rng.choice(_BACKGROUNDS)}"
        else:
            text = f"{rng.choice(_IMAGE_OF)} {n} {noun}"
        return text, set(), []

    def shape_count(self) -> tuple[str, set[int], list[tuple[int, str, int]]]:
        key = "shape" if self.rng.random() < 0.6 else "colour"
        body = _join([p for _, p in self.groups(key)])
        if self.rng.random() < 0.5:
            body = f"{body} {self.rng.choice(_BACKGROUNDS)}"
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
                text += " " + rng.choice(_BACKGROUNDS)
        elif t == 1:
            text = f"there is {self.noun(0)} {rng.choice(_BACKGROUNDS)}"
        elif t == 2:
            text = f"{rng.choice(_IMAGE_OF)} {self.noun(0)}"
        elif t == 3:
            text = f"a single {self.noun(0, '')} {rng.choice(_BACKGROUNDS)}"
        else:
            text = f"one {self.noun(0, '')} {rng.choice(_BACKGROUNDS)}"
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


# -- the dataset --------------------------------------------------------------------------------
def _split_seed(seed: int, name: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, SPLIT_OFFSETS[name]])


def _atomic_write(path: Path, write: Any) -> None:
    """A cache file via ``fusionbench.io.atomic_write``: readers never see half a file; no fsync
    (the cache is regenerated when lost)."""
    atomic_write(path, write, fsync=False)


@DATASETS.register("shapes")
class ShapesDataset(CaptionDataset):
    """Embedded procedural benchmark: coloured shapes, spatial-relation captions, a novel-pair split."""

    @dataclass
    class Config:
        """Options of ``data`` when ``data.name: shapes``."""

        image_size: int = 64
        num_train: int = 4000
        num_val: int = 500
        num_test: int = 500
        num_test_novel: int = 500
        min_objects: int = 1
        max_objects: int = 4
        seed: int = 0
        cache: bool = True

    def __init__(self, config: ShapesDataset.Config | None = None) -> None:
        config = config if config is not None else self.Config()
        _validate(config)
        super().__init__(config)
        self._splits: dict[str, CaptionSplit] = {}

    def splits(self) -> list[str]:
        return list(SPLITS)

    def num_images(self, name: str) -> int:
        """Configured number of images of split ``name``."""
        self._check_name(name)
        return int(getattr(self.config, f"num_{name}"))

    def split(self, name: str) -> CaptionSplit:
        """The split, generated (or loaded from the cache) on first use and memoized."""
        self._check_name(name)
        if name not in self._splits:
            self._splits[name] = self._load_or_generate(name)
        return self._splits[name]

    def _check_name(self, name: str) -> None:
        if name not in SPLITS:
            raise DataError(f"Unknown split {name!r} of dataset 'shapes'. Valid splits: {', '.join(SPLITS)}.")

    # -- generation -----------------------------------------------------------------------------
    def generate(self, name: str) -> CaptionSplit:
        """Generate split ``name`` from scratch (no cache); deterministic in (config, name)."""
        self._check_name(name)
        cfg = self.config
        n, size = self.num_images(name), cfg.image_size
        seq = _split_seed(cfg.seed, name)
        np_rng = np.random.default_rng(seq)
        py_rng = random.Random(int.from_bytes(seq.generate_state(4, dtype=np.uint32).tobytes(), "little"))

        # Dark background with a per-image tint and mild per-pixel noise, drawn in bulk.
        images = np_rng.integers(0, _BG_NOISE, size=(n, size, size, 3), dtype=np.uint8)
        images += np_rng.integers(*_BG_BASE, size=(n, 1, 1, 3), dtype=np.uint8)

        novel = name == "test_novel"
        novel_set = set(NOVEL_PAIRS)
        pool = ALL_PAIRS if novel else SEEN_PAIRS
        captions: list[list[str]] = []
        boxes: list[list[list[int]]] = []
        labels: list[list[str]] = []
        mentions: list[list[list[int]]] = []
        relations: list[list[dict[str, Any]]] = []
        for i in range(n):
            k = py_rng.randint(cfg.min_objects, cfg.max_objects)
            pairs: list[tuple[str, str]] = []
            for j in range(k):
                if j and py_rng.random() < _P_DUPLICATE:
                    pairs.append(py_rng.choice(pairs))
                else:
                    pairs.append(py_rng.choice(pool))
            if novel:
                pairs[0] = py_rng.choice(NOVEL_PAIRS)
                py_rng.shuffle(pairs)
            objs = _layout(py_rng, pairs, size)
            img = images[i]
            for o in objs:
                mask = _template(o.shape, o.r)
                x1, y1, x2, y2 = o.box
                colour = tuple(
                    min(255, max(0, c + py_rng.randint(-COLOUR_JITTER, COLOUR_JITTER)))
                    for c in COLOURS[o.colour]
                )
                img[y1:y2, x1:x2][mask] = colour
            focus = {j for j, o in enumerate(objs) if (o.colour, o.shape) in novel_set} if novel else set()
            texts, ment, rels = _Captioner(py_rng, objs, size, focus).captions()
            captions.append(texts)
            boxes.append([list(o.box) for o in objs])
            labels.append([o.label for o in objs])
            mentions.append(ment)
            relations.append(
                [{"caption": c, "subject": a, "relation": r, "object": b} for c, a, r, b in rels]
            )

        offset = SPLIT_OFFSETS[name] * ID_STRIDE
        record = {
            "generator_version": GENERATOR_VERSION,
            "image_ids": [offset + i for i in range(n)],
            "captions": captions,
            "boxes": boxes,
            "box_labels": labels,
            "mentions": mentions,
            "relations": relations,
        }
        return self._assemble(name, images, record, cache_hit=False)

    def _assemble(
        self, name: str, images: np.ndarray, record: dict[str, Any], cache_hit: bool
    ) -> CaptionSplit:
        return CaptionSplit(
            name=name,
            image_ids=[int(i) for i in record["image_ids"]],
            captions=[list(c) for c in record["captions"]],
            images=images,
            boxes=[np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in record["boxes"]],
            box_labels=[list(lab) for lab in record["box_labels"]],
            meta={
                "relations": record["relations"],
                "mentions": record["mentions"],
                "novel_pairs": [list(p) for p in NOVEL_PAIRS],
                "generator_version": GENERATOR_VERSION,
                "cache_hit": cache_hit,
            },
        )

    # -- cache ----------------------------------------------------------------------------------
    def cache_paths(self, name: str) -> tuple[Path, Path]:
        """(images ``.npz``, annotations ``.json``) of split ``name`` in the cache.

        The folder is named by a hash of everything that shapes the output (generator version,
        image size, object counts, seed); the file by split and size, so each split is reused
        independently of the others' sizes.
        """
        cfg = self.config
        params = {
            "generator_version": GENERATOR_VERSION,
            "image_size": int(cfg.image_size),
            "min_objects": int(cfg.min_objects),
            "max_objects": int(cfg.max_objects),
            "seed": int(cfg.seed),
        }
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
        folder = cache_dir() / "shapes" / f"v{GENERATOR_VERSION}-{digest}"
        stem = f"{name}-{self.num_images(name)}"
        return folder / f"{stem}.npz", folder / f"{stem}.json"

    def _load_or_generate(self, name: str) -> CaptionSplit:
        if not self.config.cache:
            return self.generate(name)
        npz_path, json_path = self.cache_paths(name)
        cached = self._load_cached(name, npz_path, json_path)
        if cached is not None:
            return cached
        split = self.generate(name)
        try:
            npz_path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(
                npz_path,
                lambda f: np.savez(
                    f, images=split.images, image_ids=np.asarray(split.image_ids, dtype=np.int64)
                ),
            )
            record = {
                "generator_version": GENERATOR_VERSION,
                "image_ids": split.image_ids,
                "captions": split.captions,
                "boxes": [b.astype(int).tolist() for b in split.boxes or []],
                "box_labels": split.box_labels,
                "mentions": split.meta["mentions"],
                "relations": split.meta["relations"],
            }
            _atomic_write(json_path, lambda f: f.write(json.dumps(record).encode()))
        except OSError as err:  # a read-only or full cache must not stop a run
            log.warning(
                "Could not cache shapes split %r at %s (%s); continuing without.", name, npz_path, err
            )
        return split

    def _load_cached(self, name: str, npz_path: Path, json_path: Path) -> CaptionSplit | None:
        """The cached split, or None when missing or unusable (then it is regenerated)."""
        if not (npz_path.is_file() and json_path.is_file()):
            return None
        n, size = self.num_images(name), self.config.image_size
        try:
            with np.load(npz_path, allow_pickle=False) as z:
                images = z["images"]
                ids = z["image_ids"]
            record = json.loads(json_path.read_text())
            if record.get("generator_version") != GENERATOR_VERSION:
                raise ValueError("generator version differs")
            if images.dtype != np.uint8 or images.shape != (n, size, size, 3):
                raise ValueError(f"images have shape {images.shape}, expected {(n, size, size, 3)}")
            if ids.tolist() != record["image_ids"]:
                raise ValueError("image ids of the .npz and the .json differ")
            for key in ("image_ids", "captions", "boxes", "box_labels", "mentions", "relations"):
                if len(record[key]) != n:
                    raise ValueError(f"{key} has {len(record[key])} entries, expected {n}")
            return self._assemble(name, images, record, cache_hit=True)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
            log.warning("Ignoring corrupt shapes cache %s (%s); regenerating it.", npz_path, err)
            return None


def _validate(cfg: ShapesDataset.Config) -> None:
    """Reject configs that cannot generate a sensible benchmark, naming the key and the fix."""

    def bad(key: str, why: str, fix: str) -> ConfigError:
        return ConfigError(f"data.{key} {why}, got {getattr(cfg, key)!r}. {fix}")

    for key in (
        "image_size",
        "num_train",
        "num_val",
        "num_test",
        "num_test_novel",
        "min_objects",
        "max_objects",
        "seed",
    ):
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise bad(key, "must be an integer", f"Set data.{key} to a whole number.")
    if not isinstance(cfg.cache, bool):
        raise bad("cache", "must be true or false", "Set data.cache to true or false.")
    if cfg.image_size < _MIN_IMAGE_SIZE:
        raise bad(
            "image_size",
            f"must be at least {_MIN_IMAGE_SIZE}",
            f"Set data.image_size to {_MIN_IMAGE_SIZE} or more (default 64).",
        )
    if cfg.image_size > _MAX_IMAGE_SIZE:
        raise bad(
            "image_size", f"must be at most {_MAX_IMAGE_SIZE}", "Use a smaller data.image_size (default 64)."
        )
    for key in ("num_train", "num_val", "num_test", "num_test_novel"):
        value = getattr(cfg, key)
        if value < 0:
            raise bad(key, "must not be negative", f"Set data.{key} to 0 or more.")
        if value >= ID_STRIDE:
            raise bad(
                key,
                f"must be below {ID_STRIDE:,}",
                f"Set data.{key} below {ID_STRIDE:,} (image ids are per-split).",
            )
    for key in ("min_objects", "max_objects"):
        if not 1 <= getattr(cfg, key) <= 4:
            raise bad(key, "must be between 1 and 4", f"Set data.{key} to 1, 2, 3 or 4.")
    if cfg.min_objects > cfg.max_objects:
        raise ConfigError(
            f"data.min_objects ({cfg.min_objects}) is larger than data.max_objects ({cfg.max_objects}). "
            "Lower data.min_objects or raise data.max_objects."
        )
    if cfg.seed < 0:
        raise bad("seed", "must not be negative", "Set data.seed to 0 or a positive integer.")
