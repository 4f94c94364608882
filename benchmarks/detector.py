"""The detector behind ``box_source: detector``: its detection quality, and what its boxes cost a captioner.

Part 1 (always): ``train_detector`` (what ``fusionbench detector train`` runs) on the default
``shapes`` train split (4,000 64x64 images, 1-4 objects each), then torchmetrics'
``MeanAveragePrecision`` (COCO protocol, class-agnostic) on ``val`` and ``test``: mAP@0.5,
mAP@[.5:.95], recall at IoU 0.5 with the best 1/10/36/100 boxes, and recall/precision of the boxes
``regions`` keeps (score >= 0.3, best 10). The checkpoint goes to ``--out`` (by default where
``experiments/detector.yaml`` reads it).
Targets: test recall@IoU0.5 (top 36) >= 0.9 and test mAP@0.5 >= 0.8, trained within 15 minutes on
2 idle CPU cores.

Part 2 (``--grid experiments/detector.yaml``): runs that grid with the checkpoint of part 1 (the
``regions-attention-transformer`` cell with dataset boxes and with detector boxes, 3 seeds each;
results in ``runs/detector-boxes/``, leaderboard in ``--leaderboard-dir``) and tabulates test
CIDEr-D per box source; positional ``overrides`` apply to those runs.
Target: the detector-boxes cell's mean test CIDEr-D lies within the dataset-boxes cell's range
over seeds.

Prints tables and writes ``benchmarks/results/detector.json``. Times on a busy machine are upper
bounds; the JSON records epochs, steps, threads and the load average, so the run can be repeated.

    python benchmarks/detector.py                                  # part 1, full size
    python benchmarks/detector.py --num-train 1000 --epochs 2      # reduced size
    python benchmarks/detector.py --grid experiments/detector.yaml # parts 1 and 2
    python benchmarks/detector.py --checkpoint runs/detector/shapes-detector.pt --grid experiments/detector.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine, write_result  # noqa: E402

RECALL_TARGET = 0.9
MAP50_TARGET = 0.8
SECONDS_TARGET = 15 * 60


def train_part(args, console) -> dict:
    import torch

    from fusionbench.detection import metrics_table, train_detector
    from fusionbench.registry import DATASETS

    if args.threads:
        torch.set_num_threads(args.threads)
    data = {"name": "shapes", **({"num_train": args.num_train} if args.num_train else {})}
    dataset = DATASETS.build(data)
    metrics = train_detector(
        dataset.split("train"),
        val_split=dataset.split("val"),
        test_split=dataset.split("test"),
        out_path=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device="cpu",
    )
    title = (
        f"detector on shapes ({metrics['train_images']} train images, {metrics['epochs']} epochs, "
        f"{metrics['steps']} steps of {args.batch_size}, {torch.get_num_threads()} threads, "
        f"{metrics['seconds']:.0f}s): COCO metrics x100, class-agnostic"
    )
    console.print(metrics_table(metrics, title))
    targets = {
        "test_recall_iou50_top36": [metrics["test_recall_iou50_top36"], RECALL_TARGET],
        "test_map_50": [metrics["test_map_50"], MAP50_TARGET],
        "train_seconds": [metrics["seconds"], SECONDS_TARGET],
    }
    passed = {
        "test_recall_iou50_top36": metrics["test_recall_iou50_top36"] >= RECALL_TARGET,
        "test_map_50": metrics["test_map_50"] >= MAP50_TARGET,
        "train_seconds": metrics["seconds"] <= SECONDS_TARGET,
    }
    for key, (value, target) in targets.items():
        op = "<=" if key == "train_seconds" else ">="
        verdict = "[green]met[/green]" if passed[key] else "[red]missed[/red]"
        console.print(f"target {key} {op} {target}: {value:.3f} {verdict}")
    return {"metrics": metrics, "targets": targets, "targets_met": passed, "threads": torch.get_num_threads()}


def grid_part(args, checkpoint: str, console) -> dict:
    from rich.table import Table

    from fusionbench.grid import load_grid

    overrides = [*args.overrides, f"model.encoder.detector_checkpoint={checkpoint}"]
    grid = load_grid(args.grid, overrides)
    cmd = [
        sys.executable,
        "-c",
        "import sys; from fusionbench.cli import main; sys.exit(main())",
        "run",
        str(args.grid),
        *overrides,
        "--no-progress",
        "--leaderboard-dir",
        args.leaderboard_dir,
    ]
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
    console.print(f"running: fusionbench {' '.join(cmd[3:])}")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, check=False)
    records = {}
    results = Path(grid.results_dir) / "results.jsonl"
    if results.is_file():
        for line in results.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                records[rec["cell"]] = rec
    by_source: dict[str, list[float]] = {}
    for cell in grid.cells:
        rec = records.get(cell.name, {})
        test = ((rec.get("metrics") or {}).get("test")) or {}
        if rec.get("status") == "completed" and "CIDEr" in test:
            source = str(cell.config.model.encoder.box_source)
            by_source.setdefault(source, []).append(float(test["CIDEr"]))
    table = Table(title="regions-attention-transformer: test CIDEr-D x100 by box source (seeds)")
    for col in ("box source", "seeds", "mean", "std", "min", "max"):
        table.add_column(col, justify="left" if col == "box source" else "right")
    summary = {}
    for source, values in sorted(by_source.items()):
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        summary[source] = {
            "values": values,
            "mean": statistics.fmean(values),
            "std": std,
            "min": min(values),
            "max": max(values),
        }
        row = [100 * summary[source][k] for k in ("mean", "std", "min", "max")]
        table.add_row(source, str(len(values)), *(f"{v:.1f}" for v in row))
    console.print(table)
    within = None
    if "dataset" in summary and "detector" in summary:
        ds, det = summary["dataset"], summary["detector"]
        within = ds["min"] <= det["mean"] <= ds["max"]
        verdict = "[green]met[/green]" if within else "[red]missed[/red]"
        console.print(
            f"target: detector-boxes mean CIDEr-D {100 * det['mean']:.1f} within the dataset-boxes "
            f"seed range [{100 * ds['min']:.1f}, {100 * ds['max']:.1f}]: {verdict}"
        )
    return {
        "grid": str(args.grid),
        "exit_code": proc.returncode,
        "cider_d": summary,
        "within_seed_range": within,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="dotlist overrides for the --grid runs")
    parser.add_argument("--num-train", type=int, help="train images (default: shapes' 4,000)")
    parser.add_argument("--epochs", type=int, default=3, help="default: the CLI's default (3)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, all cores)")
    parser.add_argument("--out", default="runs/detector/shapes-detector.pt", help="detector checkpoint")
    parser.add_argument("--checkpoint", help="skip part 1: use this trained detector for --grid")
    parser.add_argument("--grid", help="part 2: a grid of box_source cells (experiments/detector.yaml)")
    parser.add_argument(
        "--leaderboard-dir",
        default="leaderboards/detector-boxes",
        help="where the grid's leaderboard goes (it is named after the dataset: keep it apart from leaderboards/shapes.*)",
    )
    parser.add_argument("--result", default="detector", help="results file stem in benchmarks/results/")
    args = parser.parse_args(argv)

    from rich.console import Console

    console = Console(width=140)
    result: dict = {"benchmark": "detector", "args": vars(args)}
    checkpoint = args.checkpoint
    if checkpoint is None:
        result["detector"] = train_part(args, console)
        checkpoint = result["detector"]["metrics"]["checkpoint"]
    if args.grid:
        result["captioning"] = grid_part(args, str(Path(checkpoint).resolve()), console)
    result["machine"] = machine()
    console.print(f"written {write_result(args.result, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
