"""The captioner checkpoint format: what ``fusionbench run`` saves and ``fusionbench.load`` rebuilds.

A Lightning checkpoint (``runs/<name>/<run>/checkpoints/best.ckpt``) holds the weights under
``state_dict`` (``model.`` + the ``CaptioningModel``'s names) and fusionbench's block under
``fusionbench`` (``checkpoint_block``), plain data only:

* ``version``: ``FORMAT_VERSION``;
* ``config``: the resolved experiment config; ``tokenizer``: the decoder's tokenizer dict;
* ``components``: ``{"encoder": ..., "decoder": ...}``, what each component's ``rebuild_state``
  returned: what rebuilding it needs besides config, tokenizer and weights (input normalisation,
  a backbone's weights source, a BERT decoder's ``BertConfig``, a region encoder's detector
  settings). The framework does not look inside: each component reads its own back;
* ``val_history``, ``best_val``: the training run's validation scores (for resuming).

``rebuild_model`` builds every component with its ``from_rebuild_state``, which constructs the
architecture without loading any weights (no weights package, local file, hub or detector file
is read, and nothing is written), then fills all weights with one strict ``load_state_dict``. So
a checkpoint is rebuilt on another machine, from another directory, offline, and a plugin
component takes part like a built-in one (its defaults build it from its config).

Checkpoints are read with ``torch.load(..., weights_only=True)``: a checkpoint cannot run code.
Format 1 (a flat ``rebuild`` block written by the framework for the built-in components) is still
read; older checkpoints, which did not record how to rebuild their components, are a
``CheckpointError`` that says how to write a current one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fusionbench.errors import FusionbenchError
from fusionbench.model import CaptioningModel

#: Version of the ``fusionbench`` block ``checkpoint_block`` writes (1: a flat ``rebuild`` block).
FORMAT_VERSION = 2
CHECKPOINT_HINT = (
    "Give a checkpoint written by `fusionbench run` (runs/<name>/<run>/checkpoints/best.ckpt or last.ckpt)."
)
#: The components that export rebuild state: ``CaptioningModel`` attributes.
COMPONENTS = ("encoder", "decoder")
_MODEL_PREFIX = "model."  # Lightning's prefix: CaptionModule keeps the CaptioningModel as ``model``


class CheckpointError(FusionbenchError):
    """A captioner checkpoint is missing, unreadable, not fusionbench's, or does not fit its config."""


# -- writing ------------------------------------------------------------------------------------------
def _plain(data: Any, what: str) -> Any:
    """``data`` as JSON types (what ``weights_only=True`` reads back); anything else is an error."""
    try:
        return json.loads(json.dumps(data))
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{what} returned data a checkpoint cannot hold ({err}): return dicts, lists, strings, "
            f"numbers, booleans and None only (tensors belong in the state dict)."
        ) from None


def component_states(model: CaptioningModel) -> dict[str, dict[str, Any]]:
    """``{"encoder": ..., "decoder": ...}``: each component's ``rebuild_state``, as plain data."""
    states = {}
    for name in COMPONENTS:
        component = getattr(model, name)
        states[name] = _plain(component.rebuild_state(), f"{type(component).__qualname__}.rebuild_state()")
    return states


def checkpoint_block(model: CaptioningModel, cfg: DictConfig, **extra: Any) -> dict[str, Any]:
    """The ``fusionbench`` block of a checkpoint of ``model`` trained with ``cfg`` (see the module
    doc); ``extra`` adds plain entries (``CaptionModule``: ``val_history``, ``best_val``)."""
    return {
        "version": FORMAT_VERSION,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "tokenizer": model.tokenizer.to_dict(),
        "components": component_states(model),
        **extra,
    }


# -- reading ------------------------------------------------------------------------------------------
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


def _format_1_states(block: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Format 1's flat ``rebuild`` block (written by ``inference.rebuild_info`` for the built-in
    components) as the component states of format 2: the same facts under the components' keys."""
    encoder = {k: block[k] for k in ("pixel_mean", "pixel_std") if k in block}
    if "encoder_package" in block:
        encoder["backbone"] = {"weights_package": block["encoder_package"]}
    if isinstance(block.get("detector_meta"), dict):
        encoder["detector"] = block["detector_meta"]
    decoder = {"bert_config": block["bert_config"]} if isinstance(block.get("bert_config"), dict) else {}
    return {"encoder": encoder, "decoder": decoder}


