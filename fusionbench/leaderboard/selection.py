"""Which split a leaderboard ranks on: ``test`` (a benchmark's verdict) or ``val`` (a sweep).

A benchmark grid ranks its configurations by test CIDEr-D: that is the number it reports. A
hyper-parameter sweep must not: choosing a learning rate by its test score tunes on the test set,
and the test numbers of the chosen setting are then optimistic (the test set has been used for a
decision). A sweep's grid file says so::

    grid:
      axes: {optim.lr: [5.0e-4, 1.0e-3, 2.0e-3]}
      leaderboard: {select_on: val}

and its leaderboard ranks by the validation CIDEr-D of the checkpoint each run selected (its best
validation epoch, ``metrics.json``'s ``val``), compares configurations over per-seed validation
scores (``stats.compare_seed_scores``) and shows the test splits for reference only.

The setting belongs to the grid, not to a cell: no cell's config, hash or results depend on it, so
it sits in ``grid:`` beside ``launcher:``, and the grid runner records it in the results folder's
``grid.json``, where ``fusionbench leaderboard <results>`` reads it (``--select-on`` overrides).
Checked like every config value: an unknown key or value is a ``ConfigError`` naming it and what is
allowed, before anything trains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fusionbench.checks import check_choices, choice_error, literal_choices
from fusionbench.errors import ConfigError

SelectOn = Literal["test", "val"]
SELECT_ON: tuple[str, ...] = literal_choices(SelectOn)
"""The splits a leaderboard can rank on."""
DEFAULT_SELECT_ON = "test"
KEY = "grid.leaderboard"
"""Where the settings live in a grid file (and, without the ``grid.``, in ``grid.json``)."""


@dataclass(frozen=True)
class LeaderboardSettings:
    """A grid's ``grid.leaderboard`` section.

    ``select_on``: ``test`` ranks by test CIDEr-D (two-level bootstrap over seeds and test images);
    ``val`` ranks by the validation CIDEr-D of each run's selected checkpoint, for sweeps that
    choose hyper-parameters, and never uses a test number to rank or mark anything. ``dir``: the
    leaderboard's folder when the command line gives none.
    """

    select_on: SelectOn = "test"
    # Where `fusionbench run` writes this grid's leaderboard when no --leaderboard-dir is given
    # (None: leaderboards/). A leaderboard's files are named after its dataset, so every grid on
    # `shapes` other than the default one names its own folder, or it would replace
    # leaderboards/shapes.*, the default grid's committed verdict.
    dir: str | None = None

    @property
    def on_val(self) -> bool:
        return self.select_on == "val"


def leaderboard_settings(spec: Any, source: str) -> LeaderboardSettings:
    """Validate a grid's ``grid.leaderboard`` mapping (None: the defaults)."""
    if spec is None:
        return LeaderboardSettings()
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{source}: {KEY} must be a mapping such as {{select_on: val}}, got {spec!r}.")
    valid = [f.name for f in dataclasses.fields(LeaderboardSettings)]
    unknown = sorted(set(spec) - set(valid))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(f'{KEY}.{k}' for k in unknown)}; valid: {', '.join(valid)}."
        )
    try:
        check_choices(LeaderboardSettings, spec, KEY)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    folder = spec.get("dir")
    if folder is not None and (not isinstance(folder, str) or not folder.strip()):
        raise ConfigError(
            f"{source}: {KEY}.dir must be a folder path such as leaderboards/sweep, got {folder!r}."
        )
    return LeaderboardSettings(**{k: v for k, v in spec.items() if v is not None})


DEFAULT_DIR = "leaderboards"


def leaderboard_dir(cli_value: str | None, settings: LeaderboardSettings) -> str:
    """The folder a grid run writes its leaderboard to: ``--leaderboard-dir`` when given ('' = none),
    else the grid's ``grid.leaderboard.dir``, else ``leaderboards/``."""
    if cli_value is not None:
        return cli_value
    return settings.dir or DEFAULT_DIR


def check_select_on(value: Any, key: str) -> str:
    """``value`` as a split to rank on; a ``ConfigError`` naming ``key`` (``--select-on``, a function
    argument) and the allowed values otherwise."""
    if value not in SELECT_ON:
        raise choice_error(key, value, SELECT_ON)
    return str(value)


def manifest_settings(manifest: Mapping[str, Any] | None, where: str) -> LeaderboardSettings:
    """The settings a results folder's ``grid.json`` recorded (the defaults when it has none:
    folders written before the setting existed were all ranked on test)."""
    recorded = (manifest or {}).get("leaderboard")
    return leaderboard_settings(recorded, where) if recorded is not None else LeaderboardSettings()
