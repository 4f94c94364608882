"""ViT patch features: any timm Vision Transformer (ViT, DeiT), its patch tokens as visual tokens.

Follows Dosovitskiy et al. (2021), "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale" (and Touvron et al., 2021, DeiT, for the data-efficient variants): the image
is cut into ``patch_size`` x ``patch_size`` patches, each linearly embedded, given a learned
position embedding and passed through ``depth`` Transformer blocks. The patch tokens (after the
final norm, prefix tokens dropped) are the visual tokens; the CLS token is the image vector, or the
mean of the patch tokens for models without a class token. The position embedding is already in
every token, so no extra position encoding is added.

The default is small and trains from scratch on the 64x64 ``shapes`` images: ``vit_tiny_patch16_224``'s
width (192, 3 heads) at ``img_size`` 64 with 8x8 patches (an 8x8 grid of 64 tokens) and 4 blocks.

Images of another size than ``img_size`` are resized to ``img_size`` x ``img_size`` with bilinear,
antialiased interpolation before patching (a non-square image is stretched), so one model accepts
any input size at a fixed number of tokens.

Pretrained weights (``pretrained: true`` for timm's, or a local ``.pth``/``.safetensors`` file)
are adapted to the configured model as timm does: the position embedding is resampled to the new
patch grid, the patch embedding to the new patch size, and with a smaller ``depth`` only the first
``depth`` blocks are kept. ``embed_dim``/``num_heads`` must then match the weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusionbench.checks import Fraction, PositiveInt, check_config, full_key
from fusionbench.encoders.backbone import backbone_rebuild_state, create_backbone, load_state_dict_file
from fusionbench.encoders.base import Encoder, RawFeatures, VisualFeatures
from fusionbench.errors import ConfigError
from fusionbench.registry import ENCODERS

log = logging.getLogger(__name__)

KEY = "model.encoder"


def default_num_heads(embed_dim: int) -> int:
    """Heads for a custom width: the divisor of ``embed_dim`` whose head width is closest to 64
    (ViT-B/L/H use 64-wide heads; ties go to more heads)."""
    divisors = [h for h in range(1, embed_dim + 1) if embed_dim % h == 0]
    return min(divisors, key=lambda h: (abs(embed_dim // h - 64), -h))


def _is_false(value: Any) -> bool:
    return value in (False, None, "", "false", "False")


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


@ENCODERS.register("vit")
class ViTEncoder(Encoder):
    """Patch tokens of a timm Vision Transformer; CLS token pooled (Dosovitskiy et al. 2021)."""

    @dataclass
    class Config:
        model_name: str = "vit_tiny_patch16_224"
        pretrained: Any = False
        freeze: bool = False
        img_size: PositiveInt = 64
        patch_size: PositiveInt = 8
        depth: PositiveInt | None = 4  # null: the model's own
        embed_dim: PositiveInt | None = None
        num_heads: PositiveInt | None = None
        drop_path_rate: Fraction = 0.0

        def check(self, key: str) -> None:
            if self.img_size % self.patch_size:
                raise ConfigError(
                    f"{full_key(key, 'img_size')}={self.img_size} is not a multiple of "
                    f"{full_key(key, 'patch_size')}={self.patch_size}: pick sizes such that "
                    f"img_size % patch_size == 0 (e.g. 64 and 8)."
                )
            if self.embed_dim is not None:
                heads = self.num_heads if self.num_heads is not None else default_num_heads(self.embed_dim)
                if self.embed_dim % heads:
                    raise ConfigError(
                        f"{full_key(key, 'embed_dim')}={self.embed_dim} is not divisible by "
                        f"{full_key(key, 'num_heads')}={heads}; pick num_heads dividing embed_dim "
                        f"(e.g. {default_num_heads(self.embed_dim)}) or leave it null."
                    )

    def __init__(self, config: Config, *, saved_backbone: dict[str, Any] | None = None) -> None:
        """``saved_backbone``: the backbone's ``backbone_rebuild_state`` from a checkpoint; it is
        then built without weights (see ``from_rebuild_state``)."""
        super().__init__()
        check_config(config, KEY)
        self.config = config
        kwargs = self._model_kwargs(config)
        if saved_backbone is not None:
            self.backbone = create_backbone(config.model_name, False, KEY, saved=saved_backbone, **kwargs)
        else:
            self.backbone = self._create(config, kwargs)
        if not hasattr(self.backbone, "patch_embed") or not hasattr(self.backbone, "forward_features"):
            raise ConfigError(
                f"{KEY}.model_name: '{config.model_name}' is not a Vision Transformer (ViT/DeiT). "
                f"Use encoder 'cnn' for convolutional networks."
            )
        self.num_prefix_tokens = int(getattr(self.backbone, "num_prefix_tokens", 0))
        self.has_class_token = bool(getattr(self.backbone, "has_class_token", self.num_prefix_tokens > 0))
        self.grid = tuple(self.backbone.patch_embed.grid_size)
        self.out_dim = int(self.backbone.embed_dim)
        self.adopt_backbone(self.backbone, freeze=config.freeze)  # frozen: no dropout / drop-path

    def rebuild_state(self) -> dict[str, Any]:
        return {**super().rebuild_state(), "backbone": backbone_rebuild_state(self.backbone)}

    @classmethod
    def from_rebuild_state(cls, config: Config, state: dict[str, Any], **build_kwargs: Any) -> ViTEncoder:
        saved = state.get("backbone") or {}
        return super().from_rebuild_state(config, state, saved_backbone=saved, **build_kwargs)

    # -- construction -----------------------------------------------------------------------------
    @staticmethod
    def _model_kwargs(config: Config) -> dict[str, Any]:
        """timm's keyword arguments for the configured model (values checked by ``Config``)."""
        kwargs: dict[str, Any] = {
            "num_classes": 0,
            "img_size": config.img_size,
            "patch_size": config.patch_size,
            "drop_path_rate": config.drop_path_rate,
        }
        if config.depth is not None:
            kwargs["depth"] = config.depth
        if config.embed_dim is not None:
            kwargs["embed_dim"] = config.embed_dim
        if config.embed_dim is not None or config.num_heads is not None:
            dim = config.embed_dim
            if dim is None:  # num_heads alone: timm checks it against the model's own width
                return {**kwargs, "num_heads": config.num_heads}
            kwargs["num_heads"] = config.num_heads if config.num_heads is not None else default_num_heads(dim)
        return kwargs

    @staticmethod
    def _create(config: Config, kwargs: dict[str, Any]) -> nn.Module:
        pretrained = config.pretrained
        try:
            if _is_true(pretrained):
                # timm resamples patch/position embeddings; a smaller depth leaves unused blocks.
                return create_backbone(config.model_name, True, KEY, pretrained_strict=False, **kwargs)
            model = create_backbone(config.model_name, False, KEY, **kwargs)
        except TypeError as err:
            raise ConfigError(
                f"{KEY}.model_name: '{config.model_name}' does not take ViT options "
                f"(img_size, patch_size, depth, embed_dim, num_heads): {err}. "
                f"Choose a timm ViT/DeiT such as vit_tiny_patch16_224, or encoder 'cnn' for CNNs."
            ) from None
        except (AssertionError, RuntimeError, ValueError) as err:
            raise ConfigError(
                f"{KEY}: cannot build '{config.model_name}' with {kwargs}: {err}. "
                f"Check {KEY}.embed_dim / num_heads / img_size / patch_size."
            ) from None
        if not _is_false(pretrained):
            _load_local_weights(model, Path(str(pretrained)).expanduser())
        return model

    # -- forward ----------------------------------------------------------------------------------
    def extract(self, images: Tensor, boxes: list[Tensor] | None = None) -> RawFeatures:
        size = self.config.img_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        x = self.backbone.forward_features(self.normalize(images))  # [B, prefix + N, D]
        tokens = x[:, self.num_prefix_tokens :]
        pooled = x[:, 0] if self.has_class_token else tokens.mean(dim=1)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        image_size = torch.tensor([size, size], device=tokens.device).expand(len(tokens), 2)
        return RawFeatures(tokens=tokens, mask=mask, image_size=image_size, pooled=pooled)

    def assemble(self, raw: RawFeatures) -> VisualFeatures:
        return VisualFeatures(tokens=raw.tokens, mask=raw.mask, pooled=raw.pooled)


