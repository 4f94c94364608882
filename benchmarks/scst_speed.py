"""Self-critical sequence training: step time vs cross-entropy, reward share, and what SCST gains.

Two parts, both on the smoke experiment's sizes (``experiments/smoke.yaml``):

1. **Speed** (default). For each cell (the smoke cell cnn-attention-lstm and
   regions-attention-transformer), one train batch of ``--batch`` images, untrained weights:
   the time of a cross-entropy step (forward, loss, backward, AdamW step, as ``CaptionModule``
   trains) and of an SCST step (``ScstModule.sample_step``: ``--samples`` captions per image
   sampled in one batched pass, their CIDEr-D rewards, the mean baseline, loss, backward, step),
   medians over ``--steps`` timed steps after ``--warmup``; and the reward computation's share of
   the SCST step. Targets: SCST step <= 3x the cross-entropy step; reward <= 20% of the SCST step.
2. **Quality** (``--quality``). For each cell and seed (``--seeds``, default 0 1 2), one full
   ``fusionbench run`` with ``scst.enabled=true``: cross-entropy for the smoke budget, then SCST;
   the test and test_novel CIDEr-D of the run's own best cross-entropy checkpoint (``xe`` block of
   ``metrics.json``) and of its best SCST epoch. Target: mean gain >= +5 (x100) on test.

Both print a table and write ``benchmarks/results/scst_speed.json`` (``scst_quality.json``).
Time on an idle machine: the ratios are only meaningful without other load.

    python benchmarks/scst_speed.py [--batch 32] [--samples 5] [--steps 10]
    python benchmarks/scst_speed.py --quality [--seeds 0 1 2] [--out runs/scst-bench]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, write_result  # noqa: E402

CELLS = {
    "cnn-attention-lstm": [],
    "regions-attention-transformer": ["model.encoder.name=regions", "model.decoder.name=transformer"],
}


class TimedReward:
    """Wraps a ``CiderReward`` and adds up the seconds spent in it."""

    def __init__(self, reward) -> None:
        self.reward, self.seconds = reward, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.reward(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def _setup(config: Path, overrides: list[str], batch: int, samples: int):
    import torch

    from fusionbench.config import load_config
    from fusionbench.data.module import batch_inputs
    from fusionbench.experiment import build_experiment
    from fusionbench.module import CaptionModule
    from fusionbench.registry import DATASETS
    from fusionbench.scst.module import ScstModule
    from fusionbench.scst.phase import vocabulary_words
    from fusionbench.scst.reward import CiderReward

    cfg = load_config(
        config,
        [*overrides, f"loader.batch_size={batch}", "scst.enabled=true", f"scst.samples={samples}"],
    )
    torch.manual_seed(0)
    dataset = DATASETS.build(cfg.data)
    tokenizer, model, datamodule, references = build_experiment(cfg, dataset)
    words = vocabulary_words(tokenizer)  # tokenised before training, as a run does
    reward = TimedReward(CiderReward.for_train(dataset.split("train").references(), words=words))
    xe = CaptionModule(model, cfg, references, dataset.eval_splits())
    scst = ScstModule(model, cfg, references, dataset.eval_splits(), reward)  # type: ignore[arg-type]
    batch_data = next(iter(datamodule.train_dataloader()))
    return cfg, model, xe, scst, reward, batch_data, batch_inputs


def _xe_loss(model, cfg, batch, batch_inputs):
    import torch.nn.functional as F

    ids = batch["input_ids"]
    logits, extras = model(batch_inputs(batch), ids[:, :-1], batch["boxes"], batch.get("caption_index"))
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        ids[:, 1:].reshape(-1),
        ignore_index=model.tokenizer.pad_id,
        label_smoothing=float(cfg.optim.label_smoothing),
    )
    return loss + extras["aux_loss"] if "aux_loss" in extras else loss


def _timed(step, warmup: int, steps: int) -> list[float]:
    out = []
    for k in range(warmup + steps):
        start = time.perf_counter()
        step()
        if k >= warmup:
            out.append(time.perf_counter() - start)
    return out


def _speed_cell(name: str, overrides: list[str], args) -> dict:
    import torch

    cfg, model, _, scst, reward, batch, batch_inputs = _setup(
        args.config, overrides, args.batch, args.samples
    )
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def xe_step():
        opt.zero_grad()
        _xe_loss(model, cfg, batch, batch_inputs).backward()
        opt.step()

    def scst_step():
        opt.zero_grad()
        loss, _, _ = scst.sample_step(batch)
        loss.backward()
        opt.step()

    xe_times = _timed(xe_step, args.warmup, args.steps)
    torch.manual_seed(0)
    _timed(scst_step, args.warmup, 0)
    reward.seconds = 0.0
    scst_times = _timed(scst_step, 0, args.steps)
    xe_s, scst_s = statistics.median(xe_times), statistics.median(scst_times)
    reward_share = reward.seconds / sum(scst_times)
    return {
        "cell": name,
        "batch_images": len(batch["image_ids"]),
        "samples": args.samples,
        "xe_step_s": xe_s,
        "scst_step_s": scst_s,
        "ratio": scst_s / xe_s,
        "reward_share": reward_share,
        "ratio_ok": scst_s / xe_s <= 3.0,
        "reward_ok": reward_share <= 0.20,
    }


def speed(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    rows = [_speed_cell(name, CELLS[name], args) for name in args.cells]
    return {"rows": rows, "targets": {"ratio_max": 3.0, "reward_share_max": 0.20}}


def quality(args) -> dict:
    from fusionbench.config import load_config
    from fusionbench.experiment import run_experiment

    rows = []
    for name in args.cells:
        overrides = CELLS[name]
        for seed in args.seeds:
            cfg = load_config(
                args.config,
                [
                    *overrides,
                    f"seed={seed}",
                    f"output_dir={args.out}",
                    "scst.enabled=true",
                    "logger.wandb.mode=disabled",
                    "trainer.enable_progress_bar=false",
                    *args.override,
                ],
            )
            m = run_experiment(cfg, progress=False)
            row = {"cell": name, "seed": seed, "wall_s": m["cost"]["wall_seconds"]}
            for split in ("test", "test_novel"):
                xe, sc = m["xe"][split]["CIDEr"] * 100, m["scst"][split]["CIDEr"] * 100
                row.update({f"{split}_xe": xe, f"{split}_scst": sc, f"{split}_gain": sc - xe})
            rows.append(row)
    summary = []
    for name in args.cells:
        mine = [r for r in rows if r["cell"] == name]
        entry = {"cell": name, "seeds": len(mine)}
        for split in ("test", "test_novel"):
            for key in ("xe", "scst", "gain"):
                entry[f"{split}_{key}_mean"] = statistics.mean(r[f"{split}_{key}"] for r in mine)
        entry["target_ok"] = entry["test_gain_mean"] >= 5.0
        summary.append(entry)
    return {"rows": rows, "summary": summary, "target": {"test_gain_mean_min": 5.0}}


def _print(title: str, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    keys = list(rows[0])
    for k in keys:
        table.add_column(k, justify="right" if not isinstance(rows[0][k], str) else "left")
    for r in rows:
        table.add_row(*(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    Console(width=160).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "experiments" / "smoke.yaml")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quality", action="store_true", help="full runs: XE vs XE+SCST test CIDEr-D")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--cells",
        nargs="+",
        choices=list(CELLS),
        default=list(CELLS),
        help="which cells (default both; the smoke cell's quality is also experiments/scst.yaml's "
        "attention xe+scst cells, the same configuration)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "scst-bench")
    parser.add_argument("--override", nargs="*", default=[], help="extra config overrides (quality runs)")
    parser.add_argument("--name", default=None, help="result file name (default scst_speed / scst_quality)")
    args = parser.parse_args(argv)
    if args.quality:
        result = quality(args)
        _print("SCST vs XE test CIDEr-D (x100), per seed", result["rows"])
        _print("SCST vs XE test CIDEr-D (x100), mean over seeds", result["summary"])
        name = args.name or "scst_quality"
    else:
        result = speed(args)
        _print(f"SCST step vs cross-entropy step ({args.samples} samples per image)", result["rows"])
        name = args.name or "scst_speed"
    result["machine"] = machine()
    result["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    print(f"written {write_result(name, result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