def saved_component_states(saved: dict[str, Any], where: str | Path = "checkpoint") -> dict[str, dict]:
    """The component states of a checkpoint's ``fusionbench`` block, of any format still read."""
    version = saved.get("version")
    if version == FORMAT_VERSION:
        components = saved.get("components")
        if not isinstance(components, dict):
            raise CheckpointError(
                f"'{where}': its 'fusionbench' section lacks 'components'. {CHECKPOINT_HINT}"
            )
        return {name: dict(components.get(name) or {}) for name in COMPONENTS}
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"'{where}' has checkpoint format {version}, newer than this fusionbench reads "
            f"({FORMAT_VERSION}). Upgrade fusionbench."
        )
    block = saved.get("rebuild")
    if version is None and isinstance(block, dict) and block.get("version") == 1:
        return _format_1_states(block)
    raise CheckpointError(
        f"'{where}' was written by an early fusionbench that did not record how to rebuild its "
        f"components without their original weights files (no 'fusionbench.version' and no "
        f"'fusionbench.rebuild' section). Write a current checkpoint by training it again: "
        f"`fusionbench run <config>` with the config it holds (its 'fusionbench.config')."
    )


# -- rebuilding ---------------------------------------------------------------------------------------
def _model_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The ``CaptioningModel``'s weights (metric states and the like dropped)."""
    return {k[len(_MODEL_PREFIX) :]: v for k, v in state.items() if k.startswith(_MODEL_PREFIX)}


def _assemble(model_cfg: DictConfig, tokenizer, states: dict[str, dict[str, Any]]) -> CaptioningModel:
    """``build_model``'s assembly, each component built by its ``from_rebuild_state``."""
    from fusionbench.registry import DECODERS, ENCODERS, FUSIONS

    d_model = int(model_cfg.d_model)
    entry, config = ENCODERS.config_object(model_cfg.encoder)
    encoder = entry.obj.from_rebuild_state(config, states["encoder"])
    fusion = FUSIONS.build(model_cfg.fusion, d_model=d_model)
    entry, config = DECODERS.config_object(model_cfg.decoder)
    decoder = entry.obj.from_rebuild_state(
        config, states["decoder"], d_model=d_model, tokenizer=tokenizer, fusion=fusion
    )
    return CaptioningModel(encoder, fusion, decoder, d_model)


def rebuild_model(
    ckpt: dict[str, Any], where: str | Path = "checkpoint"
) -> tuple[CaptioningModel, DictConfig]:
    """``(CaptioningModel in eval mode, resolved config)`` from a ``read_checkpoint`` dict.

    Construction runs on a forked RNG, so loading a model leaves the caller's random state alone.
    """
    from fusionbench.plugins import load_plugins
    from fusionbench.text import tokenizer_from_dict

    where = Path(where)
    saved = ckpt["fusionbench"]
    cfg = OmegaConf.create(saved["config"])
    states = saved_component_states(saved, where)
    weights = _model_weights(ckpt["state_dict"])
    if not weights:
        raise CheckpointError(f"'{where}' holds no model weights (no 'model.' entries). {CHECKPOINT_HINT}")
    load_plugins(list(cfg.get("plugins") or []), where=f"the `plugins:` list of checkpoint '{where}'")
    try:
        tokenizer = tokenizer_from_dict(saved["tokenizer"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"'{where}': its tokenizer cannot be rebuilt ({err}).") from None
    model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    with torch.random.fork_rng(devices=[]):
        model = _assemble(model_cfg, tokenizer, states)
    own = model.state_dict()
    problems = [f"missing {k}" for k in own if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in own]
    problems += [
        f"{k} is {tuple(v.shape)} in the file but {tuple(own[k].shape)} in the model"
        for k, v in weights.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if problems:
        raise CheckpointError(
            f"'{where}': the weights do not fit the model its config describes ({len(problems)} "
            f"problems, e.g. {'; '.join(problems[:3])}). Was the checkpoint edited, or written by "
            f"another fusionbench version?"
        )
    model.load_state_dict(weights, strict=True)
    return model.eval(), cfg
