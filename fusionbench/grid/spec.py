"""Grids of experiments: a base experiment plus axes over any config key.

A grid file is an experiment file with a ``grid:`` section::

    base: smoke.yaml                 # the base experiment (any experiment keys may follow)
    name: shapes-grid
    grid:
      axes:                          # cartesian product
        model.encoder.name: [cnn, vit]
        model.fusion.name: [early, late, attention]
      zip:                           # each group varies its keys together (equal-length lists)
        - {model.d_model: [128, 256], loader.batch_size: [32, 64]}
      exclude: [{model.encoder.name: vit, model.fusion.name: late}]   # drop matching cells
      include: [{model.encoder.name: cnn, model.fusion.name: early, optim.lr: 1.0e-4}]  # extra cells
      settings:                      # per-family settings: set keys on the cells that match `when`
        - {when: {model.encoder.name: vit}, set: {optim.lr: 5.0e-4}}
      seeds: [0, 1, 2]
      leaderboard: {select_on: val}  # rank on validation (a hyper-parameter sweep); default: test

Every cell is composed and validated like a single experiment (same layering, same errors) before
anything runs, gets a stable readable name (``cnn-attention-lstm-s1``: component names as they
are, other keys as ``leaf=value``) and a hash of its resolved config, which decides whether a
finished cell can be skipped when the grid is run again; a cell whose only changes are test-time
settings (``training_hash``) is re-evaluated from its best checkpoint instead of retrained.
``grid.settings`` gives settings that belong to a family of cells rather than to an axis (a learning
rate chosen for ViT encoders by a sweep): they are in the matching cells' configs and hashes but
not in their names, so the leaderboard still compares encoder x fusion x decoder, each at its own
tuned defaults; rules apply in order (a later one wins) and command-line overrides win over all.
``grid.launcher`` (where cells run) and ``grid.leaderboard`` (which split ranks the leaderboard,
``fusionbench.leaderboard.selection``) are the grid's own settings: no cell's config or hash has them.
A grid file whose ``base:`` is another grid file inherits each ``grid:`` key it does not set.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fusionbench.config import compose, file_layers, parse_overrides
from fusionbench.decoding import DecodingConfig
from fusionbench.errors import ConfigError, FusionbenchError
from fusionbench.leaderboard.selection import LeaderboardSettings, leaderboard_settings

# Keys that name where/how results are shown or logged, not what is computed, and keys that never
# change a cell's results (the feature cache reproduces on-the-fly features exactly): not hashed.
_NOT_HASHED = ("name", "run_name", "output_dir", "trainer.enable_progress_bar", "logger", "features")
# Keys read only after training, to decode and score the evaluation splits (see ``training_hash``).
_TEST_TIME = ("scoring", "metrics")


@dataclass
class Cell:
    """One run of a grid: its assignment over the axes, its resolved config and hash."""

    name: str
    assignment: dict[str, Any]
    config: DictConfig
    hash: str

    @property
    def seed(self) -> int:
        return int(self.config.seed)

    @property
    def train_hash(self) -> str:
        """``training_hash`` of the config: which trained checkpoint this cell's results come from."""
        return training_hash(self.config)

    @property
    def evaluation(self) -> dict[str, Any]:
        """``evaluation_settings`` of the config: how that checkpoint is tested."""
        return evaluation_settings(self.config)


@dataclass
class Grid:
    name: str
    source: Path
    cells: list[Cell]
    output_dir: Path
    launcher: Any = None  # fusionbench.launchers.LauncherConfig (grid.launcher)
    leaderboard: LeaderboardSettings = field(default_factory=LeaderboardSettings)  # grid.leaderboard
    settings: list[dict[str, Any]] = field(default_factory=list)  # grid.settings (per-family rules)

    @property
    def results_dir(self) -> Path:
        return self.output_dir / self.name


def is_grid_file(path: str | Path) -> bool:
    """True when the experiment file (or one of its bases) has a ``grid:`` section."""
    return any("grid" in layer for _, layer in file_layers(Path(path)))


def _hashed(cfg: DictConfig) -> dict:
    data = OmegaConf.to_container(cfg, resolve=True)
    for dotted in _NOT_HASHED:
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    if not (data.get("scst") or {}).get("enabled"):
        # a run without self-critical training never reads the section: hashes stay those of
        # configs written before it existed, so finished cells are not retrained
        data.pop("scst", None)
    trainer = data.get("trainer") or {}
    if (trainer.get("early_stopping") or {}).get("patience") is None:
        trainer.pop("early_stopping", None)  # off: the same training as before the option existed
    return data


