"""Scenes of the ``shapes`` benchmark: the objects, where they go and how they are drawn.

An object has a shape (``SHAPES``), a colour (``COLOURS``, jittered per object), a size
(``SIZES``: small or large, about a factor two apart) and a position. ``layout`` places one to
four objects without overlap by rejection sampling, ``backgrounds`` draws the dark, mildly noisy
backgrounds of a whole split in bulk and ``draw`` stamps each object's precomputed mask into its
image, so drawing needs no per-pixel Python work. The caption grammar
(``fusionbench.data.shapes_grammar``) describes the objects placed here; the dataset
(``fusionbench.data.shapes``) owns the random streams, the splits and the cache.

Every draw comes from the generators passed in, in a fixed order: changing what is drawn or the
order changes the generated data (bump ``fusionbench.data.shapes.GENERATOR_VERSION``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

import numpy as np

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

# -- geometry -----------------------------------------------------------------------------------
# Half-extents in pixels at image_size 64 (scaled linearly): large objects are ~2x small ones.
_SMALL_R = (4, 5, 6)
_LARGE_R = (10, 11, 12, 13)
_P_LARGE = 0.5
_GAP = 2  # minimum pixels between object boxes
_PLACE_TRIES = 40
_LAYOUT_ATTEMPTS = 12
_BG_BASE = (6, 40)  # per-image dark tint per channel, [low, high)
_BG_NOISE = 14  # per-pixel noise per channel, [0, _BG_NOISE)

#: Image sizes the layout supports: four large objects need room, and masks stay small.
MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 1024
#: Chance that an extra object repeats an earlier (colour, shape): enables counts ("two red circles").
P_DUPLICATE = 0.25


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
class Obj:
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


def layout(rng: random.Random, pairs: list[tuple[str, str]], image_size: int) -> list[Obj]:
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
        placed: list[Obj | None] = [None] * n
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
    placed: list[Obj | None],
) -> Obj | None:
    colour, shape = pair
    h, w = _template(shape, r).shape
    others = [o.box for o in placed if o is not None]
    for _ in range(_PLACE_TRIES):
        x = rng.randint(1, image_size - 1 - w)
        y = rng.randint(1, image_size - 1 - h)
        box = (x, y, x + w, y + h)
        if all(_separated(box, b) for b in others):
            return Obj(colour, shape, size, r, box)
    return None


def sample_pairs(
    rng: random.Random,
    min_objects: int,
    max_objects: int,
    pool: tuple[tuple[str, str], ...],
    must_include: tuple[tuple[str, str], ...] | None = None,
) -> list[tuple[str, str]]:
    """The (colour, shape) of each object of one scene, drawn from ``pool``.

    An extra object repeats an earlier pair with probability ``P_DUPLICATE``. With
    ``must_include`` one object is one of those pairs (at a random position among the objects).
    """
    k = rng.randint(min_objects, max_objects)
    pairs: list[tuple[str, str]] = []
    for j in range(k):
        if j and rng.random() < P_DUPLICATE:
            pairs.append(rng.choice(pairs))
        else:
            pairs.append(rng.choice(pool))
    if must_include:
        pairs[0] = rng.choice(must_include)
        rng.shuffle(pairs)
    return pairs


def backgrounds(rng: np.random.Generator, n: int, image_size: int) -> np.ndarray:
    """``[n, size, size, 3]`` uint8: a dark per-image tint plus mild per-pixel noise, drawn in bulk."""
    images = rng.integers(0, _BG_NOISE, size=(n, image_size, image_size, 3), dtype=np.uint8)
    images += rng.integers(*_BG_BASE, size=(n, 1, 1, 3), dtype=np.uint8)
    return images


def draw(image: np.ndarray, objs: list[Obj], rng: random.Random) -> None:
    """Stamp each object, its colour jittered by up to ``COLOUR_JITTER`` per channel, into ``image``."""
    for o in objs:
        mask = _template(o.shape, o.r)
        x1, y1, x2, y2 = o.box
        colour = tuple(
            min(255, max(0, c + rng.randint(-COLOUR_JITTER, COLOUR_JITTER))) for c in COLOURS[o.colour]
        )
        image[y1:y2, x1:x2][mask] = colour
