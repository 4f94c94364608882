"""``coco``: COCO Captions from the official annotation files (``captions_train2014.json``, ...).

Chen et al. (2015), "Microsoft COCO Captions: Data Collection and Evaluation Server". The
official files are read as released, and the references used for scoring are their ``caption``
strings exactly as written (no normalisation: coco-caption's PTB tokenizer does that when
scoring), with the official image ids, so scores and ``predictions.json`` match the official
evaluation toolkit.

Splits. The official test set has no public captions, so validation and test come from
``val2014``: its images are ordered by a hash of their id (``sha256(str(id))``, the same on every
machine and run) and the first ``num_val`` go to ``val``, the next ``num_test`` to ``test``
(``num_test: -1`` takes every remaining image: the whole of val2014 but ``val``). The rest of
val2014 is "restval": folded into train (``restval: train``, default, as Karpathy's split does)
or left out (``restval: drop``). ``train`` is all of train2014 (plus restval). These are not
Karpathy's 5k/5k images; for those use ``coco_karpathy``.

Expected files (paths relative to the working directory unless absolute)::

    data/coco/
        annotations/captions_train2014.json     data.train_annotations
        annotations/captions_val2014.json       data.val_annotations
        train2014/COCO_train2014_000000000009.jpg ...      data.train_images
        val2014/COCO_val2014_000000000042.jpg ...          data.val_images

Each annotation file (``info``, ``licenses`` and other keys are ignored)::

    {"images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg", ...}, ...],
     "annotations": [{"id": 641, "image_id": 42, "caption": "A dog sitting on a couch."}, ...]}

An image with no annotation is skipped and counted (``no_captions``), empty or whitespace-only
captions are dropped and counted (``empty_captions``) and annotations naming an image id missing
from ``images`` are counted in ``dataset.problems`` (``orphan_annotations``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fusionbench.checks import PositiveInt, Range, full_key, literal_choices
from fusionbench.data.base import (
    ImageFileDataset,
    ImageFileOptions,
    ImageRecord,
    SkipLog,
    read_json,
    shape_error,
    type_name,
)
from fusionbench.errors import ConfigError, DataError
from fusionbench.registry import DATASETS

LAYOUT = """
{"images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg"}, ...],
 "annotations": [{"image_id": 42, "caption": "A dog sitting on a couch."}, ...]}
