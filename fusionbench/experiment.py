"""Run one experiment: build data and model from a validated config, train, test, write results.

A run writes ``<output_dir>/<name>/<run_name>/``: ``config.yaml`` (resolved), ``vocab.json``,
``metrics.json`` (val and every evaluation split's scores on coco-caption's raw scale, the test
``decoding`` they were decoded with, parameter counts per component, training images/s,
inference ms/image, wall time), ``predictions.json``
(COCO results format for the test split; other evaluation splits get
``predictions_<split>.json``), ``scores_<split>.json`` (per-image scores, for bootstrap intervals)
and ``checkpoints/best.ckpt``. Every file is written atomically. ``reevaluate_run`` tests a
finished run's best checkpoint again with other test-time settings (decoding, scoring), no training.
With ``scst.enabled`` a self-critical phase follows the cross-entropy one (``fusionbench.scst.phase``):
its checkpoints go to ``checkpoints/scst/``, the final scores are its best epoch's, and
``metrics.json`` adds both phases' ``xe`` and ``scst`` blocks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from fusionbench.cost import (
    measure_model,
    peak_memory_mb,
    peak_memory_source,
    reset_peak_memory,
    typical_caption_length,
)
from fusionbench.data.module import CaptionDataModule, CaptionImages, batch_inputs
from fusionbench.data.stats import data_report
from fusionbench.decoding import DecodingConfig
from fusionbench.diagnostics.run import run_diagnostics
from fusionbench.errors import DataError
from fusionbench.io import atomic_write_json, atomic_write_text
from fusionbench.logs import quiet_known_noise
from fusionbench.metrics.collapse import caption_collapse
from fusionbench.model import build_model, build_tokenizer
from fusionbench.module import CaptionModule
from fusionbench.naming import components
from fusionbench.numerics import numerics_report, resolve_precision
from fusionbench.plugins import load_plugins
from fusionbench.registry import DATASETS
from fusionbench.resume import RandomStates, best_checkpoint
from fusionbench.scst.phase import ScstPhase, final_checkpoint
from fusionbench.stopping import EarlyStoppingAfter, early_stopping

SCALE_NOTE = (
    "Scores use coco-caption's keys and raw scale: Bleu_1..4, METEOR and ROUGE_L in 0-1, CIDEr is "
    "CIDEr-D (~0-10) with document frequencies from the evaluated references. Tables show x100."
)


class ThroughputMeter(pl.Callback):
    """Steady-state training images/s: batches after the first ``warmup`` of a fit are timed."""

    def __init__(self, warmup: int = 3) -> None:
        self.warmup = warmup
        self.seen_batches = 0
        self.images = 0
        self.seconds = 0.0
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen_batches += 1
        if self.seen_batches > self.warmup:
            self.seconds += time.perf_counter() - self._start
            self.images += len(batch["image_ids"])

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None


def compute_extra_metrics(
    cfg: DictConfig, predictions: dict[int, str], references: dict[int, list[str]]
) -> dict[str, float]:
    """The config's extra metrics (``metrics:`` list) on one split's predictions."""
    from fusionbench.registry import METRICS

    out: dict[str, float] = {}
    for i, node in enumerate(cfg.metrics):
        metric = METRICS.build(node, f"metrics[{i}]")
        out.update({k: float(v) for k, v in metric.compute(predictions, references).items()})
    return out


def build_experiment(
    cfg: DictConfig, dataset
) -> tuple[Any, Any, CaptionDataModule, dict[str, dict[int, list[str]]]]:
    """Tokenizer (fitted on the train captions), model, data module and the references of the
    validation and evaluation splits: everything a run trains and scores, from its config."""
    train = dataset.split("train")
    tokenizer = build_tokenizer(
        cfg.model, [c for caps in train.captions for c in caps], int(cfg.text.min_count)
    )
    model = build_model(cfg.model, tokenizer)
    datamodule = make_datamodule(cfg, dataset, tokenizer)
    references = {s: dataset.split(s).references() for s in ["val", *dataset.eval_splits()]}
    return tokenizer, model, datamodule, references


def make_datamodule(cfg: DictConfig, dataset, tokenizer) -> CaptionDataModule:
    """The data module of a config's ``loader``/``text``/``seed`` settings over ``dataset``."""
    return CaptionDataModule(
        dataset,
        tokenizer,
        batch_size=int(cfg.loader.batch_size),
        eval_batch_size=int(cfg.loader.eval_batch_size),
        num_workers=int(cfg.loader.num_workers),
        max_words=int(cfg.text.max_words),
        seed=int(cfg.seed),
    )


