"""W&B integration: real offline runs, read back from their transaction log on disk.

The suite sets ``WANDB_MODE=disabled`` (conftest); these tests turn W&B on explicitly through
``logger.wandb.mode=offline`` (an explicit mode wins over the environment). Nothing contacts the
network: the online tests point ``WANDB_BASE_URL`` at a closed port on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from wandb_reader import read_run

from fusionbench.cli import main
from fusionbench.config import load_config
from fusionbench.errors import ConfigError
from fusionbench.metrics import METRIC_KEYS
from fusionbench.tracking.mode import has_credentials, reachable, resolve_mode

CONFIGS = Path(__file__).parent / "configs"
FAKE_KEY = "x" * 40


def closed_port() -> int:
    """A local TCP port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_cfg(tmp_path, *extra):
    return load_config(CONFIGS / "tiny.yaml", [f"output_dir={tmp_path}", "logger.wandb.mode=offline", *extra])


def tracking_warnings(record) -> list[str]:
    from fusionbench.tracking import TrackingWarning

    return [str(w.message) for w in record if issubclass(w.category, TrackingWarning)]


# ------------------------------------------------------------------------- one real offline run


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("wandb-runs")
    env_before = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    args = [
        "run",
        str(CONFIGS / "tiny.yaml"),
        f"output_dir={out}",
        "logger.wandb.mode=offline",
        "logger.wandb.tags=[nightly]",
        "logger.wandb.predictions=5",
        "logger.wandb.attention_images=2",
        "logger.wandb.attention_words=3",
        "--no-progress",
    ]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert main(args) == 0
    run_dir = out / "tiny" / "cnn-attention-lstm-s0"
    info = json.loads((run_dir / "wandb.json").read_text())
    return {
        "out": out,
        "run_dir": run_dir,
        "info": info,
        "run": read_run(info["dir"]),
        "metrics": json.loads((run_dir / "metrics.json").read_text()),
        "warnings": tracking_warnings(record),
        "env_before": env_before,
        "env_after": {k: v for k, v in os.environ.items() if k.startswith("WANDB_")},
    }


def test_offline_run_is_written_under_output_dir_without_warnings(offline_run):
    info, out = offline_run["info"], offline_run["out"]
    assert offline_run["warnings"] == []
    assert info["mode"] == "offline" and info["sync"] == f"wandb sync {info['dir']}"
    folder = Path(info["dir"])
    assert folder.parent == out / "wandb" and folder.name.startswith("offline-run-")
    assert offline_run["run"].exit_code == 0
    # staging/cache files stay next to the runs, and the environment is restored afterwards
    assert (out / "wandb" / "data" / "artifacts" / "staging").is_dir()
    for key in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_MODE"):  # (wandb adds WANDB_SERVICE itself)
        assert offline_run["env_after"].get(key) == offline_run["env_before"].get(key), key
    assert not (Path(__file__).parent.parent / "wandb").exists()


def test_run_identity_group_and_tags(offline_run):
    run = offline_run["run"]
    assert run.name == "cnn-attention-lstm-s0"
    assert run.group == "tiny"
    assert run.job_type == "train"
    assert run.run.project == "fusionbench"
    assert run.tags == ["cnn", "attention", "lstm", "shapes", "nightly"]


def test_config_is_logged_nested_and_flat(offline_run):
    config = offline_run["run"].config
    saved = yaml.safe_load((offline_run["run_dir"] / "config.yaml").read_text())
    for key, value in saved.items():  # every section of config.yaml, nested as it is there
        assert config[key] == value, key
    assert config["model"]["encoder"]["model_name"] == "resnet10t"
    flat = {k: config[k] for k in ("encoder", "fusion", "decoder", "dataset", "seed", "cell")}
    assert flat == {
        "encoder": "cnn",
        "fusion": "attention",
        "decoder": "lstm",
        "dataset": "shapes",
        "seed": 0,
        "cell": "cnn-attention-lstm-s0",
    }


