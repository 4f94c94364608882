"""An object detector for datasets without boxes: torchvision's Faster R-CNN, trained on box labels.

The ``regions`` encoder pools features over object boxes. With ``box_source: detector`` the boxes
come from a Faster R-CNN (Ren et al., 2015) with a MobileNetV3-Large FPN backbone
(``torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn``), trained here from random
initialisation (no download) on a split's ``boxes``/``box_labels``, like the Visual Genome detector
of Bottom-Up and Top-Down attention (Anderson et al., 2018), only much smaller.

Small images
    torchvision's detection transform rescales every image so that its short side is ``min_size``
    (default 800) and its long side at most ``max_size``; ``min_size = max_size =`` the image size
    (64 for ``shapes``) keeps the images as they are (the transform then resizes by a factor 1 and
    pads to a multiple of 32). torchvision's anchors (32-512 px) are made for 800-px images: here
    they scale with ``min_size`` to 1/8, 1/4, 1/2, 1 and 2 times it (8-128 px at 64), still five
    sizes x three aspect ratios per location, so the RPN head keeps its shape. Tiny images have few
    anchors and objects, so ``box_batch_size_per_image`` defaults to 64 sampled RoIs per image
    (Fast R-CNN's 128 per two images) instead of torchvision's 512, the main cost on a CPU.

Checkpoint
    ``train_detector`` writes (atomically) a ``torch.save`` dict that ``load_detector`` reads with
    ``weights_only=True``: ``format``, ``version``, ``state_dict``, ``num_classes`` (background
    included), ``label_names`` (class id ``i + 1`` is ``label_names[i]``), ``label_mode``,
    ``min_size``, ``max_size``, ``anchor_sizes``, ``representation_size``,
    ``box_batch_size_per_image`` and the training ``metrics``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fusionbench.errors import ConfigError, DataError
from fusionbench.io import atomic_write

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "fusionbench-detector"
CHECKPOINT_VERSION = 1
#: Anchor sizes as fractions of ``min_size`` (torchvision: 32..512 at 800, i.e. 0.04..0.64).
ANCHOR_FRACTIONS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)
LABEL_MODES = ("object", "label")


def default_anchor_sizes(min_size: int) -> tuple[int, ...]:
    """Five anchor sizes (pixels of the detector's input) scaled to ``min_size``."""
    return tuple(max(2, round(f * min_size)) for f in ANCHOR_FRACTIONS)


def build_detector(
    num_classes: int,
    min_size: int,
    max_size: int,
    *,
    anchor_sizes: tuple[int, ...] | list[int] | None = None,
    representation_size: int = 1024,
    box_batch_size_per_image: int = 64,
) -> nn.Module:
    """A randomly initialised ``fasterrcnn_mobilenet_v3_large_fpn`` for ``num_classes`` classes.

    Args:
        num_classes: classes including background (2 for a class-agnostic "object" detector).
        min_size, max_size: torchvision's resize bounds; the image size keeps small images as is.
        anchor_sizes: five anchor sizes in pixels (default: ``default_anchor_sizes(min_size)``).
        representation_size: width of the box head's two-layer MLP (torchvision's 1024).
        box_batch_size_per_image: RoIs sampled per image to train the box head.
    """
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    if num_classes < 2:
        raise ValueError(f"num_classes counts the background class and must be >= 2, got {num_classes}")
    if min_size < 1 or max_size < min_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}")
    sizes = tuple(int(s) for s in (anchor_sizes or default_anchor_sizes(min_size)))
    if len(sizes) != 5:
        raise ValueError(f"anchor_sizes must list 5 sizes (the RPN head predicts 15 anchors), got {sizes}")
    model = fasterrcnn_mobilenet_v3_large_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes,
        min_size=min_size,
        max_size=max_size,
        box_batch_size_per_image=box_batch_size_per_image,
    )
    levels = len(model.rpn.anchor_generator.sizes)
    model.rpn.anchor_generator = AnchorGenerator((sizes,) * levels, ((0.5, 1.0, 2.0),) * levels)
    if representation_size != 1024:
        in_features = model.roi_heads.box_head.fc6.in_features
        model.roi_heads.box_head = TwoMLPHead(in_features, representation_size)
        model.roi_heads.box_predictor = FastRCNNPredictor(representation_size, num_classes)
    return model