def default_run_name(cfg: DictConfig) -> str:
    m = cfg.model
    return f"{m.encoder.name}-{m.fusion.name}-{m.decoder.name}-s{cfg.seed}"


def run_dir_for(cfg: DictConfig) -> Path:
    return Path(cfg.output_dir) / str(cfg.name) / str(cfg.run_name or default_run_name(cfg))


def _predictions_json(predictions: dict[int, str]) -> list[dict[str, Any]]:
    return [{"image_id": int(i), "caption": c} for i, c in sorted(predictions.items())]


def use_precomputed(store, datamodule: CaptionDataModule, splits) -> dict[str, Any]:
    """Read precomputed features from ``store``, after checking it has every image of ``splits``."""
    ids = [int(i) for split in splits for i in split.image_ids]
    missing = store.missing(ids)
    if missing:
        listed = ", ".join(str(i) for i in missing[:10])
        raise DataError(
            f"{store.path} has no features for {len(missing)} of the dataset's {len(ids)} images "
            f"(first: {listed}). Extract them with `fusionbench extract-features <config> --out {store.path}` "
            "or point model.encoder.features at the files made for this dataset."
        )
    datamodule.use_features(store)
    return {"source": "precomputed", "path": str(store.path), "images": len(ids)}


def attach_features(cfg: DictConfig, model, datamodule: CaptionDataModule, dataset) -> dict[str, Any] | None:
    """Make the data module read stored features where the encoder allows (``fusionbench.features``).

    An encoder that reads precomputed features gets its store (every image checked before training);
    a frozen encoder gets the feature cache (``features.cache``). Returns what was done, or None.
    """
    from fusionbench.features.cache import cache_root, cached_features

    encoder = model.encoder
    splits = {s: dataset.split(s) for s in ["train", "val", *dataset.eval_splits()]}
    store = encoder.feature_store()
    if store is not None:
        return use_precomputed(store, datamodule, splits.values())
    if not (cfg.features.cache and encoder.extract_is_frozen()):
        return None
    accelerator = str(cfg.trainer.accelerator)
    device = "cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"
    store, info = cached_features(
        encoder,
        cfg.data,
        splits,
        cache_root(cfg),
        batch_size=int(cfg.loader.eval_batch_size),
        device=device,
    )
    datamodule.use_features(store)
    return {"source": "cache", **info}


def _limit(value: Any) -> Any:
    """``limit_*_batches``: the float 1.0 (all batches) is Lightning's default; passing it explicitly
    only makes Lightning print that it was configured. An int 1 (one batch) is passed as is."""
    return None if isinstance(value, float) and value == 1.0 else value


def _measure_cost(
    cfg: DictConfig, model, datamodule: CaptionDataModule, split: str, device, decoding: DecodingConfig
) -> dict[str, Any]:
    """FLOPs and greedy/beam inference time on the first images of ``split`` (``fusionbench.cost``),
    decoding with the run's test-time ``decoding``.

    Measured from pixels, so cells that read cached features cost what they would cost on images;
    only an encoder that cannot see images is measured on its stored features.
    """
    images = CaptionImages(datamodule.split(split), model.encoder.feature_store())
    batch = datamodule.collate([images[k] for k in range(min(len(images), 16))])
    train = datamodule.split("train")
    max_words = int(cfg.text.max_words)
    lengths = [len(model.tokenizer.encode(c, max_words)) - 1 for caps in train.captions[:200] for c in caps]
    return measure_model(
        model,
        batch_inputs(batch),
        batch["boxes"],
        decoding=decoding,
        caption_length=typical_caption_length(lengths),
        device=device,
    )