def test_summary_holds_every_test_metric_and_the_costs(offline_run):
    summary, metrics = offline_run["run"].summary, offline_run["metrics"]
    for split in ("test", "test_novel"):
        for key in METRIC_KEYS:
            assert summary[f"{split}/{key}"] == pytest.approx(metrics[split][key], abs=1e-12), (split, key)
    assert summary["best_val/CIDEr"] == pytest.approx(metrics["val"]["CIDEr"])
    assert summary["cost/params_total"] == metrics["params"]["total"]
    for part in ("encoder", "projection", "fusion", "decoder"):
        assert summary[f"cost/params_{part}"] == metrics["params"][part]
    assert summary["cost/train_images_per_s"] == pytest.approx(metrics["cost"]["train_images_per_s"])
    assert summary["cost/inference_ms_per_image"] == pytest.approx(
        metrics["cost"]["inference_ms_per_image"]["test"]
    )
    assert summary["status"] == "completed"


def test_history_has_per_step_loss_and_lr_and_per_epoch_val_and_throughput(offline_run):
    history = offline_run["run"].history
    steps = [h["trainer/global_step"] for h in history if "train/loss" in h]
    assert steps == sorted(steps) and len(steps) == offline_run["metrics"]["cost"]["epochs"] * 3
    assert all("train/lr" in h for h in history if "train/loss" in h)
    val_epochs = [h["epoch"] for h in history if "val/CIDEr" in h]
    assert val_epochs == [0, 1]
    assert [h["epoch"] for h in history if "train/images_per_s" in h] == [0, 1]


def test_predictions_table_columns_rows_and_scores(offline_run):
    run, run_dir = offline_run["run"], offline_run["run_dir"]
    assert run.summary["predictions"]["_type"] == "table-file"
    assert run.summary["predictions"]["nrows"] == 5
    table = run.table("predictions")
    assert table["columns"] == [
        "image_id",
        "image",
        "references",
        "prediction",
        "CIDEr-D",
        "hallucinated objects",
        "wrong relations",
    ]
    assert len(table["data"]) == 5
    preds = {p["image_id"]: p["caption"] for p in json.loads((run_dir / "predictions.json").read_text())}
    scores = json.loads((run_dir / "scores_test.json").read_text())
    assert "diagnostics/test_visual_gap" in run.summary and "diagnostics/seconds_total" in run.summary
    for image_id, image, references, prediction, cider, hallucinated, wrong in table["data"]:
        assert isinstance(hallucinated, str) and isinstance(wrong, str)
        assert image["_type"] == "image-file" and image["width"] >= 128
        assert prediction == preds[image_id]
        assert cider == pytest.approx(scores[str(image_id)]["CIDEr"])
        assert len(references.split("\n")) == 5


def test_attention_heatmaps_for_a_few_words(offline_run):
    run = offline_run["run"]
    table = run.table("attention")
    assert table["columns"] == ["image_id", "caption (greedy)", "position", "word", "attention"]
    assert 1 <= len(table["data"]) <= 2 * 3
    assert all(row[4]["_type"] == "image-file" for row in table["data"])
    assert run.summary["attention/maps"]["count"] == 2


# ------------------------------------------------------------------------------ grid summary run


