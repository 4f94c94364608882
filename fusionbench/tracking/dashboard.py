"""``fusionbench wandb-dashboard <grid>``: a saved W&B workspace (and report) for one grid.

The panels a reader of a fusion benchmark needs, all restricted to the grid's W&B group:

1. **Leaderboard**: the grid summary run's ``leaderboard`` table.
2. **Quality by fusion**: test CIDEr-D, BLEU-4 and METEOR as bars grouped by ``fusion`` (mean over
   the runs of each fusion strategy, seed spread as the range).
3. **Encoder x fusion**: parallel coordinates ``encoder -> fusion -> decoder -> test/CIDEr`` and
   test CIDEr-D grouped by ``encoder``; the runs table is grouped by encoder, then fusion.
4. **Quality vs cost**: test CIDEr-D against parameters (log x), inference ms/image and training
   images/s.
5. **Curves**: ``val/CIDEr`` per epoch and ``train/loss`` per step, one line per fusion strategy.

The panels are a plain description (:func:`dashboard_spec`) turned into ``wandb-workspaces``
objects (optional: ``pip install wandb-workspaces``, imported only here) and saved online. Offline
(no API key or no network) nothing is sent: the command lists the grid's unsynced offline runs and
the ``wandb sync`` command to run first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusionbench.errors import FusionbenchError
from fusionbench.tracking.mode import base_url, has_credentials, reachable
from fusionbench.tracking.wandb_run import RUN_INFO, wandb_config


class DashboardError(FusionbenchError):
    """The dashboard cannot be built now (offline, package missing); the message says what to do."""


@dataclass
class Panel:
    kind: str  # bar | scatter | line | parallel | table
    title: str
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        o = self.options
        if self.kind == "bar":
            return f"bar: {', '.join(o['metrics'])} grouped by {o['groupby']}"
        if self.kind == "scatter":
            return f"scatter: {o['y']} vs {o['x']}" + (" (log x)" if o.get("log_x") else "")
        if self.kind == "line":
            return f"line: {', '.join(o['y'])} vs {o['x']}, one line per {o['groupby']}"
        if self.kind == "parallel":
            return f"parallel coordinates: {' -> '.join(o['columns'])}"
        return f"table: {o['table']} (from the {o['run']} run)"


@dataclass
class Section:
    name: str
    panels: list[Panel]


def dashboard_spec() -> list[Section]:
    """The dashboard's sections and panels (metric and config names as the runs log them)."""
    cider, params = "test/CIDEr", "cost/params_total"
    return [
        Section(
            "Leaderboard",
            [
                Panel(
                    "table", "Leaderboard (raw scale)", {"table": "leaderboard", "run": "<grid>-leaderboard"}
                )
            ],
        ),
        Section(
            "Quality by fusion",
            [
                Panel("bar", "Test CIDEr-D by fusion", {"metrics": [cider], "groupby": "fusion"}),
                Panel("bar", "Test BLEU-4 by fusion", {"metrics": ["test/Bleu_4"], "groupby": "fusion"}),
                Panel("bar", "Test METEOR by fusion", {"metrics": ["test/METEOR"], "groupby": "fusion"}),
            ],
        ),
        Section(
            "Encoder x fusion",
            [
                Panel(
                    "parallel",
                    "encoder x fusion x decoder -> CIDEr-D",
                    {"columns": ["encoder", "fusion", "decoder", cider]},
                ),
                Panel("bar", "Test CIDEr-D by encoder", {"metrics": [cider], "groupby": "encoder"}),
            ],
        ),
        Section(
            "Quality vs cost",
            [
                Panel("scatter", "CIDEr-D vs parameters", {"x": params, "y": cider, "log_x": True}),
                Panel(
                    "scatter",
                    "CIDEr-D vs inference ms/image",
                    {"x": "cost/inference_ms_per_image", "y": cider},
                ),
                Panel(
                    "scatter", "CIDEr-D vs training images/s", {"x": "cost/train_images_per_s", "y": cider}
                ),
            ],
        ),
        Section(
            "Curves",
            [
                Panel(
                    "line",
                    "Validation CIDEr-D per epoch",
                    {"x": "epoch", "y": ["val/CIDEr"], "groupby": "fusion"},
                ),
                Panel(
                    "line",
                    "Training loss",
                    {"x": "trainer/global_step", "y": ["train/loss"], "groupby": "fusion"},
                ),
            ],
        ),
    ]