def _evaluation_results(
    cfg: DictConfig,
    module: CaptionModule,
    datamodule: CaptionDataModule,
    references: dict[str, dict[int, list[str]]],
    features: dict[str, Any] | None,
    device,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a tested module's decoding decides: ``({split: scores, "collapse", "degenerate",
    "diagnostics"}, cost entries)``.

    Shared by a run and a re-evaluation (``reevaluate_run``), so both write the same figures.
    """
    scores: dict[str, Any] = {}
    for split, result in module.test_results.items():
        scores[split] = result["scores"].to_dict()
        extra = compute_extra_metrics(cfg, result["predictions"], references[split])
        if extra:
            scores[split].update(extra)
            scores[split]["extra_keys"] = sorted(extra)
    # one caption for (nearly) every image: flagged, with the reason, for leaderboards and W&B
    scores["collapse"] = {s: caption_collapse(r["predictions"]) for s, r in module.test_results.items()}
    degenerate = [f"{s}: {c['reason']}" for s, c in scores["collapse"].items() if c["degenerate"]]
    scores["degenerate"] = "; ".join(degenerate) or None
    # how each split's captions use the image (fusionbench.diagnostics): only adds keys
    scores["diagnostics"] = run_diagnostics(cfg, module, datamodule, references, scores, device)
    measured = _measure_cost(cfg, module.model, datamodule, module.eval_splits[0], device, module.decoding)
    decode_ms = {s: r["ms_per_image"] for s, r in module.test_results.items()}
    # Test decoding of a cell that read cached features skipped the encoder; its per-split figure
    # would not compare with other cells', so those report the pixels-to-caption beam timing.
    per_split_ms = (
        {s: measured["beam"] for s in decode_ms} if features and features["source"] == "cache" else decode_ms
    )
    cost = {
        # <split>: decoding time per image while testing (configured beam; what leaderboards read);
        # greedy/beam: the same fixed batch timed the same way for every combination (fusionbench.cost)
        "inference_ms_per_image": {**per_split_ms, "greedy": measured["greedy"], "beam": measured["beam"]},
        "test_decode_ms_per_image": decode_ms,
        "inference_setup": measured["setup"],
        "flops_per_image": measured["flops_per_image"],
        "flops_caption_length": measured["flops_caption_length"],
    }
    return scores, cost


def _write_evaluation_files(run_dir: Path, module: CaptionModule) -> None:
    """``predictions[_<split>].json`` and ``scores_<split>.json`` of every tested split (atomically)."""
    for split, result in module.test_results.items():
        name = "predictions.json" if split == "test" else f"predictions_{split}.json"
        atomic_write_json(run_dir / name, _predictions_json(result["predictions"]))
        per_image = {str(i): s for i, s in sorted(result["scores"].per_image.items())}
        atomic_write_json(run_dir / f"scores_{split}.json", per_image)


def device_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The ``pl.Trainer`` arguments that place a run on devices (``trainer.*``, passed through;
    ``bf16-mixed-if-native`` resolved for this host by ``fusionbench.numerics``)."""
    tc = cfg.trainer
    devices = tc.devices
    if OmegaConf.is_config(devices):
        devices = OmegaConf.to_container(devices)
    return dict(
        accelerator=str(tc.accelerator),
        devices=devices,
        num_nodes=int(tc.get("num_nodes", 1)),
        strategy=str(tc.get("strategy", "auto")),
        precision=resolve_precision(str(tc.precision), str(tc.accelerator)),
    )


def training_report(
    cfg: DictConfig, trainer: pl.Trainer, module: CaptionModule, early: EarlyStoppingAfter | None
) -> dict[str, Any]:
    """``metrics.json["training"]``: how long the run trained and why it stopped.

    ``best_epoch`` (0-based, as in ``val_history``) is the epoch whose checkpoint was tested;
    ``epochs_trained`` counts epochs including those of a resumed run's first attempt;
    ``stopped_by`` is ``early_stopping`` (``val/CIDEr`` stopped improving before the budget) or
    ``max_epochs`` (the budget ran out). Read right after ``fit``: testing the best checkpoint
    restores the callbacks' states as they were at the best epoch.
    """
    # patience exhausted at the budget's last epoch is the budget running out, not an early stop
    stopped_early = (
        early is not None and early.stopped_epoch > 0 and trainer.current_epoch < int(cfg.trainer.max_epochs)
    )
    return {
        "max_epochs": int(cfg.trainer.max_epochs),
        "epochs_trained": int(trainer.current_epoch),
        "best_epoch": module.best_val.get("epoch"),
        "stopped_by": "early_stopping" if stopped_early else "max_epochs",
        "stopped_epoch": int(early.stopped_epoch) if stopped_early else None,
        "early_stopping": (
            {  # as the callback holds them (Lightning negates min_delta for mode "min")
                "patience": int(early.patience),
                "min_delta": abs(float(early.min_delta)),
                "min_epochs": early.min_epochs,
            }
            if early
            else None
        ),
    }


