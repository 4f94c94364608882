"""``CaptionModule``: the Lightning training loop around a ``CaptioningModel``.

Lightning owns devices, precision, DDP, checkpoints and progress bars; this module owns the loss
(cross-entropy with optional label smoothing, plus a decoder's auxiliary loss such as Show,
Attend and Tell's attention regulariser), the optimiser (AdamW, linear warmup then cosine decay)
and evaluation: validation decodes greedily and scores with coco-caption metrics every epoch;
test decodes with the configured beam search on every evaluation split.
Structure after lightning-hydra-template: one metric object per split, ``self.log("val/CIDEr")``.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fusionbench.checkpoint import checkpoint_block
from fusionbench.data.module import batch_inputs
from fusionbench.decoding import DecodingConfig
from fusionbench.metrics import CaptionMetric
from fusionbench.model import CaptioningModel
from fusionbench.optim import build_optimizer


class CaptionModule(pl.LightningModule):
    """Trains and evaluates one encoder x fusion x decoder combination."""

    def __init__(
        self,
        model: CaptioningModel,
        cfg: DictConfig,
        references: dict[str, dict[int, list[str]]],
        eval_splits: list[str],
    ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.eval_splits = list(eval_splits)
        self.decoding = DecodingConfig.from_cfg(cfg.decoding)  # test; validation at val_beam_size
        self.val_decoding = self.decoding.for_validation()
        self.save_hyperparameters({"config": OmegaConf.to_container(cfg, resolve=True)})
        self.val_metric = CaptionMetric(references["val"], spice=False)  # SPICE (if installed) only at test
        scoring = cfg.get("scoring") or {}
        self.test_metrics = nn.ModuleList(
            [
                CaptionMetric(
                    references[s],
                    spice=bool(scoring.get("spice", True)),
                    spice_jar_dir=scoring.get("spice_jar_dir") or None,
                )
                for s in self.eval_splits
            ]
        )
        self.best_val: dict[str, float] = {}
        self.val_history: list[dict[str, float]] = []
        self.test_results: dict[str, Any] = {}
        self._test_time = [0.0] * len(self.eval_splits)
        self._test_images = [0] * len(self.eval_splits)

    # -- training -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        ids = batch["input_ids"]
        logits, extras = self.model(
            batch_inputs(batch), ids[:, :-1], batch["boxes"], batch.get("caption_index")
        )
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            ids[:, 1:].reshape(-1),
            ignore_index=self.model.tokenizer.pad_id,
            label_smoothing=float(self.cfg.optim.label_smoothing),
        )
        self.log("train/ce", loss, prog_bar=False, batch_size=ids.shape[0])
        if "aux_loss" in extras:
            loss = loss + extras["aux_loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, batch_size=ids.shape[0])
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=ids.shape[0])
        return loss

    def configure_optimizers(self):
        opt, sched = build_optimizer(self.model, self.cfg.optim, self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- evaluation -----------------------------------------------------------------------------
    def _decode(self, batch: dict[str, Any], decoding: DecodingConfig) -> list[str]:
        return self.model.caption(batch_inputs(batch), batch["boxes"], decoding)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        hyps = self._decode(batch, self.val_decoding)
        self.val_metric.update(batch["image_ids"], hyps)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.val_metric.reset()
            return
        scores = self.val_metric.compute()
        self.val_metric.reset()
        for key, value in scores.items():
            self.log(f"val/{key}", float(value), prog_bar=key == "CIDEr", sync_dist=False)
        record = {"epoch": int(self.current_epoch), **{k: float(v) for k, v in scores.items()}}
        self.val_history.append(record)
        if not self.best_val or record["CIDEr"] > self.best_val["CIDEr"]:
            self.best_val = record

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        start = time.perf_counter()
        hyps = self._decode(batch, self.decoding)
        self._test_time[dataloader_idx] += time.perf_counter() - start
        self._test_images[dataloader_idx] += len(hyps)
        self.test_metrics[dataloader_idx].update(batch["image_ids"], hyps)

    def on_test_epoch_end(self) -> None:
        for i, split in enumerate(self.eval_splits):
            metric = self.test_metrics[i]
            scores = metric.compute()
            for key, value in scores.items():
                self.log(f"{split}/{key}", float(value), sync_dist=False, add_dataloader_idx=False)
            self.test_results[split] = {
                "scores": metric.last_result,
                "predictions": dict(metric.last_predictions),
                "ms_per_image": 1000.0 * self._test_time[i] / max(1, self._test_images[i]),
            }
            metric.reset()

    # -- checkpoint carries what is needed to rebuild the model elsewhere ----------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Config, tokenizer and what each component needs to be rebuilt without its original
        weight files (``fusionbench.checkpoint``), plus this run's validation history."""
        checkpoint["fusionbench"] = checkpoint_block(
            self.model, self.cfg, val_history=self.val_history, best_val=self.best_val
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A resumed run keeps its validation history (and so its best epoch); loading the best
        checkpoint for testing leaves the history of this run as it is."""
        saved = checkpoint.get("fusionbench", {})
        if self.val_history:
            return
        self.val_history = list(saved.get("val_history", []))
        self.best_val = dict(saved.get("best_val", {}))
