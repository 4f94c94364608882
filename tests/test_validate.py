"""Bad values are rejected where the config is composed: `validate`, a grid's pre-flight and `run`
agree, and the message names the key, the value and what is allowed (``fusionbench.checks``)."""

from __future__ import annotations

import dataclasses
import typing

import grids
import pytest

from fusionbench.checks import rules
from fusionbench.cli import main
from fusionbench.config import PRECISIONS, ExperimentConfig, load_config
from fusionbench.errors import ConfigError
from fusionbench.registry import ALL


def assert_rejected(capsys, code: int, *needles: str) -> str:
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert code == 2, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (  # a Literal typo, with a did-you-mean
            ["model.fusion.name=late", "model.fusion.mode=gate"],
            ["model.fusion.mode", "'gate'", "Did you mean 'gated'?", "concat, add, gated"],
        ),
        (["loader.batch_size=-4"], ["loader.batch_size", "-4", ">= 1"]),  # negative int
        (["trainer.max_epochs=0"], ["trainer.max_epochs", "0", ">= 1", "untrained"]),
        (
            ["optim.schedule=cosin"],
            ["optim.schedule", "'cosin'", "Did you mean 'cosine'?", "cosine, constant"],
        ),
        (["model.decoder.dropout=1.5"], ["model.decoder.dropout", "1.5", "in [0, 1)"]),  # float range
        (  # an encoder option
            ["model.encoder.name=regions", "model.encoder.box_source=detectors"],
            ["model.encoder.box_source", "Did you mean 'detector'?", "dataset, detector, precomputed"],
        ),
        (  # a decoder option that depends on the model around it
            ["model.decoder.name=transformer", "model.decoder.num_heads=5"],
            ["model.decoder.num_heads", "5", "model.d_model=32"],
        ),
        (["data.max_objects=5"], ["data.max_objects", "5", "in [1, 4]"]),  # a dataset option
        (["trainer.precision=17"], ["trainer.precision", "17", "bf16-mixed"]),
        (["trainer.limit_train_batches=0"], ["trainer.limit_train_batches", "(0, 1]"]),
        (["logger.wandb.predictions=-1"], ["logger.wandb.predictions", ">= 0"]),
    ],
)
def test_validate_rejects_a_bad_value_naming_key_value_and_allowed(tiny_config, capsys, overrides, needles):
    assert_rejected(capsys, main(["validate", str(tiny_config), *overrides]), *needles)


def test_run_rejects_a_bad_value_before_anything_trains(tiny_config, tmp_path, capsys):
    code = main(["run", str(tiny_config), f"output_dir={tmp_path}", "loader.batch_size=-4", "--no-progress"])
    assert_rejected(capsys, code, "loader.batch_size")
    assert not any(tmp_path.iterdir())


def test_grid_preflight_rejects_one_bad_cell_before_any_cell_trains(tmp_path, capsys):
    path = grids.write_grid(tmp_path, {"axes": {"loader.batch_size": [16, -4]}})
    assert_rejected(capsys, main(["validate", str(path)]), "loader.batch_size", "-4", ">= 1")
    code = main(["run", str(path), "--no-progress", "--leaderboard-dir", ""])
    assert_rejected(capsys, code, "Grid cell", "loader.batch_size")
    assert not (tmp_path / "runs").exists()  # the valid first cell did not run either


# -- every declared constraint is enforced, and every numeric option declares one -------------------
def sections(cls: type, key: str = ""):
    """``(key, dataclass)`` of an experiment section and the sections nested in it."""
    yield key, cls
    for rule in rules(cls):
        if dataclasses.is_dataclass(rule.base):
            yield from sections(rule.base, f"{key}.{rule.name}" if key else rule.name)


def components():
    """``(registry, name, Config)`` of every built-in component with options (plugins that other
    tests registered in this process are theirs to check)."""
    for registry in ALL.values():
        for entry in registry.entries():
            if entry.config_cls is not None and entry.origin.startswith("built-in"):
                yield registry, entry.name, entry.config_cls


