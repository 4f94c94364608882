"""Images given for captioning as the model's input: what it was trained on.

Images are paths, PIL images, numpy arrays (``[H, W, 3]``/``[H, W]`` uint8, or float in [0, 1];
HWC as PIL) or torch tensors (``[3, H, W]``/``[B, 3, H, W]``, float in [0, 1] or uint8; CHW as
torch). They become RGB at the training size, which is ``data.image_size`` (resized with the
dataset's ``data.resize``: ``stretch``, ``crop`` or ``pad``, as ``fusionbench.data.images.load_rgb``
does for image datasets) or else the ViT encoder's ``img_size``. Files are decoded like dataset
images (EXIF orientation, transparency on white, 16-bit scaling); an image already at the training
size is used as it is, and one of another size goes through the same Pillow resize whatever its
type, so a file, its PIL image and its array give the same caption.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, ImageOps

from fusionbench.errors import DataError


class ImageInputError(DataError):
    """An image given for captioning cannot be read or has an unusable type or shape."""


@dataclass
class PreparedImage:
    """One image ready for the model, and the picture attention overlays are drawn on."""

    pixels: torch.Tensor  # float [3, S, S] in [0, 1]: what the model sees
    display: np.ndarray  # uint8 [H, W, 3]: what overlays are drawn on
    name: str


def _describe(image: Any, index: int) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    return f"image #{index} ({type(image).__name__})"


def _to_uint8_hwc(array: np.ndarray, what: str) -> np.ndarray:
    """An HWC/HW array (uint8, or float in [0, 1]) as uint8 RGB ``[H, W, 3]``."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise ImageInputError(
            f"{what}: an image array must be [H, W], [H, W, 3] or [H, W, 4] (HWC, as PIL gives), got "
            f"shape {tuple(array.shape)}. Tensors are CHW: pass torch tensors [3, H, W]."
        )
    if array.dtype == np.uint8:
        out = array
    elif np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_:
        values = array.astype(np.float32)
        if not np.isfinite(values).all() or values.min() < -1e-3 or values.max() > 1 + 1e-3:
            raise ImageInputError(
                f"{what}: float pixels must be finite and in [0, 1], got [{values.min():.3g}, "
                f"{values.max():.3g}]. Divide 0-255 values by 255, or pass uint8."
            )
        out = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    else:
        raise ImageInputError(f"{what}: unsupported pixel type {array.dtype}; use uint8 or float in [0, 1].")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    elif out.shape[2] == 4:
        out = np.asarray(_pil_rgb(Image.fromarray(np.ascontiguousarray(out), mode="RGBA")))
    return np.ascontiguousarray(out)


def _pil_rgb(image: Image.Image) -> Image.Image:
    from fusionbench.data.images import to_rgb

    return to_rgb(image)


def _resize_uint8(image: np.ndarray, size: int | None, resize: str) -> np.ndarray:
    if size is None or image.shape[:2] == (size, size):
        return image
    from fusionbench.data.images import resize_image

    return np.ascontiguousarray(
        np.asarray(resize_image(Image.fromarray(image), int(size), resize), dtype=np.uint8)
    )


def _tensor_from_uint8(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)


def prepare_image(
    image: Any, size: int | None, resize: str = "stretch", *, index: int = 0
) -> list[PreparedImage]:
    """One input (a batch tensor gives several) as model input at ``size`` x ``size``."""
    what = _describe(image, index)
    if isinstance(image, (str, Path)):
        from fusionbench.data.images import BadImageError, load_rgb

        path = Path(image).expanduser()
        if not path.is_file():
            raise ImageInputError(
                f"Cannot read image {path}: "
                + ("it is a directory" if path.is_dir() else "the file does not exist")
                + ". Give the path of an image file (JPEG, PNG, ...)."
            )
        try:
            pixels = load_rgb(path, size, resize) if size else load_rgb(path)
            display = load_rgb(path) if size and resize == "stretch" else pixels
        except BadImageError as err:
            raise ImageInputError(str(err)) from None
        return [PreparedImage(_tensor_from_uint8(pixels), display, str(image))]
    if isinstance(image, Image.Image):
        try:
            rgb = np.asarray(_pil_rgb(ImageOps.exif_transpose(image)), dtype=np.uint8)
        except Exception as err:
            raise ImageInputError(f"{what}: cannot convert the PIL image to RGB ({err}).") from None
        return [_from_uint8(rgb, size, resize, what)]
    if isinstance(image, np.ndarray):
        return [_from_uint8(_to_uint8_hwc(image, what), size, resize, what)]
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 4:
            return [p for i, row in enumerate(t) for p in prepare_image(row, size, resize, index=index + i)]
        if t.dim() == 2:
            t = t.unsqueeze(0)
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ImageInputError(
                f"{what}: an image tensor must be [3, H, W], [1, H, W] or [B, 3, H, W] (CHW, as torch), "
                f"got shape {tuple(t.shape)}. numpy arrays are HWC."
            )
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        elif not t.is_floating_point():
            raise ImageInputError(
                f"{what}: unsupported tensor dtype {t.dtype}; use float in [0, 1] or uint8."
            )
        t = t.float().expand(3, -1, -1)
        if not torch.isfinite(t).all() or t.min() < -1e-3 or t.max() > 1 + 1e-3:
            raise ImageInputError(
                f"{what}: float pixels must be finite and in [0, 1], got [{float(t.min()):.3g}, "
                f"{float(t.max()):.3g}]. Divide 0-255 values by 255."
            )
        t = t.clamp(0.0, 1.0)
        display = (t * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
        if size is None or tuple(t.shape[-2:]) == (size, size):
            return [PreparedImage(t.contiguous(), np.ascontiguousarray(display), what)]
        return [_from_uint8(np.ascontiguousarray(display), size, resize, what)]
    raise ImageInputError(
        f"{what}: cannot caption a {type(image).__name__}. Give image paths, PIL images, numpy uint8 "
        f"arrays [H, W, 3] or float tensors [3, H, W] in [0, 1]."
    )


def _from_uint8(rgb: np.ndarray, size: int | None, resize: str, what: str) -> PreparedImage:
    pixels = _resize_uint8(rgb, size, resize)
    display = rgb if resize == "stretch" else pixels
    return PreparedImage(_tensor_from_uint8(pixels), display, what)


def training_size(cfg: DictConfig) -> tuple[int | None, str]:
    """``(size, resize)`` the model was trained at: ``data.image_size`` (+ ``data.resize``), else the
    encoder's ``img_size``; ``None`` when neither is known (images are then used as they are)."""
    data = cfg.get("data") or {}
    size = data.get("image_size") if hasattr(data, "get") else None
    resize = str(data.get("resize", "stretch")) if hasattr(data, "get") else "stretch"
    if size:
        return int(size), resize
    enc = cfg.get("model", {}).get("encoder", {})
    if enc.get("img_size"):
        return int(enc.img_size), "stretch"
    return None, "stretch"