def _digest(data: dict) -> str:
    text = OmegaConf.to_yaml(OmegaConf.create(data), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def config_hash(cfg: DictConfig) -> str:
    """A short hash of everything in a resolved config that can change the results: a finished
    cell with the same hash is skipped."""
    return _digest(_hashed(cfg))


def training_hash(cfg: DictConfig) -> str:
    """A short hash of what the trained checkpoint (``best.ckpt``) depends on.

    ``config_hash`` without the settings used only after training: the test-time decoding
    (``decoding.beam_size``, and ``length_penalty`` where validation decodes greedily), ``scoring``
    (SPICE; validation never computes it) and ``metrics`` (extra metrics, computed on the test
    predictions only). What validation decodes with stays in: it picks the best epoch, so
    ``val_beam_size``, ``max_len`` and ``no_repeat_ngram`` (which validation also uses, and
    ``length_penalty`` when ``val_beam_size > 1``) change the checkpoint
    (``DecodingConfig.for_validation().search_settings()``). A finished cell whose training hash
    matches but whose ``config_hash`` does not is re-evaluated from its checkpoint, not retrained.
    """
    data = _hashed(cfg)
    for key in _TEST_TIME:
        data.pop(key, None)
    data["decoding"] = DecodingConfig.from_cfg(cfg.get("decoding")).for_validation().search_settings()
    return _digest(data)


def evaluation_settings(cfg: DictConfig) -> dict[str, Any]:
    """The test-time settings of a config (plain values): ``decoding`` (``DecodingConfig.test_settings``),
    ``scoring`` and ``metrics``; what a results record stores beside the training hash."""
    out: dict[str, Any] = {"decoding": DecodingConfig.from_cfg(cfg.get("decoding")).test_settings()}
    for key in _TEST_TIME:
        value = cfg.get(key)
        out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return out


def _value_label(key: str, value: Any) -> str:
    if key == "scst.enabled" and isinstance(value, bool):  # the training axis: xe vs xe+scst
        return "xe+scst" if value else "xe"
    if isinstance(value, dict):
        label = (
            str(value.get("name", "")) or hashlib.sha1(repr(sorted(value.items())).encode()).hexdigest()[:6]
        )
        rest = {k: v for k, v in value.items() if k != "name"}
        if rest:
            label += "+" + hashlib.sha1(repr(sorted(rest.items())).encode()).hexdigest()[:6]
    else:
        label = str(value)
    is_component = key.endswith(".name") or key in ("data", "model.encoder", "model.fusion", "model.decoder")
    text = label if is_component else f"{key.rsplit('.', 1)[-1]}={label}"
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", text)


def cell_name(assignment: dict[str, Any], seed: int) -> str:
    parts = [_value_label(k, v) for k, v in assignment.items() if k != "seed"]
    return "-".join([*parts, f"s{seed}"]) if parts else f"s{seed}"


def _check_list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list of values, got {value!r}.")
    if not value:
        raise ConfigError(f"{where} is empty: give at least one value, or remove the axis.")
    return value


def expand(spec: dict, source: str) -> list[dict[str, Any]]:
    """The assignments (dotted key -> value, plus ``seed``) a grid spec describes, in order."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: `grid:` must be a mapping with axes/zip/include/exclude/seeds.")
    unknown = set(spec) - {"axes", "zip", "include", "exclude", "seeds", "settings"}
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) grid.{', grid.'.join(sorted(unknown))}; valid: axes, zip, include, exclude, settings, seeds, launcher, leaderboard."
        )
    axes = spec.get("axes") or {}
    if not isinstance(axes, dict):
        raise ConfigError(f"{source}: grid.axes must map config keys to lists of values.")
    factors: list[list[dict[str, Any]]] = []
    for key, values in axes.items():
        factors.append([{key: v} for v in _check_list(values, f"{source}: grid.axes.{key}")])
    for i, group in enumerate(spec.get("zip") or []):
        if not isinstance(group, dict) or not group:
            raise ConfigError(f"{source}: grid.zip[{i}] must map config keys to equal-length lists.")
        lists = {k: _check_list(v, f"{source}: grid.zip[{i}].{k}") for k, v in group.items()}
        lengths = {len(v) for v in lists.values()}
        if len(lengths) != 1:
            raise ConfigError(
                f"{source}: grid.zip[{i}] lists have different lengths "
                f"({', '.join(f'{k}: {len(v)}' for k, v in lists.items())}); zipped keys vary together, so give equal lengths."
            )
        factors.append([dict(zip(lists, vals)) for vals in zip(*lists.values())])
    base_cells = (
        [dict(kv for part in combo for kv in part.items()) for combo in itertools.product(*factors)]
        if factors
        else [{}]
    )

    axis_values: dict[str, list] = {}
    for factor in factors:
        for part in factor:
            for k, v in part.items():
                axis_values.setdefault(k, []).append(v)
    excludes = spec.get("exclude") or []
    if not isinstance(excludes, list):
        raise ConfigError(f"{source}: grid.exclude must be a list of partial assignments.")
    for j, ex in enumerate(excludes):
        if not isinstance(ex, dict) or not ex:
            raise ConfigError(
                f"{source}: grid.exclude[{j}] must be a mapping such as {{model.encoder.name: vit}}."
            )
        _check_axis_values(ex, axis_values, f"{source}: grid.exclude[{j}]")
    cells = [c for c in base_cells if not any(_matches(c, ex) for ex in excludes)]
    _check_settings(spec.get("settings"), axis_values, source)
    includes = spec.get("include") or []
    if not isinstance(includes, list):
        raise ConfigError(f"{source}: grid.include must be a list of partial assignments.")
    for j, inc in enumerate(includes):
        if not isinstance(inc, dict) or not inc:
            raise ConfigError(f"{source}: grid.include[{j}] must be a mapping of config keys to values.")
        if inc not in cells:
            cells.append(dict(inc))
    seeds = spec.get("seeds", None)
    seeds = _check_list(seeds, f"{source}: grid.seeds") if seeds is not None else [None]
    out = []
    for c in cells:
        for s in seeds:
            out.append({**c, **({"seed": s} if s is not None else {})})
    if not out:
        raise ConfigError(
            f"{source}: the grid expands to zero cells (every cell is excluded). Loosen grid.exclude."
        )
    return out


def _check_axis_values(partial: dict[str, Any], axis_values: dict[str, list], where: str) -> None:
    """Every key of a partial assignment (``exclude``, a ``settings`` rule's ``when``) is a grid axis
    and every value one of that axis's values: anything else would silently match no cell."""
    for k, v in partial.items():
        if k not in axis_values:
            raise ConfigError(
                f"{where} names '{k}', which is not a grid axis ({', '.join(axis_values) or 'none'})."
            )
        if v not in axis_values[k]:
            raise ConfigError(
                f"{where} names {k}={v!r}, which is not among the axis values {axis_values[k]}."
            )


def _matches(assignment: dict[str, Any], partial: dict[str, Any]) -> bool:
    """True when a cell's assignment has every key = value of a partial assignment."""
    return all(assignment.get(k) == v for k, v in partial.items())


def _check_settings(rules: Any, axis_values: dict[str, list], source: str) -> None:
    """``grid.settings``: a list of ``{when: {axis key: value}, set: {config key: value}}``."""
    if rules is None:
        return
    if not isinstance(rules, list):
        raise ConfigError(
            f"{source}: grid.settings must be a list of {{when: {{...}}, set: {{...}}}} rules, "
            f"e.g. [{{when: {{model.encoder.name: vit}}, set: {{optim.lr: 5.0e-4}}}}]."
        )
    for j, rule in enumerate(rules):
        where = f"{source}: grid.settings[{j}]"
        if not isinstance(rule, dict) or set(rule) != {"when", "set"}:
            raise ConfigError(f"{where} must have exactly the keys `when` and `set`, got {rule!r}.")
        when, values = rule["when"], rule["set"]
        if not isinstance(when, dict) or not when:
            raise ConfigError(
                f"{where}.when must map grid axis keys to values, e.g. {{model.encoder.name: vit}}."
            )
        if not isinstance(values, dict) or not values:
            raise ConfigError(f"{where}.set must map config keys to values, e.g. {{optim.lr: 5.0e-4}}.")
        _check_axis_values(when, axis_values, f"{where}.when")
        clash = sorted(set(values) & set(axis_values))
        if clash:
            raise ConfigError(
                f"{where}.set assigns {', '.join(clash)}, which the grid varies as an axis: a cell's "
                "axis value and its family setting would disagree. Drop the key from `set` (or the axis)."
            )


def family_settings(rules: list[dict] | None, assignment: dict[str, Any]) -> dict[str, Any]:
    """The ``grid.settings`` values for one cell: every rule whose ``when`` the cell matches, in
    order (a later rule wins a key both set)."""
    out: dict[str, Any] = {}
    for rule in rules or []:
        if _matches(assignment, rule["when"]):
            out.update(rule["set"])
    return out


def _nest(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _same_cells(first: dict[str, Any], second: dict[str, Any], overrides, source) -> str:
    """Why two cells of a grid are one configuration, and the fix."""
    keys = set(first) | set(second)
    hidden = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in keys]
    where = (
        f"the command-line override(s) {', '.join(hidden)} replace the grid's own values"
        if hidden
        else f"{source} lists the same configuration twice"
    )
    fix = (
        "Drop the override (for seeds use --seeds 3 4 5)"
        if hidden
        else "Remove the repeated combination (check grid.include and grid.zip)"
    )
    return f"Grid cells {first} and {second} are the same configuration: {where}. {fix}."


def load_grid(path: str | Path, overrides: list[str] = (), seeds: list[int] | None = None) -> Grid:
    """Expand and validate every cell of a grid file (nothing runs)."""
    path = Path(path)
    layers = file_layers(path)
    spec: dict = {}
    base_layers = []
    for source, layer in layers:
        layer = dict(layer)
        if "grid" in layer:
            # a grid file extending another grid keeps the base's grid keys it does not set (a
            # quick variant names its seeds and folder and inherits the axes and settings); a key
            # it sets replaces the base's whole (axes, settings and seeds are not merged item by item)
            grid = layer.pop("grid")
            spec = {**spec, **grid} if isinstance(grid, dict) and isinstance(spec, dict) else grid
            grid_source = source
        if "leaderboard" in layer:  # a grid's own setting, not an experiment key
            raise ConfigError(
                f"{source}: `leaderboard:` belongs inside the `grid:` section (grid.leaderboard.select_on: "
                "test or val); move it there."
            )
        base_layers.append((source, layer))
    if not spec:
        raise ConfigError(f"{path} has no `grid:` section; run it as a single experiment instead.")
    from fusionbench.launchers import launcher_config

    spec = dict(spec) if isinstance(spec, dict) else spec
    launcher = launcher_config(spec.pop("launcher", None) if isinstance(spec, dict) else None, grid_source)
    leaderboard = leaderboard_settings(
        spec.pop("leaderboard", None) if isinstance(spec, dict) else None, grid_source
    )
    if seeds is not None:
        spec = {**spec, "seeds": list(seeds)}
    override_layer = [("the command-line overrides", parse_overrides(list(overrides)))] if overrides else []
    assignments = expand(spec, grid_source)
    cells: list[Cell] = []
    names: dict[str, int] = {}
    hashes: dict[str, dict[str, Any]] = {}
    rules = spec.get("settings") if isinstance(spec, dict) else None
    for assignment in assignments:
        layer = _nest({k: v for k, v in assignment.items()})
        family = family_settings(rules, assignment)
        family_layer = [("grid.settings for " + repr(assignment), _nest(family))] if family else []
        try:
            cfg = compose(
                [*base_layers, ("grid cell " + repr(assignment), layer), *family_layer, *override_layer]
            )
        except FusionbenchError as err:
            raise type(err)(f"Grid cell {assignment}: {err}") from None
        name = cell_name(assignment, int(cfg.seed))
        digest = config_hash(cfg)
        if digest in hashes:
            raise ConfigError(_same_cells(hashes[digest], assignment, overrides, grid_source))
        hashes[digest] = assignment
        if name in names:
            name = f"{name}-{config_hash(cfg)[:6]}"
        names[name] = 1
        cfg.run_name = name
        cells.append(
            Cell(
                name=name, assignment=dict(assignment, seed=int(cfg.seed)), config=cfg, hash=config_hash(cfg)
            )
        )
    first = cells[0].config
    return Grid(
        name=str(first.name),
        source=path,
        cells=cells,
        output_dir=Path(str(first.output_dir)),
        launcher=launcher,
        leaderboard=leaderboard,
        settings=[{"when": dict(r["when"]), "set": dict(r["set"])} for r in rules or []],
    )
