"""Early stopping within a maximum budget: a run stops once val/CIDEr stops improving, and what
it tests is the best epoch's checkpoint, not the last one."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from fusionbench.config import load_config
from fusionbench.errors import ConfigError
from fusionbench.experiment import evaluate_checkpoint, run_experiment
from fusionbench.stopping import EarlyStoppingAfter

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
        ("trainer.early_stopping.min_epochs=0", "trainer.early_stopping.min_epochs: it must be >= 1"),
        ("trainer.early_stopping.patince=2", "Did you mean 'trainer.early_stopping.patience'"),
    ],
)
def test_bad_early_stopping_values_fail_when_the_config_is_composed(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(CONFIGS / "tiny.yaml", [override])


class _ScriptedValidation(pl.LightningModule):
    """A real Lightning module whose validation logs a scripted ``val/CIDEr`` curve, one value per epoch."""

    def __init__(self, curve: list[float]) -> None:
        super().__init__()
        self.curve = curve
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/CIDEr", self.curve[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _epochs_trained(tmp_path, curve, patience, min_epochs) -> int:
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(2, 1)), batch_size=2)
    early = EarlyStoppingAfter(monitor="val/CIDEr", mode="max", patience=patience, min_epochs=min_epochs)
    trainer = pl.Trainer(
        max_epochs=len(curve),
        callbacks=[early],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_ScriptedValidation(curve), loader, loader)
    return trainer.current_epoch


# peaks at epoch 1, dips for three epochs (a high-learning-rate wobble), then beats it at epoch 5
WOBBLE = [0.5, 0.9, 0.8, 0.7, 0.6, 1.0, 0.9, 0.8, 0.7, 0.6]


def test_min_epochs_holds_early_stopping_back_and_a_later_improvement_keeps_the_run_going(tmp_path):
    # patience 2 alone stops after epoch 3, the dip's second validation
    assert _epochs_trained(tmp_path, WOBBLE, patience=2, min_epochs=None) == 4
    # held back until 6 epochs: the new best at epoch 5 resets patience, so it stops after epoch 7
    # (Lightning's Trainer(min_epochs=6) would stop after epoch 5 despite that improvement)
    assert _epochs_trained(tmp_path, WOBBLE, patience=2, min_epochs=6) == 8
    # once min_epochs have trained, exhausted patience stops at once
    assert _epochs_trained(tmp_path, WOBBLE, patience=2, min_epochs=3) == 4
    # a hold shorter than patience can ever act changes nothing (the default grid's 3 with patience 3)
    assert _epochs_trained(tmp_path, WOBBLE, patience=3, min_epochs=3) == _epochs_trained(
        tmp_path, WOBBLE, patience=3, min_epochs=None
    )
