"""Training-loop overhead: one epoch through ``CaptionModule`` + Lightning ``Trainer`` vs a plain loop.

Both sides train the same model (same initial weights), on the same batches (the data module's
train loader, same seed), with the same optimiser and schedule (AdamW with CaptionModule's
weight-decay groups, linear warmup then cosine decay, stepped per batch), loss (cross-entropy with
label smoothing plus the decoder's auxiliary loss) and gradient clipping. The plain loop does only
that: forward, loss, backward, clip, step. The Lightning side is what ``fusionbench run`` uses,
without validation, checkpoints and progress bars (their cost is the same in both worlds): per-step
logging, the NaN check, callbacks and hooks are included. The time of ``trainer.fit`` (set-up
included) is compared with the time of the plain epoch; the epoch alone (from Lightning's
``on_train_epoch_start`` to ``on_train_epoch_end``) is reported too.

Each round times both sides back to back (Lightning then plain, then plain then Lightning, ...),
after one untimed warm-up of each; the median over rounds of the per-round ratio is reported, for
wall time and for this process's CPU time. Target: at most 1.10. Both sides use one torch thread
by default (``--threads``): on a shared machine, OpenMP workers spin-wait whenever another process
takes a core, which made multi-threaded epoch times vary several-fold from one epoch to the next.

    python benchmarks/overhead.py                                   # experiments/smoke.yaml
    python benchmarks/overhead.py --config tests/configs/tiny.yaml --rounds 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, write_result  # noqa: E402


def epoch_timer():
    """A Lightning callback: wall time from the start to the end of the (single) training epoch."""
    import pytorch_lightning as pl

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.start = self.seconds = 0.0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.seconds = time.perf_counter() - self.start

    return EpochTimer()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(ROOT / "experiments" / "smoke.yaml"))
    parser.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. data.num_train=500")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per side")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for both sides (default 1; 0 = the config's). With several threads, "
        "OpenMP workers spin-wait whenever another process takes a core, and epoch times on a shared "
        "machine vary several-fold; one thread measures the loops' own cost.",
    )
    parser.add_argument("--out", default="overhead", help="results file stem in benchmarks/results/")
    args = parser.parse_args(argv)

    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F
    from rich.console import Console
    from rich.table import Table

    from fusionbench.config import load_config
    from fusionbench.experiment import build_experiment
    from fusionbench.metrics import prepare_references, start_meteor
    from fusionbench.module import CaptionModule
    from fusionbench.optim import build_optimizer
    from fusionbench.registry import DATASETS

    console = Console(width=120)
    cfg = load_config(args.config, args.overrides)
    threads = args.threads or int(cfg.threads)
    if threads:
        torch.set_num_threads(threads)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dataset = DATASETS.build(cfg.data)
    tokenizer, model, datamodule, references = build_experiment(cfg, dataset)
    initial = copy.deepcopy(model.state_dict())
    eval_splits = dataset.eval_splits()
    # The metrics' background work (METEOR JVM, reference tokenisation) would run during the first
    # timed epoch; do it now so that both sides train on a quiet machine.
    thread = start_meteor(warm=True)
    for refs in references.values():
        prepare_references(refs)
    if thread is not None:
        thread.join()

    tc, oc = cfg.trainer, cfg.optim
    steps = len(datamodule.train_dataloader())
    if tc.limit_train_batches is not None and float(tc.limit_train_batches) != 1.0:
        raise SystemExit("overhead.py times full epochs: leave trainer.limit_train_batches at 1.0")
    images_per_epoch = len(dataset.split("train"))

    def lightning_epoch() -> tuple[float, float, float]:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        model.load_state_dict(initial)
        module = CaptionModule(model, cfg, references, eval_splits)
        timer = epoch_timer()
        trainer = pl.Trainer(
            max_epochs=1,
            accelerator=str(tc.accelerator),
            devices=tc.devices,
            precision=tc.precision,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            log_every_n_steps=int(tc.log_every_n_steps),
            gradient_clip_val=float(oc.grad_clip) or None,
            deterministic=bool(tc.deterministic),
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
        )
        start, cpu = time.perf_counter(), time.process_time()
        trainer.fit(module, datamodule=datamodule)
        return time.perf_counter() - start, time.process_time() - cpu, timer.seconds

    def plain_epoch() -> tuple[float, float]:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        model.load_state_dict(initial)
        device = torch.device("cuda" if str(tc.accelerator) in ("gpu", "cuda") else "cpu")
        model.to(device)
        model.train()
        opt, sched = build_optimizer(model, oc, steps)
        loader = datamodule.train_dataloader()
        clip = float(oc.grad_clip)
        pad = tokenizer.pad_id
        smoothing = float(oc.label_smoothing)
        start, cpu = time.perf_counter(), time.process_time()
        for batch in loader:
            images = batch["images"].to(device)
            ids = batch["input_ids"].to(device)
            boxes = [b.to(device) for b in batch["boxes"]] if batch["boxes"] is not None else None
            index = batch["caption_index"].to(device)
            logits, extras = model(images, ids[:, :-1], boxes, index)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(),
                ids[:, 1:].reshape(-1),
                ignore_index=pad,
                label_smoothing=smoothing,
            )
            if "aux_loss" in extras:
                loss = loss + extras["aux_loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        model.cpu()
        return seconds, cpu_seconds

    console.print(f"{args.config}: {images_per_epoch} images, {steps} steps per epoch; warm-up ...")
    lightning_epoch()
    plain_epoch()
    rounds = []
    for r in range(args.rounds):
        row: dict[str, float] = {}
        for side in ("lightning", "plain") if r % 2 == 0 else ("plain", "lightning"):
            if side == "lightning":
                row["lightning_fit_s"], row["lightning_fit_cpu_s"], row["lightning_epoch_s"] = (
                    lightning_epoch()
                )
            else:
                row["plain_s"], row["plain_cpu_s"] = plain_epoch()
        row["ratio_wall"] = row["lightning_fit_s"] / row["plain_s"]
        row["ratio_cpu"] = row["lightning_fit_cpu_s"] / row["plain_cpu_s"]
        rounds.append(row)
        console.print(
            f"round {r + 1}: lightning fit {row['lightning_fit_s']:.2f} s (cpu {row['lightning_fit_cpu_s']:.2f} s), "
            f"plain {row['plain_s']:.2f} s (cpu {row['plain_cpu_s']:.2f} s): ratio {row['ratio_wall']:.3f} wall, "
            f"{row['ratio_cpu']:.3f} cpu"
        )

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    ratio_wall, ratio_cpu = med("ratio_wall"), med("ratio_cpu")
    table = Table(
        title=f"One training epoch: Lightning vs plain PyTorch ({Path(args.config).name}, {args.rounds} paired rounds)"
    )
    for col in ("loop", "wall s (median)", "images/s", "CPU s (median)", "ratio wall", "ratio CPU"):
        table.add_column(col, justify="left" if col == "loop" else "right")
    plain_s = med("plain_s")
    table.add_row(
        "plain PyTorch loop",
        f"{plain_s:.2f}",
        f"{images_per_epoch / plain_s:.1f}",
        f"{med('plain_cpu_s'):.2f}",
        "1",
        "1",
    )
    fit_s = med("lightning_fit_s")
    table.add_row(
        "CaptionModule + Trainer (fit)",
        f"{fit_s:.2f}",
        f"{images_per_epoch / fit_s:.1f}",
        f"{med('lightning_fit_cpu_s'):.2f}",
        f"{ratio_wall:.3f}",
        f"{ratio_cpu:.3f}",
    )
    console.print(table)
    console.print(
        "ratio = median over rounds of (Lightning fit time / plain epoch time), each round measuring both sides "
        "back to back; CPU = this process's CPU time, less sensitive to other load on the machine."
    )
    target = {"ratio_at_most_1.10_wall": ratio_wall <= 1.10, "ratio_at_most_1.10_cpu": ratio_cpu <= 1.10}
    console.print(f"target: {target}")
    path = write_result(
        args.out,
        {
            "benchmark": "overhead",
            "config": str(args.config),
            "overrides": list(args.overrides),
            "images_per_epoch": images_per_epoch,
            "steps_per_epoch": steps,
            "torch_threads": torch.get_num_threads(),
            "rounds": rounds,
            "ratio_wall_median": ratio_wall,
            "ratio_cpu_median": ratio_cpu,
            "plain_seconds_median": plain_s,
            "lightning_fit_seconds_median": fit_s,
            "target": target,
            "machine": machine(),
        },
    )
    console.print(f"written {path}")
    return 0 if all(target.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
