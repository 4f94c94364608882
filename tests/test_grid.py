"""Grid expansion, names and hashes, failure isolation and resume."""

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from grids import write_grid
from omegaconf import OmegaConf
from rich.console import Console

from fusionbench.errors import ConfigError, FusionbenchError
from fusionbench.grid import expand, load_grid
from fusionbench.grid.runner import run_grid
from fusionbench.results import ResultsStore

CONFIGS = Path(__file__).parent / "configs"


def test_product_zip_exclude_include_and_seeds():
    spec = {
        "axes": {"a": [1, 2], "b": ["x", "y"]},
        "zip": [{"c": [10, 20], "d": [30, 40]}],
        "exclude": [{"a": 1, "b": "x"}],
        "include": [{"a": 9}],
        "seeds": [0, 1],
    }
    cells = expand(spec, "g.yaml")
    assert len(cells) == (2 * 2 * 2 - 2 + 1) * 2
    assert {"a": 1, "b": "x", "c": 10, "d": 30, "seed": 0} not in cells
    assert {"a": 2, "b": "y", "c": 20, "d": 40, "seed": 1} in cells
    assert {"a": 2, "b": "y", "c": 20, "d": 30, "seed": 0} not in cells  # zipped keys move together
    assert {"a": 9, "seed": 0} in cells and {"a": 9, "seed": 1} in cells


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ({"axes": {"a": []}}, "grid.axes.a is empty"),
        ({"axes": {"a": 3}}, "must be a list"),
        ({"zip": [{"a": [1, 2], "b": [1]}]}, "different lengths"),
        ({"axes": {"a": [1]}, "exclude": [{"a": 1}]}, "zero cells"),
        ({"axes": {"a": [1]}, "exclude": [{"b": 1}]}, "not a grid axis"),
        ({"axes": {"a": [1]}, "exclude": [{"a": 5}]}, "not among the axis values"),
        ({"axis": {"a": [1]}}, "grid.axis"),
        ({"axes": {"a": [1]}, "settings": {"a": 1}}, "grid.settings must be a list"),
        ({"axes": {"a": [1]}, "settings": [{"when": {"a": 1}}]}, "exactly the keys `when` and `set`"),
        ({"axes": {"a": [1]}, "settings": [{"when": {"b": 1}, "set": {"c": 2}}]}, "not a grid axis"),
        (
            {"axes": {"a": [1]}, "settings": [{"when": {"a": 5}, "set": {"c": 2}}]},
            "not among the axis values",
        ),
        ({"axes": {"a": [1]}, "settings": [{"when": {"a": 1}, "set": {"a": 2}}]}, "varies as an axis"),
    ],
)
def test_bad_grid_specs_fail_before_running(spec, pattern):
    with pytest.raises(ConfigError, match=pattern):
        expand(spec, "g.yaml")


def test_axis_over_unknown_key_and_unknown_include_value(tmp_path):
    with pytest.raises(FusionbenchError, match="trainer.max_epoch"):
        load_grid(write_grid(tmp_path, {"axes": {"trainer.max_epoch": [1, 2]}}))
    with pytest.raises(FusionbenchError, match="Unknown fusion 'lat'"):
        load_grid(
            write_grid(
                tmp_path, {"axes": {"model.fusion.name": ["late"]}, "include": [{"model.fusion.name": "lat"}]}
            )
        )


def test_names_are_readable_and_hashes_stable(tmp_path):
    path = write_grid(
        tmp_path, {"axes": {"model.fusion.name": ["early", "late"], "optim.lr": [0.001]}, "seeds": [0, 1]}
    )
    grid = load_grid(path)
    names = [c.name for c in grid.cells]
    assert names == ["early-lr=0.001-s0", "early-lr=0.001-s1", "late-lr=0.001-s0", "late-lr=0.001-s1"]
    again = load_grid(path)
    assert [c.hash for c in grid.cells] == [c.hash for c in again.cells]
    assert len({c.hash for c in grid.cells}) == 4
    moved = load_grid(path, ["output_dir=/elsewhere"])
    assert [c.hash for c in moved.cells] == [c.hash for c in grid.cells]  # where results go is not hashed
    changed = load_grid(path, ["optim.weight_decay=0.5"])
    assert all(a.hash != b.hash for a, b in zip(changed.cells, grid.cells))
    assert [c.seed for c in load_grid(path, seeds=[7]).cells] == [7, 7]


