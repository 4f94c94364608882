from dataclasses import dataclass

import pytest

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
