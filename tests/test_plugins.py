"""Plugins through real package metadata, config files and the environment; collisions; failures.

The example plugin is installed into an isolated site directory with a real ``.dist-info``
(METADATA + entry_points.txt), the way pip lays it out, and used from a separate process.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fusionbench.errors import RegistryError
from fusionbench.plugins import PluginImportError, load_plugin
from fusionbench.registry import FUSIONS

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "fusionbench-plugin-example"
CONFIGS = Path(__file__).parent / "configs"


def make_site(
    tmp_path: Path, name: str, version: str, entry_points: str, packages: dict[str, Path | str]
) -> Path:
    """A site directory holding packages and a dist-info with the given entry points."""
    site = tmp_path / "site"
    for pkg, src in packages.items():
        if isinstance(src, Path):
            shutil.copytree(src, site / pkg)
        else:
            (site / pkg).mkdir(parents=True)
            (site / pkg / "__init__.py").write_text(src)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(entry_points)
    return site


def example_site(tmp_path: Path) -> Path:
    import tomllib

    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    eps = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in items.items()) + "\n"
        for group, items in meta["project"]["entry-points"].items()
    )
    return make_site(
        tmp_path,
        meta["project"]["name"],
        meta["project"]["version"],
        eps,
        {"fusionbench_plugin_example": EXAMPLE / "fusionbench_plugin_example"},
    )


def fb(args, site=None, env_plugins=None, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(site) if site else "", env.get("PYTHONPATH", "")) if p
    )
    if env_plugins:
        env["FUSIONBENCH_PLUGINS"] = env_plugins
    else:
        env.pop("FUSIONBENCH_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-m", "fusionbench.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def test_plugins_from_entry_points_config_and_env_run_in_one_grid(tmp_path):
    site = example_site(tmp_path)
    env_plugin = str(CONFIGS / "plugins" / "env_plugin.py")
    listing = fb(["list", "fusions"], site=site, env_plugins=env_plugin)
    assert listing.returncode == 0, listing.stderr
    assert (
        "film" in listing.stdout
        and "fusionbench-plugin-example" in listing.stdout
        and "env_gate" in listing.stdout
    )

    out = tmp_path / "runs"
    result = fb(
        [
            "run",
            str(CONFIGS / "plugin_grid.yaml"),
            f"output_dir={out}",
            "--no-progress",
            "--leaderboard-dir",
            str(tmp_path / "lb"),
        ],
        site=site,
        env_plugins=env_plugin,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(line) for line in (out / "plugin-grid" / "results.jsonl").read_text().splitlines()]
    done = {r["cell"] for r in records if r["status"] == "completed"}
    assert done == {"film-s0", "config_gate-s0", "env_gate-s0", "late-s0", "convnext_grid-attention-s0"}
    metrics = json.loads((out / "plugin-grid" / "film-s0" / "metrics.json").read_text())
    assert "self_BLEU_4" in metrics["test"] and "distinct_1" in metrics["test"]  # plugin and built-in metrics
    board = (tmp_path / "lb" / "shapes.md").read_text()
    assert "film" in board and "convnext_grid" in board


CAPTION_TEST_SPLIT = """
import json, sys
import numpy as np
import torch
import fusionbench
from fusionbench.registry import DATASETS, DECODERS, ENCODERS

