"""Frozen-encoder feature cache: one grid cell with a frozen encoder, features computed every
epoch vs extracted once into the cache vs read from a warm cache.

Three runs of the same cell (``experiments/smoke.yaml`` with ``model.encoder.freeze=true``; by
default the pretrained EfficientNet-Lite0 that installs offline, the realistic case for freezing):

* ``on the fly``: ``features.cache=false``, the backbone runs on every batch of every epoch;
* ``cold cache``: the first cell with this encoder extracts the features once, then trains on them;
* ``warm cache``: every later cell with the same frozen encoder (another fusion/decoder, seed of the
  decoder side...) only reads them.

All three must give the same test scores (the cache reproduces the on-the-fly features exactly).
Prints a table and writes ``benchmarks/results/feature_cache.json``.

    python benchmarks/feature_cache.py
    python benchmarks/feature_cache.py --encoder model.encoder.model_name=resnet10t model.encoder.pretrained=false
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, write_result  # noqa: E402

PRETRAINED = [
    "model.encoder.name=cnn",
    "model.encoder.model_name=efficientnet_lite0",
    "model.encoder.pretrained=true",
    "model.encoder.feature_stride=16",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "experiments" / "smoke.yaml"))
    parser.add_argument("--encoder", nargs="*", default=PRETRAINED, help="encoder overrides")
    parser.add_argument("overrides", nargs="*", help="more dotlist overrides")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from fusionbench.config import load_config
    from fusionbench.experiment import run_experiment

    work = Path(tempfile.mkdtemp(prefix="fusionbench-feature-cache-"))
    common = [
        f"output_dir={work / 'runs'}",
        f"features.dir={work / 'cache'}",
        "logger.wandb.mode=disabled",
        "trainer.enable_progress_bar=false",
        "model.encoder.freeze=true",
        *args.encoder,
        *args.overrides,
    ]
    rows = []
    try:
        for label, extra in (
            ("on the fly", ["features.cache=false"]),
            ("cold cache", []),
            ("warm cache", []),
        ):
            cfg = load_config(args.config, [*common, *extra, f"run_name={label.replace(' ', '-')}"])
            start = time.perf_counter()
            m = run_experiment(cfg, progress=False)
            wall = time.perf_counter() - start
            feats = m["cost"]["features"] or {}
            rows.append(
                {
                    "run": label,
                    "wall_seconds": wall,
                    "train_seconds": m["cost"]["train_seconds"],
                    "extract_seconds": feats.get("extract_seconds", 0.0),
                    "train_images_per_s": m["cost"]["train_images_per_s"],
                    "test_CIDEr": m["test"]["CIDEr"],
                    "cache_hit": feats.get("hit"),
                }
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]
    for r in rows:
        r["speedup_wall"] = base["wall_seconds"] / r["wall_seconds"]
        r["speedup_train"] = base["train_seconds"] / r["train_seconds"]
    identical = len({r["test_CIDEr"] for r in rows}) == 1
    table = Table(
        title="frozen-encoder cell: features on the fly vs cached (same test CIDEr-D: "
        f"{'yes' if identical else 'NO'})"
    )
    for col in (
        "run",
        "wall s",
        "train s",
        "extract s",
        "train img/s",
        "speed-up (train)",
        "speed-up (wall)",
        "test CIDEr-D x100",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["run"],
            f"{r['wall_seconds']:.1f}",
            f"{r['train_seconds']:.1f}",
            f"{r['extract_seconds']:.1f}",
            f"{r['train_images_per_s']:.0f}",
            f"x{r['speedup_train']:.2f}",
            f"x{r['speedup_wall']:.2f}",
            f"{100 * r['test_CIDEr']:.1f}",
        )
    Console(width=140).print(table)
    path = write_result(
        "feature_cache",
        {
            "config": args.config,
            "overrides": common,
            "rows": rows,
            "identical_scores": identical,
            "machine": machine(),
        },
    )
    print(f"wrote {path}")
    if not identical:
        sys.exit("the cached runs scored differently from the on-the-fly run")


if __name__ == "__main__":
    main()
