"""The dataset contract: a dataset is a set of named splits of captioned images.

Every dataset (the embedded ``shapes`` benchmark, COCO, Flickr, a folder of images) produces
``CaptionSplit`` objects, so the data module, the region encoder (which needs boxes) and the
scorer (which needs the references) never care where the images came from.

Datasets of image *files* (``coco_karpathy``, ``flickr8k``, ``flickr30k``, ``coco``, ``folder``)
share ``ImageFileDataset``: a subclass only parses its annotation format into ``ImageRecord``s;
the base class then checks every path (inside the image root), lists missing files, decodes every
image once (``fusionbench.data.images.check_images``, cached), applies ``on_missing`` and
``on_bad_image``, refuses empty splits and records what it skipped in ``split.meta``:

``meta["skipped"]``
    ``{"missing_images", "bad_images", "no_captions", "empty_captions"}`` counts (always all four
    keys). ``empty_captions`` counts *captions* (empty or whitespace-only, dropped); the others
    count *images* left out of the split (``no_captions``: an image with no usable caption).
``meta["skipped_examples"]``
    the first ``MAX_EXAMPLES`` of each (file names, with the reason for bad images).
``meta["files"]``
    the image path relative to its root, aligned with ``image_ids``.
``meta["source"]``, ``meta["image_root"]``
    the annotation file(s) and image folder(s) the split comes from.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from fusionbench.checks import Range, check_config
from fusionbench.data.images import (
    ResizeMode,
    UnsafePathError,
    check_images,
    load_rgb,
    safe_image_path,
)
from fusionbench.errors import DataError

log = logging.getLogger(__name__)

#: Examples of each problem kept in ``split.meta["skipped_examples"]`` and shown in errors.
MAX_EXAMPLES = 10
#: Reasons counted in ``split.meta["skipped"]``.
SKIP_REASONS: tuple[str, ...] = ("missing_images", "bad_images", "no_captions", "empty_captions")


@dataclass
class CaptionSplit:
    """One split: images, their reference captions and (optionally) object boxes.

    Attributes:
        name: split name, e.g. ``"train"`` or ``"test_novel"``.
        image_ids: one int per image, unique across *all* splits of the dataset.
        captions: reference captions per image (raw text, as a person wrote them).
        images: uint8 array ``[N, H, W, 3]`` when the images live in memory (``shapes``) ...
        image_paths: ... or one file path per image (real datasets).
        boxes: per image a float32 array ``[K, 4]`` of ``x1, y1, x2, y2`` in pixels, or None.
        box_labels: per image ``K`` label strings (e.g. ``"red circle"``), or None.
        meta: anything else the dataset records (``shapes``: relations; image-file datasets:
            what was skipped, see the module docstring).
        image_size: with ``image_paths``, images are resized to ``image_size`` x ``image_size``
            when loaded (None: native size, so a batch needs same-sized files).
        resize: how (``stretch``, ``crop`` or ``pad``; ``fusionbench.data.images``).
    """

    name: str
    image_ids: list[int]
    captions: list[list[str]]
    images: np.ndarray | None = None
    image_paths: list[Path] | None = None
    boxes: list[np.ndarray] | None = None
    box_labels: list[list[str]] | None = None
    meta: dict = field(default_factory=dict)
    image_size: int | None = None
    resize: str = "stretch"

    def __len__(self) -> int:
        return len(self.image_ids)

    def load_image(self, index: int) -> np.ndarray:
        """The image at ``index`` as uint8 ``[H, W, 3]`` RGB (``[S, S, 3]`` with ``image_size``).

        Files are decoded by ``fusionbench.data.images.load_rgb`` (EXIF orientation, grayscale,
        palette, CMYK, 16-bit and transparent images); an unreadable file raises
        ``BadImageError``.
        """
        if self.images is not None:
            return self.images[index]
        if self.image_paths is None:
            raise ValueError(f"split {self.name!r} has neither images nor image_paths")
        return load_rgb(self.image_paths[index], self.image_size, self.resize)

    def references(self) -> dict[int, list[str]]:
        """``{image_id: [reference captions]}``, the format the scorer takes."""
        return {int(i): list(c) for i, c in zip(self.image_ids, self.captions)}


class CaptionDataset(abc.ABC):
    """Base class of registered datasets. Subclasses declare a ``Config`` dataclass.

    ``splits()`` names the splits the dataset provides; ``train``, ``val`` and ``test`` are
    required, extra evaluation splits (such as ``shapes``' ``test_novel``) are evaluated too.
    """

    Config: type

    def __init__(self, config) -> None:
        self.config = config

    @abc.abstractmethod
    def splits(self) -> list[str]:
        """Names of the splits, ``train``, ``val`` and ``test`` first."""

    @abc.abstractmethod
    def split(self, name: str) -> CaptionSplit:
        """Load (or generate) one split."""

    def eval_splits(self) -> list[str]:
        """Splits that are scored after training: every split but train and val."""
        return [s for s in self.splits() if s not in ("train", "val")]


# -- datasets of image files ----------------------------------------------------------------------
@dataclass
class ImageRecord:
    """One image as an annotation file describes it, before any file is looked at.

    ``file`` is the path as written (relative to ``root``); ``captions`` are the usable raw
    captions (empty ones already dropped and counted).
    """

    image_id: int
    file: str
    root: Path
    captions: list[str]
    split: str


class SkipLog:
    """Counts and first examples of what a dataset left out, per split (or dataset-wide)."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}
        self.examples: dict[str, dict[str, list[str]]] = {}

    def add(self, split: str, reason: str, example: str | None = None, n: int = 1) -> None:
        counts = self.counts.setdefault(split, {})
        counts[reason] = counts.get(reason, 0) + n
        if example is not None:
            examples = self.examples.setdefault(split, {}).setdefault(reason, [])
            if len(examples) < MAX_EXAMPLES:
                examples.append(example)

    def skipped(self, split: str) -> dict[str, int]:
        """All of ``SKIP_REASONS`` (zeros included) plus any other reason recorded."""
        return {**dict.fromkeys(SKIP_REASONS, 0), **self.counts.get(split, {})}

    def skipped_examples(self, split: str) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.examples.get(split, {}).items()}