def describe(spec: list[Section]) -> str:
    lines = []
    for section in spec:
        lines.append(f"{section.name}:")
        lines += [f"  - {p.title}: {p.describe()}" for p in section.panels]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the grid's runs


@dataclass
class GridTarget:
    name: str
    results_dir: Path
    project: str
    entity: str | None
    group: str
    run_infos: list[dict[str, Any]]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_target(grid: str | Path) -> GridTarget:
    """A grid file or a grid results folder -> its name, W&B project/group and logged runs."""
    path = Path(grid)
    if path.is_file():
        from fusionbench.grid import load_grid

        g = load_grid(path)
        results_dir, name, cfg = g.results_dir, g.name, g.cells[0].config
    elif path.is_dir():
        manifest = _read_json(path / "grid.json") or {}
        name, results_dir, cfg = str(manifest.get("grid") or path.name), path, None
    else:
        raise DashboardError(f"'{grid}' is neither a grid file nor a grid results folder (runs/<grid>).")
    run_dirs: list[Path] = []
    results = results_dir / "results.jsonl"
    if results.is_file():
        for line in results.read_text(encoding="utf-8").splitlines():
            record = _read_json_line(line)
            if record and record.get("run_dir") and Path(record["run_dir"]) not in run_dirs:
                run_dirs.append(Path(record["run_dir"]))
    if cfg is None:
        from omegaconf import OmegaConf

        for run_dir in run_dirs:
            if (run_dir / "config.yaml").is_file():
                cfg = OmegaConf.load(run_dir / "config.yaml")
                break
    wc = wandb_config(cfg) if cfg is not None else wandb_config(_empty())
    infos = [i for i in (_read_json(d / RUN_INFO) for d in run_dirs) if isinstance(i, dict)]
    summary = _read_json(results_dir / "wandb_leaderboard.json")
    if isinstance(summary, dict):
        infos.append(summary)
    return GridTarget(
        name=name,
        results_dir=results_dir,
        project=str(wc.project),
        entity=str(wc.entity) if wc.entity else None,
        group=str(wc.group or name),
        run_infos=infos,
    )


