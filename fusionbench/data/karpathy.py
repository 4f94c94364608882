"""Karpathy's splits of COCO, Flickr8k and Flickr30k: ``coco_karpathy``, ``flickr8k``, ``flickr30k``.

Karpathy & Fei-Fei (2015), "Deep Visual-Semantic Alignments for Generating Image Descriptions",
published one JSON per dataset (``dataset_coco.json``, ``dataset_flickr8k.json``,
``dataset_flickr30k.json``) that assigns every image to ``train``, ``val``, ``test`` or (COCO only)
``restval``, with its raw captions. Almost every captioning paper since reports on these splits:
COCO 5,000 val / 5,000 test images and 113,287 train images when ``restval`` is folded into train
(``restval: train``, the usual "Karpathy split"); Flickr8k 6,000 / 1,000 / 1,000; Flickr30k
29,000 / 1,014 / 1,000.

Expected files (paths relative to the working directory unless absolute)::

    <annotations>                 e.g. data/coco/dataset_coco.json
    <image_root>/                 e.g. data/coco/
        <filepath>/<filename>     e.g. val2014/COCO_val2014_000000391895.jpg
                                  (Flickr files have no filepath: <image_root>/<filename>)

The JSON (other keys, such as ``tokens``, ``sentids`` or ``dataset``, are ignored)::

    {"images": [
      {"filepath": "val2014",                          # optional
       "filename": "COCO_val2014_000000391895.jpg",
       "split": "test",                                # train | val | test | restval
       "cocoid": 391895,                               # image id (else "imgid")
       "imgid": 0,
       "sentences": [{"raw": "A man with a red helmet on a small moped on a dirt road."},
                     ...]},
      ...]}

Image ids are ``cocoid`` when every image has one (COCO: predictions then carry the official COCO
ids), else ``imgid``. References are the ``raw`` sentences as written. Empty or whitespace-only
captions are dropped and counted; an image left without captions is skipped and counted
(``split.meta["skipped"]``, see ``fusionbench.data.base``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fusionbench.checks import Note, full_key, literal_choices
from fusionbench.data.base import (
    ImageFileDataset,
    ImageFileOptions,
    ImageRecord,
    SkipLog,
    read_json,
    shape_error,
    type_name,
)
from fusionbench.data.coco import check_instances
from fusionbench.errors import ConfigError
from fusionbench.registry import DATASETS

#: The expected JSON layout, shown in errors about a file of the wrong shape.
LAYOUT = """
{"images": [{"filepath": "val2014",            (optional)
             "filename": "COCO_val2014_000000391895.jpg",
             "split": "train" | "val" | "test" | "restval",
             "cocoid": 391895 or "imgid": 0,
             "sentences": [{"raw": "A man riding a moped."}, ...]},
            ...]}
