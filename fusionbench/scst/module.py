"""``ScstModule``: the Lightning module of the self-critical phase.

A ``CaptionModule`` whose training step samples captions and follows the CIDEr-D reward instead
of the cross-entropy of the references; validation (greedy CIDEr-D every epoch, which picks the
best epoch), testing and the checkpoint block are the cross-entropy phase's, unchanged. Its
optimiser is its own: AdamW at ``scst.lr`` with ``scst.warmup_steps`` of linear warmup, then
constant (the usual SCST schedule), so the cross-entropy optimiser state is not carried over.
Logged every step: ``scst/reward`` (mean sample reward), ``scst/baseline``, ``scst/advantage``
(mean and ``scst/advantage_abs``), ``scst/entropy`` (mean next-word entropy over the sampled
tokens), ``scst/greedy_reward`` (greedy baseline only), ``train/loss`` and ``train/lr``.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fusionbench.data.module import batch_inputs
from fusionbench.decoding import DecodingConfig
from fusionbench.decoding.search import sample
from fusionbench.model import CaptioningModel
from fusionbench.module import CaptionModule
from fusionbench.optim import build_optimizer
from fusionbench.scst.loss import advantages, scst_loss
from fusionbench.scst.reward import CiderReward
from fusionbench.scst.settings import ScstConfig


def scst_settings(cfg: DictConfig) -> ScstConfig:
    """The typed ``scst`` section of a config (defaults for a config written before it existed)."""
    node = cfg.get("scst")
    return ScstConfig(**(OmegaConf.to_container(node, resolve=True) if node is not None else {}))


class ScstModule(CaptionModule):
    """Self-critical sequence training of a ``CaptioningModel`` (see the module docstring)."""

    def __init__(
        self,
        model: CaptioningModel,
        cfg: DictConfig,
        references: dict[str, dict[int, list[str]]],
        eval_splits: list[str],
        reward: CiderReward,
    ) -> None:
        super().__init__(model, cfg, references, eval_splits)
        self.settings = scst_settings(cfg)
        self.reward = reward
        self.max_len = self.decoding.max_len
        self.greedy = DecodingConfig(beam_size=1, max_len=self.max_len)

    def sample_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
        """``(loss, logged values, sampled captions)`` of one batch: sample, reward, baseline, loss."""
        s = self.settings
        tok = self.model.tokenizer
        images, boxes = batch_inputs(batch), batch["boxes"]
        ctx = self.model.context(images, boxes)
        drawn = sample(
            self.model,
            ctx,
            n=s.samples,
            bos_id=tok.bos_id,
            eos_id=tok.eos_id,
            pad_id=tok.pad_id,
            max_len=self.max_len,
            temperature=s.temperature,
        )
        captions = [tok.decode(row) for row in drawn.ids.tolist()]
        ids = batch["image_ids"].tolist()
        per_sample = [i for i in ids for _ in range(s.samples)]
        rewards = torch.as_tensor(
            self.reward(per_sample, captions, drawn.ended.tolist()), dtype=torch.float64
        ).view(len(ids), s.samples)
        greedy_rewards = None
        if s.baseline == "greedy":
            greedy_rewards = torch.as_tensor(self._greedy_rewards(batch, ids), dtype=torch.float64)
        advantage, base = advantages(rewards, s.baseline, greedy_rewards)
        loss = scst_loss(drawn.logprobs, drawn.mask, advantage.reshape(-1).to(drawn.logprobs.device))
        logged = {
            "scst/reward": rewards.mean(),
            "scst/baseline": base.mean(),
            "scst/advantage": advantage.mean(),
            "scst/advantage_abs": advantage.abs().mean(),
            "scst/entropy": (drawn.entropy * drawn.mask).sum() / drawn.mask.sum().clamp(min=1.0),
        }
        if greedy_rewards is not None:
            logged["scst/greedy_reward"] = greedy_rewards.mean()
        return loss, logged, captions

    def _greedy_rewards(self, batch: dict[str, Any], ids: list[int]):
        """Rewards of the greedy captions, decoded as at test time (eval mode, no dropout)."""
        tok = self.model.tokenizer
        was_training = self.model.training
        self.model.eval()
        try:
            seqs = self.model.generate(batch_inputs(batch), batch["boxes"], self.greedy)
        finally:
            self.model.train(was_training)
        ended = (seqs[:, : self.max_len] == tok.eos_id).any(1).tolist()
        return self.reward(ids, [tok.decode(r) for r in seqs.tolist()], ended)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, logged, _ = self.sample_step(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"SCST loss is {loss.item()} at step {self.global_step}")
        b = len(batch["image_ids"])
        for key, value in logged.items():
            self.log(key, float(value), batch_size=b)
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=b)
        return loss

    def configure_optimizers(self):
        s = self.settings
        oc = OmegaConf.create(
            {
                "lr": s.lr,
                "weight_decay": s.weight_decay,
                "warmup_steps": s.warmup_steps,
                "schedule": "constant",
            }
        )
        opt, sched = build_optimizer(self.model, oc, self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
