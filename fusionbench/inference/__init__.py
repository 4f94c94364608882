"""Caption your own images with a trained checkpoint: ``fusionbench.load`` and ``fusionbench caption``.

A checkpoint written by ``fusionbench run`` (``runs/<name>/<run>/checkpoints/best.ckpt``) carries
the resolved config, the decoder's tokenizer, what each component needs to be rebuilt and the
weights (``fusionbench.checkpoint``), so ``load`` rebuilds the model on another machine, from
another directory, offline: nothing the training run read (weights packages, local weights
files, the hub, a detector checkpoint) has to exist there. Checkpoints are read with
``torch.load(..., weights_only=True)``: a checkpoint cannot run code.

One concern per module:

* ``captioner``: ``Captioner`` (``caption``, ``caption_with_attention``) and ``load``;
* ``images``: images (paths, PIL, numpy, torch) as the model input it was trained on;
* ``attention``: ``AttentionCaption``, per-token attention and heatmap overlays;
* ``cli``: the ``fusionbench caption`` command.

The names below are imported from those modules on first use, so ``fusionbench.inference.cli``
(the command's arguments) is importable without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from fusionbench.checkpoint import CheckpointError
    from fusionbench.inference.attention import AttentionCaption
    from fusionbench.inference.captioner import Captioner, load
    from fusionbench.inference.cli import add_caption_arguments, caption_main
    from fusionbench.inference.images import ImageInputError, prepare_image, training_size

_EXPORTS = {
    "AttentionCaption": "fusionbench.inference.attention",
    "Captioner": "fusionbench.inference.captioner",
    "CheckpointError": "fusionbench.checkpoint",
    "ImageInputError": "fusionbench.inference.images",
    "add_caption_arguments": "fusionbench.inference.cli",
    "caption_main": "fusionbench.inference.cli",
    "load": "fusionbench.inference.captioner",
    "prepare_image": "fusionbench.inference.images",
    "training_size": "fusionbench.inference.images",
}
__all__ = [
    "AttentionCaption",
    "Captioner",
    "CheckpointError",
    "ImageInputError",
    "add_caption_arguments",
    "caption_main",
    "load",
    "prepare_image",
    "training_size",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
