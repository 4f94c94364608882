"""How a run trains its self-critical phase after (or instead of) the cross-entropy one.

``fusionbench.experiment`` calls ``ScstPhase.prepare`` before anything trains (bad input fails
there: a ``scst.init`` checkpoint of another model or vocabulary, a train split without
references), trains and tests the cross-entropy phase unless ``trains_xe`` says it is done or
replaced by ``scst.init``, then ``finish_xe`` and ``run``.

Checkpoints: the cross-entropy phase keeps ``checkpoints/best.ckpt``/``last.ckpt``; the SCST phase
writes ``checkpoints/scst/best.ckpt``/``last.ckpt``. ``checkpoints/xe_done.json`` (the ``xe``
block of ``metrics.json``) marks the cross-entropy phase finished: a run killed during SCST and
resumed skips it and continues from ``checkpoints/scst/last.ckpt``. The SCST phase always starts
the same way, whether the cross-entropy phase just ended or ended in an earlier process: the
weights of the starting checkpoint, torch/numpy/Python RNGs and the training shuffle re-seeded
from ``seed``; so a resumed run ends exactly where an uninterrupted one ends.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from fusionbench.errors import FusionbenchError
from fusionbench.io import atomic_write_json
from fusionbench.resume import RandomStates, best_checkpoint
from fusionbench.scst.module import ScstModule, scst_settings
from fusionbench.scst.reward import CiderReward

XE_DONE = "xe_done.json"
SCST_DIR = "scst"


class ScstInitError(FusionbenchError):
    """``scst.init`` names a checkpoint that cannot start this run's SCST phase."""


def _limit(value: Any) -> Any:
    return None if isinstance(value, float) and value == 1.0 else value


def vocabulary_words(tokenizer) -> list[str]:
    """The words a word vocabulary can emit (tokenised for the reward ahead of training)."""
    itos = getattr(tokenizer, "itos", None)
    return [w for w in itos if not w.startswith("<")] if isinstance(itos, list) else []


def final_checkpoint(cfg: DictConfig, run_dir: Path) -> Path:
    """The checkpoint a finished run's results come from: the best SCST epoch's when the run
    trained an SCST phase, else the best cross-entropy epoch's."""
    scst = cfg.get("scst")
    if scst is not None and bool(scst.enabled):
        return run_dir / "checkpoints" / SCST_DIR / "best.ckpt"
    return run_dir / "checkpoints" / "best.ckpt"


def check_init(cfg: DictConfig, model) -> dict[str, Any]:
    """The ``scst.init`` checkpoint, checked to hold this config's model and vocabulary."""
    from fusionbench.checkpoint import read_checkpoint

    path = Path(str(cfg.scst.init)).expanduser()
    ckpt = read_checkpoint(path)
    saved = ckpt["fusionbench"]
    ours = OmegaConf.to_container(cfg.model, resolve=True)
    theirs = saved["config"].get("model")
    if theirs != ours:
        diff = sorted(
            f"model.{k}" for k in set(ours) | set(theirs or {}) if (theirs or {}).get(k) != ours.get(k)
        )
        raise ScstInitError(
            f"scst.init={path} holds another model than this run's: {', '.join(diff)} differ (the "
            f"checkpoint has {json.dumps({k: (theirs or {}).get(k) for k in diff})}, this config "
            f"{json.dumps({k: ours.get(k) for k in diff})}). Point scst.init at a checkpoint of the "
            "same model, or give this run that checkpoint's model section."
        )
    if saved["tokenizer"] != model.tokenizer.to_dict():
        ours_n, theirs_n = len(model.tokenizer), len(saved["tokenizer"].get("itos") or saved["tokenizer"])
        raise ScstInitError(
            f"scst.init={path} has another vocabulary ({theirs_n} entries) than this run builds from its "
            f"train captions ({ours_n} entries, text.min_count={cfg.text.min_count}, data.name="
            f"{cfg.data.name}). Use a checkpoint trained on the same data and text settings."
        )
    return ckpt


def _load_weights(model, state_dict: dict[str, torch.Tensor]) -> None:
    prefix = "model."
    model.load_state_dict({k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)})