def is_rank_zero() -> bool:
    """True in the process that writes results (rank 0 of a distributed run, or a single process).

    Lightning reads the rank from the environment its launcher sets (``RANK``/``LOCAL_RANK``...),
    so this holds before the ``Trainer`` exists as well as after.
    """
    from pytorch_lightning.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def run_experiment(
    cfg: DictConfig,
    *,
    progress: bool | None = None,
    resume: bool = False,
    callbacks: list[pl.Callback] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one configuration; returns the content written to ``metrics.json``.

    ``resume=True`` continues from ``checkpoints/last.ckpt`` when the run folder has one (the grid
    uses this for a cell that was interrupted); otherwise training starts from scratch.
    W&B logging (``logger.wandb``, see ``fusionbench.tracking``) starts first and is finished in a
    ``finally``, so a failing run never leaks its W&B run into the next one.
    """
    from fusionbench.tracking import NullTracker, start_run_tracking

    quiet_known_noise()
    tracker = start_run_tracking(cfg, run_dir_for(cfg)) if is_rank_zero() else NullTracker()
    ok = False
    try:
        metrics = _run_experiment(cfg, tracker, progress=progress, resume=resume, callbacks=callbacks)
        ok = True
        return metrics
    finally:
        tracker.finish(exit_code=0 if ok else 1)


def _run_experiment(
    cfg: DictConfig,
    tracker: Any,
    *,
    progress: bool | None,
    resume: bool,
    callbacks: list[pl.Callback] | None,
) -> dict[str, Any]:
    wall_start = time.perf_counter()
    reset_peak_memory()
    load_plugins(list(cfg.plugins), where="the config's `plugins:` list")
    run_dir = run_dir_for(cfg)
    writer = is_rank_zero()  # in a distributed run only rank 0 writes files
    run_dir.mkdir(parents=True, exist_ok=True)
    if writer:
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)

    dataset = DATASETS.build(cfg.data)
    tokenizer, model, datamodule, references = build_experiment(cfg, dataset)
    eval_splits = dataset.eval_splits()
    if writer:
        atomic_write_json(run_dir / "vocab.json", tokenizer.to_dict())
    features = attach_features(cfg, model, datamodule, dataset)
    module = CaptionModule(model, cfg, references, eval_splits)
    scst = ScstPhase.prepare(cfg, dataset, model, run_dir, resume=resume, writer=writer)  # None: no SCST

    tc = cfg.trainer
    checkpoint = best_checkpoint(run_dir / "checkpoints")
    last = run_dir / "checkpoints" / "last.ckpt"
    if not resume and writer:
        for stale in (last, run_dir / "checkpoints" / "best.ckpt"):
            stale.unlink(missing_ok=True)
    meter = ThroughputMeter()
    show = bool(tc.enable_progress_bar) if progress is None else progress
    all_callbacks: list[pl.Callback] = [
        checkpoint,
        meter,
        RandomStates(),
        *tracker.callbacks,
        *(callbacks or []),
    ]
    early = early_stopping(cfg)
    if early is not None:
        all_callbacks.append(early)
    if show:
        all_callbacks.append(pl.callbacks.RichProgressBar(leave=True))
    trainer = pl.Trainer(
        **device_kwargs(cfg),
        max_epochs=int(tc.max_epochs),
        limit_train_batches=_limit(tc.limit_train_batches),
        limit_val_batches=_limit(tc.limit_val_batches),
        check_val_every_n_epoch=int(tc.check_val_every_n_epoch),
        log_every_n_steps=int(tracker.log_every_n_steps or tc.log_every_n_steps),
        gradient_clip_val=float(cfg.optim.grad_clip) or None,
        deterministic=bool(tc.deterministic),
        default_root_dir=str(run_dir),
        logger=tracker.logger,
        callbacks=all_callbacks,
        enable_progress_bar=show,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    fit_start = time.perf_counter()
    resuming = resume and last.is_file()
    train_seconds, training = 0.0, None  # no cross-entropy phase when SCST starts from scst.init
    if scst is None or scst.trains_xe:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resuming else None)
        train_seconds = time.perf_counter() - fit_start
        training = training_report(cfg, trainer, module, early)  # before testing reloads callback states
        trainer.test(
            module,
            datamodule=datamodule,
            ckpt_path="best" if checkpoint.best_model_path else None,
            verbose=False,
        )
    if scst is not None:  # self-critical training from the best cross-entropy epoch (fusionbench.scst)
        xe_seconds = train_seconds if scst.trains_xe else 0.0
        scst.finish_xe(module, trainer, datamodule, train_seconds=xe_seconds, writer=writer)
        module, trainer, checkpoint = scst.run(
            module, datamodule, references, placement=device_kwargs(cfg), logger=tracker.logger,
            callbacks=[*tracker.callbacks, *(callbacks or [])], show=show,
        )  # fmt: skip
        train_seconds, resuming = time.perf_counter() - fit_start, resuming or scst.scst["resumed"]

    if not trainer.is_global_zero:
        return {"rank": int(trainer.global_rank), "run_dir": str(run_dir)}
    metrics: dict[str, Any] = {
        "experiment": str(cfg.name),
        "run_name": run_dir.name,
        "seed": int(cfg.seed),
        "status": "completed",
        "components": components(cfg),
        "scale": SCALE_NOTE,
        "val": module.best_val,
        "val_history": module.val_history,
    }
    device = trainer.strategy.root_device
    scores, eval_cost = _evaluation_results(cfg, module, datamodule, references, features, device)
    metrics.update(scores)
    metrics["decoding"] = module.decoding.test_settings()
    metrics["params"] = model.parameter_counts()
    metrics["data"] = data_report(dataset, ["train", "val", *eval_splits])  # images used and skipped
    metrics["cost"] = {
        "train_images_per_s": meter.images_per_second,
        **eval_cost,
        "peak_memory_mb": peak_memory_mb(device),
        "peak_memory_source": peak_memory_source(device),
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - wall_start,
        "epochs": int(trainer.current_epoch),
        "resumed": resuming,
        "features": features,
    }
    metrics["training"] = training
    metrics["numerics"] = numerics_report(str(tc.precision), str(tc.accelerator), device)
    metrics["checkpoint"] = str(Path(checkpoint.best_model_path).name) if checkpoint.best_model_path else None
    if scst is not None:
        metrics.update(scst.blocks())
        metrics["checkpoint"] = f"scst/{metrics['checkpoint']}" if metrics["checkpoint"] else None
    _write_evaluation_files(run_dir, module)
    atomic_write_json(run_dir / "metrics.json", metrics)
    tracker.log_results(metrics, module=module, dataset=dataset, model=model)
    metrics["run_dir"] = str(run_dir)
    if tracker.info:
        metrics["wandb"] = tracker.info
    return metrics


def test_trainer(cfg: DictConfig, placement: dict[str, Any], **kwargs: Any) -> pl.Trainer:
    """A ``Trainer`` that only tests a trained model: no logger, checkpoints, bar or summary; the
    config's determinism; ``placement`` from ``device_kwargs``. Re-evaluation and ``evaluate`` share it."""
    return pl.Trainer(
        **placement,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=bool(cfg.trainer.deterministic),
        **kwargs,
    )


def reevaluate_run(
    cfg: DictConfig, *, single_process: bool = False, callbacks: list[pl.Callback] | None = None
) -> dict[str, Any]:
    """Score a finished run's ``checkpoints/best.ckpt`` again with ``cfg``'s test-time settings.

    For a config that differs from the finished run's only in settings used after training (the
    test-time ``decoding``, ``scoring``, ``metrics``; ``fusionbench.grid.spec.training_hash`` says
    which): no training epoch runs. Everything is built as a
    fresh run builds it and tested the way a fresh run tests its best checkpoint, so the scores
    equal those of retraining with ``cfg``. ``metrics.json`` keeps the run's validation history,
    parameter counts, data report and training figures; the evaluation splits' scores, the
    inference cost (``inference_ms_per_image``, ``inference_setup``, FLOPs) and ``decoding`` are
    replaced, ``peak_memory_mb`` becomes the larger of training's and this evaluation's, and
    ``reevaluated`` says what was done. The predictions, per-image scores, ``config.yaml`` and
    then ``metrics.json`` are rewritten, each atomically; the checkpoint is only read (its saved
    config keeps the decoding it was trained with). ``single_process`` tests on one device even
    when ``cfg`` trains on several (the scores are the same: ``CaptionMetric`` scores every test
    image once). Nothing is logged to W&B. Returns the new ``metrics.json`` content.
    """
    wall_start = time.perf_counter()
    reset_peak_memory()
    load_plugins(list(cfg.plugins), where="the config's `plugins:` list")
    run_dir = run_dir_for(cfg)
    best = final_checkpoint(cfg, run_dir)  # checkpoints/best.ckpt, or scst/best.ckpt after SCST
    previous_file = run_dir / "metrics.json"
    if not best.is_file() or not previous_file.is_file():
        missing = best if not best.is_file() else previous_file
        raise DataError(
            f"Cannot re-evaluate {run_dir}: {missing} does not exist. Run the experiment again (train it)."
        )
    previous = json.loads(previous_file.read_text(encoding="utf-8"))
    old_config = run_dir / "config.yaml"
    before = (
        DecodingConfig.from_cfg(OmegaConf.load(old_config).get("decoding")).test_settings()
        if old_config.is_file()
        else previous.get("decoding")
    )
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dataset = DATASETS.build(cfg.data)
    _, model, datamodule, references = build_experiment(cfg, dataset)
    features = attach_features(cfg, model, datamodule, dataset)
    module = CaptionModule(model, cfg, references, dataset.eval_splits())
    placement = device_kwargs(cfg)
    if single_process:
        placement.update(devices=1, num_nodes=1, strategy="auto")
    trainer = test_trainer(cfg, placement, default_root_dir=str(run_dir), callbacks=list(callbacks or []))
    trainer.test(module, datamodule=datamodule, ckpt_path=str(best), verbose=False)
    if not trainer.is_global_zero:
        return {"rank": int(trainer.global_rank), "run_dir": str(run_dir)}
    device = trainer.strategy.root_device
    scores, eval_cost = _evaluation_results(cfg, module, datamodule, references, features, device)
    metrics = {**previous, **scores}
    metrics["decoding"] = module.decoding.test_settings()
    cost = {**(previous.get("cost") or {}), **eval_cost}
    cost["peak_memory_mb"] = max(float(cost.get("peak_memory_mb") or 0.0), peak_memory_mb(device))
    metrics["cost"] = cost
    metrics["reevaluated"] = {
        "checkpoint": best.relative_to(run_dir).as_posix(),
        "previous_decoding": before,
        "seconds": time.perf_counter() - wall_start,
    }
    _write_evaluation_files(run_dir, module)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_json(run_dir / "metrics.json", metrics)
    metrics["run_dir"] = str(run_dir)
    return metrics


EVALUATE_KEYS = ("trainer", "loader", "decoding", "scoring", "seed")


def evaluate_checkpoint(
    checkpoint: str | Path, overrides: list[str] = (), *, splits: list[str] | None = None
) -> dict[str, Any]:
    """Score a trained checkpoint on its dataset's evaluation splits, on any devices.

    The model, tokenizer and dataset come from the checkpoint; ``overrides`` may change how it is
    evaluated (``trainer.*`` to spread the test set over processes, e.g. ``trainer.devices=2
    trainer.strategy=ddp``; ``loader.*``, ``decoding.*``, ``scoring.*``). Lightning's distributed
    sampler pads the last batch of some processes with repeated images; ``CaptionMetric`` gathers
    every process's captions and keeps one per image, so every test image is scored exactly once
    and the scores equal a single process's. Returns ``{split: {metric: value}}`` on rank 0 (raw
    scale), ``{}`` on other ranks.
    """
    from fusionbench.checkpoint import read_checkpoint, rebuild_model
    from fusionbench.config import parse_overrides
    from fusionbench.errors import ConfigError

    quiet_known_noise()
    path = Path(checkpoint).expanduser()
    model, saved_cfg = rebuild_model(read_checkpoint(path), path)
    layer = parse_overrides(list(overrides))
    bad = [k for k in layer if k not in EVALUATE_KEYS]
    if bad:
        raise ConfigError(
            f"evaluate: cannot override {', '.join(bad)} (the model and data come from the checkpoint); "
            f"allowed: {', '.join(EVALUATE_KEYS)}."
        )
    from fusionbench.config import compose

    cfg = compose([("the checkpoint's config", OmegaConf.to_container(saved_cfg)), ("the overrides", layer)])
    pl.seed_everything(int(cfg.seed), verbose=False)
    dataset = DATASETS.build(cfg.data)
    eval_splits = list(splits or dataset.eval_splits())
    datamodule = make_datamodule(cfg, dataset, model.tokenizer)
    datamodule.eval_split_names = eval_splits
    store = model.encoder.feature_store()
    if store is not None:
        use_precomputed(store, datamodule, [dataset.split(s) for s in eval_splits])
    references = {s: dataset.split(s).references() for s in ["val", *eval_splits]}
    module = CaptionModule(model, cfg, references, eval_splits)
    trainer = test_trainer(cfg, device_kwargs(cfg))
    trainer.test(module, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return {}
    return {
        split: {**result["scores"].corpus, "images": len(result["predictions"])}
        for split, result in module.test_results.items()
    }