#: Options a component needs before its defaults are valid at all.
REQUIRED = {("dataset", "folder"): {"root": "images"}}
#: Sections whose numeric options are checked by their owner rather than by declared ranges here.
CHECKED_ELSEWHERE: set[str] = set()


def bad_values(rule) -> list:
    """One value outside each declared bound or enumeration of a field."""
    if rule.choices is not None:
        return ["no-such-choice"]
    rng = rule.range
    if rng is None:
        return []
    out = []
    for bound, step in ((rng.ge, -1), (rng.gt, 0), (rng.le, 1), (rng.lt, 0)):
        if bound is not None:
            value = bound + step
            if rule.base is float and step:
                value = bound + step * 0.5
            if value not in rng.also:
                out.append(int(value) if rule.base is int else float(value))
    return out


def section_cases():
    for key, cls in sections(ExperimentConfig):
        if key in CHECKED_ELSEWHERE:
            continue
        for rule in rules(cls):
            for value in bad_values(rule):
                yield pytest.param(
                    f"{key}.{rule.name}" if key else rule.name, value, id=f"{key}.{rule.name}={value}"
                )


def component_cases():
    for registry, name, cls in components():
        for rule in rules(cls):
            for value in bad_values(rule):
                yield pytest.param(
                    registry, name, rule.name, value, id=f"{registry.kind}:{name}.{rule.name}={value}"
                )


@pytest.mark.parametrize(("key", "value"), list(section_cases()))
def test_every_declared_section_constraint_is_enforced_when_composing(key, value):
    with pytest.raises(ConfigError, match=rf"Invalid value .* for {key}\b"):
        load_config(None, [f"{key}={value}"])


@pytest.mark.parametrize(("registry", "name", "field", "value"), list(component_cases()))
def test_every_declared_component_constraint_is_enforced_when_composing(registry, name, field, value):
    node = {"name": name, **REQUIRED.get((registry.kind, name), {}), field: value}
    with pytest.raises(ConfigError, match=rf"Invalid value .* for {registry.config_key}\.{field}\b"):
        registry.resolve_config(node, d_model=256)


def test_the_cases_above_cover_every_section_and_component():
    keys = {p.values[0].rsplit(".", 1)[0] if "." in p.values[0] else "" for p in section_cases()}
    assert {"", "loader", "text", "optim", "trainer", "model", "logger.wandb"} <= keys
    covered = {(p.values[0].kind, p.values[1]) for p in component_cases()}
    for registry, name, cls in components():
        if any(r.choices is not None or r.range is not None for r in rules(cls)):
            assert (registry.kind, name) in covered


def test_every_numeric_option_declares_its_domain():
    """A new int/float option without a ``Range`` (or an enumeration) fails here: declare what it
    allows in its type, e.g. ``PositiveInt`` or ``Annotated[float, Range(ge=0, lt=1)]``."""
    undeclared = []
    configs = [
        (key or "(top level)", cls) for key, cls in sections(ExperimentConfig) if key not in CHECKED_ELSEWHERE
    ]
    configs += [(f"{registry.kind} '{name}'", cls) for registry, name, cls in components()]
    for where, cls in configs:
        for rule in rules(cls):
            if rule.base in (int, float) and rule.range is None and rule.choices is None:
                undeclared.append(f"{where}: {rule.name}")
    assert not undeclared, f"numeric options without a declared range: {undeclared}"


def test_values_listed_for_lightning_match_lightning():
    from lightning_fabric.plugins.precision.precision import (
        _PRECISION_INPUT_INT,
        _PRECISION_INPUT_STR,
        _PRECISION_INPUT_STR_ALIAS,
    )
    from pytorch_lightning.accelerators import AcceleratorRegistry

    from fusionbench.config import Accelerator

    lightning = {*typing.get_args(_PRECISION_INPUT_STR), *typing.get_args(_PRECISION_INPUT_STR_ALIAS)}
    ours = {"bf16-mixed-if-native"}  # resolved to one of Lightning's by fusionbench.numerics
    assert set(PRECISIONS) == lightning | {str(p) for p in typing.get_args(_PRECISION_INPUT_INT)} | ours
    assert set(typing.get_args(Accelerator)) == {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}