def test_failing_cell_is_recorded_and_the_grid_goes_on(tmp_path):
    # a learning rate of 1e30 makes the loss non-finite: a real NaN failure, not a mock
    path = write_grid(tmp_path, {"axes": {"optim.lr": [1.0e30, 0.003]}})
    grid = load_grid(path)
    summary = run_grid(grid, progress=False)
    bad, good = (c.name for c in grid.cells)
    assert list(summary.failed) == [bad] and "loss" in summary.failed[bad]
    assert summary.completed == [good]
    latest = ResultsStore(grid.results_dir).latest()
    assert latest[bad]["status"] == "failed" and latest[good]["status"] == "completed"
    assert (grid.results_dir / bad / "error.log").is_file()
    assert latest[good]["metrics"]["test"]["CIDEr"] >= 0


def test_results_folder_of_another_grid_is_refused(tmp_path):
    path = write_grid(tmp_path, {"axes": {"model.fusion.name": ["late"]}})
    ResultsStore(tmp_path / "runs" / "g").claim("g", Path("other_grid.yaml"))
    with pytest.raises(ConfigError, match="belongs to grid"):
        run_grid(load_grid(path), progress=False)


def test_killed_grid_resumes_without_retraining_finished_cells(tmp_path):
    path = write_grid(tmp_path, {"axes": {"model.fusion.name": ["late", "attention"]}})
    results = tmp_path / "runs" / "g" / "results.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "fusionbench.cli",
        "run",
        str(path),
        "--no-progress",
        "--leaderboard-dir",
        "",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if results.is_file() and '"completed"' in results.read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = ResultsStore(results.parent).latest()
    done = [c for c, r in first.items() if r["status"] == "completed"]
    assert done == ["late-s0"]
    finished_metrics = results.parent / "late-s0" / "metrics.json"
    stamp = finished_metrics.stat().st_mtime_ns

    summary = run_grid(load_grid(path), progress=False)
    assert summary.skipped == ["late-s0"] and summary.completed == ["attention-s0"]
    assert finished_metrics.stat().st_mtime_ns == stamp  # not retrained
    latest = ResultsStore(results.parent).latest()
    assert all(r["status"] == "completed" for r in latest.values())
    summary = run_grid(load_grid(path), progress=False)
    assert summary.completed == [] and len(summary.skipped) == 2