def _load_local_weights(model: nn.Module, path: Path) -> None:
    """Load a local ViT state dict, adapted to ``model`` by timm's ViT checkpoint filter."""
    if not path.is_file():
        raise ConfigError(
            f"{KEY}.pretrained: weights file '{path}' does not exist. Give a local .pth/.safetensors "
            f"state dict, true for timm's hub weights, or false for random initialisation."
        )
    state = load_state_dict_file(path)
    try:
        from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

        if isinstance(model, VisionTransformer):
            state = checkpoint_filter_fn(state, model)
    except Exception as err:  # a malformed file: report it as a config problem, not a traceback
        raise ConfigError(f"{KEY}.pretrained: cannot adapt '{path}' to the configured ViT: {err}") from None
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    bad = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ConfigError(
            f"{KEY}.pretrained: '{path}' does not fit the configured ViT: e.g. {bad[0]} has shape "
            f"{tuple(state[bad[0]].shape)} in the file but {tuple(own[bad[0]].shape)} in the model. "
            f"Set {KEY}.embed_dim / num_heads to the weights' (or null for the model's defaults)."
        )
    missing, _unexpected = model.load_state_dict(state, strict=False)
    if len(missing) > len(own) // 2:
        raise ConfigError(
            f"{KEY}.pretrained: '{path}' does not match '{type(model).__name__}' "
            f"({len(missing)} missing keys, e.g. {missing[:3]}). Is it the weights of another architecture?"
        )
    if missing:
        log.warning(
            "%s.pretrained: %d parameters not in '%s' keep their random init, e.g. %s",
            KEY,
            len(missing),
            path,
            missing[:3],
        )