# -- data ---------------------------------------------------------------------------------------------
def _label_names(split, label_mode: str) -> list[str]:
    if label_mode == "object":
        return ["object"]
    if split.box_labels is None:
        raise DataError(
            f"split '{split.name}' has boxes but no box_labels; use label_mode='object' for a "
            f"class-agnostic detector."
        )
    return sorted({lab for labels in split.box_labels for lab in labels})


def _targets(split, index: int, label_mode: str, class_of: dict[str, int]) -> tuple[Tensor, Tensor]:
    boxes = torch.as_tensor(np.asarray(split.boxes[index], dtype=np.float32)).reshape(-1, 4)
    if label_mode == "object":
        labels = torch.ones(len(boxes), dtype=torch.int64)
    else:
        labels = torch.tensor([class_of.get(lab, 0) for lab in split.box_labels[index]], dtype=torch.int64)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (labels > 0)
    return boxes[keep], labels[keep]


def _image(split, index: int) -> Tensor:
    return (
        torch.from_numpy(np.ascontiguousarray(split.load_image(index))).permute(2, 0, 1).float().div_(255.0)
    )


def _check_split(split, what: str) -> None:
    if split.boxes is None:
        raise DataError(
            f"{what} split '{split.name}' has no object boxes: a detector can only be trained and "
            f"evaluated on a dataset that provides boxes (e.g. shapes)."
        )
    if len(split) == 0:
        raise DataError(f"{what} split '{split.name}' is empty.")


# -- checkpoints --------------------------------------------------------------------------------------
def save_detector(model: nn.Module, path: str | Path, **meta: Any) -> Path:
    """Write ``model``'s weights and ``meta`` (num_classes, label_names, min/max size ...) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        **meta,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_detector(path: str | Path, key: str = "model.encoder.detector_checkpoint") -> tuple[nn.Module, dict]:
    """The detector saved at ``path`` (eval mode) and its metadata; errors name ``key``."""
    hint = "Train one with `fusionbench detector train <config>` and give the file it writes."
    if not str(path).strip():
        raise ConfigError(f"{key} is empty: box_source 'detector' needs a detector checkpoint. {hint}")
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}: detector checkpoint '{path}' does not exist. {hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"{key}: '{path}' is not a readable detector checkpoint ({err}). {hint}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{key}: '{path}' is not a fusionbench detector checkpoint. {hint}")
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise ConfigError(
            f"{key}: '{path}' has checkpoint version {ckpt['version']}, newer than this fusionbench "
            f"reads ({CHECKPOINT_VERSION}). Upgrade fusionbench or retrain the detector."
        )
    model = build_detector(
        int(ckpt["num_classes"]),
        int(ckpt["min_size"]),
        int(ckpt["max_size"]),
        anchor_sizes=ckpt.get("anchor_sizes"),
        representation_size=int(ckpt.get("representation_size", 1024)),
        box_batch_size_per_image=int(ckpt.get("box_batch_size_per_image", 64)),
    )
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise ConfigError(
            f"{key}: '{path}' does not match the detector it describes: {err}. {hint}"
        ) from None
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model.eval(), meta


# -- evaluation ---------------------------------------------------------------------------------------
@torch.no_grad()
def detect(
    model: nn.Module,
    images: Tensor | list[Tensor],
    score_threshold: float = 0.0,
    max_boxes: int | None = None,
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per image ``(boxes [K, 4], scores [K], labels [K])``, score >= threshold, best first, top ``max_boxes``."""
    was_training = model.training
    model.eval()
    try:
        outputs = model([im.float() for im in images])
    finally:
        model.train(was_training)
    result = []
    for out in outputs:
        keep = out["scores"] >= score_threshold
        scores, order = out["scores"][keep].sort(descending=True)
        if max_boxes is not None:
            scores, order = scores[:max_boxes], order[:max_boxes]
        result.append((out["boxes"][keep][order], scores, out["labels"][keep][order]))
    return result