class ScstPhase:
    """The SCST phase of one run (see the module docstring)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, reward: CiderReward, init: dict[str, Any] | None):
        self.cfg = cfg
        self.settings = scst_settings(cfg)
        self.run_dir = run_dir
        self.reward = reward
        self.init = init
        self.xe: dict[str, Any] | None = None
        self.scst: dict[str, Any] | None = None
        self.last = run_dir / "checkpoints" / SCST_DIR / "last.ckpt"
        self.marker = run_dir / "checkpoints" / XE_DONE

    @classmethod
    def prepare(
        cls, cfg: DictConfig, dataset, model, run_dir: Path, *, resume: bool, writer: bool
    ) -> ScstPhase | None:
        """None without ``scst.enabled``; else the phase, every input checked (before any training)."""
        if cfg.get("scst") is None or not bool(cfg.scst.enabled):
            return None
        init = check_init(cfg, model) if cfg.scst.init else None
        reward = CiderReward.for_train(
            dataset.split("train").references(),
            bleu_weight=float(cfg.scst.bleu_weight) if cfg.scst.reward == "cider+bleu" else 0.0,
            words=vocabulary_words(model.tokenizer),
        )
        phase = cls(cfg, run_dir, reward, init)
        if not resume and writer:
            for stale in (phase.marker, phase.last, phase.last.with_name("best.ckpt")):
                stale.unlink(missing_ok=True)
        if resume and phase.marker.is_file() and init is None:
            phase.xe = json.loads(phase.marker.read_text(encoding="utf-8"))
        return phase

    @property
    def trains_xe(self) -> bool:
        """Whether the run trains (or resumes) its cross-entropy phase first."""
        return self.init is None and self.xe is None

    @property
    def start(self) -> Path:
        return (
            Path(str(self.cfg.scst.init)).expanduser()
            if self.init
            else self.run_dir / "checkpoints" / "best.ckpt"
        )

    def finish_xe(
        self, module, xe_trainer: pl.Trainer, datamodule, *, train_seconds: float, writer: bool
    ) -> None:
        """Record the cross-entropy phase (tested already, or the ``scst.init`` model, tested here)."""
        if self.xe is not None:
            return  # finished in an earlier process: its record was read back
        if self.init is not None:
            _load_weights(module.model, self.init["state_dict"])
            xe_trainer.test(module, datamodule=datamodule, verbose=False)
        self.xe = {
            "init": str(self.start) if self.init is not None else None,
            "val": module.best_val,
            "val_history": module.val_history,
            **{split: r["scores"].to_dict() for split, r in module.test_results.items()},
            "epochs": len(module.val_history),
            "train_seconds": train_seconds if self.init is None else 0.0,
        }
        if writer and self.init is None:
            atomic_write_json(self.marker, self.xe)

    def run(
        self,
        module,
        datamodule,
        references: dict[str, dict[int, list[str]]],
        *,
        placement: dict[str, Any],
        logger: Any,
        callbacks: list[pl.Callback],
        show: bool,
    ) -> tuple[ScstModule, pl.Trainer, pl.callbacks.ModelCheckpoint]:
        """Train the SCST phase from the starting checkpoint, then test its best epoch."""
        cfg, s, tc = self.cfg, self.settings, self.cfg.trainer
        start = (
            self.init
            if self.init is not None
            else torch.load(self.start, map_location="cpu", weights_only=True)
        )
        _load_weights(module.model, start["state_dict"])
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        datamodule.train_generator.manual_seed(int(cfg.seed))
        scst = ScstModule(module.model, cfg, references, module.eval_splits, self.reward)
        checkpoint = best_checkpoint(self.last.parent)
        extra: list[pl.Callback] = [checkpoint, RandomStates(), *callbacks]
        if s.patience:
            extra.append(pl.callbacks.EarlyStopping(monitor="val/CIDEr", mode="max", patience=s.patience))
        if show:
            extra.append(pl.callbacks.RichProgressBar(leave=True))
        trainer = pl.Trainer(
            **placement,
            max_epochs=s.epochs,
            limit_train_batches=_limit(tc.limit_train_batches),
            limit_val_batches=_limit(tc.limit_val_batches),
            log_every_n_steps=int(tc.log_every_n_steps),
            gradient_clip_val=float(cfg.optim.grad_clip) or None,
            deterministic=bool(tc.deterministic),
            default_root_dir=str(self.last.parent),
            logger=logger,
            callbacks=extra,
            enable_progress_bar=show,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        fit_start = time.perf_counter()
        resuming = self.last.is_file()
        trainer.fit(scst, datamodule=datamodule, ckpt_path=str(self.last) if resuming else None)
        seconds = time.perf_counter() - fit_start
        trainer.test(
            scst,
            datamodule=datamodule,
            ckpt_path="best" if checkpoint.best_model_path else None,
            verbose=False,
        )
        self.scst = {
            "settings": OmegaConf.to_container(cfg.scst, resolve=True),
            "val": scst.best_val,
            "val_history": scst.val_history,
            **{split: r["scores"].to_dict() for split, r in scst.test_results.items()},
            "epochs": len(scst.val_history),
            "train_seconds": seconds,
            "resumed": resuming,
        }
        return scst, trainer, checkpoint

    def blocks(self) -> dict[str, Any]:
        """``{"xe": ..., "scst": ...}`` for ``metrics.json``."""
        return {"xe": self.xe, "scst": self.scst}