def test_grid_summary_run_logs_the_leaderboard(offline_run, tmp_path):
    from fusionbench.grid import load_grid
    from fusionbench.results import ResultsStore
    from fusionbench.tracking import log_grid_summary

    grid = load_grid(
        CONFIGS / "tiny_grid.yaml",
        [f"output_dir={tmp_path}", "logger.wandb.mode=offline", "logger.wandb.tags=[nightly]"],
    )
    store = ResultsStore(grid.results_dir)
    metrics = offline_run["metrics"]
    for i, cell in enumerate(grid.cells):  # two completed cells that share the tiny run's files
        record = {
            "cell": cell.name,
            "hash": cell.hash,
            "status": "completed",
            "assignment": cell.assignment,
            "seed": cell.seed,
            "components": {**metrics["components"], "fusion": str(cell.config.model.fusion.name)},
            "run_dir": str(offline_run["run_dir"]),
            "metrics": {**metrics, "test": {**metrics["test"], "CIDEr": 0.1 * (i + 1)}},
            "wall_seconds": 1.0,
        }
        store.append(record)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        info = log_grid_summary(grid, n_boot=50)
    assert tracking_warnings(record) == []
    assert info["mode"] == "offline"
    assert json.loads((grid.results_dir / "wandb_leaderboard.json").read_text()) == info
    run = read_run(info["dir"])
    assert (run.name, run.group, run.job_type) == ("tiny-grid-leaderboard", "tiny-grid", "leaderboard")
    assert run.tags == ["leaderboard", "shapes", "nightly"]
    assert run.config["grid"] == "tiny-grid" and run.config["cells"] == 2
    board = run.table("leaderboard")
    assert len(board["data"]) == 2
    for column in ("rank", "encoder", "fusion", "decoder", "test_CIDEr_mean", "params_total"):
        assert column in board["columns"]
    top = dict(zip(board["columns"], board["data"][0]))
    assert top["fusion"] == "attention" and top["test_CIDEr_mean"] == pytest.approx(0.2)
    assert run.summary["configurations"] == 2 and run.summary["best/test_CIDEr"] == pytest.approx(0.2)
    for key in ("leaderboard/heatmap", "leaderboard/quality_vs_cost"):
        assert run.summary[key]["_type"] == "html-file"
    assert len(run.table("leaderboard/fusion_summary")["data"]) == 2
    charts = run.config["_wandb"]["visualize"]  # native W&B charts: a chart spec + its table
    assert charts["leaderboard/cider_by_fusion"]["panel_config"]["panelDefId"] == "wandb/bar/v0"
    assert charts["leaderboard/quality_vs_params"]["panel_config"]["panelDefId"] == "wandb/scatter/v0"
    assert run.table("leaderboard/quality_vs_params_table")["columns"][-2:] == ["params_total", "test_CIDEr"]


def test_grid_summary_is_nothing_when_disabled(tmp_path):
    from fusionbench.grid import load_grid
    from fusionbench.tracking import log_grid_summary

    grid = load_grid(CONFIGS / "tiny_grid.yaml", [f"output_dir={tmp_path}"])
    assert log_grid_summary(grid) is None
    assert not (tmp_path / "wandb").exists()


# -------------------------------------------------------------------------------- the dashboard


