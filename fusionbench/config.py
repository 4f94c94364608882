"""Experiment configs: YAML files layered with OmegaConf, validated before anything runs.

Layers, lowest first (MMF's layered merge): the typed defaults below -> the ``base:`` chain of
the experiment file (each path relative to the file naming it) -> the file itself -> command-line
dotlist overrides (``trainer.max_epochs=2``). Component sections (``data``, ``model.encoder``,
``model.fusion``, ``model.decoder``) are validated against the config dataclass of the component
they name, so an unknown key or a wrong type fails with its full key path. When a layer switches
a component to another name, the options written for the previous component are dropped, so
``model.encoder.name=vit`` works on top of a file that configured a ``cnn``.

Values are checked where they are composed (``fusionbench.checks``): every section below and every
component's ``Config`` declare their enumerations (``Literal``) and ranges (``Range``) in their
field types, so ``validate``, a grid's pre-flight and ``run`` reject ``loader.batch_size=-4`` or
``optim.schedule=cosin`` with the key, the value and what is allowed, before anything trains.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fusionbench.checks import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    OneOf,
    PositiveFloat,
    PositiveInt,
    Range,
    check_choices,
    check_config,
    full_key,
    literal_choices,
)
from fusionbench.decoding import DecodingConfig  # the `decoding` section's schema and value checks
from fusionbench.errors import ConfigError
from fusionbench.scst.settings import ScstConfig  # the `scst` section (self-critical training)

# Component sections: (dotted key, registry attribute in fusionbench.registry)
COMPONENTS = (
    ("data", "DATASETS"),
    ("model.encoder", "ENCODERS"),
    ("model.fusion", "FUSIONS"),
    ("model.decoder", "DECODERS"),
)


#: Learning-rate schedules after the warmup (``fusionbench.optim.build_optimizer`` implements them).
Schedule = Literal["cosine", "constant"]
SCHEDULES: tuple[str, ...] = literal_choices(Schedule)
#: Lightning's accelerator names (``AcceleratorRegistry`` plus ``auto`` and ``gpu``).
Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"]
#: Lightning's ``precision`` values (``lightning_fabric``'s ``_PRECISION_INPUT``), as strings: YAML's
#: ``precision: 16`` arrives as ``"16"``; plus ours, ``bf16-mixed-if-native`` (``bf16-mixed`` where the
#: hardware multiplies bf16 natively, else ``32-true``: ``fusionbench.numerics``).
PRECISIONS: tuple[str, ...] = (
    "bf16-mixed-if-native",
    "transformer-engine",
    "transformer-engine-float16",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
    "64",
    "32",
    "16",
    "bf16",
)
WandbMode = Literal["online", "offline", "disabled", "auto"]
WANDB_MODES: tuple[str, ...] = literal_choices(WandbMode)
#: ``numpy``'s and Lightning's seeds are unsigned 32-bit (Lightning replaces a larger one at random).
Seed = Annotated[int, Range(ge=0, le=2**32 - 1)]


@dataclass
class ModelConfig:
    d_model: PositiveInt = 256
    encoder: Any = field(default_factory=lambda: {"name": "cnn"})
    fusion: Any = field(default_factory=lambda: {"name": "attention"})
    decoder: Any = field(default_factory=lambda: {"name": "lstm"})


@dataclass
class LoaderConfig:
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt = 128
    num_workers: NonNegativeInt = 0


@dataclass
class TextConfig:
    min_count: PositiveInt = 1
    max_words: PositiveInt = 20


@dataclass
class OptimConfig:
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.01
    warmup_steps: NonNegativeInt = 100
    schedule: Schedule = "cosine"
    label_smoothing: Fraction = 0.0
    grad_clip: Annotated[float, Range(ge=0, note="0 = no clipping")] = 1.0


@dataclass
class EarlyStoppingConfig:
    """Stop training once ``val/CIDEr`` has stopped improving (Lightning's ``EarlyStopping``, mode
    max); ``trainer.max_epochs`` stays the maximum budget and the best epoch's checkpoint is tested.

    ``patience``: validations without an improvement of more than ``min_delta`` (raw CIDEr-D
    scale, ~0-10: 0.01 is 1 point x100) before stopping; with ``check_val_every_n_epoch > 1`` it
    counts validations, not epochs. ``null`` (the default) never stops early, so a run trains for
    exactly ``max_epochs`` as before this option existed.

    ``min_epochs``: epochs a run always trains before exhausted patience may end it
    (``fusionbench.stopping`` says why: with cosine decay, a dip in the high-learning-rate first
    half is optimisation noise, not overfitting); the grids use half of ``max_epochs``. ``null``
    (the default): stopping may start at once.
    """

    patience: Annotated[int, Range(ge=1, note="null = never stop early")] | None = None
    min_delta: NonNegativeFloat = 0.0
    min_epochs: (
        Annotated[int, Range(ge=1, note="null = early stopping may stop from the first epoch")] | None
    ) = None


@dataclass
class TrainerConfig:
    """Passed to Lightning's ``Trainer``: ``accelerator``/``devices``/``num_nodes``/``strategy``
    (``ddp``, ``fsdp``, ...) and ``precision`` (``32-true``, ``bf16-mixed``, ``16-mixed``; our
    ``bf16-mixed-if-native`` is ``bf16-mixed`` where bf16 is native, else ``32-true``) scale one
    run over several devices; metrics are synced across processes and only rank 0 writes."""

    max_epochs: Annotated[int, Range(ge=1, note="0 epochs would score an untrained model")] = 10
    accelerator: Accelerator = "cpu"
    devices: Any = 1  # a count (-1 = all), a list of device indices, "auto" or "0,1"
    num_nodes: PositiveInt = 1
    strategy: str = "auto"
    precision: Annotated[str, OneOf(PRECISIONS)] = "32-true"
    limit_train_batches: Any = 1.0  # a fraction in (0, 1] or a number of batches >= 1
    limit_val_batches: Any = 1.0
    check_val_every_n_epoch: PositiveInt = 1
    log_every_n_steps: PositiveInt = 10
    enable_progress_bar: bool = True
    deterministic: bool = True
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def check(self, key: str) -> None:
        for name in ("limit_train_batches", "limit_val_batches"):
            value = getattr(self, name)
            if not _is_batch_limit(value):
                raise ConfigError(
                    f"Invalid value {value!r} for {full_key(key, name)}: give a fraction of the batches in "
                    f"(0, 1] (1.0 = all) or a number of batches >= 1."
                )
        if not _is_devices(self.devices):
            raise ConfigError(
                f"Invalid value {self.devices!r} for {full_key(key, 'devices')}: give a number of devices "
                f">= 1 (-1 = all), a list of device indices such as [0, 1], 'auto', or a string like '0,1'."
            )


def _is_batch_limit(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 1
    return isinstance(value, float) and 0.0 < value <= 1.0


def _is_devices(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 1 or value == -1
    if isinstance(value, str):
        text = value.strip()
        if text in ("auto", "-1"):
            return True
        parts = [p.strip() for p in text.rstrip(",").split(",")]
        return bool(text) and all(p.isdigit() for p in parts)
    if isinstance(value, (list, tuple)):
        return bool(value) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
    return False


@dataclass
class ScoringConfig:
    """Test-time scoring beyond coco-caption's BLEU/METEOR/ROUGE-L/CIDEr-D (always computed)."""

    spice: bool = True  # SPICE when its CoreNLP jars are found; reported unavailable (with why) otherwise
    spice_jar_dir: str | None = None  # folder with the CoreNLP 3.6.0 jars (default: pycocoevalcap's lib/)

    def check(self, key: str) -> None:
        jar_dir = self.spice_jar_dir
        if jar_dir and not Path(str(jar_dir)).expanduser().is_dir():
            raise ConfigError(
                f"{full_key(key, 'spice_jar_dir')}={str(jar_dir)!r} is not a folder. Point it at the folder "
                "holding stanford-corenlp-3.6.0.jar and stanford-corenlp-3.6.0-models.jar, or remove the key "
                "(SPICE is then reported unavailable, with the reason, and the other metrics are unaffected)."
            )


