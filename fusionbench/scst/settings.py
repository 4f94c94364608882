"""``ScstConfig``: the ``scst`` section of an experiment config (no torch, read by the config).

Defaults follow the recipes that work in ImageCaptioning.pytorch (Luo 2020, "A better variant of
self-critical sequence training"): 5 samples per image at temperature 1, the mean reward of the
other samples as baseline, a constant learning rate a tenth of the cross-entropy one, and the
CIDEr-D reward computed with the end token as a word.

Learning rate, epochs and warmup were chosen on the validation split of the smoke cell
(cnn-attention-lstm, SCST from its best cross-entropy checkpoint; val CIDEr-D x100):

* ``lr`` 2e-4, a tenth of the smoke experiment's cross-entropy 2e-3 (ImageCaptioning.pytorch: 5e-5
  after 5e-4). Seed 0, 5 epochs, from 99.4: 5e-5 -> 99.8 (160 steps at 5e-5 barely move a model of
  this size), 2e-4 -> 116.2, 5e-4 -> 114.3.
* ``epochs`` 15: at 2e-4 the validation score still climbs after 5 epochs (seed 0: 116.2 at 5,
  138.9 at 14, 145.8 at 15; seed 1: 100.6 at 5, 136.1 at 14). An SCST epoch of the smoke cell
  costs about as much as a cross-entropy one (5 samples per image against 5 references).
* ``warmup_steps`` 0: one epoch of warmup (32 steps) softens the first epoch's drop (seed 0: 96.1
  vs 89.3) but ends lower (best 142.7 / 132.1 vs 145.8 / 136.1 for seeds 0 / 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fusionbench.checks import NonNegativeFloat, NonNegativeInt, PositiveFloat, Range, full_key
from fusionbench.errors import ConfigError

Baseline = Literal["greedy", "mean"]
Reward = Literal["cider", "cider+bleu"]


@dataclass
class ScstConfig:
    """Self-critical sequence training after the cross-entropy phase (``enabled: true``).

    ``init``: start from this checkpoint instead of training a cross-entropy phase (its model and
    vocabulary must be this config's). ``patience``: stop after this many SCST epochs without a
    better validation CIDEr-D (0 = run all ``epochs``). ``bleu_weight``: the BLEU-4 term's weight
    when ``reward: cider+bleu``.
    """

    enabled: bool = False
    epochs: Annotated[int, Range(ge=1)] = 15
    lr: PositiveFloat = 2e-4
    warmup_steps: NonNegativeInt = 0
    weight_decay: NonNegativeFloat = 0.0
    samples: Annotated[int, Range(ge=1, note="captions sampled per image")] = 5
    temperature: PositiveFloat = 1.0
    baseline: Baseline = "mean"
    reward: Reward = "cider"
    bleu_weight: NonNegativeFloat = 1.0
    init: str | None = None
    patience: NonNegativeInt = 0

    def check(self, key: str) -> None:
        if self.baseline == "mean" and self.samples < 2:
            raise ConfigError(
                f"Invalid value {self.samples} for {full_key(key, 'samples')} with "
                f"{full_key(key, 'baseline')}=mean: the mean baseline is the mean reward of the *other* "
                "samples of an image, so it needs samples >= 2 (5 is usual), or use baseline=greedy."
            )
        if self.init and not Path(str(self.init)).expanduser().is_file():
            raise ConfigError(
                f"{full_key(key, 'init')}={str(self.init)!r} is not a file. Give a checkpoint written by "
                "`fusionbench run` (runs/<name>/<run>/checkpoints/best.ckpt), or remove the key to train "
                "the cross-entropy phase first."
            )
