"""One fusionbench run as one W&B run, shaped for comparison, and never able to break the run.

What a run logs (``job_type: train``, name = the grid cell name, ``group`` = the grid):

* config: the resolved experiment config, nested as in ``config.yaml``, plus flat top-level keys
  ``encoder``, ``fusion``, ``decoder``, ``dataset``, ``seed`` (and ``experiment``, ``cell``) so
  that W&B's group-by, parallel-coordinates and scatter panels need no custom parsing;
* tags: encoder, fusion, decoder, dataset, plus ``logger.wandb.tags``;
* history: ``train/loss``, ``train/ce``, ``train/lr`` every step (``logger.wandb.log_every_n_steps``),
  ``val/<metric>`` every validation epoch, ``train/images_per_s`` every epoch (through Lightning's
  ``WandbLogger``, x-axis ``trainer/global_step``; ``val/*`` and throughput against ``epoch``);
* summary: every coco-caption key of every evaluation split (``test/CIDEr``, ``test_novel/Bleu_4``,
  raw scale as in metrics.json), the best validation epoch (``best_val/...``) and cost
  (``cost/params_total``, ``cost/params_<component>``, ``cost/train_images_per_s``,
  ``cost/inference_ms_per_image`` for the test split, and every other number under ``cost`` in
  metrics.json as ``cost/<key>``, nested ones as ``cost/<key>_<sub>``);
* ``predictions``: a ``wandb.Table`` (image_id, image, references, prediction, per-image CIDEr-D;
  on ``shapes`` also the hallucinated objects and wrong relations of each caption)
  for a fixed sample of test images, and, under attention fusion, ``attention`` (one row per
  image and word: the heatmap over the image) plus ``attention/maps`` (one strip per image).

Cost: ``wandb.init`` runs in a background thread (metrics logged meanwhile are kept and sent
later), so the run only pays for the logging calls themselves; ``wandb.json`` in the run folder
records the seconds spent in W&B calls (``seconds``, ``seconds_by_part``).

Safety: the tracker is created before anything else of the run and finished in a ``finally``
(``wandb.finish`` with the run's exit code), so a failing cell never leaks its W&B run into the
next. Every W&B call is guarded: the first error becomes one :class:`TrackingWarning` and W&B is
switched off for the rest of the run; the run itself goes on. ``disabled`` returns a
:class:`NullTracker` without importing wandb.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from fusionbench.io import atomic_write_json
from fusionbench.naming import components
from fusionbench.tracking.media import attention_captions, enlarge, sample_indices
from fusionbench.tracking.mode import ModeDecision, resolve_mode

FLAT_KEYS = ("encoder", "fusion", "decoder", "dataset", "seed")
RUN_INFO = "wandb.json"  # in the run folder: mode, id, where the W&B files are, how to sync them


class TrackingWarning(UserWarning):
    """W&B could not do something; the run goes on without it."""


def warn(message: str) -> None:
    warnings.warn(message, TrackingWarning, stacklevel=3)


# ------------------------------------------------------------------------------------ helpers


def wandb_config(cfg: DictConfig) -> DictConfig:
    """``cfg.logger.wandb`` with the typed defaults filled in (configs written before it existed too)."""
    from fusionbench.config import WandbConfig

    base = OmegaConf.structured(WandbConfig)
    node = OmegaConf.select(cfg, "logger.wandb", default=None)
    return OmegaConf.merge(base, node) if node is not None else base


def run_config(cfg: DictConfig, run_name: str) -> dict[str, Any]:
    """The nested config plus the flat comparison keys (flat keys never shadow a nested section)."""
    nested = OmegaConf.to_container(cfg, resolve=True)
    flat = {**components(cfg), "seed": int(cfg.seed), "experiment": str(cfg.name), "cell": run_name}
    return {**nested, **flat}


def run_tags(cfg: DictConfig, extra: list[str] | None = None) -> list[str]:
    names = components(cfg)
    tags: list[str] = []
    for tag in [*(names[k] for k in FLAT_KEYS if k in names), *(extra or [])]:  # encoder first
        tag = str(tag)[:64]
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def wandb_root(cfg: DictConfig) -> Path:
    """The folder in which W&B creates its ``wandb/`` folder (``logger.wandb.dir`` or ``output_dir``)."""
    wc = wandb_config(cfg)
    return Path(str(wc.dir)) if wc.dir else Path(str(cfg.output_dir))


@contextlib.contextmanager
def wandb_env(root: Path) -> Iterator[None]:
    """Keep W&B's staging and cache files next to the runs, not in the home folder, unless the
    user chose their own places; an invalid ``WANDB_MODE`` (which makes wandb itself raise) is
    hidden, since the mode is always passed explicitly."""
    saved: dict[str, str | None] = {}
    wanted = {
        "WANDB_DATA_DIR": str(root / "wandb" / "data"),
        "WANDB_CACHE_DIR": str(root / "wandb" / "cache"),
    }
    try:
        for key, value in wanted.items():
            if not os.environ.get(key):
                saved[key] = os.environ.get(key)
                os.environ[key] = value
        mode = os.environ.get("WANDB_MODE")
        if mode is not None and mode.strip().lower() not in (
            "online",
            "offline",
            "disabled",
            "dryrun",
            "run",
            "shared",
        ):
            saved["WANDB_MODE"] = mode
            del os.environ["WANDB_MODE"]
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _settings(wandb, wc: DictConfig, mode: str):
    """Settings that keep W&B cheap: no console capture, no system sampling, no code/git scans."""
    fields = {
        "silent": True,
        "console": "off",
        "save_code": False,
        "disable_git": True,
        "x_disable_meta": True,
        "x_disable_machine_info": True,
        "x_disable_stats": not bool(wc.system_metrics),
        "x_save_requirements": False,
        "init_timeout": float(wc.init_timeout) if mode == "online" else 30.0,
        "reinit": "create_new",
    }
    extra = OmegaConf.to_container(wc.settings, resolve=True) if wc.settings else {}
    try:
        return wandb.Settings(**{**fields, **(extra or {})})
    except Exception as err:  # a bad extra setting must not cost the run its W&B logging
        warn(f"logger.wandb.settings is not valid for wandb {wandb.__version__} ({err}); it is ignored.")
        return wandb.Settings(**fields)


def init_run(
    *,
    decision: ModeDecision,
    wc: DictConfig,
    root: Path,
    name: str,
    group: str,
    job_type: str,
    tags: list[str],
    config: dict[str, Any],
):
    """``wandb.init`` in the decided mode; online failures retry offline. Returns (run, mode) or
    (None, 'disabled') after one warning when W&B cannot start at all. Call it inside
    :func:`wandb_env` and keep that open until the run is finished."""
    try:
        import wandb
    except Exception as err:
        warn(f"W&B logging is off for this run: wandb cannot be imported ({type(err).__name__}: {err}).")
        return None, "disabled"
    if decision.warning:
        warn(decision.warning)
    root.mkdir(parents=True, exist_ok=True)
    modes = [decision.mode] + (["offline"] if decision.mode == "online" else [])
    for i, mode in enumerate(modes):
        try:
            run = wandb.init(
                project=str(wc.project),
                entity=str(wc.entity) if wc.entity else None,
                group=group,
                job_type=job_type,
                name=name,
                tags=tags,
                config=config,
                dir=str(root),
                mode=mode,
                settings=_settings(wandb, wc, mode),
            )
            return run, mode
        except Exception as err:
            message = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            if i + 1 < len(modes):
                warn(f"W&B online mode: wandb.init failed ({message}); this run is logged offline instead.")
            else:
                warn(f"W&B logging is off for this run: wandb.init failed in {mode} mode ({message}).")
    return None, "disabled"


def sync_command(run) -> str | None:
    try:
        return f"wandb sync {Path(run.settings.sync_dir)}"
    except Exception:
        return None


# ---------------------------------------------------------------------------------- trackers


class NullTracker:
    """What ``disabled`` gets: no logger, no callbacks, no wandb import."""

    mode = "disabled"
    logger: Any = False
    callbacks: tuple[pl.Callback, ...] = ()
    info: dict[str, Any] | None = None
    log_every_n_steps: int | None = None  # keep trainer.log_every_n_steps

    def log_results(self, metrics: Mapping[str, Any], **_: Any) -> None:
        return None

    def finish(self, exit_code: int = 0) -> None:
        return None


class _Guard:
    """Turns the first W&B error into one warning and switches W&B off for the rest of the run;
    also adds up the time spent in W&B calls (``seconds``: what W&B costs the run)."""

    def __init__(self) -> None:
        self.broken = False
        self.parts: dict[str, float] = {}

    @property
    def seconds(self) -> float:
        return sum(self.parts.values())

    def add(self, what: str, seconds: float) -> None:
        self.parts[what] = self.parts.get(what, 0.0) + seconds

    def fail(self, what: str, err: BaseException) -> None:
        if not self.broken:
            self.broken = True
            warn(f"W&B {what} failed ({type(err).__name__}: {err}); the run goes on without W&B.")

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except Exception as err:
            self.fail(what, err)
        finally:
            self.add(what, time.perf_counter() - start)


def _safe_logger(tracker: WandbTracker, name: str):
    """Lightning's ``WandbLogger`` for the tracker's run, created at once. While the background
    ``wandb.init`` is still running, metrics are kept in memory and sent as soon as the run is up,
    so training never waits for W&B; every call is guarded, and it does nothing when W&B could
    not start."""
    from pytorch_lightning.loggers import WandbLogger

    class SafeWandbLogger(WandbLogger):
        pending: list[tuple[dict[str, Any], int | None]]  # logged while wandb.init was running

        @property
        def experiment(self):
            """The W&B run; None while ``wandb.init`` is still running (Lightning touches this
            property at setup only to trigger a lazy init, which must not wait)."""
            if not tracker.starting:
                tracker.wait()
            return tracker.run

        @property
        def version(self) -> str | None:
            return getattr(tracker.run, "id", None)

        def log_hyperparams(self, params: Any) -> None:
            """The config was logged at init, shaped (nested + flat keys); nothing to add."""

        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
            if tracker.starting:
                self.pending.append((dict(metrics), step))
                return
            self.flush()
            self._send(metrics, step)

        def flush(self) -> None:
            """Send the metrics kept while ``wandb.init`` was running (waits for it)."""
            tracker.wait()
            pending, self.pending = self.pending, []
            for metrics, step in pending:
                self._send(metrics, step)

        def _send(self, metrics: Mapping[str, float], step: int | None) -> None:
            if tracker.run is None or tracker.guard.broken:
                return
            with tracker.guard.guard("logging metrics"):
                super().log_metrics(metrics, step)

        def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
            """Checkpoints stay in the run folder; nothing is uploaded."""

        def finalize(self, status: str) -> None:
            """The tracker finishes the run itself (in a ``finally``)."""

    logger = SafeWandbLogger(save_dir=str(tracker.run_dir), project=str(tracker.wc.project), name=name)
    logger.pending = []
    return logger


class EpochThroughput(pl.Callback):
    """Logs ``train/images_per_s`` of each epoch (time spent in training batches only)."""

    def __init__(self, guard: _Guard) -> None:
        self.guard = guard
        self._start = 0.0
        self.seconds = 0.0
        self.images = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seconds, self.images = 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self._start
        self.images += len(batch["image_ids"])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.guard.broken or not self.seconds or not trainer.logger:
            return
        with self.guard.guard("logging throughput"):
            trainer.logger.log_metrics(
                {"train/images_per_s": self.images / self.seconds, "epoch": trainer.current_epoch},
                step=trainer.global_step,
            )


class WandbTracker:
    """A W&B run for one experiment (see the module doc for what it logs).

    ``wandb.init`` (which starts W&B's service process, a second or more) runs in a background
    thread while the run builds its data and model and starts training; metrics logged before it
    is up are kept and sent once it is. If it fails, there is one warning and every W&B call after
    that is a no-op, as with :class:`NullTracker`.
    """

    def __init__(
        self, cfg: DictConfig, run_dir: Path, decision: ModeDecision, init_kwargs: dict[str, Any]
    ) -> None:
        self.cfg = cfg
        self.wc = wandb_config(cfg)
        self.run_dir = run_dir
        self.guard = _Guard()
        self.run = None
        self.mode = "disabled"
        self.info: dict[str, Any] | None = None
        self._finished = False
        self._env = contextlib.ExitStack()
        self._env.enter_context(wandb_env(wandb_root(cfg)))
        every = self.wc.log_every_n_steps
        self.log_every_n_steps: int | None = max(1, int(every)) if every is not None else None
        self.logger = _safe_logger(self, str(init_kwargs["name"]))
        self.callbacks: list[pl.Callback] = [EpochThroughput(self.guard)]
        self._thread: threading.Thread | None = threading.Thread(
            target=self._start, args=(decision, init_kwargs), name="fusionbench-wandb-init", daemon=True
        )
        self._thread.start()

    def _start(self, decision: ModeDecision, init_kwargs: dict[str, Any]) -> None:
        start = time.perf_counter()
        try:
            run, mode = init_run(decision=decision, wc=self.wc, **init_kwargs)
            if run is None:
                return
            self.run, self.mode = run, mode
            try:  # default x-axes: steps for training, epochs for validation and throughput
                run.define_metric("trainer/global_step")
                run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
                run.define_metric("epoch")
                run.define_metric("val/*", step_metric="epoch", step_sync=True)
                run.define_metric("train/images_per_s", step_metric="epoch", step_sync=True)
            except Exception as err:
                self.guard.fail("setting up metrics", err)
            self.info = {
                "mode": mode,
                "id": getattr(run, "id", None),
                "project": getattr(run, "project", None),
                "group": self.cfg_group,
                "dir": str(getattr(run.settings, "sync_dir", "")),
                "url": getattr(run, "url", None) if mode == "online" else None,
                "sync": sync_command(run) if mode == "offline" else None,
                "init_seconds": round(time.perf_counter() - start, 3),  # in the background
                "seconds": None,  # time the run spent waiting for W&B, filled in by finish()
            }
            atomic_write_json(self.run_dir / RUN_INFO, self.info)
        except Exception as err:  # W&B must never break a run
            warn(f"W&B logging is off for this run ({type(err).__name__}: {err}).")
            if self.run is not None:
                with contextlib.suppress(Exception):
                    self.run.finish(exit_code=1)
            self.run, self.mode, self.info = None, "disabled", None

    @property
    def starting(self) -> bool:
        """True while ``wandb.init`` is still running in the background."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Block until the background ``wandb.init`` is done (the wait counts as W&B time)."""
        if self._thread is not None:
            start = time.perf_counter()
            self._thread.join()
            self._thread = None
            self.guard.add("waiting for wandb.init", time.perf_counter() - start)

    @property
    def cfg_group(self) -> str:
        return str(self.wc.group or self.cfg.name)

    # -- end of the run ------------------------------------------------------------------------
    def log_results(self, metrics: Mapping[str, Any], *, module=None, dataset=None, model=None) -> None:
        """Summary metrics, then the predictions table and attention heatmaps (each guarded)."""
        self.logger.flush()
        if self.run is None or self.guard.broken:
            return
        with self.guard.guard("logging the summary"):
            self.run.summary.update(summary_metrics(metrics))
        if self.guard.broken or module is None or dataset is None:
            return
        picked: list = []
        with self.guard.guard("logging the predictions table"):
            picked = self._log_predictions(module, dataset)
        if not picked or self.guard.broken or model is None:
            return
        split, sample = picked
        n_att = min(int(self.wc.attention_images), len(sample) or len(split))
        if n_att > 0 and getattr(model.fusion, "uses_memory", False):
            with self.guard.guard("logging attention heatmaps"):
                self._log_attention(split, sample[:n_att] if sample else list(range(n_att)), model)

    def _log_predictions(self, module, dataset) -> list:
        """Log the ``predictions`` table; returns ``[test split, sample]`` ([] without a test split)."""
        import wandb

        result = (getattr(module, "test_results", None) or {}).get("test")
        if result is None or "test" not in dataset.splits():
            return []
        split = dataset.split("test")
        sample = sample_indices(len(split), int(self.wc.predictions))
        if sample:
            failures = caption_failures(split, result, sample)
            self.run.log({"predictions": predictions_table(wandb, split, result, sample, failures)})
        return [split, sample]

    def _log_attention(self, split, idx: list[int], model) -> None:
        import numpy as np
        import wandb

        images = np.stack([split.load_image(i) for i in idx])
        boxes = [split.boxes[i] for i in idx] if split.boxes is not None else None
        caps = attention_captions(
            model,
            images,
            boxes,
            max_len=int(self.cfg.decoding.max_len),
            n_words=int(self.wc.attention_words),
        )
        if not caps:
            return
        table = wandb.Table(columns=["image_id", "caption (greedy)", "position", "word", "attention"])
        strips = []
        for i, cap in zip(idx, caps):
            image_id = int(split.image_ids[i])
            for w in cap.words:
                table.add_data(
                    image_id, cap.caption, w.position, w.word, wandb.Image(w.heatmap, caption=w.word)
                )
            words = " | ".join(w.word for w in cap.words)
            strips.append(wandb.Image(cap.strip, caption=f"{image_id}: {cap.caption}  [image | {words}]"))
        self.run.log({"attention": table, "attention/maps": strips})

    def finish(self, exit_code: int = 0) -> None:
        """``wandb.finish`` (never raises, safe to call twice)."""
        if self._finished:
            return
        self._finished = True
        with contextlib.suppress(Exception):
            self.logger.flush()
        self.wait()
        start = time.perf_counter()
        try:
            if self.run is not None:
                self.run.finish(exit_code=exit_code)
        except Exception as err:
            warn(f"W&B could not finish the run cleanly ({type(err).__name__}: {err}).")
        finally:
            self._env.close()
            self.guard.add("finishing", time.perf_counter() - start)
            if self.info is not None:
                self.info["seconds"] = round(self.guard.seconds, 3)
                self.info["seconds_by_part"] = {k: round(v, 3) for k, v in self.guard.parts.items()}
                with contextlib.suppress(Exception):
                    atomic_write_json(self.run_dir / RUN_INFO, self.info)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flatten_numbers(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Numbers under ``prefix``; nested mappings as ``prefix_<key>``; anything else is skipped."""
    if _is_number(value):
        out[prefix] = value
    elif isinstance(value, Mapping):
        for key, sub in value.items():
            _flatten_numbers(f"{prefix}_{key}", sub, out)


def summary_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The flat W&B summary of a run's ``metrics.json`` content: ``<split>/<metric>`` for every
    evaluation split, ``best_val/<metric>``, and every numeric cost figure as ``cost/...``."""
    out: dict[str, Any] = {}
    for split, scores in metrics.items():
        if split.startswith("test") and isinstance(scores, Mapping):
            for key, value in scores.items():
                if _is_number(value):
                    out[f"{split}/{key}"] = float(value)
    for key, value in (metrics.get("val") or {}).items():
        if _is_number(value):
            out[f"best_val/{key}"] = value
    for key, value in (metrics.get("params") or {}).items():
        if _is_number(value):
            out[f"cost/params_{key}"] = int(value)
    cost = metrics.get("cost") or {}
    for key, value in cost.items():
        _flatten_numbers(f"cost/{key}", value, out)
    for split, block in (metrics.get("diagnostics") or {}).items():  # fusionbench.diagnostics
        _flatten_numbers(f"diagnostics/{split}", block, out)
    ms = cost.get("inference_ms_per_image")
    if isinstance(ms, Mapping) and _is_number(ms.get("test")):
        out["cost/inference_ms_per_image"] = float(ms["test"])  # the test split: what leaderboards use
    out["status"] = str(metrics.get("status", "completed"))
    return out


def caption_failures(split, result: Mapping[str, Any], sample: list[int]) -> dict[int, dict[str, Any]] | None:
    """Per sampled image: its hallucinated objects and wrong relations (``fusionbench.diagnostics``);
    None for a dataset without scenes (only ``shapes`` knows every object)."""
    from fusionbench.diagnostics.text import scenes_of_split, text_diagnostics

    scenes = scenes_of_split(split)
    if scenes is None:
        return None
    predictions = result.get("predictions") or {}
    ids = [int(split.image_ids[i]) for i in sample]
    _, per_image = text_diagnostics(
        {i: predictions.get(i, "") for i in ids},
        {int(split.image_ids[i]): split.captions[i] for i in sample},
        scenes={i: scenes[i] for i in ids},
    )
    return per_image


def predictions_table(
    wandb,
    split,
    result: Mapping[str, Any],
    sample: list[int],
    failures: Mapping[int, Mapping[str, Any]] | None = None,
):
    """``wandb.Table``: image_id, image, references, prediction, per-image CIDEr-D; with ``failures``
    also the hallucinated objects and wrong relations, so a dashboard can filter the failures."""
    predictions = result.get("predictions") or {}
    per_image = getattr(result.get("scores"), "per_image", {}) or {}
    columns = ["image_id", "image", "references", "prediction", "CIDEr-D"]
    if failures is not None:
        columns += ["hallucinated objects", "wrong relations"]
    table = wandb.Table(columns=columns)
    for i in sample:
        image_id = int(split.image_ids[i])
        cider = (per_image.get(image_id) or {}).get("CIDEr")
        row = [
            image_id,
            wandb.Image(enlarge(split.load_image(i))),
            "\n".join(split.captions[i]),
            predictions.get(image_id, ""),
            float(cider) if cider is not None else None,
        ]
        if failures is not None:
            found = failures.get(image_id) or {}
            row += ["; ".join(found.get("hallucinated", [])), "; ".join(found.get("wrong_relations", []))]
        table.add_data(*row)
    return table


def start_run_tracking(cfg: DictConfig, run_dir: Path) -> NullTracker | WandbTracker:
    """The tracker for one run: :class:`NullTracker` when W&B is disabled (wandb untouched), else a
    :class:`WandbTracker` whose ``wandb.init`` runs in the background."""
    start = time.perf_counter()
    try:
        wc = wandb_config(cfg)
        decision = resolve_mode(str(wc.mode))
        if decision.mode == "disabled":
            return NullTracker()
        name = str(cfg.run_name or run_dir.name)
        tracker = WandbTracker(
            cfg,
            run_dir,
            decision,
            dict(
                root=wandb_root(cfg),
                name=name,
                group=str(wc.group or cfg.name),
                job_type="train",
                tags=run_tags(cfg, list(wc.tags or [])),
                config=run_config(cfg, name),
            ),
        )
    except Exception as err:  # W&B must never break a run
        warn(f"W&B logging is off for this run ({type(err).__name__}: {err}).")
        return NullTracker()
    tracker.guard.add("choosing the mode", time.perf_counter() - start)
    return tracker
