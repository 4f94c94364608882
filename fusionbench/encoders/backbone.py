"""Creating timm backbones with weights from the places users keep them.

``pretrained`` is ``false`` (random init, the default: no network needed), ``true`` (the weights
timm knows for ``model_name``, fetched from the hub) or a path to a local ``.pth``/``.safetensors``
state dict. Offline, a hub request fails at once with a message naming the local-file alternative.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from fusionbench.errors import ConfigError


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE``/``FUSIONBENCH_OFFLINE``)."""
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "FUSIONBENCH_OFFLINE")
    )


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file, loaded with ``weights_only=True``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


def create_backbone(model_name: str, pretrained: Any, key: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with fusionbench's ``pretrained`` semantics and clear errors."""
    if model_name not in timm.list_models() and model_name not in timm.list_pretrained():
        import difflib

        close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
        raise ConfigError(
            f"{key}.model_name: timm has no model '{model_name}'."
            + (f" Did you mean {', '.join(close)}?" if close else "")
            + " See timm.list_models() for valid names."
        )
    if pretrained is True or (isinstance(pretrained, str) and pretrained.lower() == "true"):
        if hub_offline():
            raise ConfigError(
                f"{key}.pretrained: true needs the Hugging Face hub, which is offline here "
                f"(HF_HUB_OFFLINE is set). Give a local weights file instead: {key}.pretrained=/path/to/weights.pth"
            )
        return timm.create_model(model_name, pretrained=True, **kwargs)
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    if pretrained in (False, None, "", "false", "False"):
        return model
    path = Path(str(pretrained)).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"{key}.pretrained: weights file '{path}' does not exist. Give a local .pth/.safetensors "
            f"state dict, true for timm's hub weights, or false for random initialisation."
        )
    state = load_state_dict_file(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if len(missing) > len(state) // 2:
        raise ConfigError(
            f"{key}.pretrained: '{path}' does not match timm model '{model_name}' "
            f"({len(missing)} missing keys, e.g. {missing[:3]}). Is it the weights of another architecture?"
        )
    return model
