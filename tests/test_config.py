import pytest

from fusionbench.config import load_config, parse_overrides
from fusionbench.errors import ConfigError, RegistryError


def test_defaults_are_filled_and_component_options_resolved(tiny_config):
    cfg = load_config(tiny_config)
    assert cfg.name == "tiny"
    assert cfg.model.encoder.model_name == "resnet10t"
    assert cfg.model.decoder.num_layers == 1  # component default filled in
    assert cfg.optim.weight_decay == 0.01  # top-level default


def test_base_chain_merges_child_over_parent(tiny_config):
    cfg = load_config(tiny_config.parent / "child.yaml")
    assert cfg.name == "child"
    assert cfg.trainer.max_epochs == 1
    assert cfg.model.decoder.num_layers == 2
    assert cfg.model.decoder.attention_dim == 16  # inherited from the base file
    assert cfg.data.num_train == 48


def test_overrides_win_and_are_typed(tiny_config):
    cfg = load_config(tiny_config, ["trainer.max_epochs=5", "model.d_model=64", "optim.lr=1e-4"])
    assert cfg.trainer.max_epochs == 5 and cfg.model.d_model == 64 and cfg.optim.lr == pytest.approx(1e-4)


def test_switching_a_component_drops_the_old_components_options(tiny_config):
    cfg = load_config(tiny_config, ["model.fusion.name=late"])
    assert cfg.model.fusion.name == "late" and cfg.model.fusion.mode == "concat"
    cfg = load_config(tiny_config, ["model.fusion.name=early", "model.fusion.prefix=tokens"])
    assert cfg.model.fusion.prefix == "tokens"


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("trainer.max_epoch=2", r"trainer\.max_epoch.*Did you mean 'trainer\.max_epochs'"),
        ("trainer.max_epochs=many", r"trainer\.max_epochs"),
        ("model.decoder.num_layer=2", r"model\.decoder\.num_layer.*Did you mean 'num_layers'"),
        ("model.decoder.num_layers=two", r"model\.decoder\.num_layers"),
        ("data.num_trian=3", r"data\.num_trian"),
        ("bogus=1", r"bogus"),
        ("trainer.max_epochs", r"key=value"),
    ],
)
def test_bad_keys_and_types_name_the_key(tiny_config, override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(tiny_config, [override])


def test_unknown_component_name_suggests(tiny_config):
    with pytest.raises(RegistryError, match="Did you mean 'attention'"):
        load_config(tiny_config, ["model.fusion.name=atention"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  encoder: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*not valid YAML.*line"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must contain a mapping"):
        load_config(lst)


def test_base_cycle_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_parse_overrides_nests_and_parses_values():
    assert parse_overrides(["a.b=1", "a.c=x", "d=[1, 2]"]) == {"a": {"b": 1, "c": "x"}, "d": [1, 2]}


def test_scoring_section_defaults_and_a_missing_spice_folder(tiny_config, tmp_path):
    cfg = load_config(tiny_config)
    assert cfg.scoring.spice is True and cfg.scoring.spice_jar_dir is None
    assert load_config(tiny_config, [f"scoring.spice_jar_dir={tmp_path}"]).scoring.spice_jar_dir == str(
        tmp_path
    )
    with pytest.raises(ConfigError, match=r"scoring.spice_jar_dir=.*nope.*is not a folder"):
        load_config(tiny_config, [f"scoring.spice_jar_dir={tmp_path / 'nope'}"])


@pytest.mark.parametrize(
    "override",
    [
        "trainer.precision=16",  # YAML's number 16: Lightning's "16"
        "trainer.precision=bf16-mixed",
        "trainer.devices=[0, 1]",
        "trainer.devices=-1",
        "trainer.devices=auto",
        "trainer.devices='0,1'",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=0.5",
        "optim.schedule=constant",
        "optim.grad_clip=0",
        "logger.wandb.log_every_n_steps=null",
        "data.num_train=0",
        "seed=4294967295",
    ],
)
def test_values_inside_the_declared_domains_pass(tiny_config, override):
    load_config(tiny_config, [override])


def test_precision_written_as_a_number_is_kept_as_lightning_reads_it(tiny_config):
    assert load_config(tiny_config, ["trainer.precision=16"]).trainer.precision == "16"


def test_a_bad_enumeration_value_in_a_file_names_the_file(tmp_path, tiny_config):
    path = tmp_path / "exp.yaml"
    path.write_text(f"base: {tiny_config}\noptim:\n  schedule: linear\n")
    with pytest.raises(
        ConfigError, match=r"exp\.yaml: Invalid value 'linear' for optim\.schedule\. .*cosine, constant"
    ):
        load_config(path)


def test_decoder_heads_must_divide_the_model_width(tiny_config):
    with pytest.raises(ConfigError, match=r"model\.decoder\.num_heads: it must divide model\.d_model=32"):
        load_config(tiny_config, ["model.decoder.name=bert", "model.decoder.num_heads=3"])
    load_config(tiny_config, ["model.decoder.name=bert", "model.decoder.num_heads=8"])
