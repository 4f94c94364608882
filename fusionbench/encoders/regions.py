"""R-CNN region features: a CNN feature map pooled over object boxes, one visual token per region.

Follows Bottom-Up and Top-Down attention (Anderson et al., 2018): the image is a set of object
regions, each a feature vector pooled from a CNN feature map over the region's box, and the
caption decoder attends over regions instead of grid cells. Each region is pooled with
RoIAlign (He et al., 2017; ``torchvision.ops.roi_align``, ``aligned=True``) to a
``pool_size`` x ``pool_size`` grid at the backbone's ``feature_stride`` and averaged to one
C-dim vector (Anderson et al. mean-pool their 2048-d ResNet box features). A linear embedding of
the box geometry (x1, y1, x2, y2, w, h normalised by the image size, and the relative area) is
added, so a token knows where its region is (Anderson et al. append the same kind of spatial
features to their region features) and "left of"/"above" remain learnable.

Where boxes come from (``box_source``)
    ``dataset``: the dataset's object boxes as given by the batch (``shapes`` has them), the first
    ``max_boxes`` of each image. ``precomputed``: features and boxes read from disk per image
    (bottom-up-attention style ``.npz`` files or one HDF5 file, ``fusionbench.features.store``;
    written by any tool or by ``fusionbench extract-features``) from ``features``; the top
    ``max_boxes`` by detection score are kept (``add_global_box`` does not apply: files hold the
    regions they hold). Such a model has no backbone and cannot encode images itself.
    ``detector``: a Faster R-CNN trained with
    ``fusionbench detector train`` (``fusionbench.detection``), loaded from
    ``detector_checkpoint`` and run frozen, in eval mode and without gradients, on any image
    (also one of a dataset without boxes, such as ``folder``). Its detections are filtered like
    Bottom-Up Top-Down's: score >= ``score_threshold`` (0.3), width and height >= ``min_box_size``
    (2 px), class-agnostic NMS at IoU ``nms_threshold`` (0.5; also torchvision's per-class NMS),
    then the ``max_boxes`` best (10). The detector is a submodule, so it moves with the model and
    its weights are part of a captioner checkpoint.

Regions per image
    With ``add_global_box`` a whole-image region comes first, so the decoder can always attend to
    the scene as a whole; an image left with no region (no boxes, no detection above the
    threshold) gets the whole-image region regardless, so a mask row is never all False. Boxes
    are clipped to the image, empty ones dropped. Images have different numbers of regions: tokens
    are padded to the batch maximum with zeros, ``mask`` is False on padding, ``boxes`` gives each
    token's box (zeros on padding) and ``pooled`` is the mean over an image's real regions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from fusionbench.checks import (
    NonNegativeFloat,
    Note,
    PositiveInt,
    Probability,
    Range,
    check_config,
    full_key,
    literal_choices,
)
from fusionbench.encoders.backbone import backbone_rebuild_state, feature_map_backbone
from fusionbench.encoders.base import Encoder, RawFeatures, VisualFeatures, masked_mean
from fusionbench.errors import ConfigError
from fusionbench.registry import ENCODERS

KEY = "model.encoder"
BoxSource = Literal["dataset", "detector", "precomputed"]
BOX_SOURCES: tuple[str, ...] = literal_choices(BoxSource)
_BOX_SOURCE_NOTE = Note(
    f"'dataset' uses the dataset's object boxes, 'detector' a trained detector's, "
    f"'precomputed' region features read from {KEY}.features"
)
GEOMETRY_FEATURES = 7


def box_geometry(boxes: Tensor, image_size: Tensor) -> Tensor:
    """``[..., 7]``: x1, y1, x2, y2, w, h normalised by the image size, and area / image area.

    ``boxes`` ``[..., 4]``; ``image_size`` ``[..., 2]`` (height, width), broadcast against them.
    """
    size = image_size.to(boxes.dtype)
    scale = torch.stack([size[..., 1], size[..., 0], size[..., 1], size[..., 0]], dim=-1)
    xyxy = boxes / scale
    wh = xyxy[..., 2:] - xyxy[..., :2]
    return torch.cat([xyxy, wh, wh[..., :1] * wh[..., 1:]], dim=-1)


def _detector_from_settings(meta: dict[str, Any]) -> nn.Module:
    """A randomly initialised detector with the settings a detector checkpoint records, as
    ``load_detector`` builds it before loading the weights (which come from the captioner's)."""
    from fusionbench.detection import build_detector

    return build_detector(
        int(meta["num_classes"]),
        int(meta["min_size"]),
        int(meta["max_size"]),
        anchor_sizes=meta.get("anchor_sizes"),
        representation_size=int(meta.get("representation_size", 1024)),
        box_batch_size_per_image=int(meta.get("box_batch_size_per_image", 64)),
    ).eval()


@ENCODERS.register("regions")
class RegionEncoder(Encoder):
    """RoIAlign features over object or detector boxes (Bottom-Up Top-Down, Anderson et al. 2018)."""

    @dataclass
    class Config:
        model_name: str = "resnet10t"
        pretrained: Any = False
        freeze: bool = False
        feature_stride: PositiveInt = 8  # one of the backbone's strides (checked against it when built)
        pool_size: PositiveInt = 2
        sampling_ratio: Annotated[int, Range(ge=-1, note="0 or -1: adaptive, as in RoIAlign")] = 2
        box_source: Annotated[BoxSource, _BOX_SOURCE_NOTE] = "dataset"
        max_boxes: PositiveInt = 10
        add_global_box: bool = True
        geometry_embedding: bool = True
        detector_checkpoint: str = ""
        score_threshold: Probability = 0.3
        # box_source: detector — IoU of the class-agnostic NMS over the detections
        nms_threshold: Annotated[
            float,
            Range(gt=0, le=1, note="the IoU above which a weaker detection of the same object is dropped"),
        ] = 0.5
        # box_source: detector — detections narrower or lower than this many pixels are dropped
        min_box_size: NonNegativeFloat = 2.0
        features: str = ""  # box_source: precomputed — a folder of .npz files or an .h5 file

        def check(self, key: str) -> None:
            if self.box_source == "detector" and not str(self.detector_checkpoint).strip():
                raise ConfigError(
                    f"{full_key(key, 'detector_checkpoint')} is empty, but {full_key(key, 'box_source')} is "
                    f"'detector'. Train a detector on a dataset with boxes with `fusionbench detector train "
                    f"<config>` and set {full_key(key, 'detector_checkpoint')} to the checkpoint it writes "
                    f"(or use box_source: dataset)."
                )
            if self.box_source == "precomputed" and not str(self.features).strip():
                raise ConfigError(
                    f"{full_key(key, 'features')} is empty, but {full_key(key, 'box_source')} is 'precomputed'. "
                    f"Set it to a folder of per-image .npz files or an .h5 file (write one with "
                    f"`fusionbench extract-features <config>`)."
                )

    def __init__(
        self,
        config: Config,
        *,
        saved_backbone: dict[str, Any] | None = None,
        saved_detector: dict[str, Any] | None = None,
    ) -> None:
        """``saved_backbone``/``saved_detector``: what ``rebuild_state`` saved in a checkpoint; the
        backbone and the detector are then built without weights (see ``from_rebuild_state``)."""
        super().__init__()
        self.config = config
        self._validate(config)
        self.backbone: nn.Module | None = None
        self.store = None
        if config.box_source == "precomputed":
            from fusionbench.features.store import FeatureStore

            self.store = FeatureStore(config.features, key=f"{KEY}.features", max_boxes=config.max_boxes)
            self.out_dim = self.store.dim
        else:
            # Built on a forked RNG: the trainable parts below (and the rest of the model) get the
            # same initial weights whether the backbone is built here or its features are read.
            with torch.random.fork_rng(devices=[]):
                self._build_backbone(config, saved_backbone)
        self.box_geometry = nn.Linear(GEOMETRY_FEATURES, self.out_dim) if config.geometry_embedding else None
        self.detector: nn.Module | None = None
        self.detector_meta: dict = {}
        if config.box_source == "detector":
            # Built on a forked RNG too: its random initialisation (overwritten by its checkpoint's
            # weights) would otherwise shift every later draw, so a detector-boxes run and a
            # dataset-boxes run of the same seed start from the same trainable weights and see the
            # same batches, and their difference is the boxes' alone (a paired comparison).
            with torch.random.fork_rng(devices=[]):
                self._build_detector(config, saved_detector)
            self.keep_frozen(self.detector)  # the detector is never trained here

    # -- checkpoints --------------------------------------------------------------------------------
    def rebuild_state(self) -> dict[str, Any]:
        """The normalisation, the backbone's weights source and the detector's settings (its
        checkpoint's metadata without the training metrics): the detector file is not needed again."""
        state = super().rebuild_state()
        if self.backbone is not None:
            state["backbone"] = backbone_rebuild_state(self.backbone)
        if self.detector is not None:
            state["detector"] = {k: v for k, v in self.detector_meta.items() if k != "metrics"}
        return state

    @classmethod
    def from_rebuild_state(cls, config: Config, state: dict[str, Any], **build_kwargs: Any) -> RegionEncoder:
        return super().from_rebuild_state(
            config,
            state,
            saved_backbone=state.get("backbone") or {},
            saved_detector=state.get("detector"),
            **build_kwargs,
        )

    def _build_detector(self, config: Config, saved: dict[str, Any] | None = None) -> None:
        if saved is not None:
            self.detector, self.detector_meta = _detector_from_settings(saved), dict(saved)
        else:
            from fusionbench.detection import load_detector

            self.detector, self.detector_meta = load_detector(
                config.detector_checkpoint, key=f"{KEY}.detector_checkpoint"
            )

    def _build_backbone(self, config: Config, saved: dict[str, Any] | None = None) -> None:
        self.backbone = feature_map_backbone(
            config.model_name, config.pretrained, config.feature_stride, KEY, saved=saved
        )
        self.out_dim = self.backbone.feature_info.channels()[-1]
        self.adopt_backbone(self.backbone, freeze=config.freeze)

    @staticmethod
    def _validate(config: Config) -> None:
        check_config(config, KEY)  # the Config declares what each option allows

    @property
    def reads_features(self) -> bool:  # type: ignore[override]
        return self.store is not None

    @property
    def needs_boxes(self) -> bool:  # type: ignore[override]
        return self.config.box_source == "dataset"

    def feature_store(self):
        return self.store

    def extract_is_frozen(self) -> bool:
        return bool(self.config.freeze) and self.store is None

    # -- boxes ------------------------------------------------------------------------------------
    def region_boxes(self, images: Tensor, boxes: list[Tensor] | None = None) -> list[Tensor]:
        """Per image the ``[K_i, 4]`` boxes (pixels) to pool over, global box first; ``K_i >= 1``."""
        b, _, height, width = images.shape
        if self.config.box_source == "detector":
            candidates = self._detect(images)
        else:
            if boxes is None:
                raise ConfigError(
                    f"{KEY}.box_source is 'dataset' but the dataset gives no object boxes. Use "
                    f"{KEY}.box_source: detector with a {KEY}.detector_checkpoint (train one with "
                    f"`fusionbench detector train <config>`), or the 'cnn'/'vit' encoder."
                )
            if len(boxes) != b:
                raise ValueError(f"got boxes for {len(boxes)} images but a batch of {b} images")
            candidates = [
                torch.as_tensor(x, dtype=torch.float32, device=images.device).reshape(-1, 4) for x in boxes
            ]
        whole = images.new_tensor([[0.0, 0.0, width, height]], dtype=torch.float32)
        out = []
        for cand in candidates:
            cand = cand.float()
            finite = torch.isfinite(cand).all(dim=1)
            cand = torch.stack(
                [
                    cand[:, 0].clamp(0, width),
                    cand[:, 1].clamp(0, height),
                    cand[:, 2].clamp(0, width),
                    cand[:, 3].clamp(0, height),
                ],
                dim=1,
            )
            valid = finite & (cand[:, 2] > cand[:, 0]) & (cand[:, 3] > cand[:, 1])
            cand = cand[valid][: self.config.max_boxes]
            if self.config.add_global_box or len(cand) == 0:
                cand = torch.cat([whole, cand])
            out.append(cand)
        return out

    @torch.no_grad()
    def _detect(self, images: Tensor) -> list[Tensor]:
        from fusionbench.detection import configure_inference, select_boxes

        assert self.detector is not None
        cfg = self.config
        if hasattr(self.detector, "roi_heads"):
            configure_inference(
                self.detector,
                score_threshold=cfg.score_threshold,
                nms_threshold=cfg.nms_threshold,
                max_boxes=cfg.max_boxes,
            )
        self.detector.eval()
        outputs = self.detector([im.float() for im in images])
        return [
            select_boxes(
                o,
                score_threshold=cfg.score_threshold,
                nms_threshold=cfg.nms_threshold,
                min_box_size=cfg.min_box_size,
                max_boxes=cfg.max_boxes,
            )[0].detach()
            for o in outputs
        ]

    # -- forward ----------------------------------------------------------------------------------
    def extract(self, images: Tensor, boxes: list[Tensor] | None = None) -> RawFeatures:
        from torchvision.ops import roi_align

        if self.backbone is None:
            raise ConfigError(
                f"This model's encoder reads precomputed region features ({KEY}.box_source: precomputed, "
                f"{KEY}.features: {self.config.features!r}) and cannot encode images. Caption images with "
                f"a model whose encoder computes its features (box_source: dataset or detector)."
            )
        b, _, height, width = images.shape
        regions = self.region_boxes(images, boxes)
        fmap = self.backbone(self.normalize(images))[-1]  # [B, C, h, w]
        feats = roi_align(
            fmap,
            [r.to(fmap.dtype) for r in regions],
            output_size=self.config.pool_size,
            spatial_scale=1.0 / self.config.feature_stride,
            sampling_ratio=self.config.sampling_ratio,
            aligned=True,
        ).mean(dim=(2, 3))  # [sum K_i, C]
        counts = [len(r) for r in regions]
        tokens = pad_sequence(list(feats.split(counts)), batch_first=True)  # [B, N, C], zero padded
        out_boxes = pad_sequence(regions, batch_first=True)
        count = torch.tensor(counts, device=tokens.device)
        mask = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0) < count.unsqueeze(1)
        size = torch.tensor([height, width], device=tokens.device).expand(b, 2)
        return RawFeatures(tokens=tokens, mask=mask, image_size=size, boxes=out_boxes)

    def assemble(self, raw: RawFeatures) -> VisualFeatures:
        tokens = raw.tokens
        if raw.boxes is None:
            raise ValueError("region features need their boxes (RawFeatures.boxes)")
        if self.box_geometry is not None:
            geometry = box_geometry(raw.boxes.to(tokens.dtype), raw.image_size.unsqueeze(1))
            tokens = tokens + self.box_geometry(geometry) * raw.mask.unsqueeze(-1).to(tokens.dtype)
        return VisualFeatures(
            tokens=tokens, mask=raw.mask, pooled=masked_mean(tokens, raw.mask), boxes=raw.boxes
        )
