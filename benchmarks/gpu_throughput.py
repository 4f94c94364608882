"""Training images/s on a GPU: one CNN and one ViT cell at bf16-mixed vs fp32.

For each of ``cnn-attention-transformer`` and ``vit-attention-transformer`` (smoke-experiment
sizes, ``--batch`` images per step), a few warm-up steps then ``--steps`` timed training steps
(forward, loss, backward, AdamW step) through the ``CaptionModule`` under Lightning's precision
plugin, at ``32-true`` and ``bf16-mixed``; also the peak GPU memory. Without a CUDA GPU it says
so and exits 0, so it can sit in any script.

    python benchmarks/gpu_throughput.py [--batch 256] [--steps 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, write_result  # noqa: E402

CELLS = {
    "cnn-attention-transformer": [
        "model.encoder.name=cnn",
        "model.fusion.name=attention",
        "model.decoder.name=transformer",
    ],
    "vit-attention-transformer": [
        "model.encoder.name=vit",
        "model.fusion.name=attention",
        "model.decoder.name=transformer",
    ],
}
PRECISIONS = ("32-true", "bf16-mixed")


def measure(cell: list[str], precision: str, *, batch: int, steps: int, warmup: int) -> dict:
    import pytorch_lightning as pl
    import torch

    from fusionbench.config import load_config
    from fusionbench.experiment import build_experiment
    from fusionbench.module import CaptionModule
    from fusionbench.registry import DATASETS

    cfg = load_config(
        ROOT / "experiments" / "smoke.yaml",
        [
            *cell,
            f"loader.batch_size={batch}",
            "logger.wandb.mode=disabled",
            "trainer.accelerator=gpu",
            f"trainer.precision={precision}",
        ],
    )
    pl.seed_everything(0, verbose=False)
    dataset = DATASETS.build(cfg.data)
    _, model, datamodule, references = build_experiment(cfg, dataset)
    module = CaptionModule(model, cfg, references, dataset.eval_splits())

    class Timer(pl.Callback):
        def __init__(self):
            self.n, self.images, self.start, self.seconds = 0, 0, 0.0, 0.0

        def on_train_batch_start(self, trainer, pl_module, batch_, batch_idx):
            torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch_, batch_idx):
            torch.cuda.synchronize()
            self.n += 1
            if self.n > warmup:
                self.seconds += time.perf_counter() - self.start
                self.images += len(batch_["image_ids"])

    timer = Timer()
    torch.cuda.reset_peak_memory_stats()
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        precision=precision,
        max_steps=warmup + steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)
    return {
        "images_per_s": timer.images / timer.seconds if timer.seconds else None,
        "timed_steps": max(0, timer.n - warmup),
        "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_throughput: no CUDA GPU on this machine; nothing to measure (run it where one is).")
        return 0
    from rich.console import Console
    from rich.table import Table

    rows = []
    for name, cell in CELLS.items():
        for precision in PRECISIONS:
            r = measure(cell, precision, batch=args.batch, steps=args.steps, warmup=args.warmup)
            rows.append({"cell": name, "precision": precision, **r})
            print(rows[-1], flush=True)
    table = Table(title=f"training images/s on {torch.cuda.get_device_name(0)} (batch {args.batch})")
    for col in ("cell", "precision", "img/s", "peak MB", "bf16 speed-up"):
        table.add_column(col, justify="right")
    fp32 = {r["cell"]: r["images_per_s"] for r in rows if r["precision"] == "32-true"}
    for r in rows:
        speed = r["images_per_s"] / fp32[r["cell"]] if r["images_per_s"] and fp32[r["cell"]] else None
        r["speedup_vs_fp32"] = speed
        table.add_row(
            r["cell"],
            r["precision"],
            f"{r['images_per_s']:.0f}",
            f"{r['peak_memory_mb']:.0f}",
            f"x{speed:.2f}" if speed else "-",
        )
    Console(width=120).print(table)
    path = write_result(
        "gpu_throughput", {"batch": args.batch, "steps": args.steps, "rows": rows, "machine": machine()}
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