def test_dashboard_offline_explains_how_to_sync(offline_run, tmp_path, monkeypatch, capsys):
    results = offline_run["out"] / "tiny"
    (results / "results.jsonl").write_text(
        json.dumps(
            {"cell": "cnn-attention-lstm-s0", "status": "completed", "run_dir": str(offline_run["run_dir"])}
        )
        + "\n"
    )
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["wandb-dashboard", str(results)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "no W&B API key" in err
    assert f"wandb sync {offline_run['info']['dir']}" in err.replace("  ", " ")
    assert "CIDEr-D by fusion" in err

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    assert main(["wandb-dashboard", str(results)]) == 2
    assert "unreachable" in capsys.readouterr().err

    assert main(["wandb-dashboard", str(results), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "grid 'tiny'" in printed and "test/CIDEr vs cost/params_total" in printed


def test_dashboard_objects_build_without_network():
    pytest.importorskip("wandb_workspaces")
    from fusionbench.tracking.dashboard import GridTarget, build_report, build_workspace, dashboard_spec

    target = GridTarget(
        name="g", results_dir=Path("runs/g"), project="p", entity="e", group="g", run_infos=[]
    )
    workspace = build_workspace(target, "e")
    spec = dashboard_spec()
    assert [s.name for s in workspace.sections] == [s.name for s in spec]
    assert [len(s.panels) for s in workspace.sections] == [len(s.panels) for s in spec]
    saved = workspace._to_model().model_dump_json(by_alias=True)  # what .save() would send
    for view in ("Bar Chart", "Parallel Coordinates Plot", "Scatter Plot", "Run History Line Plot"):
        assert f'"viewType":"{view}"' in saved
    report = build_report(target, "e")
    assert len(report.blocks) == 1 + 2 * len(spec)


# ------------------------------------------------------------------------ modes and robustness


def test_online_without_network_falls_back_to_offline_within_seconds(tmp_path, monkeypatch):
    from fusionbench.tracking import start_run_tracking

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    cfg = load_config(CONFIGS / "tiny.yaml", [f"output_dir={tmp_path}", "logger.wandb.mode=online"])
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tracker = start_run_tracking(cfg, tmp_path / "tiny" / "run")
        tracker.finish()
    elapsed = time.perf_counter() - start
    messages = tracking_warnings(record)
    assert len(messages) == 1 and "unreachable" in messages[0] and "offline" in messages[0]
    assert tracker.mode == "offline" and tracker.info["mode"] == "offline"
    assert elapsed < 20, elapsed  # typically ~0.1 s probe + ~1-2 s offline wandb.init
    assert read_run(tracker.info["dir"]).exit_code == 0


def test_mode_resolution(tmp_path, monkeypatch):
    port = closed_port()
    no_key = {"WANDB_BASE_URL": f"http://127.0.0.1:{port}", "NETRC": str(tmp_path / "none")}
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    assert not has_credentials(no_key)
    assert resolve_mode("disabled", env=no_key).mode == "disabled"
    assert resolve_mode("offline", env={**no_key, "WANDB_MODE": "online"}).mode == "offline"
    online = resolve_mode("online", env=no_key)
    assert online.mode == "offline" and "API key" in online.warning
    auto = resolve_mode("auto", env=no_key)
    assert auto.mode == "offline" and auto.warning is None  # auto falls back silently
    assert resolve_mode("auto", env={**no_key, "WANDB_MODE": "disabled"}).mode == "disabled"
    assert resolve_mode("auto", env={**no_key, "WANDB_DISABLED": "true"}).mode == "disabled"
    assert resolve_mode("auto", env={**no_key, "WANDB_MODE": "dryrun"}).mode == "offline"
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    with_key = {**no_key, "NETRC": str(netrc)}
    assert has_credentials(with_key)
    start = time.perf_counter()
    assert resolve_mode("auto", env=with_key).mode == "offline"  # key, but nothing listens
    assert time.perf_counter() - start < 2
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        assert reachable(url, timeout=1.0, env={})
        assert resolve_mode("auto", env={**with_key, "WANDB_BASE_URL": url}).mode == "online"
        assert not reachable(url, timeout=1.0, env={"HTTP_PROXY": f"http://127.0.0.1:{port}"})
        assert reachable(
            url, timeout=1.0, env={"HTTP_PROXY": f"http://127.0.0.1:{port}", "NO_PROXY": "127.0.0.1"}
        )


def test_config_default_is_disabled_and_modes_are_checked():
    cfg = load_config(CONFIGS / "tiny.yaml")
    assert cfg.logger.wandb.mode == "disabled" and cfg.logger.wandb.group is None
    with pytest.raises(ConfigError, match="Did you mean 'offline'"):
        load_config(CONFIGS / "tiny.yaml", ["logger.wandb.mode=ofline"])


def test_disabled_touches_nothing(tmp_path, monkeypatch):
    from fusionbench.tracking import NullTracker, start_run_tracking

    monkeypatch.setitem(sys.modules, "wandb", None)  # any `import wandb` would now fail
    cfg = load_config(CONFIGS / "tiny.yaml", [f"output_dir={tmp_path}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker = start_run_tracking(cfg, tmp_path / "tiny" / "run")
        assert isinstance(tracker, NullTracker) and tracker.logger is False and not tracker.callbacks
        tracker.log_results({"test": {"CIDEr": 1.0}}, module=object(), dataset=object())
        tracker.finish(exit_code=1)
    assert list(tmp_path.iterdir()) == []


def test_failing_wandb_init_is_one_warning_and_no_tracker(tmp_path, monkeypatch):
    import wandb

    from fusionbench.tracking import start_run_tracking

    def broken_init(**kwargs):
        raise RuntimeError("service exploded")

    monkeypatch.setattr(wandb, "init", broken_init)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tracker = start_run_tracking(offline_cfg(tmp_path), tmp_path / "tiny" / "run")
        # wandb.init runs in the background; the logger waits for it, then does nothing
        tracker.logger.log_metrics({"train/loss": 1.0}, step=0)
        tracker.logger.log_hyperparams({"a": 1})
        tracker.log_results({"test": {"CIDEr": 1.0}})
        tracker.finish()
    assert tracker.run is None and tracker.info is None and tracker.logger.experiment is None
    (message,) = tracking_warnings(record)
    assert "service exploded" in message


def test_logging_errors_are_one_warning_then_silence(tmp_path):
    from fusionbench.tracking import start_run_tracking

    tracker = start_run_tracking(offline_cfg(tmp_path), tmp_path / "tiny" / "run")
    calls = []

    def broken_log(*args, **kwargs):
        calls.append(1)
        raise OSError("disk full")

    tracker.wait()
    tracker.run.log = broken_log
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for step in range(3):
            tracker.logger.log_metrics({"train/loss": 1.0}, step=step)
        tracker.log_results({"test": {"CIDEr": 1.0}})
        tracker.finish()
    (message,) = tracking_warnings(record)
    assert "disk full" in message and len(calls) == 1


def test_metrics_logged_while_wandb_starts_are_kept_and_sent(tmp_path, monkeypatch):
    """wandb.init runs in the background; training never waits for it, and loses nothing."""
    import threading

    import wandb

    from fusionbench.tracking import start_run_tracking

    release = threading.Event()
    real_init = wandb.init

    def slow_init(**kwargs):
        release.wait(10)
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", slow_init)
    tracker = start_run_tracking(offline_cfg(tmp_path), tmp_path / "tiny" / "run")
    start = time.perf_counter()
    for step in range(5):
        tracker.logger.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    assert tracker.starting and tracker.logger.experiment is None
    assert time.perf_counter() - start < 0.5  # nothing waited for W&B
    release.set()
    tracker.finish()
    history = read_run(tracker.info["dir"]).history
    assert [h["trainer/global_step"] for h in history if "train/loss" in h] == [0, 1, 2, 3, 4]
    assert tracker.info["seconds_by_part"]["logging metrics"] > 0


def test_a_failing_run_finishes_its_wandb_run_with_an_error_code(tmp_path, monkeypatch):
    import fusionbench.experiment as run_module

    seen = []

    def crash(cfg, tracker, **kwargs):
        seen.append(tracker)
        raise FloatingPointError("loss is nan")

    monkeypatch.setattr(run_module, "_run_experiment", crash)
    cfg = offline_cfg(tmp_path)
    for _ in range(2):
        with pytest.raises(FloatingPointError):
            run_module.run_experiment(cfg)
    first, second = seen
    assert first.info["id"] != second.info["id"]  # the second attempt got a run of its own
    for tracker in seen:
        assert read_run(tracker.info["dir"]).exit_code == 1


def test_sample_and_attention_map_helpers():
    from fusionbench.tracking.media import attention_map, enlarge, sample_indices

    assert sample_indices(10, 4) == [0, 3, 6, 9] and sample_indices(3, 8) == [0, 1, 2]
    assert sample_indices(10, 0) == []
    weights = np.zeros(16, dtype=np.float32)
    weights[3] = 1.0  # top-right cell of a 4x4 grid
    amap = attention_map(weights, 64, 64)
    assert amap.shape == (64, 64) and amap[4, 60] > 0.9 and amap[60, 4] < 0.1
    boxes = np.array([[0, 0, 10, 10], [30, 30, 64, 64]], dtype=np.float32)
    amap = attention_map(np.array([0.2, 0.8], dtype=np.float32), 64, 64, boxes)
    assert amap[40, 40] == pytest.approx(1.0) and amap[5, 5] == pytest.approx(0.25)
    assert attention_map(np.ones(11, dtype=np.float32), 64, 64) is None  # no place in the image
    assert enlarge(np.zeros((64, 64, 3), dtype=np.uint8)).shape == (128, 128, 3)


def test_dashboard_without_wandb_workspaces_says_how_to_install(monkeypatch):
    from fusionbench.tracking.dashboard import DashboardError, _import_workspaces

    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)
    monkeypatch.setitem(sys.modules, "wandb_workspaces.workspaces", None)
    with pytest.raises(DashboardError, match=r"fusionbench\[dashboards\]"):
        _import_workspaces()
