"""Early stopping within a maximum budget: a run stops once val/CIDEr stops improving, and what
it tests is the best epoch's checkpoint, not the last one."""

from pathlib import Path

import pytest
import torch

from fusionbench.config import load_config
from fusionbench.errors import ConfigError
from fusionbench.experiment import evaluate_checkpoint, run_experiment

CONFIGS = Path(__file__).parent / "configs"
# tiny.yaml at batch 4 and lr 0.01: val CIDEr-D x100 goes 0.0, 27.4, 20.5, 20.5, 25.6, ... (seed 0)
# so with patience 1 the run peaks in epoch 1 and stops after epoch 2, well inside the budget.
PEAKS_EARLY = ["loader.batch_size=4", "optim.lr=0.01", "scoring.spice=false", "trainer.max_epochs=6"]


def _epoch(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"])


def test_a_run_stops_when_validation_stops_improving_and_tests_its_best_epoch(tmp_path):
    cfg = load_config(
        CONFIGS / "tiny.yaml", [f"output_dir={tmp_path}", *PEAKS_EARLY, "trainer.early_stopping.patience=1"]
    )
    metrics = run_experiment(cfg, progress=False)
    history = [h["CIDEr"] for h in metrics["val_history"]]
    training = metrics["training"]
    best = max(range(len(history)), key=history.__getitem__)

    assert training["stopped_by"] == "early_stopping", history
    assert training["epochs_trained"] == len(history) < training["max_epochs"]
    assert history[-1] <= history[best]  # the epoch it stopped after did not improve
    assert training["best_epoch"] == best == metrics["val"]["epoch"]
    assert training["stopped_epoch"] == len(history) - 1 == best + 1  # patience 1
    assert 0 < best < len(history) - 1  # the best epoch is neither the first nor the last one
    checkpoints = Path(metrics["run_dir"]) / "checkpoints"
    assert metrics["checkpoint"] == "best.ckpt" and _epoch(checkpoints / "best.ckpt") == best
    # the early-stopping state is saved with the run, so a resumed run stops where this one did
    state = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)["callbacks"]
    (early,) = (v for k, v in state.items() if k.startswith("EarlyStopping"))
    assert early["patience"] == 1 and early["best_score"] == pytest.approx(history[best])
    # what was tested is the best epoch's checkpoint: testing it again gives the same scores
    again = evaluate_checkpoint(checkpoints / "best.ckpt", ["scoring.spice=false"], splits=["test"])
    assert again["test"]["CIDEr"] == metrics["test"]["CIDEr"]
    assert again["test"]["Bleu_4"] == metrics["test"]["Bleu_4"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.early_stopping.patience=0", "trainer.early_stopping.patience: it must be >= 1"),
        ("trainer.early_stopping.min_delta=-0.1", "trainer.early_stopping.min_delta: it must be >= 0"),
        ("trainer.early_stopping.patince=2", "Did you mean 'trainer.early_stopping.patience'"),
    ],
)
def test_bad_early_stopping_values_fail_when_the_config_is_composed(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(CONFIGS / "tiny.yaml", [override])