@dataclass
class FeaturesConfig:
    """The frozen-encoder feature cache (``fusionbench.features.cache``)."""

    cache: bool = True  # a frozen encoder's features are computed once, then read from disk
    dir: str | None = None  # default: $FUSIONBENCH_CACHE/features (~/.cache/fusionbench/features)


@dataclass
class WandbConfig:
    """Weights & Biases logging (``fusionbench.tracking``); ``disabled`` never imports wandb."""

    mode: WandbMode = "disabled"  # auto: online if credentials and network, else offline
    project: str = "fusionbench"
    entity: str | None = None
    group: str | None = None  # default: the experiment (grid) name
    tags: list[str] = field(default_factory=list)  # added to encoder, fusion, decoder, dataset
    dir: str | None = None  # W&B writes <dir>/wandb/ (offline-run-*); default: output_dir
    predictions: NonNegativeInt = 16  # test images in the `predictions` table (0 = no table)
    attention_images: NonNegativeInt = 4  # images with attention heatmaps (attention fusion; 0 = none)
    attention_words: NonNegativeInt = 5  # words per image with a heatmap
    log_every_n_steps: PositiveInt | None = (
        1  # train/loss, train/lr cadence (null: trainer.log_every_n_steps)
    )
    system_metrics: bool = False  # W&B's CPU/GPU/memory sampling (a background process)
    init_timeout: PositiveFloat = 30.0  # seconds wandb.init may take online before falling back to offline
    settings: dict[str, Any] = field(default_factory=dict)  # extra wandb.Settings fields


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    run_name: str | None = None
    seed: Seed = 0
    output_dir: str = "runs"
    threads: NonNegativeInt = 0  # torch intra-op threads; 0 = torch's default
    data: Any = field(default_factory=lambda: {"name": "shapes"})
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    scst: ScstConfig = field(default_factory=ScstConfig)
    plugins: list[str] = field(default_factory=list)  # modules or .py files imported first
    metrics: list[Any] = field(default_factory=list)  # extra metrics (registry names or {name: ...})


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(
            f"Config file '{path}' does not exist. Check the path (experiment files live in experiments/)."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"Config file '{path}' is not UTF-8 text ({err.reason} at byte {err.start})."
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(
            f"Config file '{path}' is not valid YAML{where}: {problem}. Fix the syntax there."
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file '{path}' must contain a mapping of keys (e.g. `model:`), not a {type(data).__name__}."
        )
    return data


def file_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[str, dict]]:
    """The file's ``base:`` chain, lowest layer first."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"Config files extend each other in a cycle: {chain}. Remove one `base:`.")
    data = _read_yaml(path)
    plugins = data.get("plugins")
    if isinstance(plugins, list):  # .py paths are relative to the file that names them
        data["plugins"] = [
            str((path.parent / p).resolve())
            if isinstance(p, str) and p.endswith(".py") and not Path(p).is_absolute()
            else p
            for p in plugins
        ]
    base = data.pop("base", None)
    layers: list[tuple[str, dict]] = []
    bases = [base] if isinstance(base, str) else (base or [])
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: `base:` must be a path or a list of paths to other experiment files.")
    for b in bases:
        layers.extend(file_layers((path.parent / b), (*seen, path)))
    layers.append((str(path), data))
    return layers


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, (dict, DictConfig)) or part not in d:
            return None
        d = d[part]
    return d


def _reset_switched_components(acc: DictConfig, layer: dict) -> None:
    """Drop the accumulated options of a component whose ``name`` this layer changes."""
    for key, _ in COMPONENTS:
        new = _get(layer, key)
        new_name = new.get("name") if isinstance(new, dict) else new if isinstance(new, str) else None
        old = OmegaConf.select(acc, key)
        if new_name is not None and old is not None and old.get("name") != new_name:
            OmegaConf.update(acc, key, {"name": new_name}, merge=False)
        if isinstance(new, str):  # shorthand `encoder: vit`
            parent, _, leaf = key.rpartition(".")
            target = _get(layer, parent) if parent else layer
            target[leaf] = {"name": new}


def _merge(acc: DictConfig, layer: dict, source: str) -> DictConfig:
    _reset_switched_components(acc, layer)
    try:
        check_choices(ExperimentConfig, layer)  # worded before OmegaConf's own Literal check
    except ConfigError as err:
        raise ConfigError(f"In {source}: {err}") from None
    try:
        return OmegaConf.merge(acc, layer)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        msg = str(getattr(err, "msg", err)).splitlines()[0]
        if "Key" in msg and "not in" in msg:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(acc, parent) if parent else acc
            valid = list(node.keys()) if isinstance(node, DictConfig) else []
            close = difflib.get_close_matches(leaf, valid, n=1)
            hint = f" Did you mean '{parent + '.' if parent else ''}{close[0]}'?" if close else ""
            raise ConfigError(
                f"Unknown config key '{key}' in {source}.{hint} Valid keys under "
                f"'{parent or '(top level)'}': {', '.join(valid)}."
            ) from None
        raise ConfigError(f"Invalid value for '{key}' in {source}: {msg}") from None


def parse_overrides(overrides: list[str]) -> dict:
    """``["a.b=1", "c=[1,2]"]`` -> nested dict, values parsed as YAML."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Override '{item}' is not of the form key=value (e.g. trainer.max_epochs=2).")
        key, value = item.split("=", 1)
        key = key.strip().lstrip("+")
        if not key:
            raise ConfigError(f"Override '{item}' has an empty key.")
        try:
            parsed = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            parsed = value
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override '{item}' conflicts with another override of '{p}'.")
        node[parts[-1]] = parsed
    return out


