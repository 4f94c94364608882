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

Where the parts live
    ``fusionbench.data.shapes_scene``: objects, layout and drawing; ``fusionbench.data.shapes_grammar``:
    the caption grammar and its lexicon; this module: the dataset, its splits, random streams and
    cache. Every caption's relations are recorded in ``split.meta["relations"]`` (per image a list of
    ``{"caption", "subject", "relation", "object"}``, object indices into the image's boxes, a group
    relation expanded to its members), and ``split.meta["mentions"]`` lists per caption the objects
    whose colour and shape it names, so tests and analyses can check captions against the boxes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from fusionbench.checks import NonNegativeInt, Range, check_config, full_key
from fusionbench.data.base import CaptionDataset, CaptionSplit
from fusionbench.data.shapes_grammar import Captioner
from fusionbench.data.shapes_scene import (
    COLOURS,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    SHAPES,
    backgrounds,
    draw,
    layout,
    sample_pairs,
)
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

#: Held-out (colour, shape) pairs: only in ``test_novel``. Each colour and shape is seen otherwise.
NOVEL_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "diamond"),
    ("blue", "circle"),
    ("yellow", "square"),
)
ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)
SEEN_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in ALL_PAIRS if p not in NOVEL_PAIRS)

#: Images per split: image ids are per-split offsets below ``ID_STRIDE``.
SplitSize = Annotated[int, Range(ge=0, lt=ID_STRIDE)]
#: Objects per image: ``layout`` always fits four.
ObjectCount = Annotated[int, Range(ge=1, le=4)]


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

        image_size: Annotated[int, Range(ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE)] = 64
        num_train: SplitSize = 4000
        num_val: SplitSize = 500
        num_test: SplitSize = 500
        num_test_novel: SplitSize = 500
        min_objects: ObjectCount = 1
        max_objects: ObjectCount = 4
        seed: NonNegativeInt = 0
        cache: bool = True

        def check(self, key: str) -> None:
            if self.min_objects > self.max_objects:
                raise ConfigError(
                    f"{full_key(key, 'min_objects')} ({self.min_objects}) is larger than "
                    f"{full_key(key, 'max_objects')} ({self.max_objects}). Lower min_objects or raise max_objects."
                )

    def __init__(self, config: ShapesDataset.Config | None = None) -> None:
        config = config if config is not None else self.Config()
        check_config(config, "data")
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

        images = backgrounds(np_rng, n, size)

        novel = name == "test_novel"
        novel_set = set(NOVEL_PAIRS)
        pool = ALL_PAIRS if novel else SEEN_PAIRS
        captions: list[list[str]] = []
        boxes: list[list[list[int]]] = []
        labels: list[list[str]] = []
        mentions: list[list[list[int]]] = []
        relations: list[list[dict[str, Any]]] = []
        for i in range(n):
            pairs = sample_pairs(
                py_rng, cfg.min_objects, cfg.max_objects, pool, NOVEL_PAIRS if novel else None
            )
            objs = layout(py_rng, pairs, size)
            draw(images[i], objs, py_rng)
            focus = {j for j, o in enumerate(objs) if (o.colour, o.shape) in novel_set} if novel else set()
            texts, ment, rels = Captioner(py_rng, objs, size, focus).captions()
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