def _read_json_line(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _empty():
    from omegaconf import OmegaConf

    return OmegaConf.create({})


def unsynced_offline_runs(target: GridTarget) -> list[Path]:
    """Offline run folders of the grid that ``wandb sync`` has not marked as synced."""
    out = []
    for info in target.run_infos:
        if info.get("mode") != "offline" or not info.get("dir"):
            continue
        folder = Path(info["dir"])
        logs = list(folder.glob("run-*.wandb"))
        if logs and not all(Path(f"{log}.synced").exists() for log in logs):
            out.append(folder)
    return out


def sync_instructions(target: GridTarget, reason: str) -> str:
    runs = unsynced_offline_runs(target)
    listed = " ".join(str(r) for r in runs) if runs else "<output_dir>/wandb/offline-run-*"
    return (
        f"Cannot build the W&B dashboard for grid '{target.name}': {reason}. The dashboard is saved on "
        f"the W&B server, so the runs must be there first: on a machine with network, `wandb login`, then "
        f"`wandb sync {listed}` ({len(runs)} unsynced offline run(s) of this grid found), then run "
        f"`fusionbench wandb-dashboard {target.results_dir}` "
        f"again. It will add these panels to project '{target.project}', group '{target.group}':\n"
        + describe(dashboard_spec())
    )


# ------------------------------------------------------------------------- wandb-workspaces


def _import_workspaces():
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError as err:
        raise DashboardError(
            f"The W&B dashboard needs the optional package wandb-workspaces ({err}). Install it with "
            "`pip install wandb-workspaces` (or `pip install 'fusionbench[dashboards]'`)."
        ) from None
    return ws, wr


def _panels(spec: list[Section], wr) -> list[tuple[str, list[Any]]]:
    out = []
    for section in spec:
        panels = []
        for p in section.panels:
            o = p.options
            if p.kind == "bar":
                panels.append(
                    wr.BarPlot(
                        title=p.title,
                        metrics=[wr.SummaryMetric(m) for m in o["metrics"]],
                        groupby=wr.Config(o["groupby"]),
                        groupby_aggfunc="mean",
                        groupby_rangefunc="stddev",
                    )
                )
            elif p.kind == "scatter":
                panels.append(
                    wr.ScatterPlot(
                        title=p.title,
                        x=wr.SummaryMetric(o["x"]),
                        y=wr.SummaryMetric(o["y"]),
                        log_x=o.get("log_x"),
                    )
                )
            elif p.kind == "line":
                panels.append(
                    wr.LinePlot(
                        title=p.title,
                        x=o["x"],
                        y=[wr.Metric(m) for m in o["y"]],
                        groupby=wr.Config(o["groupby"]),
                        groupby_aggfunc="mean",
                        groupby_rangefunc="stddev",
                    )
                )
            elif p.kind == "parallel":
                cols = [
                    wr.ParallelCoordinatesPlotColumn(
                        metric=wr.Config(c) if "/" not in c else wr.SummaryMetric(c)
                    )
                    for c in o["columns"]
                ]
                panels.append(wr.ParallelCoordinatesPlot(title=p.title, columns=cols))
            elif p.kind == "table":
                panels.append(wr.WeavePanelSummaryTable(table_name=o["table"]))
        out.append((section.name, panels))
    return out


def build_workspace(target: GridTarget, entity: str, spec: list[Section] | None = None):
    """A ``wandb_workspaces`` Workspace for the grid (not saved)."""
    ws, wr = _import_workspaces()
    sections = [
        ws.Section(name=name, panels=panels, is_open=True)
        for name, panels in _panels(spec or dashboard_spec(), wr)
    ]
    return ws.Workspace(
        entity=entity,
        project=target.project,
        name=f"fusionbench {target.name}",
        sections=sections,
        runset_settings=ws.RunsetSettings(
            filters=[ws.Metric("Group") == target.group],
            groupby=[ws.Config("encoder"), ws.Config("fusion")],
        ),
        settings=ws.WorkspaceSettings(max_runs=100),
    )


def build_report(target: GridTarget, entity: str, spec: list[Section] | None = None):
    """A ``wandb_workspaces`` Report with the same panels, one panel grid per section (not saved)."""
    ws, wr = _import_workspaces()
    blocks: list[Any] = [
        wr.P(
            f"Grid '{target.name}' (W&B group '{target.group}'): encoder x fusion x decoder, scored with "
            "coco-caption metrics on the raw scale (CIDEr is CIDEr-D, ~0-10). Built by fusionbench wandb-dashboard."
        )
    ]
    for name, panels in _panels(spec or dashboard_spec(), wr):
        runset = wr.Runset(
            entity=entity,
            project=target.project,
            name=target.name,
            filters=[ws.Metric("Group") == target.group],
        )
        blocks += [wr.H2(name), wr.PanelGrid(runsets=[runset], panels=panels)]
    return wr.Report(
        project=target.project,
        entity=entity,
        title=f"fusionbench: {target.name}",
        description="Fusion benchmark dashboard",
        blocks=blocks,
    )


def create_dashboard(
    grid: str | Path,
    *,
    project: str | None = None,
    entity: str | None = None,
    report: bool = True,
) -> dict[str, Any]:
    """Build and save the workspace (and report) online; raise :class:`DashboardError` with sync
    instructions when W&B is not reachable from here."""
    target = load_target(grid)
    if project:
        target.project = project
    if entity:
        target.entity = entity
    url = base_url()
    if not has_credentials():
        raise DashboardError(
            sync_instructions(target, f"no W&B API key for {url} (set WANDB_API_KEY or `wandb login`)")
        )
    if not reachable(url, timeout=3.0):
        raise DashboardError(sync_instructions(target, f"the W&B server {url} is unreachable from here"))
    _import_workspaces()
    pending = unsynced_offline_runs(target)
    import wandb

    entity = target.entity or wandb.Api().default_entity
    if not entity:
        raise DashboardError(f"No W&B entity known for {url}; pass --entity or set logger.wandb.entity.")
    workspace = build_workspace(target, entity)
    workspace.save()
    out: dict[str, Any] = {
        "workspace": getattr(workspace, "url", None),
        "report": None,
        "unsynced": [str(p) for p in pending],
    }
    if report:
        rep = build_report(target, entity)
        rep.save()
        out["report"] = getattr(rep, "url", None)
    return out
