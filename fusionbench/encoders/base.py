"""The encoder contract: images in, a set of visual tokens out.

Every encoder — a CNN grid, R-CNN regions, ViT patches — returns ``VisualFeatures`` so any encoder
meets any fusion strategy and decoder. Encoders emit features at their natural width
(``out_dim``); the ``CaptioningModel``, not each encoder, projects them to the decoder width.
Inputs are float RGB in ``[0, 1]``; each encoder normalises with the statistics its backbone's
weights were trained with, so the model is usable on raw images without a separate transform.

An encoder works in two stages, ``extract`` (images -> ``RawFeatures``: the backbone, the part a
``freeze: true`` encoder never changes) and ``assemble`` (``RawFeatures`` -> ``VisualFeatures``:
cheap, possibly trainable additions such as position encodings or box-geometry embeddings).
``forward`` is both. The split is what makes features cacheable: a frozen encoder's
``RawFeatures`` are written to disk once (``fusionbench.features``) and later runs start from
``assemble``, with exactly the numbers the on-the-fly path would compute. A plugin encoder may
implement only ``forward``; it is then cacheable when none of its parameters train.

Checkpoints: ``rebuild_state`` exports what rebuilding the encoder needs besides its config and
weights (plain data), and ``from_rebuild_state`` builds it from that without loading any weights;
``load_state_dict`` then fills them (``fusionbench.checkpoint``). The defaults save and restore
the input normalisation and otherwise build from the config, which is all an encoder needs whose
constructor reads no weights or files; the built-ins also rebuild their backbone's architecture
(and a detector) from what they saved, so no weights package, file or hub is read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from typing import Any

import numpy as np
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


@dataclass
class RawFeatures:
    """What an encoder's backbone computes for a batch: the cacheable stage (see the module doc).

    Attributes:
        tokens: ``[B, N, D]`` features, zero padded where ``mask`` is False.
        mask: ``[B, N]`` bool, True where a token is real.
        image_size: ``[B, 2]`` (height, width) in pixels of the image the boxes refer to.
        pooled: ``[B, D]`` image vector where the backbone gives one (CNN pool, CLS), else None.
        boxes: ``[B, N, 4]`` token boxes (x1, y1, x2, y2) in pixels, where they exist.
        grid: ``(h, w)`` when the tokens are a flattened ``h x w`` feature map.
    """

    tokens: Tensor
    mask: Tensor
    image_size: Tensor
    pooled: Tensor | None = None
    boxes: Tensor | None = None
    grid: tuple[int, int] | None = None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __getitem__(self, rows: slice) -> RawFeatures:
        """The batch rows ``rows`` (a slice)."""
        return replace(
            self,
            **{
                f.name: getattr(self, f.name)[rows]
                for f in fields(self)
                if isinstance(getattr(self, f.name), Tensor)
            },
        )

    def to(self, device) -> RawFeatures:
        return replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device)
                for f in fields(self)
                if isinstance(getattr(self, f.name), Tensor)
            },
        )

    def per_image(self) -> list[dict[str, np.ndarray]]:
        """One dict of float32/int arrays per image, padding dropped (what a feature file holds)."""
        out = []
        counts = self.mask.sum(dim=1).tolist()
        for b, k in enumerate(counts):
            item = {
                "features": self.tokens[b, :k].detach().float().cpu().numpy(),
                "image_size": self.image_size[b].detach().cpu().numpy().astype(np.int64),
            }
            if self.pooled is not None:
                item["pooled"] = self.pooled[b].detach().float().cpu().numpy()
            if self.boxes is not None:
                item["boxes"] = self.boxes[b, :k].detach().float().cpu().numpy()
            if self.grid is not None:
                item["grid"] = np.asarray(self.grid, dtype=np.int64)
            out.append(item)
        return out

    @classmethod
    def collate(cls, items: list[dict[str, np.ndarray]]) -> RawFeatures:
        """Stack per-image dicts (``per_image``'s format) into a padded batch."""
        counts = [len(it["features"]) for it in items]
        n, dim = max(counts), int(items[0]["features"].shape[1])
        tokens = torch.zeros(len(items), n, dim)
        mask = torch.zeros(len(items), n, dtype=torch.bool)
        has_boxes = all("boxes" in it for it in items)
        boxes = torch.zeros(len(items), n, 4) if has_boxes else None
        for b, (it, k) in enumerate(zip(items, counts)):
            tokens[b, :k] = torch.from_numpy(np.asarray(it["features"], dtype=np.float32))
            mask[b, :k] = True
            if boxes is not None:
                boxes[b, :k] = torch.from_numpy(np.asarray(it["boxes"], dtype=np.float32))
        pooled = None
        if all("pooled" in it for it in items):
            pooled = torch.from_numpy(np.stack([np.asarray(it["pooled"], dtype=np.float32) for it in items]))
        grids = {tuple(int(v) for v in it["grid"]) if "grid" in it else None for it in items}
        grid = grids.pop() if len(grids) == 1 else None
        image_size = torch.tensor(np.stack([np.asarray(it["image_size"]) for it in items]), dtype=torch.long)
        return cls(tokens=tokens, mask=mask, image_size=image_size, pooled=pooled, boxes=boxes, grid=grid)


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean over the real tokens of each row (``tokens`` zero on padding)."""
    count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(tokens.dtype)
    return tokens.sum(dim=1) / count


class Encoder(nn.Module):
    """Base class of registered encoders.

    Subclasses set ``self.out_dim`` and implement either ``forward(images, boxes=None)`` or the two
    stages ``extract``/``assemble`` (the built-ins do; see the module doc). ``boxes`` is a list of
    ``[K_i, 4]`` tensors (pixels) for encoders that pool over regions.
    """

    out_dim: int
    reads_features = False  # True when the encoder cannot see images, only stored features
    needs_boxes = False  # True when every image must come with its object boxes (``forward``'s ``boxes``)

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer(
            "pixel_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False
        )
        self._kept_frozen: list[nn.Module] = []

    def adopt_backbone(self, backbone: nn.Module, *, freeze: bool) -> None:
        """Normalise as the backbone's weights expect (timm's ``pretrained_cfg`` mean/std) and, with
        ``freeze``, keep it frozen (``keep_frozen``)."""
        data_cfg = getattr(backbone, "pretrained_cfg", None) or {}
        if "mean" in data_cfg and "std" in data_cfg:
            self.set_normalization(data_cfg["mean"], data_cfg["std"])
        if freeze:
            self.keep_frozen(backbone)

    def keep_frozen(self, module: nn.Module) -> None:
        """Never train ``module``: no gradients, and eval mode whatever ``train()`` is called with
        (BatchNorm statistics stay fixed, no dropout or drop-path)."""
        module.requires_grad_(False)
        module.eval()
        self._kept_frozen.append(module)

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self._kept_frozen:
            module.eval()
        return self

    # -- checkpoints ------------------------------------------------------------------------------
    def rebuild_state(self) -> dict[str, Any]:
        """What rebuilding this encoder needs besides its config and weights, as plain data (JSON
        types: checkpoints are read with ``weights_only=True``).

        The default is the input normalisation (``pixel_mean``/``pixel_std`` are buffers outside
        the state dict); subclasses add their own entries to ``super().rebuild_state()``.
        """
        return {
            "pixel_mean": [float(v) for v in self.pixel_mean.flatten().tolist()],
            "pixel_std": [float(v) for v in self.pixel_std.flatten().tolist()],
        }

    @classmethod
    def from_rebuild_state(cls, config: Any, state: dict[str, Any], **build_kwargs: Any) -> Encoder:
        """The encoder ``rebuild_state`` described, built without loading weights.

        The default constructs ``cls(config, **build_kwargs)`` and restores the saved
        normalisation. An encoder whose constructor loads weights overrides this and passes
        ``super().from_rebuild_state`` the constructor keywords that build the same architecture
        without them.
        """
        encoder = cls(config, **build_kwargs) if config is not None else cls(**build_kwargs)
        mean, std = state.get("pixel_mean"), state.get("pixel_std")
        if mean is not None and std is not None:
            encoder.set_normalization(mean, std)
        return encoder

    def set_normalization(self, mean, std) -> None:
        """Use the mean/std the backbone's weights were trained with."""
        self.pixel_mean.copy_(torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.pixel_std.copy_(torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def normalize(self, images: Tensor) -> Tensor:
        return (images - self.pixel_mean) / self.pixel_std

    def forward(self, images: Tensor, boxes: list[Tensor] | None = None) -> VisualFeatures:
        return self.assemble(self.extract(images, boxes))

    def extract(self, images: Tensor, boxes: list[Tensor] | None = None) -> RawFeatures:
        """The backbone stage. The default runs a plugin's own ``forward``."""
        if type(self).forward is Encoder.forward:
            raise NotImplementedError(
                f"{type(self).__name__} must implement forward() or extract()/assemble()"
            )
        vis = self(images, boxes)
        size = torch.tensor(images.shape[-2:], device=vis.tokens.device).expand(len(vis.tokens), 2)
        return RawFeatures(
            tokens=vis.tokens, mask=vis.mask, image_size=size, pooled=vis.pooled, boxes=vis.boxes
        )

    def assemble(self, raw: RawFeatures) -> VisualFeatures:
        """From backbone features to visual tokens (default: as they are)."""
        pooled = raw.pooled if raw.pooled is not None else masked_mean(raw.tokens, raw.mask)
        return VisualFeatures(tokens=raw.tokens, mask=raw.mask, pooled=pooled, boxes=raw.boxes)

    def feature_store(self):
        """The ``FeatureStore`` an encoder that reads stored features reads (else None)."""
        return None

    def extract_is_frozen(self) -> bool:
        """True when ``extract`` can never change during training, so its output may be cached.

        For an encoder that implements only ``forward``, that means no parameter trains.
        """
        return not any(p.requires_grad for p in self.parameters())

    def feature_identity(self) -> dict:
        """What, besides the weights, determines ``extract``'s output (part of a feature-cache key)."""
        config = getattr(self, "config", None)
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "config": asdict(config) if is_dataclass(config) else repr(config),
            "mean": self.pixel_mean.flatten().tolist(),
            "std": self.pixel_std.flatten().tolist(),
        }


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