def compose(layers: list[tuple[str, dict]]) -> DictConfig:
    """Merge layers onto the typed defaults and validate every component section."""
    from fusionbench import registry as registries
    from fusionbench.plugins import load_plugins

    cfg = OmegaConf.structured(ExperimentConfig)
    for source, layer in layers:
        cfg = _merge(cfg, layer, source)
    load_plugins(list(cfg.plugins), where="the config's `plugins:` list")
    DecodingConfig.from_cfg(cfg.decoding)  # its __post_init__ checks the values, naming decoding.<key>
    check_config(OmegaConf.to_object(cfg))  # the experiment's own sections (components are Any here)
    context = {"d_model": int(cfg.model.d_model)}
    for i, node in enumerate(list(cfg.metrics)):
        cfg.metrics[i] = registries.METRICS.resolve_config(node, f"metrics[{i}]", **context)
    for key, reg_name in COMPONENTS:
        registry = getattr(registries, reg_name)
        resolved = registry.resolve_config(OmegaConf.select(cfg, key), key, **context)
        OmegaConf.update(cfg, key, resolved, merge=False)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()) -> DictConfig:
    """Load an experiment file (or only the defaults when ``path`` is None) with overrides."""
    layers = file_layers(Path(path)) if path is not None else []
    if overrides:
        layers.append(("the command-line overrides", parse_overrides(list(overrides))))
    return compose(layers)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
