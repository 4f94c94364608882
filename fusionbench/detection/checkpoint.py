"""Detector checkpoints: written atomically, read with ``weights_only=True``, checked against what a model expects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fusionbench.detection.architecture import (
    ARCHITECTURE,
    ARCHITECTURES,
    LEGACY_ARCHITECTURE,
    build_detector,
)
from fusionbench.errors import ConfigError
from fusionbench.io import atomic_write

CHECKPOINT_FORMAT = "fusionbench-detector"
#: 2: ``architecture`` and its layer settings are stored (version 1 had one architecture).
CHECKPOINT_VERSION = 2


def save_detector(model: nn.Module, path: str | Path, **meta: Any) -> Path:
    """Write ``model``'s weights, its ``detector_spec`` and ``meta`` (label_names, metrics ...)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        **getattr(model, "detector_spec", {}),
        **meta,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


def describe_detector(meta: dict[str, Any]) -> str:
    """``architecture 'x', classes ['object'] (+ background), input 64-64 px``: for messages."""
    labels = meta.get("label_names")
    classes = f"classes {list(labels)}" if labels is not None else f"{meta.get('num_classes', '?')} classes"
    return (
        f"architecture '{meta.get('architecture', LEGACY_ARCHITECTURE)}', {classes} (+ background), "
        f"input {meta.get('min_size', '?')}-{meta.get('max_size', '?')} px"
    )


def check_compatible(expected: dict[str, Any], found: dict[str, Any], what: str) -> None:
    """Raise a ``ConfigError`` naming both when ``found`` is not the detector ``expected`` describes.

    Compares what decides a detector's weights and outputs: the architecture and its layer
    settings, and the label set. ``what`` names the checkpoint (e.g. ``key: 'file.pt'``).
    """
    keys = ("architecture", "label_names", "num_classes", "anchor_sizes", "fpn_channels")
    keys += ("representation_size", "pool_size", "min_size", "max_size")
    default = {"architecture": LEGACY_ARCHITECTURE}
    differ = [
        k for k in keys if k in expected and _plain(expected[k]) != _plain(found.get(k, default.get(k)))
    ]
    if differ:
        raise ConfigError(
            f"{what} is a detector with {describe_detector(found)}, but {describe_detector(expected)} "
            f"is expected (different {', '.join(differ)}). Give the detector checkpoint the model was "
            f"built with, or retrain with `fusionbench detector train <config>`."
        )


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def load_detector(
    path: str | Path,
    key: str = "model.encoder.detector_checkpoint",
    *,
    expect: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict]:
    """The detector saved at ``path`` (eval mode) and its metadata; errors name ``key``.

    ``expect``: metadata of the detector the caller was built with (e.g. a captioner checkpoint's
    stored detector settings); a checkpoint of another architecture or label set is refused with
    an error naming both (``check_compatible``).
    """
    hint = "Train one with `fusionbench detector train <config>` and give the file it writes."
    if not str(path).strip():
        raise ConfigError(f"{key} is empty: box_source 'detector' needs a detector checkpoint. {hint}")
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}: detector checkpoint '{path}' does not exist. {hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"{key}: '{path}' is not a readable detector checkpoint ({err}). {hint}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{key}: '{path}' is not a fusionbench detector checkpoint. {hint}")
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise ConfigError(
            f"{key}: '{path}' has checkpoint version {ckpt['version']}, newer than this fusionbench "
            f"reads ({CHECKPOINT_VERSION}). Upgrade fusionbench or retrain the detector."
        )
    architecture = str(ckpt.get("architecture") or _architecture_of(ckpt.get("state_dict") or {}))
    if architecture not in ARCHITECTURES:
        raise ConfigError(
            f"{key}: '{path}' is a detector of architecture '{architecture}', which this fusionbench "
            f"does not build (it builds: {', '.join(ARCHITECTURES)}). {hint}"
        )
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    meta["architecture"] = architecture
    if expect is not None:
        check_compatible(expect, meta, f"{key}: '{path}'")
    layers = ("anchor_sizes", "fpn_channels", "representation_size", "pool_size", "box_batch_size_per_image")
    model = build_detector(
        int(ckpt["num_classes"]),
        int(ckpt["min_size"]),
        int(ckpt["max_size"]),
        architecture=architecture,
        **{k: ckpt[k] for k in layers if ckpt.get(k) is not None},
    )
    problem = _state_mismatch(model.state_dict(), ckpt.get("state_dict") or {})
    if problem:
        raise ConfigError(
            f"{key}: '{path}' describes a detector with {describe_detector(meta)}, but its weights "
            f"do not fit that detector: {problem}. The file was written by another program or edited; "
            f"{hint[0].lower()}{hint[1:]}"
        )
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), meta


def _architecture_of(state: dict[str, Tensor]) -> str:
    """The architecture of weights stored without its name (version 1, or rebuilt from a captioner)."""
    return ARCHITECTURE if "backbone.fpn.inner_blocks.2.0.weight" in state else LEGACY_ARCHITECTURE


def _state_mismatch(want: dict[str, Tensor], got: dict[str, Tensor]) -> str:
    """'' when ``got`` loads into a model whose state is ``want``, else what differs (both named)."""
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} expected tensors missing (e.g. '{missing[0]}')")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown tensors (e.g. '{unexpected[0]}')")
        return " and ".join(parts)
    for name, tensor in want.items():
        if tuple(got[name].shape) != tuple(tensor.shape):
            what = (
                f"'{name}' has shape {tuple(got[name].shape)}, the described detector {tuple(tensor.shape)}"
            )
            if name.endswith("cls_score.weight"):
                what += f" (weights for {got[name].shape[0] - 1} classes, metadata for {tensor.shape[0] - 1})"
            return what
    return ""
