"""Early stopping within a maximum budget: Lightning's ``EarlyStopping`` on ``val/CIDEr``, held back
for a run's first ``min_epochs`` epochs.

Why the hold: with cosine decay to the budget's end, the first half of a run trains at a high
learning rate, where a dip of the validation curve is optimisation noise, not overfitting. At twice
the default grid's budget (12 epochs), patience 3 alone stopped regions-late-lstm (seed 0) after
epoch 4 with its best at epoch 1 (val CIDEr-D x100 74.7, 110.6, 103.3, 98.1, 108.1): it tested a
model that had barely started, and that cell's encoder looked worse at the longer budget.

Lightning's own ``Trainer(min_epochs=...)`` does not do this: it delays a stop that patience asked
for but never cancels it, so a run that improves again at ``min_epochs`` still stops there.
Here the patience count runs as usual from the first validation (the best score and the
validations without improvement are tracked, and saved in ``last.ckpt`` so a resumed run stops
where an uninterrupted one would), but before ``min_epochs`` epochs have trained, exhausted
patience does not stop the run; from then on it does, whenever the last ``patience`` validations
have not beaten the best so far.
"""

from __future__ import annotations

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
from torch import Tensor


class EarlyStoppingAfter(pl.callbacks.EarlyStopping):
    """``EarlyStopping`` whose exhausted patience stops training only from epoch ``min_epochs`` on."""

    def __init__(self, *args, min_epochs: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.min_epochs = min_epochs
        self._held = False

    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        self._held = self.min_epochs is not None and trainer.current_epoch + 1 < self.min_epochs
        super()._run_early_stopping_check(trainer)

    def _evaluate_stopping_criteria(self, current: Tensor) -> tuple[bool, str | None]:
        should_stop, reason = super()._evaluate_stopping_criteria(current)
        if should_stop and self._held and self.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED:
            self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
            return False, None
        return should_stop, reason


def early_stopping(cfg: DictConfig) -> EarlyStoppingAfter | None:
    """The early-stopping callback of ``trainer.early_stopping`` (monitor ``val/CIDEr``, mode max),
    or None when its ``patience`` is null."""
    es = cfg.trainer.get("early_stopping") or {}
    if es.get("patience") is None:
        return None
    return EarlyStoppingAfter(
        monitor="val/CIDEr",
        mode="max",
        patience=int(es.patience),
        min_delta=float(es.get("min_delta", 0.0)),
        min_epochs=None if es.get("min_epochs") is None else int(es.min_epochs),
    )
