"""The ``fusionbench`` command: thin parsing around the library functions.

Known user errors (``FusionbenchError``) print as one paragraph without a traceback and exit 2;
``--debug`` re-raises them with the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console

from fusionbench.errors import FusionbenchError

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import RenderableType

    from fusionbench.grid import Cell, Grid

console = Console(stderr=True)
out = Console()


def _cmd_run(args: argparse.Namespace) -> int:
    from fusionbench.grid import is_grid_file

    if is_grid_file(args.config):
        return _run_grid(args)
    if args.dry_run:
        from fusionbench.config import load_config
        from fusionbench.experiment import run_dir_for

        out.print(f"1 run: {run_dir_for(load_config(args.config, args.overrides))}")
        return 0
    from fusionbench.config import load_config
    from fusionbench.experiment import run_experiment
    from fusionbench.metrics import check_java

    cfg = load_config(args.config, args.overrides)
    check_java()
    metrics = run_experiment(cfg, progress=False if args.no_progress else None, resume=args.resume)
    if "run_name" in metrics:  # rank 0 (the only one in a single-process run)
        _print_summary(metrics)
    return 0


def _run_grid(args: argparse.Namespace) -> int:
    from fusionbench.grid import load_grid
    from fusionbench.grid.runner import run_grid
    from fusionbench.metrics import check_java

    grid = load_grid(args.config, args.overrides, seeds=args.seeds)
    if args.dry_run:
        from fusionbench.grid.runner import plan
        from fusionbench.results import ResultsStore

        planned = plan(grid, ResultsStore(grid.results_dir), args.force)  # reads the store, writes nothing
        out.print(grid_plan(grid, planned.action))
        return 0
    check_java()
    summary = run_grid(
        grid,
        jobs=args.jobs,
        force=args.force,
        progress=not args.no_progress,
        console=console,
        launcher=args.launcher,
        address=args.address,
    )
    out.print(
        f"grid '{grid.name}': {len(summary.completed)} run ({len(summary.reevaluated)} re-evaluated without "
        f"training), {len(summary.skipped)} skipped (finished before), "
        f"{len(summary.failed)} failed in {summary.seconds:.0f}s; results in {grid.results_dir / 'results.jsonl'}"
    )
    for name, error in summary.failed.items():
        out.print(f"  [red]failed[/red] {name}: {error}", highlight=False)
    if summary.wandb:
        _print_wandb(summary.wandb, "W&B grid summary")
    if summary.interrupted:
        console.print(
            f"[yellow]interrupted during {summary.interrupted}; run the same command again to resume[/yellow]"
        )
        return 130
    from fusionbench.leaderboard.selection import leaderboard_dir

    out_dir = leaderboard_dir(args.leaderboard_dir, grid.leaderboard)
    if out_dir and (summary.completed or summary.skipped):
        from fusionbench.leaderboard import build_leaderboard, print_leaderboard

        board = build_leaderboard(
            grid.results_dir,
            out_dir=out_dir,
            command=_command_line(),
            select_on=grid.leaderboard.select_on,
        )
        print_leaderboard(board, out)
        out.print(f"leaderboard: {', '.join(str(p) for p in board.paths)}")
    return 1 if summary.failed else 0


HASH_SHOWN = 8  # characters of a cell's config hash in the dry-run table (unique in any real grid)


def _short_key(key: str) -> str:
    """``model.encoder.name`` -> ``encoder``, ``optim.lr`` -> ``lr``: a column header for an axis."""
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def grid_plan(grid: Grid, action: Callable[[Cell], str] | None = None) -> RenderableType:
    """The ``--dry-run`` listing: one row per cell, one narrow column per axis, a legend below,
    then what running the grid would do with its cells (``action``: train, resume, re-evaluate
    without training, skip), one line per kind of action.

    Axis keys are shortened to their last part (``model.fusion.name`` -> ``fusion``) so the table
    of the default 27-cell grid reads in an 80-column terminal; the legend gives the full keys.
    The actions go below the table rather than in a column, which would not fit.
    """
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    keys: list[str] = []
    for cell in grid.cells:
        keys.extend(k for k in cell.assignment if k not in keys)
    short = [_short_key(k) for k in keys]
    headers = [h if short.count(h) == 1 else k for h, k in zip(short, keys)]
    table = Table(
        title=f"grid '{grid.name}': {len(grid.cells)} cells -> {grid.results_dir}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=0,  # the box's blank column rule is the one-space gap
    )
    table.add_column("cell", no_wrap=True)
    for header in headers:
        table.add_column(header, overflow="fold")
    table.add_column("hash", style="dim", no_wrap=True)
    for cell in grid.cells:
        values = [str(cell.assignment[k]) if k in cell.assignment else "-" for k in keys]
        table.add_row(cell.name, *values, cell.hash[:HASH_SHOWN])
    legend = [f"{h} = {k}" for h, k in zip(headers, keys) if h != k]
    legend.append(f"hash = the first {HASH_SHOWN} characters of the cell's config hash")
    parts: list[RenderableType] = [table, Text("columns: " + "; ".join(legend), style="dim")]
    if grid.settings:
        from fusionbench.leaderboard.table import settings_item

        parts.append(Text("family settings: " + settings_item(grid.settings)))
    if grid.leaderboard.on_val:
        parts.append(Text(VAL_SELECTION))
    if action is not None:
        by_action: dict[str, list[str]] = {}
        for cell in grid.cells:
            by_action.setdefault(action(cell), []).append(cell.name)
        for what, names in by_action.items():
            label = "re-evaluate (no training)" if what == "re-evaluate" else what
            parts.append(Text(f"{label}: {len(names)} cell(s): " + ", ".join(names)))
    return Group(*parts)


VAL_SELECTION = (
    "leaderboard: ranks configurations by validation CIDEr-D of each run's selected checkpoint "
    "(grid.leaderboard.select_on: val); test scores are reported, not used to select"
)


def _command_line() -> str:
    return "fusionbench " + " ".join(sys.argv[1:])


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from fusionbench.leaderboard import build_leaderboard, print_leaderboard

    select_on = None
    if args.select_on is not None:
        from fusionbench.leaderboard.selection import check_select_on

        select_on = check_select_on(args.select_on, "--select-on")
    board = build_leaderboard(
        args.results,
        out_dir=args.out,
        name=args.name,
        n_boot=args.n_boot,
        seed=args.boot_seed,
        command=_command_line(),
        select_on=select_on,
    )
    print_leaderboard(board, out)
    out.print(f"leaderboard: {', '.join(str(p) for p in board.paths)}")
    return 0


def _print_summary(metrics: dict) -> None:
    from rich.table import Table

    from fusionbench.metrics import METRIC_KEYS

    table = Table(title=f"{metrics['run_name']} (scores x100; CIDEr = CIDEr-D)")
    table.add_column("split")
    for key in METRIC_KEYS:
        table.add_column(key, justify="right")
    for split in ["val", *[k for k in ("test", "test_novel") if k in metrics]]:
        row = metrics.get(split) or {}
        table.add_row(
            split,
            *[f"{100 * row[k]:.1f}" if isinstance(row.get(k), (int, float)) else "-" for k in METRIC_KEYS],
        )
    out.print(table)
    cost = metrics["cost"]
    ips = cost["train_images_per_s"]
    out.print(
        f"params {metrics['params']['total']:,} | train {ips:.1f} img/s | "
        if ips
        else f"params {metrics['params']['total']:,} | ",
        f"wall {cost['wall_seconds']:.1f}s | results in {metrics['run_dir']}",
        sep="",
    )
    if metrics.get("wandb"):
        _print_wandb(metrics["wandb"], "W&B")


def _print_wandb(info: dict, what: str) -> None:
    where = info.get("url") or info.get("dir")
    spent = f" ({info['seconds']:.1f}s in W&B calls)" if info.get("seconds") is not None else ""
    out.print(f"{what} ({info.get('mode')}): {where}{spent}", highlight=False, soft_wrap=True)
    if info.get("sync"):
        out.print(f"  upload later with: {info['sync']}", highlight=False, soft_wrap=True)


def _cmd_wandb_dashboard(args: argparse.Namespace) -> int:
    from fusionbench.tracking.dashboard import create_dashboard, dashboard_spec, describe, load_target

    if args.dry_run:
        target = load_target(args.grid)
        out.print(
            f"W&B dashboard for grid '{target.name}' (project '{args.project or target.project}', "
            f"group '{target.group}'):",
            highlight=False,
        )
        out.print(describe(dashboard_spec()), markup=False, highlight=False)
        return 0
    result = create_dashboard(args.grid, project=args.project, entity=args.entity, report=not args.no_report)
    out.print(f"workspace: {result['workspace']}", highlight=False)
    if result.get("report"):
        out.print(f"report: {result['report']}", highlight=False)
    if result.get("unsynced"):
        console.print(
            f"[yellow]{len(result['unsynced'])} run(s) of this grid are only offline; upload them with "
            f"`wandb sync {' '.join(result['unsynced'])}`[/yellow]",
            highlight=False,
            soft_wrap=True,
        )
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from fusionbench.config import load_config, to_yaml
    from fusionbench.grid import is_grid_file, load_grid

    if is_grid_file(args.config):
        grid = load_grid(args.config, args.overrides)
        out.print(
            f"[green]OK[/green] {args.config} is a valid grid: {len(grid.cells)} cells, each a valid experiment."
        )
        if grid.leaderboard.on_val:
            out.print(VAL_SELECTION, highlight=False)
        return 0

    cfg = load_config(args.config, args.overrides)
    if args.print:
        out.print(to_yaml(cfg), markup=False, highlight=False)
    out.print(f"[green]OK[/green] {args.config} is a valid experiment config.")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    import warnings

    from rich.table import Table

    from fusionbench.registry import ALL

    kinds = [args.kind] if args.kind else list(ALL)
    if args.kind and args.kind not in ALL:
        singular = {k[:-1]: k for k in ALL}
        if args.kind in singular:
            kinds = [singular[args.kind]]
        else:
            raise FusionbenchError(f"Unknown component kind '{args.kind}'. Choose one of: {', '.join(ALL)}.")
    for kind in kinds:
        registry = ALL[kind]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            failed = registry.load_all()
        for w in caught:
            console.print(f"[yellow]warning:[/yellow] {w.message}", highlight=False)
        table = Table(title=kind, show_lines=False)
        table.add_column("name", style="bold")
        table.add_column("description")
        table.add_column("origin", style="dim")
        for entry in registry.entries():
            table.add_row(entry.name, entry.description, entry.origin)
        for name, error in failed.items():
            table.add_row(name, f"[red]failed to import[/red]: {error}", "plugin")
        out.print(table)
    return 0


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from fusionbench.config import load_config
    from fusionbench.data.stats import dataset_stats, format_stats
    from fusionbench.registry import DATASETS

    cfg = load_config(args.config, args.overrides)
    stats = dataset_stats(DATASETS.build(cfg.data))
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
    else:
        out.print(format_stats(stats))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from fusionbench.experiment import evaluate_checkpoint
    from fusionbench.metrics import check_java

    check_java()
    scores = evaluate_checkpoint(args.checkpoint, args.overrides, splits=args.splits)
    if not scores:  # not rank 0 of a distributed evaluation
        return 0
    if args.out:
        from fusionbench.io import atomic_write_json

        atomic_write_json(args.out, scores)
    print(json.dumps(scores, indent=2))
    return 0


def _cmd_extract_features(args: argparse.Namespace) -> int:
    import pytorch_lightning as pl
    import torch

    from fusionbench.config import load_config
    from fusionbench.features.cache import cache_root, cached_features
    from fusionbench.features.extract import write_feature_store
    from fusionbench.registry import DATASETS, ENCODERS

    cfg = load_config(args.config, args.overrides)
    pl.seed_everything(int(cfg.seed), verbose=False)  # the weights a run with this seed starts from
    dataset = DATASETS.build(cfg.data)
    encoder = ENCODERS.build(cfg.model.encoder)
    if encoder.reads_features:
        raise FusionbenchError(
            "model.encoder reads precomputed features (box_source: precomputed); extract features with "
            "an encoder that computes them (e.g. model.encoder.box_source=dataset)."
        )
    names = args.splits or ["train", "val", *dataset.eval_splits()]
    splits = {name: dataset.split(name) for name in names}
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.out:
        stats = write_feature_store(
            encoder, cfg.data, splits, args.out, batch_size=args.batch_size, device=device
        )
        where, seconds, count = args.out, stats["seconds"], stats["images"]
    else:
        store, info = cached_features(
            encoder, cfg.data, splits, cache_root(cfg), batch_size=args.batch_size, device=device
        )
        where, seconds, count = store.path, info["extract_seconds"], info["images"]
        if info["hit"]:
            out.print(f"already cached: {where}", highlight=False)
    out.print(f"{count} images' features ({', '.join(names)}) in {where} ({seconds:.1f}s)", highlight=False)
    if not encoder.extract_is_frozen():
        console.print(
            "[yellow]note:[/yellow] model.encoder is not frozen, so training changes its features: runs "
            "read these only as precomputed features (regions box_source: precomputed), never from the cache."
        )
    return 0


def _cmd_detector_train(args: argparse.Namespace) -> int:

    from fusionbench.config import load_config
    from fusionbench.detection import metrics_table, train_detector
    from fusionbench.registry import DATASETS

    cfg = load_config(args.config, args.overrides)
    dataset = DATASETS.build(cfg.data)
    metrics = train_detector(
        dataset.split("train"),
        val_split=dataset.split("val"),
        test_split=dataset.split("test") if "test" in dataset.splits() else None,
        out_path=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=int(cfg.seed),
        label_mode=args.label_mode,
        max_steps=args.max_steps,
        device=args.device,
    )
    title = (
        f"detector ({metrics['architecture']}, {metrics['train_images']} train images, "
        f"{metrics['epochs']} epochs, {metrics['steps']} steps, {metrics['seconds']:.0f}s): COCO "
        f"metrics x100, class-agnostic; kept = score >= {metrics['score_threshold']}, best "
        f"{metrics['max_boxes']}"
    )
    out.print(metrics_table(metrics, title))
    out.print(
        f"detector checkpoint: {metrics['checkpoint']} (metrics stored in it) — use it with "
        f"model.encoder.box_source=detector model.encoder.detector_checkpoint={metrics['checkpoint']}",
        highlight=False,
    )
    return 0


def _cmd_caption(args: argparse.Namespace) -> int:
    from fusionbench.inference.cli import caption_main

    return caption_main(args)


def _cmd_new_plugin(args: argparse.Namespace) -> int:
    from fusionbench.scaffold import new_plugin

    root = new_plugin(args.name, kind=args.kind, directory=args.dir, component=args.component)
    out.print(f"created {root}: pip install -e {root} && pytest {root}", highlight=False)
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from fusionbench.metrics import score_files
    from fusionbench.metrics.coco import start_meteor

    # METEOR's JVM needs ~10 s of CPU to load its tables before it answers; start it before the
    # files are read and checked so that all of that work runs alongside it.
    start_meteor()

    result = score_files(args.predictions, args.references)
    if args.diagnostics:
        result["diagnostics"] = _score_diagnostics(args)
    print(json.dumps(result, indent=2))
    return 0


def _score_diagnostics(args: argparse.Namespace) -> dict[str, Any]:
    """The caption-only diagnostics (``fusionbench.diagnostics.text``; no torch) of a predictions file:
    diversity always; CHAIR and fact accuracy when the references carry ``shapes`` scenes
    (``export_references``) or ``--instances`` gives COCO instance annotations."""
    from fusionbench.diagnostics.coco_chair import load_instances
    from fusionbench.diagnostics.text import scenes_from_references, text_diagnostics
    from fusionbench.metrics import load_predictions, load_references

    predictions = load_predictions(args.predictions)
    references = load_references(args.references)
    with open(args.references, encoding="utf-8") as f:
        data = json.load(f)
    scenes = scenes_from_references(data) if isinstance(data, dict) else None
    instances = load_instances(args.instances) if args.instances and scenes is None else None
    reason = (
        None
        if instances is not None
        else ("unavailable: the references carry no shapes scenes and no --instances file was given")
    )
    summary, per_image = text_diagnostics(
        predictions,
        references,
        scenes=scenes,
        instances=instances,
        instances_reason=reason,
        novel_pairs=data.get("novel_pairs") if isinstance(data, dict) else None,
    )
    failures = {
        str(i): v for i, v in sorted(per_image.items()) if v.get("hallucinated") or v.get("wrong_relations")
    }
    return {**summary, "failures": failures}


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose arguments may be added on first use (``lazy_arguments``).

    ``fusionbench caption``'s arguments come from the inference code, which imports torch; adding
    them only when that subcommand is parsed (or its help is shown) keeps ``fusionbench --help``
    and ``fusionbench score`` free of torch.
    """

    def __init__(
        self,
        *args: Any,
        lazy_arguments: Callable[[argparse.ArgumentParser], Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self._lazy_arguments = lazy_arguments

    def _populate(self) -> None:
        add, self._lazy_arguments = self._lazy_arguments, None
        if add is not None:
            add(self)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self._populate()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._populate()
        return super().format_usage()

    def format_help(self) -> str:
        self._populate()
        return super().format_help()


def _caption_arguments(parser: argparse.ArgumentParser) -> None:
    from fusionbench.inference.cli import add_caption_arguments  # imports no torch

    add_caption_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    """The ``fusionbench`` parser. Building it imports nothing heavy (no torch, no Lightning)."""
    parser = _Parser(prog="fusionbench", description="Benchmark fusion strategies for image captioning.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train and evaluate an experiment config")
    p.add_argument("config", help="experiment YAML, e.g. experiments/smoke.yaml")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. trainer.max_epochs=2")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true", help="list the runs (grid cells) without running them")
    p.add_argument("--jobs", type=int, default=1, help="grid cells run in parallel processes (default 1)")
    p.add_argument("--force", action="store_true", help="rerun grid cells that already finished")
    p.add_argument(
        "--resume", action="store_true", help="single experiment: continue from its checkpoints/last.ckpt"
    )
    p.add_argument(
        "--launcher",
        choices=["local", "slurm", "ray"],
        default="local",
        help="where grid cells run: this machine (default), SLURM via submitit, or Ray (grid.launcher settings)",
    )
    p.add_argument(
        "--address", help="Ray cluster to join (e.g. auto or ray://head:10001); default: a local Ray"
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", help="grid seeds, replacing grid.seeds (e.g. --seeds 0 1 2)"
    )
    p.add_argument(
        "--leaderboard-dir",
        default=None,
        help="where a grid writes its leaderboard ('' = none; default: the grid's grid.leaderboard.dir, "
        "else leaderboards/)",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "leaderboard", help="aggregate a grid's results into leaderboards/<benchmark>.md/.html/.csv"
    )
    p.add_argument("results", help="a grid results folder holding results.jsonl, e.g. runs/shapes-grid")
    p.add_argument("--out", default="leaderboards", help="output folder (default leaderboards/)")
    p.add_argument("--name", help="file name stem (default: the dataset name)")
    p.add_argument(
        "--n-boot", type=int, default=1000, help="bootstrap resamples of the test images (default 1000)"
    )
    p.add_argument(
        "--boot-seed", type=int, default=0, help="seed of the bootstrap's numpy generator (default 0)"
    )
    p.add_argument(
        "--select-on",
        metavar="SPLIT",
        help="rank on 'test' or 'val' (a sweep: the validation score of each run's selected checkpoint); "
        "default: the grid's grid.leaderboard.select_on, recorded in the folder's grid.json, else test",
    )
    p.set_defaults(func=_cmd_leaderboard)

    p = sub.add_parser(
        "wandb-dashboard",
        help="save a W&B workspace and report with the panels for a grid (needs W&B online)",
    )
    p.add_argument("grid", help="the grid file (experiments/<grid>.yaml) or its results folder (runs/<grid>)")
    p.add_argument("--project", help="W&B project (default: logger.wandb.project of the grid)")
    p.add_argument("--entity", help="W&B entity (default: logger.wandb.entity, else your default entity)")
    p.add_argument("--no-report", action="store_true", help="save the workspace only, no report")
    p.add_argument("--dry-run", action="store_true", help="print the panels; contact nothing")
    p.set_defaults(func=_cmd_wandb_dashboard)

    p = sub.add_parser("validate", help="check an experiment config without running it")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--print", action="store_true", help="print the resolved config")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("list", help="list registered components")
    p.add_argument("kind", nargs="?", help="encoders | fusions | decoders | datasets | metrics")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser(
        "stats", help="images, captions, vocabulary, caption lengths, missing/corrupt files"
    )
    q.add_argument("config", help="experiment YAML whose `data:` section names the dataset")
    q.add_argument("overrides", nargs="*")
    q.add_argument("--json", action="store_true", help="print the statistics as JSON")
    q.set_defaults(func=_cmd_data_stats)

    p = sub.add_parser(
        "evaluate", help="score a trained checkpoint on its test splits (any devices, e.g. DDP)"
    )
    p.add_argument("checkpoint", help="a run's checkpoints/best.ckpt")
    p.add_argument(
        "overrides", nargs="*", help="trainer.*, loader.*, decoding.*, scoring.* (e.g. trainer.devices=2)"
    )
    p.add_argument("--splits", nargs="+", help="evaluation splits (default: the dataset's)")
    p.add_argument("--out", help="also write the scores (raw scale) to this JSON file")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "extract-features",
        help="write an encoder's backbone features (per-image .npz or one .h5) for reuse",
    )
    p.add_argument("config", help="experiment YAML: its model.encoder and data sections are used")
    p.add_argument("overrides", nargs="*")
    p.add_argument(
        "--out",
        help="a folder (.npz per image) or an .h5 file; default: the feature cache that runs with this "
        "frozen encoder read (features.dir, else $FUSIONBENCH_CACHE/features/<key>)",
    )
    p.add_argument("--splits", nargs="+", help="splits to extract (default: train, val and the test splits)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=_cmd_extract_features)

    p = sub.add_parser("detector", help="object detector for the regions encoder (box_source: detector)")
    det_sub = p.add_subparsers(dest="detector_command", required=True)
    q = det_sub.add_parser("train", help="train a Faster R-CNN on the boxes of a config's dataset")
    q.add_argument("config", help="experiment YAML whose `data:` section names a dataset with boxes")
    q.add_argument("overrides", nargs="*")
    q.add_argument("--out", required=True, help="checkpoint to write (model.encoder.detector_checkpoint)")
    q.add_argument("--epochs", type=int, default=3)
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--lr", type=float, default=2e-3)
    q.add_argument("--label-mode", choices=["object", "label"], default="object")
    q.add_argument("--max-steps", type=int, help="stop after this many steps (quick checks)")
    q.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    q.set_defaults(func=_cmd_detector_train)

    p = sub.add_parser(
        "caption", help="caption images with a trained checkpoint", lazy_arguments=_caption_arguments
    )
    p.set_defaults(func=_cmd_caption)

    p = sub.add_parser(
        "new-plugin", help="scaffold an installable plugin package with one component and a test"
    )
    p.add_argument("name", help="package (distribution) name, e.g. my-fusion")
    p.add_argument("--kind", default="fusion", choices=["encoder", "fusion", "decoder", "dataset", "metric"])
    p.add_argument("--component", help="registry name of the component (default depends on --kind)")
    p.add_argument("--dir", default=".", help="where to create the package folder")
    p.set_defaults(func=_cmd_new_plugin)

    p = sub.add_parser(
        "score", help="score COCO-format predictions against references with coco-caption metrics"
    )
    p.add_argument("--predictions", required=True, help='JSON list of {"image_id", "caption"}')
    p.add_argument(
        "--references", required=True, help='COCO captions JSON: {"images": [...], "annotations": [...]}'
    )
    p.add_argument(
        "--diagnostics",
        action="store_true",
        help="also report diversity, CHAIR hallucination and (shapes references with scenes) fact accuracy",
    )
    p.add_argument("--instances", help="COCO instances JSON (instances_val2014.json) for CHAIR on COCO")
    p.set_defaults(func=_cmd_score)
    return parser


#: Options that take a list (``nargs="+"``): argparse would swallow an override after them.
_LIST_OPTIONS = frozenset({"--seeds", "--splits"})


def _overrides_out_of_lists(argv: Sequence[str]) -> list[str]:
    """Move a dotlist override that follows a list option's values in front of that option.

    In ``run grid.yaml --seeds 3 4 5 trainer.max_epochs=8`` argparse would read
    ``trainer.max_epochs=8`` as a fourth seed; a ``key=value`` token is never a seed or a split
    name, so it ends the list and is read as an override, in its command-line order.
    """
    out: list[str] = []
    at: int | None = None  # where the current list option stands in `out`
    for token in argv:
        if token.startswith("-"):
            at = len(out) if token in _LIST_OPTIONS else None
            out.append(token)
        elif at is not None and "=" in token:
            out.insert(at, token)
            at += 1
        else:
            out.append(token)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; dotlist overrides may come before, between or after the flags.

    argparse fills a ``nargs="*"`` positional from the first run of positionals only, so in
    ``run grid.yaml --no-progress trainer.max_epochs=2`` the override would be "unrecognized".
    Positionals left over by a subcommand that takes overrides are appended to its overrides, in
    command-line order (later ones still win); anything else left over is an error, as before.
    ``parse_intermixed_args`` does this for a flat parser but refuses subcommands.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(_overrides_out_of_lists(sys.argv[1:] if argv is None else argv))
    if extra:
        stray = [a for a in extra if a.startswith("-")]  # a non-override is explained by load_config
        if stray or not isinstance(getattr(args, "overrides", None), list):
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1") if os.environ.get("FUSIONBENCH_ONLINE") is None else None
    args = parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FusionbenchError as err:
        if args.debug:
            raise
        console.print(f"[bold red]error:[/bold red] {err}", markup=True, highlight=False, soft_wrap=True)
        return err.exit_code
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
