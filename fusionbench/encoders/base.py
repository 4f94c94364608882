"""The encoder contract: images in, a set of visual tokens out.

Every encoder — a CNN grid, R-CNN regions, ViT patches — returns ``VisualFeatures`` so any encoder
meets any fusion strategy and decoder. Encoders emit features at their natural width
(``out_dim``); the ``CaptioningModel``, not each encoder, projects them to the decoder width.
Inputs are float RGB in ``[0, 1]``; each encoder normalises with the statistics its backbone's
weights were trained with, so the model is usable on raw images without a separate transform.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn


@dataclass
class VisualFeatures:
    """What an encoder sees in a batch of images.

    Attributes:
        tokens: ``[B, N, D]`` visual tokens (grid cells, regions or patches).
        mask: ``[B, N]`` bool, True where a token is real (regions vary in number per image).
        pooled: ``[B, D]`` one vector per image (global pool, mean of regions, or CLS).
        boxes: ``[B, N, 4]`` token boxes in pixels (x1, y1, x2, y2) where they exist.
    """

    tokens: Tensor
    mask: Tensor
    pooled: Tensor
    boxes: Tensor | None = None

    def index_select(self, index: Tensor) -> VisualFeatures:
        """Rows ``index`` of every tensor (used to expand a batch into beams)."""
        return VisualFeatures(
            **{
                f.name: None
                if getattr(self, f.name) is None
                else getattr(self, f.name).index_select(0, index)
                for f in fields(self)
            }
        )


class Encoder(nn.Module):
    """Base class of registered encoders.

    Subclasses set ``self.out_dim`` and implement ``forward(images, boxes=None)``.
    ``boxes`` is a list of ``[K_i, 4]`` tensors (pixels) for encoders that pool over regions.
    """

    out_dim: int

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer(
            "pixel_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False
        )

    def set_normalization(self, mean, std) -> None:
        """Use the mean/std the backbone's weights were trained with."""
        self.pixel_mean.copy_(torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.pixel_std.copy_(torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def normalize(self, images: Tensor) -> Tensor:
        return (images - self.pixel_mean) / self.pixel_std

    def forward(
        self, images: Tensor, boxes: list[Tensor] | None = None
    ) -> VisualFeatures:  # pragma: no cover
        raise NotImplementedError


def sincos_2d(height: int, width: int, dim: int, device=None) -> Tensor:
    """Fixed 2-D sine-cosine position encoding ``[H*W, dim]`` (as in MAE / DETR).

    Half the channels encode the row, half the column, so a flattened grid keeps "where".
    """
    if dim % 4:
        raise ValueError(f"2-D position encoding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    y = ys.reshape(-1, 1) * omega
    x = xs.reshape(-1, 1) * omega
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1)
