"""Baselines and the self-critical policy-gradient loss.

REINFORCE with a baseline: the gradient of ``-(r - b) * log p(caption)``. Two baselines:

* ``greedy`` (Rennie et al., 2017): the reward of the image's greedy caption, decoded by the
  model as it would test (eval mode), so a sample is reinforced when it beats test-time inference;
* ``mean`` (Luo, 2020, "A better variant of self-critical sequence training"): the mean reward of
  the image's *other* samples, which needs no extra decoding and is unbiased.

The loss sums each caption's token log-probabilities up to and including its ``eos`` (the mask),
weights them by the caption's advantage and divides by the number of those tokens in the batch,
as ImageCaptioning.pytorch's ``RewardCriterion`` averages.
"""

from __future__ import annotations

from torch import Tensor


def mean_baseline(rewards: Tensor) -> Tensor:
    """``[B, n]`` rewards -> ``[B, n]``: for each sample the mean reward of the image's other samples."""
    return rewards - _mean_advantage(rewards)


def _mean_advantage(rewards: Tensor) -> Tensor:
    """``r_i - mean_{j != i} r_j`` as the mean of the differences ``r_i - r_j``: samples with equal
    rewards get exactly zero advantage (``sum - r`` divided by ``n - 1`` would leave rounding)."""
    n = rewards.shape[1]
    if n < 2:
        raise ValueError("the mean baseline needs at least 2 samples per image")
    return (rewards.unsqueeze(2) - rewards.unsqueeze(1)).sum(2) / (n - 1)


def advantages(rewards: Tensor, baseline: str, greedy_rewards: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(advantage, baseline)`` ``[B, n]`` of ``[B, n]`` sample rewards under ``baseline``."""
    if baseline == "mean":
        advantage = _mean_advantage(rewards)
        return advantage, rewards - advantage
    if baseline == "greedy":
        if greedy_rewards is None:
            raise ValueError("the greedy baseline needs the greedy captions' rewards")
        base = greedy_rewards.reshape(-1, 1).expand_as(rewards)
    else:
        raise ValueError(f"unknown baseline {baseline!r}")
    return rewards - base, base


def scst_loss(logprobs: Tensor, mask: Tensor, advantage: Tensor) -> Tensor:
    """``-(advantage * log p)`` summed over each caption's tokens, divided by all tokens of the batch.

    ``logprobs``/``mask`` ``[R, L]`` (``fusionbench.decoding.search.Samples``), ``advantage`` ``[R]``.
    """
    weighted = logprobs * mask * advantage.detach().to(logprobs.dtype).unsqueeze(1)
    return -weighted.sum() / mask.sum().clamp(min=1.0)