def _listing(items: list[str], total: int) -> str:
    shown = "; ".join(items[:MAX_EXAMPLES])
    more = f"; ... ({total - MAX_EXAMPLES} more)" if total > MAX_EXAMPLES else ""
    return shown + more


@dataclass
class ImageFileOptions:
    """Options every dataset of image files shares (the ``Config`` base of coco, karpathy, folder)."""

    image_size: Annotated[int, Range(ge=8, le=4096)] = 224  # images are resized to image_size x image_size
    resize: ResizeMode = "stretch"  # how (fusionbench.data.images)
    on_bad_image: Literal["skip", "error"] = "skip"  # undecodable file: skip (counted) or error
    on_missing: Literal["error", "skip"] = "error"  # missing file: error (first 10 listed) or skip (counted)


class ImageFileDataset(CaptionDataset):
    """Base of datasets whose images are files under an image root (see the module docstring).

    Subclasses declare a ``Config`` with at least ``image_size``, ``resize``, ``on_bad_image``
    and ``on_missing`` and implement ``read_records``; ``splits`` defaults to train/val/test.
    Everything is loaded and checked on the first ``split()`` call, for all splits at once, so a
    problem anywhere is reported before training starts.
    """

    #: The registry name, used in messages.
    dataset_name: str = "dataset"
    REQUIRED_SPLITS: tuple[str, ...] = ("train", "val", "test")

    def __init__(self, config=None) -> None:
        config = config if config is not None else self.Config()
        super().__init__(config)
        self.validate_config()
        self._loaded: dict[str, CaptionSplit] | None = None
        #: dataset-wide problems that belong to no split (e.g. ``uncaptioned_files`` of a folder)
        self.problems = SkipLog()

    # -- subclass hooks -----------------------------------------------------------------------------
    def validate_config(self) -> None:
        """Check the options (the ``Config`` declares them, ``fusionbench.checks``); a subclass may
        extend this with checks that need the dataset itself (call ``super()``)."""
        check_config(self.config, "data")

    @abc.abstractmethod
    def read_records(self, log_: SkipLog) -> list[ImageRecord]:
        """Parse the annotation files; count dropped captions / caption-less images in ``log_``."""

    def describe_source(self) -> str:
        """The annotation file(s), for messages and ``meta["source"]``."""
        return self.dataset_name

    def empty_split_hint(self, name: str, sizes: dict[str, int]) -> str:
        """How to fix split ``name`` having no images (``sizes``: images per split found)."""
        return "Check the annotation file's split assignments."

    # -- contract ---------------------------------------------------------------------------------
    def splits(self) -> list[str]:
        return list(self.REQUIRED_SPLITS)

    def split(self, name: str) -> CaptionSplit:
        """The split; the first call loads and checks every split (see the class docstring)."""
        loaded = self.load()
        if name not in loaded:
            raise DataError(
                f"Unknown split {name!r} of dataset '{self.dataset_name}'. Valid splits: {', '.join(loaded)}."
            )
        return loaded[name]

    def lenient(self) -> ImageFileDataset:
        """A copy that skips (and counts) missing and bad images instead of failing: for stats."""
        cfg = dataclasses.replace(self.config, on_missing="skip", on_bad_image="skip")
        other = copy.copy(self)
        other.config = cfg
        other._loaded = None
        other.problems = SkipLog()
        return other

    # -- loading ------------------------------------------------------------------------------------
    def load(self) -> dict[str, CaptionSplit]:
        """Every split, loaded and checked once (memoized)."""
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def _split_order(self, names: set[str]) -> list[str]:
        return [*self.REQUIRED_SPLITS, *sorted(names - set(self.REQUIRED_SPLITS))]

    def _check_nonempty(self, records: list[ImageRecord], skips: SkipLog, after: str) -> None:
        sizes: dict[str, int] = {}
        for r in records:
            sizes[r.split] = sizes.get(r.split, 0) + 1
        for name in self.REQUIRED_SPLITS:
            if sizes.get(name, 0) == 0:
                left_out = {k: v for k, v in skips.skipped(name).items() if v}
                why = f" ({', '.join(f'{k}: {v}' for k, v in left_out.items())} left out)" if left_out else ""
                raise DataError(
                    f"Split '{name}' of dataset '{self.dataset_name}' has zero images {after}{why} "
                    f"(source: {self.describe_source()}). {self.empty_split_hint(name, sizes)}"
                )

    def _load(self) -> dict[str, CaptionSplit]:
        cfg = self.config
        skips = SkipLog()
        self.problems = SkipLog()
        records = self.read_records(skips)
        self._check_nonempty(records, skips, "in the annotations")

        seen: dict[int, ImageRecord] = {}
        for r in records:
            if r.image_id in seen:
                raise DataError(
                    f"Image id {r.image_id} is used twice in {self.describe_source()}: by "
                    f"{seen[r.image_id].file!r} ({seen[r.image_id].split}) and {r.file!r} ({r.split}). "
                    f"Image ids must be unique across all splits."
                )
            seen[r.image_id] = r

        # 1. every path must stay inside its root (always an error: the annotation file is wrong)
        paths: list[Path] = []
        unsafe: list[str] = []
        unsafe_roots: set[str] = set()
        for r in records:
            try:
                paths.append(safe_image_path(r.root, r.file))
            except UnsafePathError as err:
                unsafe.append(f"{r.file!r} ({err.reason})")
                unsafe_roots.add(str(r.root))
                paths.append(Path())
        if unsafe:
            raise DataError(
                f"{len(unsafe)} image path(s) in {self.describe_source()} leave the image root "
                f"{', '.join(sorted(unsafe_roots))}: {_listing(unsafe, len(unsafe))}. Image paths must be relative "
                f"to the image root and stay inside it (no '..', no absolute paths, no symlinks "
                f"pointing outside); fix the annotation file or move the images under the root."
            )

        # 2. missing files: listed together, before anything is decoded
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        if missing:
            if cfg.on_missing == "error":
                roots = sorted({str(records[i].root) for i in missing})
                names = [records[i].file for i in missing]
                raise DataError(
                    f"{len(missing)} of {len(records)} images listed in {self.describe_source()} are "
                    f"missing (image root {', '.join(roots)}): {_listing(names, len(names))}. Check "
                    f"the image root option (data.{self.root_key()}), download the missing images, or "
                    f"set data.on_missing=skip to leave them out (counted in the results)."
                )
            for i in missing:
                skips.add(records[i].split, "missing_images", records[i].file)
            log.warning(
                "%s: %d of %d images are missing and left out (on_missing=skip), e.g. %s",
                self.dataset_name,
                len(missing),
                len(records),
                paths[missing[0]],
            )
        gone = set(missing)

        # 3. decode every present image once (cached): bad files are found before training
        present = [p for i, p in enumerate(paths) if i not in gone]
        bad = check_images(present, cfg.image_size, cfg.resize)
        if bad and cfg.on_bad_image == "error":
            names = [f"{p} ({why})" for p, why in bad.items()]
            raise DataError(
                f"{len(bad)} image(s) of dataset '{self.dataset_name}' cannot be decoded: "
                f"{_listing(names, len(names))}. Replace them, or set data.on_bad_image=skip to "
                f"leave them out (counted in the results)."
            )
        if bad:
            log.warning(
                "%s: %d unreadable images left out (on_bad_image=skip), e.g. %s",
                self.dataset_name,
                len(bad),
                next(iter(bad)),
            )

        kept: list[tuple[ImageRecord, Path]] = []
        for i, (r, p) in enumerate(zip(records, paths)):
            if i in gone:
                continue
            if p in bad:
                skips.add(r.split, "bad_images", f"{r.file} ({bad[p]})")
                continue
            kept.append((r, p))
        self._check_nonempty([r for r, _ in kept], skips, "after leaving out missing and unreadable files")

        by_split: dict[str, list[tuple[ImageRecord, Path]]] = {}
        for r, p in kept:
            by_split.setdefault(r.split, []).append((r, p))
        out: dict[str, CaptionSplit] = {}
        for name in self._split_order(set(by_split)):
            items = by_split.get(name, [])
            out[name] = CaptionSplit(
                name=name,
                image_ids=[r.image_id for r, _ in items],
                captions=[list(r.captions) for r, _ in items],
                image_paths=[p for _, p in items],
                image_size=int(cfg.image_size),
                resize=str(cfg.resize),
                meta={
                    "dataset": self.dataset_name,
                    "source": self.describe_source(),
                    "image_root": sorted({str(r.root) for r, _ in items}),
                    "files": [r.file for r, _ in items],
                    "skipped": skips.skipped(name),
                    "skipped_examples": skips.skipped_examples(name),
                    "on_bad_image": cfg.on_bad_image,
                    "on_missing": cfg.on_missing,
                },
            )
        return out

    def root_key(self) -> str:
        """The config key of the image root, for messages."""
        return "image_root"


# -- annotation files -----------------------------------------------------------------------------
def read_text(path: str | Path, key: str, hint: str = "") -> str:
    """The UTF-8 text of an annotation file (a BOM is allowed), with clear errors.

    A missing file names the config key; bytes that are not UTF-8 give the byte offset and line.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"data.{key}: {path} {what}. {hint}".strip())
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path} is not UTF-8 text: byte 0x{data[err.start]:02x} at byte offset {err.start} "
            f"(line {line}) is not valid UTF-8. Annotation files must be UTF-8; re-save it as UTF-8 "
            f"(e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed.json`)."
        ) from None


def read_json(path: str | Path, key: str, hint: str = ""):
    """A JSON annotation file, parsed; errors name the file, the position and the fix."""
    import json

    text = read_text(path, key, hint)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno} "
            f"(character {err.pos}). {hint}".strip()
        ) from None


def shape_error(path: str | Path, where: str, problem: str, layout: str) -> DataError:
    """A ``DataError`` for an annotation file of the wrong shape, with the expected layout."""
    return DataError(f"{path}: {where} {problem}. Expected layout:\n{layout.strip()}")


def type_name(value) -> str:
    """JSON-ish name of a Python value's type, for messages."""
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)
