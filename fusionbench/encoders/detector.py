"""An object detector for datasets without boxes: torchvision's Faster R-CNN, trained on box labels.

The ``regions`` encoder pools features over object boxes. With ``box_source: detector`` the boxes
come from a Faster R-CNN (Ren et al., 2015: a region proposal network and RoI box heads, here
``torchvision.models.detection.FasterRCNN``) on a MobileNetV3-Large feature pyramid (Lin et al.,
2017), trained here from random initialisation (no download) on a split's ``boxes``/``box_labels``,
like the Visual Genome detector of Bottom-Up and Top-Down attention (Anderson et al., 2018), only
much smaller.

Architecture (``ARCHITECTURE``: ``mobilenet_v3_large_fpn_stride4``)
    torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` is made for 320-800 px photos: its FPN
    reads MobileNetV3's two last stages, both at stride 32, so a 64x64 ``shapes`` image becomes a
    2x2 (and a 1x1) feature map and its 9-27 px objects fall between the anchor centres. Here the
    FPN reads the blocks that end at strides 4, 8 and 16 (16x16, 8x8 and 4x4 at 64 px, plus
    torchvision's max-pool level at 32); the deeper MobileNetV3 blocks are not built. One anchor
    size per level (``min_size`` / 8, / 4, / 2 and 1: 8, 16, 32 and 64 px at 64) with aspect ratios
    0.5, 1 and 2, as in the FPN paper; a 64-channel FPN, 4x4 RoIAlign into a 256-wide box head, fewer RPN
    proposals (600 / 300 before and after NMS in training, 300 / 100 at test) keep it fast on a CPU
    (about 0.6 M parameters). ``box_batch_size_per_image`` = 64 sampled RoIs per image (Fast
    R-CNN's 128 per two images) instead of torchvision's 512. Checkpoints written before this
    architecture (``LEGACY_ARCHITECTURE``, torchvision's model with five anchor sizes on every
    level) still load.

Small images
    torchvision's detection transform rescales every image so that its short side is ``min_size``
    (default 800) and its long side at most ``max_size``; ``min_size = max_size =`` the training
    image size (64 for ``shapes``) keeps the images as they are, and at inference rescales any
    other image (a photo of a ``folder`` dataset) to the scale the detector learnt; boxes come
    back in the input image's pixels.

Batch-norm statistics ("precise BN")
    MobileNetV3's batch norms update their running statistics with momentum 0.01: after a few
    hundred steps from random weights those averages are still far from the batch statistics the
    network trained with, and in eval mode the detector finds nothing (this, more than anything,
    kept validation recall at 0.008). After training, the running statistics are recomputed as
    exact averages over up to ``bn_images`` training images with the final weights
    (``torch.optim.swa_utils.update_bn``; Wu & Johnson, 2021, "Rethinking 'Batch' in BatchNorm").

Evaluation
    ``evaluate_detector`` scores a split with torchmetrics' ``MeanAveragePrecision`` (the COCO
    protocol through pycocotools, class-agnostic): ``map_50``, ``map`` (IoU .5:.95), ``map_75``,
    ``recall_iou50_top{k}`` (recall at IoU 0.5 with the best ``k`` = 1, 10, 36, 100 detections),
    and the recall/precision of the boxes ``regions`` would pool over (``score_threshold``,
    ``max_boxes``).

Checkpoint
    ``train_detector`` writes (atomically) a ``torch.save`` dict that ``load_detector`` reads with
    ``weights_only=True``: ``format``, ``version``, ``architecture``, ``state_dict``,
    ``num_classes`` (background included), ``label_names`` (class id ``i + 1`` is
    ``label_names[i]``), ``label_mode``, the layer settings (``min_size``, ``max_size``,
    ``anchor_sizes``, ``fpn_channels``, ``representation_size``, ``pool_size``,
    ``box_batch_size_per_image``) and the ``metrics`` (training and, per evaluated split,
    ``val_*``/``test_*``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fusionbench.errors import ConfigError, DataError
from fusionbench.io import atomic_write

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "fusionbench-detector"
#: 2: ``architecture`` and its layer settings are stored (version 1 had one architecture).
CHECKPOINT_VERSION = 2
#: What ``build_detector`` builds by default and ``train_detector`` trains.
ARCHITECTURE = "mobilenet_v3_large_fpn_stride4"
#: torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` as is: version-1 checkpoints (no ``architecture``).
LEGACY_ARCHITECTURE = "fasterrcnn_mobilenet_v3_large_fpn"
ARCHITECTURES: tuple[str, ...] = (ARCHITECTURE, LEGACY_ARCHITECTURE)
#: Anchor sizes as fractions of ``min_size``: one per pyramid level (strides 4, 8, 16, 32).
ANCHOR_FRACTIONS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
#: The legacy architecture's five sizes on every level (torchvision: 32..512 at 800).
LEGACY_ANCHOR_FRACTIONS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)
ASPECT_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)
LABEL_MODES = ("object", "label")
#: ``k`` of ``recall_iou50_top{k}``; 36 is the region count of the Bottom-Up Top-Down features.
RECALL_AT: tuple[int, ...] = (1, 10, 36, 100)
#: MobileNetV3-Large blocks whose outputs feed the FPN (the first blocks at strides 4, 8 and 16).
_STRIDE4_BLOCKS: tuple[int, ...] = (2, 4, 7)
#: RPN proposals kept before/after NMS: a 64-px image holds a handful of objects.
_STRIDE4_RPN = {
    "rpn_pre_nms_top_n_train": 600,
    "rpn_post_nms_top_n_train": 300,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 100,
}


def default_anchor_sizes(min_size: int, architecture: str = ARCHITECTURE) -> tuple[int, ...]:
    """The anchor sizes (pixels of the detector's input) scaled to ``min_size``."""
    fractions = LEGACY_ANCHOR_FRACTIONS if architecture == LEGACY_ARCHITECTURE else ANCHOR_FRACTIONS
    return tuple(max(2, round(f * min_size)) for f in fractions)


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown detector architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")


def build_detector(
    num_classes: int,
    min_size: int,
    max_size: int,
    *,
    architecture: str = ARCHITECTURE,
    anchor_sizes: Sequence[int] | None = None,
    fpn_channels: int = 64,
    representation_size: int | None = None,
    pool_size: int = 4,
    box_batch_size_per_image: int = 64,
) -> nn.Module:
    """A randomly initialised torchvision ``FasterRCNN`` for ``num_classes`` classes.

    The returned model carries ``detector_spec``, the keyword arguments that rebuild it, which
    ``save_detector`` stores in the checkpoint.

    Args:
        num_classes: classes including background (2 for a class-agnostic "object" detector).
        min_size, max_size: torchvision's resize bounds; the image size keeps small images as is.
        architecture: ``ARCHITECTURE`` (see the module docstring) or ``LEGACY_ARCHITECTURE``.
        anchor_sizes: pixels; one per pyramid level (4) for ``ARCHITECTURE``, five shared by every
            level for the legacy one (default: ``default_anchor_sizes(min_size, architecture)``).
        fpn_channels: FPN width (``ARCHITECTURE`` only; the legacy one has torchvision's 256).
        representation_size: width of the box head's two-layer MLP (default 256; legacy 1024).
        pool_size: RoIAlign output size of the box head (``ARCHITECTURE`` only; legacy 7): 4x4
            is enough for objects a few cells wide at stride 4, and cheaper than torchvision's 7x7.
        box_batch_size_per_image: RoIs sampled per image to train the box head.
    """
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    _check_architecture(architecture)
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background class and must be >= 2, got {num_classes}")
    if min_size < 1 or max_size < min_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}")
    legacy = architecture == LEGACY_ARCHITECTURE
    sizes = tuple(int(s) for s in (anchor_sizes or default_anchor_sizes(min_size, architecture)))
    if len(sizes) != len(default_anchor_sizes(min_size, architecture)):
        want = "5 sizes (the RPN head predicts 15 anchors)" if legacy else "4 sizes, one per pyramid level"
        raise ValueError(f"anchor_sizes of {architecture} must list {want}, got {sizes}")
    representation_size = int(representation_size or (1024 if legacy else 256))
    spec = {
        "architecture": architecture,
        "num_classes": int(num_classes),
        "min_size": int(min_size),
        "max_size": int(max_size),
        "anchor_sizes": list(sizes),
        "representation_size": representation_size,
        "box_batch_size_per_image": int(box_batch_size_per_image),
    }
    if legacy:
        model = _legacy_detector(num_classes, min_size, max_size, sizes, box_batch_size_per_image)
        if representation_size != 1024:
            in_features = model.roi_heads.box_head.fc6.in_features
            model.roi_heads.box_head = TwoMLPHead(in_features, representation_size)
            model.roi_heads.box_predictor = FastRCNNPredictor(representation_size, num_classes)
    else:
        from torchvision.models.detection import FasterRCNN
        from torchvision.ops import MultiScaleRoIAlign

        backbone = _stride4_backbone(fpn_channels)
        model = FasterRCNN(
            backbone,
            num_classes=None,
            min_size=min_size,
            max_size=max_size,
            rpn_anchor_generator=AnchorGenerator(tuple((s,) for s in sizes), (ASPECT_RATIOS,) * len(sizes)),
            box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], output_size=pool_size, sampling_ratio=2),
            box_head=TwoMLPHead(fpn_channels * pool_size**2, representation_size),
            box_predictor=FastRCNNPredictor(representation_size, num_classes),
            box_batch_size_per_image=box_batch_size_per_image,
            **_STRIDE4_RPN,
        )
        spec.update(fpn_channels=int(fpn_channels), pool_size=int(pool_size))
    model.detector_spec = spec
    return model


