"""A dataset split as detector training data: images as tensors, boxes and labels as targets."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fusionbench.errors import DataError

LABEL_MODES = ("object", "label")


def label_names_of(split, label_mode: str) -> list[str]:
    if label_mode == "object":
        return ["object"]
    if split.box_labels is None:
        raise DataError(
            f"split '{split.name}' has boxes but no box_labels; use label_mode='object' for a "
            f"class-agnostic detector."
        )
    return sorted({lab for labels in split.box_labels for lab in labels})


def box_targets(split, index: int, label_mode: str, class_of: dict[str, int]) -> tuple[Tensor, Tensor]:
    boxes = torch.as_tensor(np.asarray(split.boxes[index], dtype=np.float32)).reshape(-1, 4)
    if label_mode == "object":
        labels = torch.ones(len(boxes), dtype=torch.int64)
    else:
        labels = torch.tensor([class_of.get(lab, 0) for lab in split.box_labels[index]], dtype=torch.int64)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (labels > 0)
    return boxes[keep], labels[keep]


def image_tensor(split, index: int) -> Tensor:
    return (
        torch.from_numpy(np.ascontiguousarray(split.load_image(index))).permute(2, 0, 1).float().div_(255.0)
    )


def check_split(split, what: str) -> None:
    if split.boxes is None:
        raise DataError(
            f"{what} split '{split.name}' has no object boxes: a detector can only be trained and "
            f"evaluated on a dataset that provides boxes (e.g. shapes)."
        )
    if len(split) == 0:
        raise DataError(f"{what} split '{split.name}' is empty.")
