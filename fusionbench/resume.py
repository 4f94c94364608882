"""What a resumed run needs to continue exactly where an uninterrupted one would be.

Lightning's checkpoint restores the weights, the optimiser and scheduler, the loops' progress and
the data module's ``state_dict`` (which holds the training shuffle's generator,
``fusionbench.data.module``), but not the process-wide random number generators. Dropout draws
from torch's global RNG, and numpy or Python's ``random`` may be used by plugin components, so
``RandomStates`` saves all of them with every checkpoint and puts them back when training
resumes. Together, a run killed in epoch 3 and rerun from ``last.ckpt`` trains epochs 3.. on the
same batches with the same dropout masks as a run that was never interrupted, and ends with
bit-identical weights and scores (``tests/test_resume.py``).

The states are those of the moment the checkpoint is written (after an epoch's validation, which
draws nothing: decoding is greedy and the model is in eval mode), which is the moment the
uninterrupted run continues from.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


def capture_random_states() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and Python ``random`` states, as tensors and plain
    Python values only, so a checkpoint holding them still loads with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict[str, Any]) -> None:
    """Put back what ``capture_random_states`` saved (CUDA only where it was saved and is present)."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RandomStates(pl.Callback):
    """Saves the global RNG states with each checkpoint; restores them when a fit resumes from one."""

    def state_dict(self) -> dict[str, Any]:
        return capture_random_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        restore_random_states(state_dict)


def best_checkpoint(dirpath) -> pl.callbacks.ModelCheckpoint:
    """``best.ckpt`` (the best validation CIDEr-D) and ``last.ckpt`` (what a resume continues from)
    in ``dirpath``: the checkpoints of a training phase (cross-entropy, SCST)."""
    return pl.callbacks.ModelCheckpoint(
        dirpath=dirpath,
        filename="best",
        monitor="val/CIDEr",
        mode="max",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
    )