def _stride4_backbone(fpn_channels: int) -> nn.Module:
    """MobileNetV3-Large up to stride 16 with an FPN over its stride-4/8/16 blocks (+ pool level)."""
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    features = mobilenet_v3_large(weights=None).features
    return_layers = {str(block): str(level) for level, block in enumerate(_STRIDE4_BLOCKS)}
    in_channels = [features[block].out_channels for block in _STRIDE4_BLOCKS]
    # IntermediateLayerGetter keeps the blocks up to the last returned one: the rest is not built.
    return BackboneWithFPN(
        features, return_layers, in_channels, fpn_channels, extra_blocks=LastLevelMaxPool()
    )


def _legacy_detector(
    num_classes: int, min_size: int, max_size: int, sizes: tuple[int, ...], box_batch_size_per_image: int
) -> nn.Module:
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    model = fasterrcnn_mobilenet_v3_large_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes,
        min_size=min_size,
        max_size=max_size,
        box_batch_size_per_image=box_batch_size_per_image,
    )
    levels = len(model.rpn.anchor_generator.sizes)
    model.rpn.anchor_generator = AnchorGenerator((sizes,) * levels, (ASPECT_RATIOS,) * levels)
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
    """Write ``model``'s weights, its ``detector_spec`` and ``meta`` (label_names, metrics ...)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        **getattr(model, "detector_spec", {}),
        **meta,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


def describe_detector(meta: dict[str, Any]) -> str:
    """``architecture 'x', classes ['object'] (+ background), input 64-64 px``: for messages."""
    labels = meta.get("label_names")
    classes = f"classes {list(labels)}" if labels is not None else f"{meta.get('num_classes', '?')} classes"
    return (
        f"architecture '{meta.get('architecture', LEGACY_ARCHITECTURE)}', {classes} (+ background), "
        f"input {meta.get('min_size', '?')}-{meta.get('max_size', '?')} px"
    )


def check_compatible(expected: dict[str, Any], found: dict[str, Any], what: str) -> None:
    """Raise a ``ConfigError`` naming both when ``found`` is not the detector ``expected`` describes.

    Compares what decides a detector's weights and outputs: the architecture and its layer
    settings, and the label set. ``what`` names the checkpoint (e.g. ``key: 'file.pt'``).
    """
    keys = ("architecture", "label_names", "num_classes", "anchor_sizes", "fpn_channels")
    keys += ("representation_size", "pool_size", "min_size", "max_size")
    default = {"architecture": LEGACY_ARCHITECTURE}
    differ = [
        k for k in keys if k in expected and _plain(expected[k]) != _plain(found.get(k, default.get(k)))
    ]
    if differ:
        raise ConfigError(
            f"{what} is a detector with {describe_detector(found)}, but {describe_detector(expected)} "
            f"is expected (different {', '.join(differ)}). Give the detector checkpoint the model was "
            f"built with, or retrain with `fusionbench detector train <config>`."
        )


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def load_detector(
    path: str | Path,
    key: str = "model.encoder.detector_checkpoint",
    *,
    expect: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict]:
    """The detector saved at ``path`` (eval mode) and its metadata; errors name ``key``.

    ``expect``: metadata of the detector the caller was built with (e.g. a captioner checkpoint's
    stored detector settings); a checkpoint of another architecture or label set is refused with
    an error naming both (``check_compatible``).
    """
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
    architecture = str(ckpt.get("architecture") or _architecture_of(ckpt.get("state_dict") or {}))
    if architecture not in ARCHITECTURES:
        raise ConfigError(
            f"{key}: '{path}' is a detector of architecture '{architecture}', which this fusionbench "
            f"does not build (it builds: {', '.join(ARCHITECTURES)}). {hint}"
        )
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    meta["architecture"] = architecture
    if expect is not None:
        check_compatible(expect, meta, f"{key}: '{path}'")
    layers = ("anchor_sizes", "fpn_channels", "representation_size", "pool_size", "box_batch_size_per_image")
    model = build_detector(
        int(ckpt["num_classes"]),
        int(ckpt["min_size"]),
        int(ckpt["max_size"]),
        architecture=architecture,
        **{k: ckpt[k] for k in layers if ckpt.get(k) is not None},
    )
    problem = _state_mismatch(model.state_dict(), ckpt.get("state_dict") or {})
    if problem:
        raise ConfigError(
            f"{key}: '{path}' describes a detector with {describe_detector(meta)}, but its weights "
            f"do not fit that detector: {problem}. The file was written by another program or edited; "
            f"{hint[0].lower()}{hint[1:]}"
        )
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), meta


def _architecture_of(state: dict[str, Tensor]) -> str:
    """The architecture of weights stored without its name (version 1, or rebuilt from a captioner)."""
    return ARCHITECTURE if "backbone.fpn.inner_blocks.2.0.weight" in state else LEGACY_ARCHITECTURE


def _state_mismatch(want: dict[str, Tensor], got: dict[str, Tensor]) -> str:
    """'' when ``got`` loads into a model whose state is ``want``, else what differs (both named)."""
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} expected tensors missing (e.g. '{missing[0]}')")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown tensors (e.g. '{unexpected[0]}')")
        return " and ".join(parts)
    for name, tensor in want.items():
        if tuple(got[name].shape) != tuple(tensor.shape):
            what = (
                f"'{name}' has shape {tuple(got[name].shape)}, the described detector {tuple(tensor.shape)}"
            )
            if name.endswith("cls_score.weight"):
                what += f" (weights for {got[name].shape[0] - 1} classes, metadata for {tensor.shape[0] - 1})"
            return what
    return ""


# -- inference ----------------------------------------------------------------------------------------
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


# -- evaluation ---------------------------------------------------------------------------------------
def evaluate_detector(
    model: nn.Module,
    split,
    *,
    score_threshold: float = 0.3,
    max_boxes: int = 10,
    batch_size: int = 16,
) -> dict[str, float]:
    """COCO-style detection quality of ``model`` on ``split``'s boxes, class-agnostic.

    torchmetrics' ``MeanAveragePrecision`` over all detections (torchvision keeps up to 100 per
    image): ``map_50``, ``map`` (IoU .5:.95), ``map_75`` and ``recall_iou50_top{k}`` for ``k`` in
    ``RECALL_AT``. The boxes ``regions`` would pool over (score >= ``score_threshold``, the
    ``max_boxes`` best): ``recall_iou50``, ``precision_iou50`` (matched / kept, COCO's one-to-one
    matching) and ``mean_detections`` per image. A detector trained on labels is scored as one
    "object" class, the way ``regions`` uses its boxes.
    """
    from torchmetrics.detection import MeanAveragePrecision

    _check_split(split, "evaluation")
    device = next(model.parameters()).device
    # pycocotools tabulates recall at three cut-offs (the last, 100, also gives the mAP): one
    # evaluation per group of cut-offs, plus one of the boxes regions keeps.
    cutoffs = [(1, 10, 100), (1, 36, 100)]
    every = [
        MeanAveragePrecision(iou_type="bbox", max_detection_thresholds=list(c), extended_summary=True)
        for c in cutoffs
    ]
    used = MeanAveragePrecision(iou_type="bbox", extended_summary=True)
    n_gt = n_kept = 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(split), batch_size):
            idx = range(start, min(start + batch_size, len(split)))
            with torch.no_grad():
                outputs = model([_image(split, i).to(device) for i in idx])
            preds, kept, targets = [], [], []
            for i, out in zip(idx, outputs):
                gt = torch.as_tensor(np.asarray(split.boxes[i], dtype=np.float32)).reshape(-1, 4)
                targets.append({"boxes": gt, "labels": torch.ones(len(gt), dtype=torch.int64)})
                boxes, scores, _ = select_boxes({k: v.cpu() for k, v in out.items()})
                ones = torch.ones(len(scores), dtype=torch.int64)
                preds.append({"boxes": boxes, "scores": scores, "labels": ones})
                k = int((scores >= score_threshold).sum().clamp(max=max_boxes))
                kept.append({"boxes": boxes[:k], "scores": scores[:k], "labels": ones[:k]})
                n_gt += len(gt)
                n_kept += k
            for m in every:
                m.update(preds, targets)
            used.update(kept, targets)
    finally:
        model.train(was_training)
    results = [m.compute() for m in every]
    full = results[0]
    out = {"map_50": float(full["map_50"]), "map": float(full["map"]), "map_75": float(full["map_75"])}
    for k in RECALL_AT:
        group = next(g for g, c in enumerate(cutoffs) if k in c)
        out[f"recall_iou50_top{k}"] = _recall_iou50(results[group], cutoffs[group].index(k))
    recall_used = _recall_iou50(used.compute(), -1)
    out["recall_iou50"] = recall_used
    out["precision_iou50"] = recall_used * n_gt / n_kept if n_kept else 0.0
    out["mean_detections"] = n_kept / len(split)
    return out


def _recall_iou50(result: dict[str, Tensor], cutoff: int) -> float:
    """COCOeval's recall at IoU 0.5, all areas, cut-off index ``cutoff`` (0 without ground truth)."""
    return max(float(result["recall"][0, 0, 0, cutoff]), 0.0)


