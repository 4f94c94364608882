"""CNN grid features: any timm CNN, its feature map flattened into a grid of visual tokens.

Follows Show, Attend and Tell (Xu et al., 2015): the convolutional feature map at a chosen stride
is a set of "annotation vectors", one per grid cell, and a global average pool gives the
image vector. A fixed 2-D sine-cosine encoding is added so that flattened tokens keep their
position (what makes "left of"/"above" learnable under attention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fusionbench.checks import PositiveInt, check_config
from fusionbench.encoders.backbone import backbone_rebuild_state, feature_map_backbone
from fusionbench.encoders.base import Encoder, RawFeatures, VisualFeatures, sincos_2d
from fusionbench.registry import ENCODERS


@ENCODERS.register("cnn")
class CNNEncoder(Encoder):
    """Grid features from a timm CNN feature map (Show, Attend and Tell)."""

    @dataclass
    class Config:
        model_name: str = "resnet18"
        pretrained: Any = False
        freeze: bool = False
        feature_stride: PositiveInt = 16  # one of the backbone's strides (checked against it when built)
        position_encoding: bool = True

    def __init__(self, config: Config, *, saved_backbone: dict[str, Any] | None = None) -> None:
        """``saved_backbone``: the backbone's ``backbone_rebuild_state`` from a checkpoint; it is
        then built without weights (see ``from_rebuild_state``)."""
        super().__init__()
        check_config(config, "model.encoder")
        self.config = config
        self.backbone = feature_map_backbone(
            config.model_name, config.pretrained, config.feature_stride, "model.encoder", saved=saved_backbone
        )
        self.out_dim = self.backbone.feature_info.channels()[-1]
        self.adopt_backbone(self.backbone, freeze=config.freeze)

    def rebuild_state(self) -> dict[str, Any]:
        return {**super().rebuild_state(), "backbone": backbone_rebuild_state(self.backbone)}

    @classmethod
    def from_rebuild_state(cls, config: Config, state: dict[str, Any], **build_kwargs: Any) -> CNNEncoder:
        saved = state.get("backbone") or {}
        return super().from_rebuild_state(config, state, saved_backbone=saved, **build_kwargs)

    def extract(self, images: Tensor, boxes: list[Tensor] | None = None) -> RawFeatures:
        fmap = self.backbone(self.normalize(images))[-1]  # [B, C, h, w]
        b, _, h, w = fmap.shape
        tokens = fmap.flatten(2).transpose(1, 2)  # [B, h*w, C]
        mask = torch.ones(b, h * w, dtype=torch.bool, device=fmap.device)
        size = torch.tensor(images.shape[-2:], device=fmap.device).expand(b, 2)
        return RawFeatures(tokens=tokens, mask=mask, image_size=size, pooled=tokens.mean(dim=1), grid=(h, w))

    def assemble(self, raw: RawFeatures) -> VisualFeatures:
        tokens = raw.tokens
        c = tokens.shape[-1]
        if self.config.position_encoding and c % 4 == 0:
            if raw.grid is None:
                raise ValueError("CNN grid features need their grid shape (RawFeatures.grid) for positions")
            h, w = raw.grid
            tokens = tokens + sincos_2d(h, w, c, device=tokens.device).to(tokens.dtype)
        return VisualFeatures(tokens=tokens, mask=raw.mask, pooled=raw.pooled)
