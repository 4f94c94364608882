"""The ``fusionbench`` command: thin parsing around the library functions.

Known user errors (``FusionbenchError``) print as one paragraph without a traceback and exit 2;
``--debug`` re-raises them with the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from rich.console import Console

from fusionbench.errors import FusionbenchError

console = Console(stderr=True)
out = Console()


def _cmd_run(args: argparse.Namespace) -> int:
    from fusionbench.config import load_config
    from fusionbench.run import run_experiment

    cfg = load_config(args.config, args.overrides)
    from fusionbench.metrics import check_java

    check_java()
    metrics = run_experiment(cfg, progress=False if args.no_progress else None)
    _print_summary(metrics)
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


def _cmd_validate(args: argparse.Namespace) -> int:
    from fusionbench.config import load_config, to_yaml

    cfg = load_config(args.config, args.overrides)
    if args.print:
        out.print(to_yaml(cfg), markup=False, highlight=False)
    out.print(f"[green]OK[/green] {args.config} is a valid experiment config.")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from fusionbench.registries import ALL

    kinds = [args.kind] if args.kind else list(ALL)
    if args.kind and args.kind not in ALL:
        singular = {k[:-1]: k for k in ALL}
        if args.kind in singular:
            kinds = [singular[args.kind]]
        else:
            raise FusionbenchError(f"Unknown component kind '{args.kind}'. Choose one of: {', '.join(ALL)}.")
    for kind in kinds:
        table = Table(title=kind, show_lines=False)
        table.add_column("name", style="bold")
        table.add_column("description")
        table.add_column("origin", style="dim")
        for entry in ALL[kind].entries():
            table.add_row(entry.name, entry.description, entry.origin)
        out.print(table)
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from fusionbench.metrics import score_files

    result = score_files(args.predictions, args.references)
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusionbench", description="Benchmark fusion strategies for image captioning."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train and evaluate an experiment config")
    p.add_argument("config", help="experiment YAML, e.g. experiments/smoke.yaml")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. trainer.max_epochs=2")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("validate", help="check an experiment config without running it")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--print", action="store_true", help="print the resolved config")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("list", help="list registered components")
    p.add_argument("kind", nargs="?", help="encoders | fusions | decoders | datasets")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser(
        "score", help="score COCO-format predictions against references with coco-caption metrics"
    )
    p.add_argument("--predictions", required=True, help='JSON list of {"image_id", "caption"}')
    p.add_argument(
        "--references", required=True, help='COCO captions JSON: {"images": [...], "annotations": [...]}'
    )
    p.set_defaults(func=_cmd_score)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1") if os.environ.get("FUSIONBENCH_ONLINE") is None else None
    parser = build_parser()
    args = parser.parse_args(argv)
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
