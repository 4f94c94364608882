"""The dataset contract: a dataset is a set of named splits of captioned images.

Every dataset (the embedded ``shapes`` benchmark, COCO, Flickr, a folder of images) produces
``CaptionSplit`` objects, so the data module, the region encoder (which needs boxes) and the
scorer (which needs the references) never care where the images came from.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


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
    """

    name: str
    image_ids: list[int]
    captions: list[list[str]]
    images: np.ndarray | None = None
    image_paths: list[Path] | None = None
    boxes: list[np.ndarray] | None = None
    box_labels: list[list[str]] | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_ids)

    def load_image(self, index: int) -> np.ndarray:
        """The image at ``index`` as uint8 ``[H, W, 3]`` RGB."""
        if self.images is not None:
            return self.images[index]
        if self.image_paths is None:
            raise ValueError(f"split {self.name!r} has neither images nor image_paths")
        with Image.open(self.image_paths[index]) as im:
            return np.asarray(im.convert("RGB"))

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
