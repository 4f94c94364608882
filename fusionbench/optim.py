"""The optimiser and learning-rate schedule every run uses (and the overhead benchmark reuses).

AdamW with weight decay on weight matrices only (not biases, norms or embeddings), a linear
warmup over ``optim.warmup_steps`` (at most half the run) and then cosine decay to zero, or a
constant rate (``optim.schedule: constant``); stepped once per optimiser step. The schedule names
are ``fusionbench.config.SCHEDULES``, checked when the config is composed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fusionbench.config import SCHEDULES


def build_optimizer(model: nn.Module, oc, total_steps: int):
    """``(AdamW, LambdaLR)`` for ``model``'s trainable parameters under the ``optim`` config ``oc``."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() or "embed" in name.lower() else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": oc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=oc.lr,
    )
    total = max(1, int(total_steps))
    warmup = min(int(oc.warmup_steps), total // 2)
    schedule = str(oc.schedule)
    if schedule not in SCHEDULES:  # the config rejects it first; never fall back to cosine silently
        raise ValueError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