def evaluate_detector(
    model: nn.Module,
    split,
    *,
    score_threshold: float = 0.3,
    max_boxes: int = 10,
    batch_size: int = 16,
    iou: float = 0.5,
) -> dict[str, float]:
    """Class-agnostic recall/precision of ``split``'s boxes at IoU ``iou`` (greedy one-to-one matching).

    ``recall_iou50`` counts the detections ``regions`` would use (score >= ``score_threshold``,
    best ``max_boxes``); ``recall_iou50_any`` all detections (up to torchvision's 100 per image).
    """
    from torchvision.ops import box_iou

    _check_split(split, "evaluation")
    device = next(model.parameters()).device
    gt_total = hits = hits_any = n_det = 0
    for start in range(0, len(split), batch_size):
        idx = range(start, min(start + batch_size, len(split)))
        images = [_image(split, i).to(device) for i in idx]
        for i, (boxes, scores, _labels) in zip(idx, detect(model, images)):
            gt = torch.as_tensor(np.asarray(split.boxes[i], dtype=np.float32)).reshape(-1, 4).to(device)
            kept = boxes[scores >= score_threshold][:max_boxes]
            gt_total += len(gt)
            n_det += len(kept)
            if len(gt) and len(kept):
                hits += _greedy_matches(box_iou(gt, kept), iou)
            if len(gt) and len(boxes):
                hits_any += _greedy_matches(box_iou(gt, boxes), iou)
    return {
        "recall_iou50": hits / max(gt_total, 1),
        "recall_iou50_any": hits_any / max(gt_total, 1),
        "precision_iou50": hits / max(n_det, 1),
        "mean_detections": n_det / len(split),
    }


def _greedy_matches(ious: Tensor, threshold: float) -> int:
    """Number of ground-truth boxes matched one-to-one to a detection with IoU >= threshold."""
    ious = ious.clone()
    matched = 0
    while ious.numel():
        best = ious.max()
        if best < threshold:
            break
        g, d = divmod(int(ious.argmax()), ious.shape[1])
        ious[g, :] = -1
        ious[:, d] = -1
        matched += 1
    return matched


