from dataclasses import dataclass
from typing import Annotated, Literal

import pytest

from fusionbench.checks import PositiveInt, Range, check_divides
from fusionbench.errors import ConfigError, RegistryError
from fusionbench.registry import ALL, DECODERS, ENCODERS, FUSIONS, Registry


def make_registry() -> Registry:
    reg = Registry("widget", "model.widget")

    @reg.register("alpha")
    class Alpha:
        """An alpha widget."""

        @dataclass
        class Config:
            size: int = 3
            label: str = "a"

        def __init__(self, config):
            self.config = config

    return reg


def test_register_get_build_and_list():
    reg = make_registry()
    assert reg.names() == ["alpha"]
    assert reg.get("alpha").description == "An alpha widget."
    obj = reg.build({"name": "alpha", "size": 5})
    assert obj.config.size == 5 and obj.config.label == "a"
    assert reg.names("al*") == ["alpha"] and reg.names("z*") == []


def test_unknown_name_lists_valid_names_and_suggests():
    reg = make_registry()
    with pytest.raises(RegistryError) as err:
        reg.get("alpah")
    msg = str(err.value)
    assert "Unknown widget 'alpah'" in msg and "Did you mean 'alpha'" in msg and "alpha" in msg


def test_duplicate_registration_names_both_origins():
    reg = make_registry()
    with pytest.raises(RegistryError) as err:

        @reg.register("alpha")
        class Other:
            pass

    msg = str(err.value)
    assert "registered twice" in msg and "Alpha" in msg and "Other" in msg


def test_override_replaces_on_purpose():
    reg = make_registry()

    @reg.register("alpha", override=True)
    class Replacement:
        def __init__(self, config=None):
            pass

    assert reg.get("alpha").obj is Replacement


def test_unknown_key_and_wrong_type_name_the_full_path():
    reg = make_registry()
    with pytest.raises(ConfigError, match=r"model\.widget\.sise.*Did you mean 'size'"):
        reg.resolve_config({"name": "alpha", "sise": 1})
    with pytest.raises(ConfigError, match=r"model\.widget\.size"):
        reg.resolve_config({"name": "alpha", "size": "big"})


def test_typed_base_class_is_enforced():
    reg = Registry("thing", "x", base=int)
    with pytest.raises(RegistryError, match="must subclass"):

        @reg.register("s")
        class NotAnInt:
            pass


def test_builtin_registries_are_populated():
    assert "cnn" in ENCODERS.names()
    assert {"early", "late", "attention"} <= set(FUSIONS.names())
    assert "lstm" in DECODERS.names()
    assert "shapes" in ALL["datasets"].names()


def test_declared_values_are_checked_by_resolve_and_build():
    """A component's Config declares its enumerations (Literal), ranges (Range) and cross-field or
    context checks (``check``); the registry applies them before anything is constructed."""
    reg = Registry("widget", "model.widget")
    built = []

    @reg.register("gear")
    class Gear:
        @dataclass
        class Config:
            teeth: PositiveInt = 12
            finish: Literal["matte", "gloss"] = "matte"
            ratio: Annotated[float, Range(gt=0, le=4)] = 1.0

            def check(self, key: str, d_model: int | None = None) -> None:
                check_divides(f"{key}.teeth", self.teeth, "model.d_model", d_model)

        def __init__(self, config):
            built.append(config)

    with pytest.raises(ConfigError, match=r"Invalid value 0 for model\.widget\.teeth: it must be >= 1"):
        reg.build({"name": "gear", "teeth": 0})
    with pytest.raises(
        ConfigError, match=r"'glos' for model\.widget\.finish\. Did you mean 'gloss'\? .*matte, gloss"
    ):
        reg.build({"name": "gear", "finish": "glos"})
    with pytest.raises(ConfigError, match=r"4\.5 for model\.widget\.ratio: it must be in \(0, 4\]"):
        reg.resolve_config({"name": "gear", "ratio": 4.5})
    with pytest.raises(ConfigError, match=r"model\.widget\.teeth: it must divide model\.d_model=32"):
        reg.resolve_config({"name": "gear", "teeth": 12}, d_model=32)
    assert reg.resolve_config({"name": "gear", "teeth": 8}, d_model=32).teeth == 8
    assert reg.resolve_config({"name": "gear", "teeth": 12}).teeth == 12  # no d_model here: not checked
    assert not built
    reg.build({"name": "gear", "finish": "gloss"})
    assert built[0].finish == "gloss"


def test_a_config_built_in_python_is_checked_like_a_composed_one():
    from fusionbench.fusion.late import LateFusion

    with pytest.raises(ConfigError, match=r"'gate' for model\.fusion\.mode\. Did you mean 'gated'"):
        LateFusion(LateFusion.Config(mode="gate"), d_model=8)
    with pytest.raises(ConfigError, match=r"Invalid value 'three' for model\.fusion\.mode"):
        FUSIONS.build({"name": "late", "mode": "three"}, d_model=8)