torch.set_num_threads(1)
captioner = fusionbench.load(sys.argv[1])
split = DATASETS.build(captioner.config.data).split("test")
images = [np.array(split.load_image(i)) for i in range(len(split))]
print(json.dumps({
    "captions": dict(zip(map(str, split.image_ids), captioner.caption(images))),
    "origins": [ENCODERS.get("convnext_grid").origin, DECODERS.get("gru").origin],
}))
"""


def test_plugin_encoder_and_decoder_round_trip_through_a_checkpoint(tmp_path):
    """A run of the example's encoder and decoder, its checkpoint loaded in a fresh process with
    fusionbench.load, captions the test images exactly as the run's own test did."""
    site = example_site(tmp_path)
    out = tmp_path / "runs"
    overrides = ["model.encoder.name=convnext_grid", "model.decoder.name=gru", "trainer.max_epochs=1"]
    run = fb(["run", str(CONFIGS / "tiny.yaml"), *overrides, f"output_dir={out}", "--no-progress"], site=site)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    (run_dir,) = {p.parent for p in out.glob("**/predictions.json")}
    ckpt = shutil.copy(run_dir / "checkpoints" / "best.ckpt", tmp_path / "plugin.ckpt")
    predictions = {
        str(p["image_id"]): p["caption"] for p in json.loads((run_dir / "predictions.json").read_text())
    }
    assert len(predictions) == 8  # tiny.yaml: num_test
    shutil.rmtree(out)  # the run folder is gone: only the checkpoint remains
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p),
    }
    loaded = subprocess.run(
        [sys.executable, "-c", CAPTION_TEST_SPLIT, str(ckpt)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert all("fusionbench-plugin-example" in origin for origin in result["origins"])
    assert result["captions"] == predictions


def test_registering_an_existing_name_names_both_origins(tmp_path):
    clash = tmp_path / "clash.py"
    clash.write_text(
        "from fusionbench.fusion.late import LateFusion\nfrom fusionbench.registry import FUSIONS\n\n"
        "@FUSIONS.register('attention')\nclass Clash(LateFusion):\n    pass\n"
    )
    with pytest.raises(PluginImportError) as err:
        load_plugin(str(clash), where="a test")
    msg = str(err.value)
    assert "registered twice" in msg and "built-in" in msg and "clash.py" in msg
    assert FUSIONS.get("attention").obj.__name__ == "AttentionFusion"

    ok = tmp_path / "override.py"
    ok.write_text(
        "from fusionbench.fusion.late import LateFusion\nfrom fusionbench.registry import FUSIONS\n\n"
        "@FUSIONS.register('late', override=True)\nclass MyLate(LateFusion):\n    pass\n"
    )
    original = FUSIONS._entries["late"]
    try:
        load_plugin(str(ok), where="a test")
        assert FUSIONS.get("late").obj.__name__ == "MyLate" and "override.py" in FUSIONS.get("late").origin
    finally:
        FUSIONS._entries["late"] = original


def test_plugin_that_fails_to_import(tmp_path):
    site = make_site(
        tmp_path,
        "broken-plugin",
        "0.3.0",
        "[fusionbench.fusions]\nbroken = broken_plugin:Broken\n",
        {"broken_plugin": "raise ImportError('needs a library that is not installed')\n"},
    )
    listing = fb(["list", "fusions"], site=site)
    assert listing.returncode == 0
    assert "broken" in listing.stdout and listing.stderr.count("needs a library") == 1  # warned once
    unrelated = fb(["validate", str(CONFIGS / "tiny.yaml")], site=site)
    assert unrelated.returncode == 0, unrelated.stderr
    using = fb(["run", str(CONFIGS / "tiny.yaml"), "model.fusion.name=broken"], site=site)
    assert using.returncode == 2 and "Traceback" not in using.stderr
    for needle in ("broken", "broken-plugin", "broken_plugin:Broken", "needs a library"):
        assert needle in using.stderr, needle


def test_config_plugin_that_is_missing_fails_before_training(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"base: {CONFIGS / 'tiny.yaml'}\nplugins: [does_not_exist.py]\n")
    from fusionbench.config import load_config

    with pytest.raises(RegistryError, match="does_not_exist.py"):
        load_config(cfg)


def test_scaffolded_plugins_pass_their_own_tests(tmp_path):
    from fusionbench.scaffold import KINDS, new_plugin

    roots = [new_plugin(f"fb-{kind}", kind=kind, directory=tmp_path) for kind in KINDS]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(r) for r in roots)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *[str(r / "tests") for r in roots]],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "10 passed" in result.stdout
    meta = (roots[1] / "pyproject.toml").read_text()
    assert '[project.entry-points."fusionbench.fusions"]' in meta and "gated_sum" in meta
