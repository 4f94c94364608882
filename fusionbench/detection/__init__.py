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

from fusionbench.detection.architecture import (
    ARCHITECTURE,
    ARCHITECTURES,
    LEGACY_ARCHITECTURE,
    build_detector,
    default_anchor_sizes,
)
from fusionbench.detection.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    check_compatible,
    describe_detector,
    load_detector,
    save_detector,
)
from fusionbench.detection.evaluation import RECALL_AT, evaluate_detector, metrics_rows, metrics_table
from fusionbench.detection.inference import configure_inference, detect, select_boxes
from fusionbench.detection.training import recalibrate_batch_norm, train_detector

__all__ = [
    "ARCHITECTURE",
    "ARCHITECTURES",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "LEGACY_ARCHITECTURE",
    "RECALL_AT",
    "build_detector",
    "check_compatible",
    "configure_inference",
    "default_anchor_sizes",
    "describe_detector",
    "detect",
    "evaluate_detector",
    "load_detector",
    "metrics_rows",
    "metrics_table",
    "recalibrate_batch_norm",
    "save_detector",
    "select_boxes",
    "train_detector",
]