# -- training -----------------------------------------------------------------------------------------
def train_detector(
    dataset_split,
    *,
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 1e-3,
    out_path: str | Path,
    seed: int = 0,
    label_mode: str = "object",
    val_split=None,
    min_size: int | None = None,
    max_size: int | None = None,
    representation_size: int = 1024,
    box_batch_size_per_image: int = 64,
    weight_decay: float = 1e-4,
    hflip: bool = True,
    score_threshold: float = 0.3,
    max_boxes: int = 10,
    max_steps: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Train a Faster R-CNN on a split's boxes and save it for ``regions`` (``box_source: detector``).

    Trains ``fasterrcnn_mobilenet_v3_large_fpn`` from random weights with AdamW (``lr``, linear
    warmup over the first 5% of steps, then cosine decay; gradient norm clipped at 10) and random
    horizontal flips, then writes the checkpoint to ``out_path`` atomically (see the module
    docstring) and returns the metrics, which the checkpoint also stores.

    Args:
        dataset_split: a ``CaptionSplit`` with ``boxes`` (and ``box_labels`` for ``label_mode: label``).
        epochs, batch_size, lr, seed: the usual; ``seed`` fixes initialisation and batch order.
        out_path: where to write the checkpoint (the ``regions`` encoder's ``detector_checkpoint``).
        label_mode: ``object`` (one class-agnostic "object" class: boxes only) or ``label`` (one class
            per distinct box label, e.g. "large red circle" in shapes).
        val_split: optional held-out ``CaptionSplit``; its recall of ground-truth boxes at IoU 0.5 is
            reported (``val_recall_iou50``: the boxes ``regions`` would use at ``score_threshold``
            and ``max_boxes``; ``val_recall_iou50_any``: all detections).
        min_size, max_size: torchvision's resize bounds (default: the first image's size, no resize).
        representation_size, box_batch_size_per_image: box head width and RoIs per image.
        max_steps: stop after this many optimiser steps (smoke tests).
        device: default ``cuda`` when available, else ``cpu``.

    Cost: from random weights a detector needs many steps. On two busy CPU cores one epoch of 480
    64x64 ``shapes`` images (batch 16, 30 steps) took about 3-4 minutes, and after 4 epochs the
    loss had only fallen from 0.76 to 0.65 with no box found at IoU 0.5 above a 0.3 score, so
    train on a GPU and for many more epochs (check ``val_recall_iou50``) before relying on it.

    Returns:
        ``{"final_loss", "first_epoch_loss", "epochs", "steps", "train_images", "num_classes",
        "label_names", "seconds", "device", "checkpoint"}``, the last epoch's mean of each loss term
        (``final_loss_objectness``, ``final_loss_rpn_box_reg``, ``final_loss_classifier``,
        ``final_loss_box_reg``) and the ``val_*`` metrics when ``val_split`` is given.
    """
    if label_mode not in LABEL_MODES:
        raise ConfigError(f"label_mode must be one of {', '.join(LABEL_MODES)}, got {label_mode!r}.")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ConfigError(
            f"need epochs >= 1, batch_size >= 1 and lr > 0, got epochs={epochs}, "
            f"batch_size={batch_size}, lr={lr}."
        )
    _check_split(dataset_split, "training")
    if val_split is not None:
        _check_split(val_split, "validation")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    height, width = dataset_split.load_image(0).shape[:2]
    min_size = int(min_size or min(height, width))
    max_size = int(max_size or max(min_size, height, width))
    names = _label_names(dataset_split, label_mode)
    class_of = {name: i + 1 for i, name in enumerate(names)}
    num_classes = len(names) + 1

    torch.manual_seed(seed)
    model = build_detector(
        num_classes,
        min_size,
        max_size,
        representation_size=representation_size,
        box_batch_size_per_image=box_batch_size_per_image,
    ).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(dataset_split) / batch_size)
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    warmup = max(1, int(0.05 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))
        ),
    )
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    step = 0
    epoch_losses: list[float] = []
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(dataset_split), generator=gen).tolist()
        running, count = 0.0, 0
        parts: dict[str, float] = {}
        for b in range(0, len(order), batch_size):
            images, targets = [], []
            for i in order[b : b + batch_size]:
                img = _image(dataset_split, i)
                boxes, labels = _targets(dataset_split, i, label_mode, class_of)
                if hflip and torch.rand((), generator=gen) < 0.5:
                    img = img.flip(-1)
                    boxes = torch.stack(
                        [img.shape[-1] - boxes[:, 2], boxes[:, 1], img.shape[-1] - boxes[:, 0], boxes[:, 3]],
                        1,
                    )
                images.append(img.to(device))
                targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
            losses = model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"detector loss is {loss.item()} at step {step}; lower lr (now {lr})."
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            sched.step()
            running += float(loss.detach()) * len(images)
            for name, value in losses.items():
                parts[name] = parts.get(name, 0.0) + float(value.detach()) * len(images)
            count += len(images)
            step += 1
            if step >= total:
                break
        epoch_losses.append(running / max(count, 1))
        log.info(
            "detector epoch %d/%d: loss %.4f (%.0fs)",
            epoch + 1,
            epochs,
            epoch_losses[-1],
            time.perf_counter() - start,
        )
        if step >= total:
            break
    train_seconds = time.perf_counter() - start
    model.eval()
    metrics: dict[str, Any] = {
        "final_loss": epoch_losses[-1],
        "first_epoch_loss": epoch_losses[0],
        **{f"final_{name}": value / max(count, 1) for name, value in parts.items()},
        "epochs": len(epoch_losses),
        "steps": step,
        "train_images": len(dataset_split),
        "num_classes": num_classes,
        "label_names": names,
        "seconds": train_seconds,
        "device": str(device),
    }
    if val_split is not None:
        val = evaluate_detector(
            model, val_split, score_threshold=score_threshold, max_boxes=max_boxes, batch_size=batch_size
        )
        metrics.update({f"val_{k}": v for k, v in val.items()})
    out = save_detector(
        model,
        out_path,
        num_classes=num_classes,
        label_names=names,
        label_mode=label_mode,
        min_size=min_size,
        max_size=max_size,
        anchor_sizes=list(default_anchor_sizes(min_size)),
        representation_size=representation_size,
        box_batch_size_per_image=box_batch_size_per_image,
        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
    )
    metrics["checkpoint"] = str(out)
    return metrics
