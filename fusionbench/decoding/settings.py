"""``DecodingConfig``: how captions are decoded, the one typed object every consumer receives.

``CaptioningModel.generate``, ``CaptionModule``'s validation and test, the cost measurement and
the ``Captioner`` all take a ``DecodingConfig``, read once from a config's ``decoding`` section
with ``from_cfg``; its values are checked in ``__post_init__``, which runs when the experiment
config is composed, so ``validate``, a grid's pre-flight and ``run`` reject a bad value before
any training. No torch here: configs and grids are composed without it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Annotated, Any

from omegaconf import OmegaConf

from fusionbench.checks import Range, check_config
from fusionbench.errors import ConfigError


@dataclass
class DecodingConfig:
    """How captions are decoded: the ``decoding`` section of an experiment config.

    ``beam_size``, ``max_len``, ``length_penalty`` and ``no_repeat_ngram`` are the test-time
    search; validation decodes with the same settings at ``val_beam_size`` (greedy by default, for
    speed), which decides the best epoch and so belongs to training (``for_validation``).
    """

    beam_size: Annotated[int, Range(ge=1, note="1 = greedy search")] = 3
    max_len: Annotated[int, Range(ge=1, note="the longest caption in words")] = 20
    length_penalty: Annotated[
        float,
        Range(
            gt=-math.inf,
            lt=math.inf,
            note="0 = rank beams by summed log-probability; 1 = by mean log-probability per word",
        ),
    ] = 0.0
    no_repeat_ngram: Annotated[int, Range(ge=0, note="0 = no n-gram blocking")] = 0
    val_beam_size: Annotated[int, Range(ge=1, note="1 = greedy search")] = 1  # validation: greedy, for speed

    def __post_init__(self) -> None:
        check_config(self, "decoding")  # the declared types and ranges, as every config section
        self.length_penalty = float(self.length_penalty)

    @classmethod
    def from_cfg(cls, node: Any = None) -> DecodingConfig:
        """The settings of a config's ``decoding`` node (a ``DictConfig``, a dict, or None for the
        defaults); keys it lacks (an older checkpoint's config) take the defaults."""
        if node is None:
            return cls()
        if OmegaConf.is_config(node):
            node = OmegaConf.to_container(node, resolve=True)
        if isinstance(node, DecodingConfig):
            return replace(node)
        if not isinstance(node, dict):
            raise ConfigError(f"decoding must be a mapping of decoding settings, got {node!r}.")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(node) - set(valid))
        if unknown:
            raise ConfigError(
                f"Unknown decoding setting(s) {', '.join('decoding.' + k for k in unknown)}; "
                f"valid: {', '.join(valid)}."
            )
        return cls(**node)

    def for_validation(self) -> DecodingConfig:
        """The settings validation decodes with: these, at ``val_beam_size``."""
        return replace(self, beam_size=self.val_beam_size)

    @property
    def greedy(self) -> bool:
        """Whether ``decode`` runs greedy search (``beam_size == 1``: beam search would give the same)."""
        return self.beam_size == 1

    def search_settings(self) -> dict[str, Any]:
        """The settings this search's output depends on (greedy search has no length penalty)."""
        out = {k: v for k, v in asdict(self).items() if k != "val_beam_size"}
        if self.greedy:
            out.pop("length_penalty")
        return out

    def test_settings(self) -> dict[str, Any]:
        """The test-time settings (everything but ``val_beam_size``), as plain values."""
        return {k: v for k, v in asdict(self).items() if k != "val_beam_size"}
