"""Boxes from a trained detector: torchvision's post-processing, then class-agnostic NMS, size and count filters."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def configure_inference(
    model: nn.Module, *, score_threshold: float, nms_threshold: float, max_boxes: int = 100
) -> None:
    """Set torchvision's own post-processing (score floor, per-class NMS, detections kept)."""
    model.roi_heads.score_thresh = float(score_threshold)
    model.roi_heads.nms_thresh = float(nms_threshold)
    model.roi_heads.detections_per_img = max(100, int(max_boxes))


def select_boxes(
    output: dict[str, Tensor],
    *,
    score_threshold: float = 0.0,
    nms_threshold: float | None = None,
    min_box_size: float = 0.0,
    max_boxes: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(boxes [K, 4], scores [K], labels [K])`` of one torchvision detection output, best first.

    Keeps detections with score >= ``score_threshold`` whose width and height are at least
    ``min_box_size`` pixels, removes duplicates across classes with class-agnostic NMS at IoU
    ``nms_threshold`` (torchvision's NMS is per class), then the ``max_boxes`` best.
    """
    from torchvision.ops import nms

    boxes, scores, labels = output["boxes"], output["scores"], output["labels"]
    wh = boxes[:, 2:] - boxes[:, :2]
    keep = (scores >= score_threshold) & (wh >= min_box_size).all(dim=1) & torch.isfinite(boxes).all(dim=1)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if nms_threshold is not None and len(boxes):
        order = nms(boxes.float(), scores.float(), float(nms_threshold))  # sorted by score
    else:
        order = scores.argsort(descending=True, stable=True)
    if max_boxes is not None:
        order = order[:max_boxes]
    return boxes[order], scores[order], labels[order]


@torch.no_grad()
def detect(
    model: nn.Module,
    images: Tensor | list[Tensor],
    score_threshold: float = 0.0,
    max_boxes: int | None = None,
    *,
    nms_threshold: float | None = None,
    min_box_size: float = 0.0,
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per image ``(boxes, scores, labels)`` of ``model`` on ``images`` (``[3, H, W]`` in [0, 1]).

    See ``select_boxes`` for the filters; the model runs in eval mode and is put back as it was.
    """
    was_training = model.training
    model.eval()
    try:
        outputs = model([im.float() for im in images])
    finally:
        model.train(was_training)
    return [
        select_boxes(
            out,
            score_threshold=score_threshold,
            nms_threshold=nms_threshold,
            min_box_size=min_box_size,
            max_boxes=max_boxes,
        )
        for out in outputs
    ]