(Karpathy's dataset_coco.json / dataset_flickr8k.json / dataset_flickr30k.json)
"""
SPLIT_VALUES = ("train", "val", "test", "restval")
Restval = Literal["train", "drop"]
RESTVAL_OPTIONS: tuple[str, ...] = literal_choices(Restval)
_RESTVAL_NOTE = Note("train: fold restval images into train, Karpathy's usual 113k-image train split")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class KarpathyDataset(ImageFileDataset):
    """A Karpathy split file plus an image root (base of ``coco_karpathy``/``flickr8k``/``flickr30k``)."""

    dataset_name = "coco_karpathy"

    @dataclass
    class Config(ImageFileOptions):
        """Options of ``data`` for Karpathy-split datasets."""

        annotations: str = "data/coco/dataset_coco.json"  # Karpathy's split JSON
        image_root: str = "data/coco"  # image path = image_root / filepath / filename
        restval: Annotated[Restval, _RESTVAL_NOTE] = "train"  # COCO's restval images: fold in, or drop

        def check(self, key: str) -> None:
            for name in ("annotations", "image_root"):
                if not str(getattr(self, name)).strip():
                    example = Path(type(self).annotations).name  # the class attribute is the default
                    raise ConfigError(
                        f"{full_key(key, name)} is empty: set {full_key(key, 'annotations')} to Karpathy's "
                        f"split JSON (e.g. {example}) and {full_key(key, 'image_root')} to the folder the "
                        f"image paths are relative to."
                    )

    def _hint(self) -> str:
        return (
            f"Set data.annotations to Karpathy's split JSON (e.g. dataset_{self._short()}.json) and "
            f"data.image_root to the folder the image paths are relative to."
        )

    def _short(self) -> str:
        return self.dataset_name.replace("_karpathy", "")

    def describe_source(self) -> str:
        return str(self.config.annotations)

    def empty_split_hint(self, name: str, sizes: dict[str, int]) -> str:
        found = ", ".join(f"{k}: {v}" for k, v in sorted(sizes.items())) or "no images at all"
        extra = (
            " With data.restval=drop, train has only the 'train' images; use restval=train."
            if name == "train" and self.config.restval == "drop"
            else ""
        )
        return (
            f"Images per split found: {found}.{extra} Check that data.annotations is Karpathy's "
            f"split file for this dataset (every image has split train, val, test or restval)."
        )

    def read_records(self, log_: SkipLog) -> list[ImageRecord]:
        cfg = self.config
        path = Path(cfg.annotations).expanduser()
        root = Path(cfg.image_root).expanduser()
        data = read_json(path, "annotations", self._hint())
        if not isinstance(data, dict):
            raise shape_error(path, "the top level", f"must be an object, got {type_name(data)}", LAYOUT)
        if "images" not in data:
            keys = ", ".join(repr(k) for k in list(data)[:8]) or "none"
            raise shape_error(path, "the top level", f"has no 'images' key (keys: {keys})", LAYOUT)
        images = data["images"]
        if not isinstance(images, list):
            raise shape_error(path, "'images'", f"must be a list, got {type_name(images)}", LAYOUT)
        for i, img in enumerate(images):
            if not isinstance(img, dict):
                raise shape_error(path, f"images[{i}]", f"must be an object, got {type_name(img)}", LAYOUT)
        id_key = "cocoid" if images and all(_is_int(img.get("cocoid")) for img in images) else "imgid"

        records: list[ImageRecord] = []
        for i, img in enumerate(images):
            where = f"images[{i}]"
            filename = img.get("filename")
            if not isinstance(filename, str) or not filename:
                problem = (
                    "has no 'filename' key"
                    if "filename" not in img
                    else "'filename' must be a non-empty string"
                )
                raise shape_error(path, where, problem, LAYOUT)
            filepath = img.get("filepath", "")
            if filepath is None:
                filepath = ""
            if not isinstance(filepath, str):
                raise shape_error(
                    path, where, f"'filepath' must be a string, got {type_name(filepath)}", LAYOUT
                )
            image_id = img.get(id_key)
            if not _is_int(image_id):
                problem = (
                    "has no 'imgid' (or 'cocoid') key"
                    if image_id is None
                    else f"'{id_key}' must be a whole number, got {image_id!r}"
                )
                raise shape_error(path, f"{where} ({filename})", problem, LAYOUT)
            split = img.get("split")
            if split not in SPLIT_VALUES:
                problem = (
                    "has no 'split' key"
                    if "split" not in img
                    else f"has split {split!r}; valid values: {', '.join(SPLIT_VALUES)}"
                )
                raise shape_error(path, f"{where} ({filename})", problem, LAYOUT)
            if split == "restval":
                if cfg.restval == "drop":
                    continue
                split = "train"
            sentences = img.get("sentences")
            if not isinstance(sentences, list):
                problem = (
                    "has no 'sentences' key"
                    if sentences is None
                    else f"'sentences' must be a list, got {type_name(sentences)}"
                )
                raise shape_error(path, f"{where} ({filename})", problem, LAYOUT)
            captions: list[str] = []
            for j, sent in enumerate(sentences):
                raw = sent.get("raw") if isinstance(sent, dict) else None
                if not isinstance(raw, str):
                    problem = (
                        f"must be an object with a 'raw' string, got {type_name(sent)}"
                        if not isinstance(sent, dict)
                        else ("has no 'raw' key" if "raw" not in sent else "'raw' must be a string")
                    )
                    raise shape_error(path, f"{where}.sentences[{j}] ({filename})", problem, LAYOUT)
                if raw.strip():
                    captions.append(raw)
                else:
                    log_.add(split, "empty_captions", f"{filename} (sentence {j})")
            rel = f"{filepath.rstrip('/')}/{filename}" if filepath else filename
            if not captions:
                log_.add(split, "no_captions", rel)
                continue
            records.append(ImageRecord(int(image_id), rel, root, captions, split))
        if not images:
            raise shape_error(path, "'images'", "is empty", LAYOUT)
        return records


@DATASETS.register("coco_karpathy")
class CocoKarpathy(KarpathyDataset):
    """COCO 2014 on Karpathy's splits (dataset_coco.json: 113k train with restval, 5k val, 5k test).

    Layout (``data.annotations`` and ``data.image_root``; see ``fusionbench.data.karpathy``)::

        data/coco/dataset_coco.json
        data/coco/train2014/COCO_train2014_000000000009.jpg ...
        data/coco/val2014/COCO_val2014_000000000042.jpg ...

    ``dataset_coco.json`` (other keys ignored)::

        {"images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg",
                     "split": "test", "cocoid": 391895, "imgid": 0,
                     "sentences": [{"raw": "A man with a red helmet on a small moped."}, ...]},
                    ...]}

    Image ids are the COCO ids (``cocoid``), so predictions can be scored by the official tools.
    """

    dataset_name = "coco_karpathy"

    @dataclass
    class Config(KarpathyDataset.Config):
        """Options of ``data`` when ``data.name: coco_karpathy``."""

        instances: str | None = None  # instances_val2014.json: objects for CHAIR (fusionbench.diagnostics)

        def check(self, key: str) -> None:
            super().check(key)
            check_instances(key, self.instances)


@DATASETS.register("flickr8k")
class Flickr8k(KarpathyDataset):
    """Flickr8k on Karpathy's splits (dataset_flickr8k.json: 6k train, 1k val, 1k test).

    Layout (``data.annotations`` and ``data.image_root``; see ``fusionbench.data.karpathy``)::

        data/flickr8k/dataset_flickr8k.json
        data/flickr8k/Flicker8k_Dataset/1000268201_693b08cb0e.jpg ...

    ``dataset_flickr8k.json`` (no ``filepath``; other keys ignored)::

        {"images": [{"filename": "1000268201_693b08cb0e.jpg", "split": "train", "imgid": 0,
                     "sentences": [{"raw": "A child in a pink dress is climbing up a set of stairs."}, ...]},
                    ...]}

    Image ids are Karpathy's ``imgid``.
    """

    dataset_name = "flickr8k"

    @dataclass
    class Config(KarpathyDataset.Config):
        """Options of ``data`` when ``data.name: flickr8k``."""

        annotations: str = "data/flickr8k/dataset_flickr8k.json"
        image_root: str = "data/flickr8k/Flicker8k_Dataset"


@DATASETS.register("flickr30k")
class Flickr30k(KarpathyDataset):
    """Flickr30k on Karpathy's splits (dataset_flickr30k.json: 29k train, 1,014 val, 1k test).

    Layout (``data.annotations`` and ``data.image_root``; see ``fusionbench.data.karpathy``)::

        data/flickr30k/dataset_flickr30k.json
        data/flickr30k/flickr30k-images/1000092795.jpg ...

    ``dataset_flickr30k.json`` (no ``filepath``; other keys ignored)::

        {"images": [{"filename": "1000092795.jpg", "split": "train", "imgid": 0,
                     "sentences": [{"raw": "Two young guys with shaggy hair look at their hands."}, ...]},
                    ...]}

    Image ids are Karpathy's ``imgid``.
    """

    dataset_name = "flickr30k"

    @dataclass
    class Config(KarpathyDataset.Config):
        """Options of ``data`` when ``data.name: flickr30k``."""

        annotations: str = "data/flickr30k/dataset_flickr30k.json"
        image_root: str = "data/flickr30k/flickr30k-images"