(the official captions_train2014.json / captions_val2014.json)
"""
Restval = Literal["train", "drop"]
RESTVAL_OPTIONS: tuple[str, ...] = literal_choices(Restval)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def split_order_key(image_id: int) -> str:
    """Sort key that orders val2014 images for the val/test/restval split (stable everywhere)."""
    return hashlib.sha256(str(int(image_id)).encode()).hexdigest()


def check_instances(key: str, path: str | None) -> None:
    """``data.instances``, when given, must be a file: the COCO instance annotations that CHAIR
    (``fusionbench.diagnostics.coco_chair``) reads the objects of each image from."""
    if path is not None and not Path(str(path)).expanduser().is_file():
        raise ConfigError(
            f"{full_key(key, 'instances')}={str(path)!r} is not a file. Point it at COCO's "
            "instances_val2014.json (annotations_trainval2014.zip) for CHAIR, or remove the key: "
            "without it CHAIR is reported unavailable."
        )


@DATASETS.register("coco")
class CocoDataset(ImageFileDataset):
    """COCO Captions from the official annotation files; val/test drawn from val2014, official ids.

    Layout (see ``fusionbench.data.coco`` for the JSON and the split scheme)::

        data/coco/annotations/captions_train2014.json
        data/coco/annotations/captions_val2014.json
        data/coco/train2014/*.jpg
        data/coco/val2014/*.jpg

    Each annotation file (``info``, ``licenses`` and other keys ignored)::

        {"images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg", ...}, ...],
         "annotations": [{"id": 641, "image_id": 42, "caption": "A dog on a couch."}, ...]}
    """

    dataset_name = "coco"

    @dataclass
    class Config(ImageFileOptions):
        """Options of ``data`` when ``data.name: coco``."""

        train_annotations: str = "data/coco/annotations/captions_train2014.json"
        val_annotations: str = "data/coco/annotations/captions_val2014.json"
        train_images: str = "data/coco/train2014"  # file_name of train_annotations is relative to it
        val_images: str = "data/coco/val2014"
        num_val: PositiveInt = 5000  # val2014 images (hash order) used for validation
        num_test: Annotated[int, Range(ge=1, also=(-1,), note="-1 = every remaining val2014 image")] = 5000
        restval: Restval = "train"  # the other val2014 images: train (fold in) or drop
        instances: str | None = None  # instances_val2014.json: objects for CHAIR (fusionbench.diagnostics)

        def check(self, key: str) -> None:
            for name in ("train_annotations", "val_annotations", "train_images", "val_images"):
                if not str(getattr(self, name)).strip():
                    raise ConfigError(f"{full_key(key, name)} is empty: {CocoDataset._hint()}")
            check_instances(key, self.instances)

    @staticmethod
    def _hint() -> str:
        return (
            "Point data.train_annotations / data.val_annotations at the official "
            "captions_train2014.json / captions_val2014.json and data.train_images / "
            "data.val_images at the train2014 / val2014 image folders."
        )

    def describe_source(self) -> str:
        return f"{self.config.train_annotations} + {self.config.val_annotations}"

    def root_key(self) -> str:
        return "train_images / data.val_images"

    def empty_split_hint(self, name: str, sizes: dict[str, int]) -> str:
        found = ", ".join(f"{k}: {v}" for k, v in sorted(sizes.items())) or "no images at all"
        return (
            f"Images per split found: {found}. Check that the annotation files list images with "
            f"captions (train from data.train_annotations, val/test from data.val_annotations)."
        )

    def _read_file(
        self, path: Path, key: str, log_: SkipLog
    ) -> tuple[list[tuple[int, str]], dict[int, list[tuple[int, str]]]]:
        """``[(image_id, file_name)]`` and ``{image_id: [(annotation index, caption)]}`` of one file."""
        data = read_json(path, key, self._hint())
        if not isinstance(data, dict):
            raise shape_error(path, "the top level", f"must be an object, got {type_name(data)}", LAYOUT)
        for k in ("images", "annotations"):
            if k not in data:
                keys = ", ".join(repr(x) for x in list(data)[:8]) or "none"
                raise shape_error(path, "the top level", f"has no '{k}' key (keys: {keys})", LAYOUT)
            if not isinstance(data[k], list):
                raise shape_error(path, f"'{k}'", f"must be a list, got {type_name(data[k])}", LAYOUT)
        images: list[tuple[int, str]] = []
        for i, img in enumerate(data["images"]):
            if not isinstance(img, dict):
                raise shape_error(path, f"images[{i}]", f"must be an object, got {type_name(img)}", LAYOUT)
            if not _is_int(img.get("id")):
                problem = (
                    "has no 'id' key"
                    if "id" not in img
                    else f"'id' must be a whole number, got {img['id']!r}"
                )
                raise shape_error(path, f"images[{i}]", problem, LAYOUT)
            name = img.get("file_name")
            if not isinstance(name, str) or not name:
                problem = (
                    "has no 'file_name' key"
                    if "file_name" not in img
                    else "'file_name' must be a non-empty string"
                )
                raise shape_error(path, f"images[{i}] (id {img['id']})", problem, LAYOUT)
            images.append((int(img["id"]), name))
        captions: dict[int, list[tuple[int, str]]] = {}
        for j, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict):
                raise shape_error(
                    path, f"annotations[{j}]", f"must be an object, got {type_name(ann)}", LAYOUT
                )
            for k, ok in (("image_id", _is_int), ("caption", lambda v: isinstance(v, str))):
                if not ok(ann.get(k)):
                    problem = (
                        f"has no '{k}' key"
                        if k not in ann
                        else f"'{k}' has the wrong type ({type_name(ann[k])})"
                    )
                    raise shape_error(path, f"annotations[{j}]", problem, LAYOUT)
            captions.setdefault(int(ann["image_id"]), []).append((j, ann["caption"]))
        known = {i for i, _ in images}
        for image_id, caps in captions.items():
            if image_id not in known:
                self.problems.add(
                    "all", "orphan_annotations", f"{path.name}: image_id {image_id}", n=len(caps)
                )
        return images, captions

    def read_records(self, log_: SkipLog) -> list[ImageRecord]:
        cfg = self.config
        records: list[ImageRecord] = []
        train_root = Path(cfg.train_images).expanduser()
        val_root = Path(cfg.val_images).expanduser()

        def add(image_id: int, name: str, root: Path, split: str, caps: list[tuple[int, str]]) -> None:
            kept = []
            for j, text in caps:
                if text.strip():
                    kept.append(text)
                else:
                    log_.add(split, "empty_captions", f"{name} (annotations[{j}])")
            if not kept:
                log_.add(split, "no_captions", name)
                return
            records.append(ImageRecord(image_id, name, root, kept, split))

        train_path = Path(cfg.train_annotations).expanduser()
        images, caps = self._read_file(train_path, "train_annotations", log_)
        for image_id, name in images:
            add(image_id, name, train_root, "train", caps.get(image_id, []))

        val_path = Path(cfg.val_annotations).expanduser()
        images, caps = self._read_file(val_path, "val_annotations", log_)
        wanted = cfg.num_val + max(cfg.num_test, 1)
        if len(images) < wanted:
            raise DataError(
                f"{val_path} lists {len(images)} images, fewer than data.num_val ({cfg.num_val}) + "
                f"data.num_test ({cfg.num_test}) = {wanted}: lower data.num_val / data.num_test."
            )
        ordered = sorted(images, key=lambda t: split_order_key(t[0]))
        n_test = len(ordered) - cfg.num_val if cfg.num_test == -1 else cfg.num_test
        for k, (image_id, name) in enumerate(ordered):
            if k < cfg.num_val:
                split = "val"
            elif k < cfg.num_val + n_test:
                split = "test"
            elif cfg.restval == "train":
                split = "train"
            else:
                continue
            add(image_id, name, val_root, split, caps.get(image_id, []))
        return records
