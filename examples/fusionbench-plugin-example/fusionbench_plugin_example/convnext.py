"""A ConvNeXt grid encoder: fusionbench's CNN grid features over timm's ConvNeXt-Atto.

Liu et al. (2022), "A ConvNet for the 2020s". Only the defaults differ from the built-in ``cnn``
encoder, which shows how little a timm-backed encoder variant needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fusionbench.encoders.cnn import CNNEncoder


class ConvNeXtGridEncoder(CNNEncoder):
    """Grid features from timm's ConvNeXt (Liu et al. 2022)."""

    @dataclass
    class Config:
        model_name: str = "convnext_atto"
        pretrained: Any = False
        freeze: bool = False
        feature_stride: int = 16
        position_encoding: bool = True