def test_dry_run_lists_cells(capsys):
    from fusionbench.cli import main

    assert main(["run", str(CONFIGS / "tiny_grid.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "late-s0" in out and "attention-s0" in out and "2 cells" in out


def test_interrupted_cell_resumes_from_its_last_checkpoint(tmp_path):
    from fusionbench.config import load_config
    from fusionbench.experiment import run_experiment
    from fusionbench.grid.execute import base_record
    from fusionbench.grid.runner import plan

    common = [f"output_dir={tmp_path}", "run_name=cell"]
    first = run_experiment(
        load_config(CONFIGS / "tiny.yaml", [*common, "trainer.max_epochs=1"]), progress=False
    )
    assert (Path(first["run_dir"]) / "checkpoints" / "last.ckpt").is_file()
    resumed = run_experiment(
        load_config(CONFIGS / "tiny.yaml", [*common, "trainer.max_epochs=2"]), progress=False, resume=True
    )
    assert resumed["cost"]["resumed"] is True
    assert [h["epoch"] for h in resumed["val_history"]] == [0, 1]  # epoch 0 restored, only epoch 1 trained

    path = write_grid(tmp_path, {"axes": {"model.fusion.name": ["late"]}})
    grid = load_grid(path)
    store = ResultsStore(grid.results_dir)
    cell = grid.cells[0]
    run_experiment(cell.config, progress=False)
    store.append({**base_record(cell), "status": "interrupted"})
    todo, skip, resume, reevaluate = plan(grid, store, force=False)
    assert [c.name for c in todo] == [cell.name] and resume == {cell.name} and not skip and not reevaluate


def test_test_time_settings_are_not_in_the_training_hash(tmp_path):
    path = write_grid(tmp_path, {"axes": {"model.fusion.name": ["late"]}})
    (base,) = load_grid(path).cells
    for test_time in ("decoding.beam_size=1", "decoding.length_penalty=0.5", "scoring.spice=false"):
        (cell,) = load_grid(path, [test_time]).cells
        assert cell.hash != base.hash and cell.train_hash == base.train_hash, test_time
        assert cell.evaluation != base.evaluation
    # what validation decodes with picks the best epoch: it is training
    for validation in ("decoding.val_beam_size=2", "decoding.max_len=5", "decoding.no_repeat_ngram=2"):
        (cell,) = load_grid(path, [validation]).cells
        assert cell.train_hash != base.train_hash, validation
    # a length penalty only matters to validation when it runs beam search
    beam_val = load_grid(path, ["decoding.val_beam_size=2"]).cells[0]
    penalised = load_grid(path, ["decoding.val_beam_size=2", "decoding.length_penalty=0.5"]).cells[0]
    assert penalised.train_hash != beam_val.train_hash


def test_validate_rejects_a_bad_decoding_value_before_anything_runs(tmp_path, capsys):
    from fusionbench.cli import main

    assert main(["validate", str(CONFIGS / "tiny.yaml"), "decoding.beam_size=0"]) == 2
    assert "Invalid value 0 for decoding.beam_size" in capsys.readouterr().err
    grid = write_grid(tmp_path, {"axes": {"model.fusion.name": ["late"]}})
    assert main(["run", str(grid), "decoding.beam_size=0", "--no-progress"]) == 2
    assert main(["run", str(CONFIGS / "tiny.yaml"), f"output_dir={tmp_path}", "decoding.max_len=0"]) == 2
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tiny").exists()  # nothing trained


def test_changed_test_beam_reevaluates_the_best_checkpoint_without_training(tmp_path, capsys):
    import json

    from fusionbench.cli import main
    from fusionbench.grid.runner import plan

    path = write_grid(tmp_path, {"axes": {"model.fusion.name": ["attention"]}}, trainer={"max_epochs": 1})
    first = run_grid(load_grid(path), progress=False)
    assert first.completed == ["attention-s0"]
    run_dir = tmp_path / "runs" / "g" / "attention-s0"
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    stamp = ckpt.stat().st_mtime_ns
    before = json.loads((run_dir / "metrics.json").read_text())
    assert before["decoding"]["beam_size"] == 2

    store = ResultsStore(tmp_path / "runs" / "g")
    beam1 = load_grid(path, ["decoding.beam_size=1"])
    assert plan(beam1, store, force=False).reevaluate == {"attention-s0"}
    assert plan(beam1, store, force=True).reevaluate == set()
    assert plan(load_grid(path, ["decoding.max_len=5"]), store, force=False).reevaluate == set()
    # records written before training hashes were stored: the run's config.yaml stands in
    records = store.path.read_text().splitlines()
    old = [
        json.dumps({k: v for k, v in json.loads(r).items() if k not in ("train_hash", "action")})
        for r in records
    ]
    store.path.write_text("\n".join(old) + "\n")
    assert plan(beam1, store, force=False).reevaluate == {"attention-s0"}
    assert main(["run", str(path), "decoding.beam_size=1", "--dry-run"]) == 0
    assert "re-evaluate" in capsys.readouterr().out

    shown = io.StringIO()
    again = run_grid(beam1, progress=True, console=Console(file=shown, width=200))
    assert again.completed == again.reevaluated == ["attention-s0"]
    assert "1 re-evaluated" in shown.getvalue()  # the progress display says what happened
    assert ckpt.stat().st_mtime_ns == stamp  # no training epoch: the checkpoint was only read
    after = json.loads((run_dir / "metrics.json").read_text())
    assert after["val_history"] == before["val_history"] and after["val"] == before["val"]
    assert after["cost"]["train_seconds"] == before["cost"]["train_seconds"]
    assert after["decoding"]["beam_size"] == 1 and after["cost"]["inference_setup"]["beam_size"] == 1
    assert after["reevaluated"]["previous_decoding"]["beam_size"] == 2
    latest = store.latest()["attention-s0"]
    assert latest["action"] == "re-evaluate" and latest["status"] == "completed"
    assert latest["evaluation"]["decoding"]["beam_size"] == 1
    assert run_grid(beam1, progress=False).skipped == ["attention-s0"]  # finished with these settings

    # the re-evaluated scores are those of training again with beam 1
    reevaluated = {s: after[s] for s in ("test", "test_novel")}
    predictions = (run_dir / "predictions.json").read_text()
    retrained = run_grid(beam1, progress=False, force=True)
    assert retrained.completed == ["attention-s0"] and not retrained.reevaluated
    fresh = json.loads((run_dir / "metrics.json").read_text())
    assert {s: fresh[s] for s in ("test", "test_novel")} == reevaluated
    assert (run_dir / "predictions.json").read_text() == predictions


def test_each_cell_measures_its_own_peak_memory_and_computes_what_it_would_in_process(tmp_path):
    """A cell that leaves 400 MiB behind in its process (the ``ballast`` plugin: a cache, a leak)
    does not inflate the peak memory of the cell after it: each cell runs in a fresh process.
    That process computes exactly what running the cell here computes."""
    from omegaconf import OmegaConf

    from fusionbench.cost import PER_PROCESS
    from fusionbench.experiment import run_experiment

    path = write_grid(
        tmp_path,
        {"axes": {"model.fusion.ballast_mb": [400, 0]}},
        plugins=[str(CONFIGS / "plugins" / "ballast.py")],
        model={"fusion": {"name": "ballast"}},
        trainer={"max_epochs": 1},
    )
    grid = load_grid(path)
    summary = run_grid(grid, progress=False)
    assert summary.completed == [c.name for c in grid.cells]
    latest = ResultsStore(grid.results_dir).latest()
    big, small = (latest[c.name]["metrics"]["cost"] for c in grid.cells)
    assert (
        big["peak_memory_source"].endswith(PER_PROCESS)
        and small["peak_memory_source"] == big["peak_memory_source"]
    )
    # in one process the second cell's peak would include the first one's 400 MiB
    assert small["peak_memory_mb"] < big["peak_memory_mb"] - 300, (big, small)

    cell = grid.cells[-1]
    here = OmegaConf.merge(cell.config, {"output_dir": str(tmp_path / "here")})
    in_process = run_experiment(here, progress=False)
    in_grid = latest[cell.name]["metrics"]
    for key in ("val", "test", "test_novel"):
        assert in_process[key] == in_grid[key], key
    # without trainer.early_stopping (the default) a run trains its whole budget
    assert (
        in_process["training"]
        == in_grid["training"]
        == {
            "max_epochs": 1,
            "epochs_trained": 1,
            "best_epoch": 0,
            "stopped_by": "max_epochs",
            "stopped_epoch": None,
            "early_stopping": None,
        }
    )


def test_the_quick_variant_is_the_default_grid_with_one_seed_and_the_small_budget():
    experiments = Path(__file__).parent.parent / "experiments"
    quick, default = load_grid(experiments / "quick.yaml"), load_grid(experiments / "grid.yaml", seeds=[0])
    assert [c.name for c in quick.cells] == [c.name for c in default.cells]
    assert {c.seed for c in quick.cells} == {0}
    assert all(c.config.trainer.max_epochs == 4 for c in quick.cells)
    assert all(c.config.trainer.early_stopping.patience is None for c in quick.cells)
    assert [c.config.optim for c in quick.cells] == [c.config.optim for c in default.cells]  # same settings
    assert [c.config.trainer.precision for c in quick.cells] == [
        c.config.trainer.precision for c in default.cells
    ]
    assert quick.results_dir != default.results_dir  # its own results folder


def test_family_settings_set_keys_on_matching_cells_only_and_stay_out_of_names(tmp_path):
    """``grid.settings``: a learning rate for one encoder's cells, not an axis of the grid."""
    axes = {"axes": {"model.fusion.name": ["early", "late"], "model.decoder.name": ["lstm", "transformer"]}}
    rules = [
        {"when": {"model.decoder.name": "transformer"}, "set": {"optim.lr": 5.0e-4, "optim.warmup_steps": 7}},
        {
            "when": {"model.decoder.name": "transformer", "model.fusion.name": "late"},
            "set": {"optim.lr": 1.0e-4},
        },
    ]
    plain = load_grid(write_grid(tmp_path, axes))
    grid = load_grid(write_grid(tmp_path, {**axes, "settings": rules}))
    assert [c.name for c in grid.cells] == [c.name for c in plain.cells]  # names: the axes only

    def family(cell):
        return cell.config.model.fusion.name, cell.config.model.decoder.name

    lr = {family(c): float(c.config.optim.lr) for c in grid.cells}
    base = float(plain.cells[0].config.optim.lr)
    assert lr == {
        ("early", "lstm"): base,
        ("late", "lstm"): base,
        ("early", "transformer"): 5e-4,
        ("late", "transformer"): 1e-4,  # the later rule wins
    }
    assert {family(c): c.config.optim.warmup_steps for c in grid.cells}[("late", "transformer")] == 7
    changed = {family(c) for c, p in zip(grid.cells, plain.cells) if c.hash != p.hash}
    assert changed == {("early", "transformer"), ("late", "transformer")}  # hashed: they train differently
    assert grid.settings == rules
    overridden = load_grid(write_grid(tmp_path, {**axes, "settings": rules}), ["optim.lr=0.003"])
    assert {float(c.config.optim.lr) for c in overridden.cells} == {0.003}  # the command line wins


def test_the_default_grid_trains_each_family_at_its_swept_settings():
    """ViT encoders at their swept learning rate; Transformer and BERT decoders in bf16 autocast
    where bf16 is native (faster at scores inside the seed spread; emulated, ~10x slower, so fp32
    elsewhere), the LSTM in fp32 (no faster in bf16)."""
    grid = load_grid(Path(__file__).parent.parent / "experiments" / "grid.yaml")
    assert len(grid.cells) == 81 and {c.seed for c in grid.cells} == {0, 1, 2}  # 3 seeds by default
    lr = {c.name: float(c.config.optim.lr) for c in grid.cells}
    assert {v for k, v in lr.items() if k.startswith("vit-")} == {5e-4}
    assert {v for k, v in lr.items() if not k.startswith("vit-")} == {2e-3}
    precision = {c.config.model.decoder.name: set() for c in grid.cells}
    for c in grid.cells:
        precision[c.config.model.decoder.name].add(c.config.trainer.precision)
    native = {"bf16-mixed-if-native"}
    assert precision == {"lstm": {"32-true"}, "transformer": native, "bert": native}
    assert all(c.config.trainer.early_stopping.patience == 3 for c in grid.cells)
    assert {c.config.data.num_test for c in grid.cells} == {500}
    # the doubled-budget check doubles the budget and the epochs early stopping is held back for
    stop = {(c.config.trainer.max_epochs, c.config.trainer.early_stopping.min_epochs) for c in grid.cells}
    x2 = load_grid(Path(__file__).parent.parent / "experiments" / "grid_budget_x2.yaml")
    assert stop == {(6, 3)}
    assert {(c.config.trainer.max_epochs, c.config.trainer.early_stopping.min_epochs) for c in x2.cells} == {
        (12, 6)
    }
    fp32 = load_grid(
        Path(__file__).parent.parent / "experiments" / "grid.yaml", ["trainer.precision=32-true"]
    )
    assert {c.config.trainer.precision for c in fp32.cells} == {"32-true"}  # for CPUs without bf16


def test_grid_leaderboard_select_on_is_the_grids_own_setting(tmp_path):
    """``grid.leaderboard.select_on`` is validated with the grid and changes no cell."""
    axes = {"axes": {"model.fusion.name": ["late", "attention"]}}
    plain = load_grid(write_grid(tmp_path, axes))
    sweep = load_grid(write_grid(tmp_path, {**axes, "leaderboard": {"select_on": "val"}}))
    assert plain.leaderboard.select_on == "test" and sweep.leaderboard.on_val
    assert [c.hash for c in sweep.cells] == [c.hash for c in plain.cells]  # no cell config has it
    assert "leaderboard" not in sweep.cells[0].config


@pytest.mark.parametrize(
    "leaderboard, pattern",
    [
        (
            {"select_on": "vall"},
            r"Invalid value 'vall' for grid.leaderboard.select_on. Did you mean 'val'\? Allowed values: test, val.",
        ),
        (
            {"select_on": "train"},
            r"Invalid value 'train' for grid.leaderboard.select_on.*Allowed values: test, val",
        ),
        ({"rank_on": "val"}, r"unknown key\(s\) grid.leaderboard.rank_on; valid: select_on, dir"),
        ({"dir": ""}, r"grid.leaderboard.dir must be a folder path such as leaderboards/sweep, got ''"),
        ("val", r"grid.leaderboard must be a mapping such as \{select_on: val\}"),
        (None, r"`leaderboard:` belongs inside the `grid:` section"),  # written at the top level
    ],
)
def test_bad_leaderboard_setting_fails_before_anything_trains(tmp_path, capsys, leaderboard, pattern):
    from fusionbench.cli import main

    grid = {"axes": {"model.fusion.name": ["late"]}}
    if leaderboard is None:
        path = write_grid(tmp_path, grid, leaderboard={"select_on": "val"})
    else:
        path = write_grid(tmp_path, {**grid, "leaderboard": leaderboard})
    with pytest.raises(ConfigError, match=pattern):
        load_grid(path)
    for command in (["validate", str(path)], ["run", str(path)]):
        assert main(command) == 2
        assert "grid.leaderboard" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing ran, not even the results folder


def test_every_grid_besides_the_default_writes_its_leaderboard_to_its_own_folder():
    """A leaderboard is named after its dataset: a second grid on shapes writing to leaderboards/
    would replace the default grid's committed leaderboards/shapes.*."""
    from fusionbench.leaderboard.selection import leaderboard_dir

    experiments = Path(__file__).parent.parent / "experiments"
    folders = {}
    for path in sorted(experiments.glob("*.yaml")):
        if "grid" in (OmegaConf.load(path) or {}):
            folders[path.name] = leaderboard_dir(None, load_grid(path).leaderboard)
    assert folders.pop("grid.yaml") == "leaderboards"
    assert folders and all(f.startswith("leaderboards/") for f in folders.values())
    assert len(set(folders.values())) == len(folders)  # one folder each
    settings = load_grid(experiments / "sweep.yaml").leaderboard
    assert leaderboard_dir("elsewhere", settings) == "elsewhere" and leaderboard_dir("", settings) == ""


def test_the_results_folder_records_the_leaderboard_setting(tmp_path):
    import json

    store = ResultsStore(tmp_path / "runs" / "g")
    store.claim("g", Path("sweep.yaml"), leaderboard={"select_on": "val"})
    manifest = json.loads((store.folder / "grid.json").read_text())
    assert manifest["leaderboard"] == {"select_on": "val"} and manifest["grid"] == "g"
    store.claim("g", Path("sweep.yaml"), leaderboard={"select_on": "test"})  # not part of ownership
    assert json.loads((store.folder / "grid.json").read_text())["leaderboard"] == {"select_on": "test"}


def test_the_sweep_ranks_on_validation_over_three_families(capsys):
    from fusionbench.cli import main

    sweep_file = Path(__file__).parent.parent / "experiments" / "sweep.yaml"
    sweep = load_grid(sweep_file)
    assert sweep.leaderboard.on_val and len(sweep.cells) <= 20
    families = {
        (c.config.model.encoder.name, c.config.model.fusion.name, c.config.model.decoder.name)
        for c in sweep.cells
    }
    assert families == {
        ("cnn", "attention", "lstm"),
        ("vit", "attention", "bert"),
        ("regions", "attention", "transformer"),
    }
    assert {c.seed for c in sweep.cells} == {0}
    assert all(
        c.config.trainer.max_epochs == 4 and c.config.data.num_train == 1000 for c in sweep.cells
    )  # smoke's
    assert len({(float(c.config.optim.lr), int(c.config.loader.batch_size)) for c in sweep.cells}) > 1
    assert main(["run", str(sweep_file), "--dry-run"]) == 0
    assert "grid.leaderboard.select_on: val" in " ".join(capsys.readouterr().out.split())