# -- training -----------------------------------------------------------------------------------------
def recalibrate_batch_norm(model: nn.Module, split, *, max_images: int = 1024, batch_size: int = 32) -> int:
    """Recompute the backbone's batch-norm running statistics over ``split``'s first images.

    Exact averages with the current weights (``torch.optim.swa_utils.update_bn``), on the images
    as the detector's transform feeds them; see "Batch-norm statistics" in the module docstring.
    Returns the number of images used.
    """
    from torch.optim.swa_utils import update_bn

    device = next(model.parameters()).device
    n = min(len(split), max_images)
    was_training = model.training
    model.eval()  # the transform has no train/eval difference; only the backbone runs in train mode
    with torch.no_grad():
        batches = (
            model.transform([_image(split, i).to(device) for i in range(s, min(s + batch_size, n))])[
                0
            ].tensors
            for s in range(0, n, batch_size)
        )
        update_bn(batches, model.backbone)
    model.train(was_training)
    return n


def train_detector(
    dataset_split,
    *,
    epochs: int = 3,
    batch_size: int = 16,
    lr: float = 2e-3,
    out_path: str | Path,
    seed: int = 0,
    label_mode: str = "object",
    val_split=None,
    test_split=None,
    min_size: int | None = None,
    max_size: int | None = None,
    architecture: str = ARCHITECTURE,
    fpn_channels: int = 64,
    representation_size: int | None = None,
    pool_size: int = 4,
    box_batch_size_per_image: int = 64,
    weight_decay: float = 1e-4,
    hflip: bool = True,
    bn_images: int = 1024,
    score_threshold: float = 0.3,
    max_boxes: int = 10,
    max_steps: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Train a Faster R-CNN on a split's boxes and save it for ``regions`` (``box_source: detector``).

    Trains ``build_detector(architecture=...)`` from random weights with AdamW (``lr``, linear
    warmup over the first 5% of steps, then cosine decay; gradient norm clipped at 10) and random
    horizontal flips, recomputes the batch-norm statistics (``recalibrate_batch_norm`` over up to
    ``bn_images`` training images), evaluates ``val_split`` and ``test_split``
    (``evaluate_detector``), then writes the checkpoint to ``out_path`` atomically (see the module
    docstring) and returns the metrics, which the checkpoint also stores.

    Args:
        dataset_split: a ``CaptionSplit`` with ``boxes`` (and ``box_labels`` for ``label_mode: label``).
        epochs, batch_size, lr, seed: the usual; ``seed`` fixes initialisation and batch order.
        out_path: where to write the checkpoint (the ``regions`` encoder's ``detector_checkpoint``).
        label_mode: ``object`` (one class-agnostic "object" class: boxes only) or ``label`` (one class
            per distinct box label, e.g. "large red circle" in shapes).
        val_split, test_split: optional held-out ``CaptionSplit``s with boxes, reported as ``val_*``
            and ``test_*`` (``map_50``, ``map``, ``recall_iou50_top36`` ..., and ``recall_iou50`` /
            ``precision_iou50`` / ``mean_detections`` of the boxes ``regions`` would use at
            ``score_threshold`` and ``max_boxes``).
        min_size, max_size: torchvision's resize bounds (default: the first image's size, no resize).
        architecture, fpn_channels, representation_size, pool_size, box_batch_size_per_image:
            layer settings of ``build_detector``.
        max_steps: stop after this many optimiser steps (smoke tests).
        device: default ``cuda`` when available, else ``cpu``.

    Cost: on the default ``shapes`` train split (4,000 64x64 images, batch 16, 250 steps an epoch)
    the default 3 epochs (750 steps) took 491 s on one thread of a busy 2-core machine and reached,
    on ``test``, recall 1.00 at IoU 0.5 (top 36), mAP@0.5 1.00 and mAP@[.5:.95] 0.95
    (``benchmarks/detector.py``, ``benchmarks/results/detector.json``). 126 steps on 1,000 images
    already give mAP@0.5 0.99 on ``val``.

    Returns:
        ``{"final_loss", "first_epoch_loss", "epochs", "steps", "train_images", "num_classes",
        "label_names", "architecture", "seconds", "device", "checkpoint"}``, the last epoch's mean of
        each loss term (``final_loss_objectness``, ``final_loss_rpn_box_reg``,
        ``final_loss_classifier``, ``final_loss_box_reg``) and the ``val_*``/``test_*`` metrics.
    """
    if label_mode not in LABEL_MODES:
        raise ConfigError(f"label_mode must be one of {', '.join(LABEL_MODES)}, got {label_mode!r}.")
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}.")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ConfigError(
            f"need epochs >= 1, batch_size >= 1 and lr > 0, got epochs={epochs}, "
            f"batch_size={batch_size}, lr={lr}."
        )
    _check_split(dataset_split, "training")
    for split, what in ((val_split, "validation"), (test_split, "test")):
        if split is not None:
            _check_split(split, what)
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
        architecture=architecture,
        fpn_channels=fpn_channels,
        representation_size=representation_size,
        pool_size=pool_size,
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
    bn = recalibrate_batch_norm(model, dataset_split, max_images=bn_images) if bn_images > 0 else 0
    train_seconds = time.perf_counter() - start
    model.eval()
    metrics: dict[str, Any] = {
        "final_loss": epoch_losses[-1],
        "first_epoch_loss": epoch_losses[0],
        **{f"final_{name}": value / max(count, 1) for name, value in parts.items()},
        "epochs": len(epoch_losses),
        "steps": step,
        "batch_size": batch_size,
        "lr": lr,
        "train_images": len(dataset_split),
        "bn_images": bn,
        "score_threshold": score_threshold,
        "max_boxes": max_boxes,
        "num_classes": num_classes,
        "label_names": names,
        "architecture": architecture,
        "seconds": train_seconds,
        "device": str(device),
    }
    for prefix, split in (("val", val_split), ("test", test_split)):
        if split is not None:
            scores = evaluate_detector(
                model, split, score_threshold=score_threshold, max_boxes=max_boxes, batch_size=batch_size
            )
            metrics.update({f"{prefix}_{k}": v for k, v in scores.items()})
            metrics[f"{prefix}_split"] = split.name
    out = save_detector(
        model,
        out_path,
        label_names=names,
        label_mode=label_mode,
        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
    )
    metrics["checkpoint"] = str(out)
    return metrics


#: ``(column header, metric suffix)`` of a detection-quality table (shown x 100, as in papers).
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mAP@0.5", "map_50"),
    ("mAP@[.5:.95]", "map"),
    ("R@0.5 top-1", "recall_iou50_top1"),
    ("R@0.5 top-10", "recall_iou50_top10"),
    ("R@0.5 top-36", "recall_iou50_top36"),
    ("R@0.5 top-100", "recall_iou50_top100"),
    ("kept R@0.5", "recall_iou50"),
    ("kept P@0.5", "precision_iou50"),
)


def metrics_rows(metrics: dict[str, Any], prefixes: Sequence[str] = ("val", "test")) -> list[list[str]]:
    """Rows ``[split, value x 100 per TABLE_COLUMNS..., boxes per image]`` of the evaluated splits."""
    rows = []
    for prefix in prefixes:
        if f"{prefix}_map_50" not in metrics:
            continue
        name = str(metrics.get(f"{prefix}_split", prefix))
        values = [f"{100 * float(metrics[f'{prefix}_{key}']):.1f}" for _, key in TABLE_COLUMNS]
        rows.append([name, *values, f"{float(metrics[f'{prefix}_mean_detections']):.2f}"])
    return rows


def metrics_table(metrics: dict[str, Any], title: str):
    """The detection-quality table (a rich ``Table``) that ``detector train`` and the benchmark print."""
    from rich.table import Table

    table = Table(title=title)
    for header in ["split", *(h for h, _ in TABLE_COLUMNS), "kept/image"]:
        table.add_column(header, justify="left" if header == "split" else "right")
    for row in metrics_rows(metrics):
        table.add_row(*row)
    return table
