"""A run killed mid-training and resumed ends exactly where an uninterrupted run ends.

The killed run is a real separate process ended by ``os._exit`` in its second epoch (the
``dies_once`` test plugin), as a scheduler's kill or an OOM kill would end it; the rerun resumes
from ``last.ckpt``. Everything training consumes at random (the shuffling generator, dropout's
torch RNG, numpy, Python) must continue from the saved states, so the validation curve, the
chosen epoch, the test captions and every score are bit-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fusionbench.config import load_config
from fusionbench.experiment import run_experiment

CONFIGS = Path(__file__).parent / "configs"
PLUGIN = CONFIGS / "plugins" / "dies_once.py"


def _overrides(tmp_path: Path, run_name: str, marker: Path) -> list[str]:
    return [
        f"output_dir={tmp_path}",
        f"run_name={run_name}",
        f"plugins=[{PLUGIN}]",
        "model.fusion.name=dies_once",
        f"model.fusion.marker={marker}",
        "model.fusion.after_training_calls=4",  # 3 steps an epoch: dies in the second epoch
        "trainer.max_epochs=3",
        "logger.wandb.mode=disabled",
    ]


def test_a_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    never = tmp_path / "never-dies"
    never.write_text("already died\n")  # the marker exists: this run is never killed
    whole = run_experiment(
        load_config(CONFIGS / "tiny.yaml", _overrides(tmp_path, "whole", never)), progress=False
    )

    marker = tmp_path / "died"
    args = _overrides(tmp_path, "killed", marker)
    code = f"from fusionbench.cli import main; main(['run', {str(CONFIGS / 'tiny.yaml')!r}, *{args!r}])"
    env = {**os.environ, "FUSIONBENCH_NO_PROGRESS": "1"}
    died = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert died.returncode == 3 and marker.exists(), died.stderr[-2000:]
    run_dir = tmp_path / "tiny" / "killed"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "metrics.json").exists()

    resumed = run_experiment(load_config(CONFIGS / "tiny.yaml", args), progress=False, resume=True)
    assert resumed["cost"]["resumed"] is True
    assert resumed["val_history"] == whole["val_history"]
    assert resumed["val"] == whole["val"]
    for split in ("test", "test_novel"):
        assert resumed[split] == whole[split], split
        a = json.loads((Path(resumed["run_dir"]) / f"scores_{split}.json").read_text())
        b = json.loads((Path(whole["run_dir"]) / f"scores_{split}.json").read_text())
        assert a == b
    assert (Path(resumed["run_dir"]) / "predictions.json").read_text() == (
        Path(whole["run_dir"]) / "predictions.json"
    ).read_text()
