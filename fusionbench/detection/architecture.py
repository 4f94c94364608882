"""The detector's network: torchvision's Faster R-CNN on a stride-4 MobileNetV3-Large FPN (see the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

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
        architecture: ``ARCHITECTURE`` (see the package docstring) or ``LEGACY_ARCHITECTURE``.
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
