"""Self-critical sequence training (``fusionbench.scst``): reward, baselines, bad input, resume."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fusionbench.config import load_config
from fusionbench.errors import ConfigError, DataError
from fusionbench.scst.loss import advantages, mean_baseline, scst_loss
from fusionbench.scst.reward import END_WORD, CiderReward

CONFIGS = Path(__file__).parent / "configs"
TINY = CONFIGS / "tiny.yaml"
PLUGIN = CONFIGS / "plugins" / "dies_once.py"

TRAIN = {
    10: ["A red circle left of a blue square.", "a red circle and a blue square", "Two shapes: red, blue."],
    11: ["The man's green triangle is above a box", "a green triangle above a yellow box"],
    12: ["a small yellow diamond", "A tiny yellow diamond on grey.", "yellow diamond"],
    13: ["two blue squares", "Two blue squares side by side", "a pair of blue squares"],
}
# (image, caption as a word decoder emits it, did it choose to end)
SAMPLES = [
    (10, "a red circle left of a blue square", True),
    (10, "a red circle to the", False),
    (10, "a red circle to the", True),
    (11, "the man's green triangle above a box", True),
    (11, "", True),
    (12, "a yellow diamond yellow diamond", True),
    (13, "two blue squares side by side", False),
    (13, "blue", True),
]


def _pycocoevalcap_cider(train, samples):
    """pycocoevalcap's own tokenizer and ``CiderScorer``, document frequencies of every train image."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer, cook_test
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    refs = tok.tokenize({i: [{"caption": c} for c in caps] for i, caps in train.items()})
    hyps = tok.tokenize({k: [{"caption": c}] for k, (_, c, _) in enumerate(samples)})
    ids = list(train)
    scorer = CiderScorer(n=4, sigma=6.0)
    for i in ids:
        scorer.cook_append(None, [f"{r} {END_WORD}" for r in refs[i]])
    scorer.compute_doc_freq()  # over the train references, once
    out = []
    for k, (image, _, ended) in enumerate(samples):
        hyp = f"{hyps[k][0]} {END_WORD}".strip() if ended else hyps[k][0]
        scorer.ctest = [cook_test(hyp if i == image else "") for i in ids]
        out.append(scorer.compute_cider()[ids.index(image)])
    return np.array(out)


def test_the_reward_is_pycocoevalcaps_cider_d_with_train_document_frequencies_and_the_end_word():
    reward = CiderReward.for_train(TRAIN)
    got = reward([s[0] for s in SAMPLES], [s[1] for s in SAMPLES], [s[2] for s in SAMPLES])
    expected = _pycocoevalcap_cider(TRAIN, SAMPLES)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert got[0] > got[2] > 0  # the truncated "... to the <eos>" scores below the full caption
    # the end word counts: a caption that chose to end scores differently from one cut at max_len
    assert got[1] != got[2]
    # a batch's reward does not depend on the other images in it
    alone = reward([SAMPLES[3][0]], [SAMPLES[3][1]], [True])
    assert alone[0] == got[3]


def test_the_bleu_term_adds_pycocoevalcaps_bleu_4():
    from pycocoevalcap.bleu.bleu import Bleu

    plain = CiderReward.for_train(TRAIN)
    mixed = CiderReward.for_train(TRAIN, bleu_weight=0.5)
    ids, caps, ended = [s[0] for s in SAMPLES[:4]], [s[1] for s in SAMPLES[:4]], [s[2] for s in SAMPLES[:4]]
    hyps = plain.hypotheses(caps, ended)
    for k, (i, h) in enumerate(zip(ids, hyps)):
        _, per = Bleu(4).compute_score({0: plain.tokenized[i]}, {0: [h]}, verbose=0)
        assert mixed(ids[k : k + 1], caps[k : k + 1], ended[k : k + 1])[0] == pytest.approx(
            plain(ids[k : k + 1], caps[k : k + 1], ended[k : k + 1])[0] + 0.5 * per[3][0], abs=1e-12
        )


def test_a_train_split_without_references_is_an_error():
    with pytest.raises(DataError, match="train captions"):
        CiderReward.for_train({1: ["a cat"], 2: []})


def test_the_mean_baseline_of_identical_samples_gives_zero_advantage_and_no_gradient():
    rewards = torch.tensor([[0.7, 0.7, 0.7], [1.5, 1.5, 1.5]], dtype=torch.float64)
    adv, base = advantages(rewards, "mean")
    assert torch.equal(adv, torch.zeros_like(adv)) and torch.equal(base, rewards)
    logp = torch.randn(6, 4, requires_grad=True)
    loss = scst_loss(logp, torch.ones(6, 4), adv.reshape(-1))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logp.grad) == 0
    # the mean of the *other* samples, and the greedy baseline subtracts the greedy reward
    r = torch.tensor([[1.0, 2.0, 6.0]])
    assert torch.equal(mean_baseline(r), torch.tensor([[4.0, 3.5, 1.5]]))
    adv, _ = advantages(r, "greedy", torch.tensor([2.0]))
    assert torch.equal(adv, torch.tensor([[-1.0, 0.0, 4.0]]))


def test_the_loss_is_advantage_times_the_masked_log_probability_averaged_over_tokens():
    logp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # after eos nothing counts
    loss = scst_loss(logp, mask, torch.tensor([2.0, -1.0]))
    assert loss.item() == pytest.approx(-(2.0 * -3.0 + -1.0 * -1.5) / 5)


@pytest.mark.parametrize(
    "override, message",
    [
        (["scst.enabled=true", "scst.samples=1"], "samples >= 2"),
        (["scst.reward=spice"], "Allowed values: cider, cider+bleu"),
        (["scst.baseline=median"], "Allowed values: greedy, mean"),
        (["scst.enabled=true", "scst.init=/no/such.ckpt"], "is not a file"),
    ],
)
def test_bad_scst_settings_fail_when_the_config_is_composed(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(TINY, override)


def _checkpoint_of(tmp_path: Path, overrides: list[str]) -> Path:
    """A checkpoint file (untrained weights) of the tiny config with ``overrides``, as a run writes it."""
    from fusionbench.checkpoint import checkpoint_block
    from fusionbench.experiment import build_experiment
    from fusionbench.registry import DATASETS

    cfg = load_config(TINY, overrides)
    _, model, _, _ = build_experiment(cfg, DATASETS.build(cfg.data))
    path = tmp_path / "other.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "fusionbench": checkpoint_block(model, cfg)}, path)
    return path


@pytest.mark.parametrize(
    "other, message",
    [(["model.d_model=16"], "model.d_model differ"), (["text.min_count=4"], "another vocabulary")],
)
def test_an_init_checkpoint_of_another_model_or_vocabulary_fails_before_training(tmp_path, other, message):
    from fusionbench.experiment import run_experiment
    from fusionbench.scst.phase import ScstInitError

    path = _checkpoint_of(tmp_path, other)
    cfg = load_config(
        TINY,
        [f"output_dir={tmp_path}", "scst.enabled=true", f"scst.init={path}", "logger.wandb.mode=disabled"],
    )
    with pytest.raises(ScstInitError, match=message) as err:
        run_experiment(cfg, progress=False)
    assert str(path) in str(err.value)
    assert not list((tmp_path / "tiny").rglob("*.ckpt"))  # nothing trained


def _overrides(tmp_path: Path, run_name: str, marker: Path) -> list[str]:
    return [
        f"output_dir={tmp_path}",
        f"run_name={run_name}",
        f"plugins=[{PLUGIN}]",
        "model.fusion.name=dies_once",
        f"model.fusion.marker={marker}",
        "data.num_train=32",  # 2 steps an epoch
        "model.fusion.after_training_calls=4",  # XE: 1 epoch (2 calls); dies in the second SCST epoch
        "trainer.max_epochs=1",
        "scst.enabled=true",
        "scst.epochs=2",
        "scst.samples=2",
        "scst.baseline=greedy",
        "logger.wandb.mode=disabled",
    ]


def test_a_run_killed_during_scst_resumes_there_and_equals_an_uninterrupted_one(tmp_path):
    from fusionbench.experiment import run_experiment

    never = tmp_path / "never-dies"
    never.write_text("already died\n")
    whole = run_experiment(load_config(TINY, _overrides(tmp_path, "whole", never)), progress=False)
    assert whole["checkpoint"] == "scst/best.ckpt" and len(whole["scst"]["val_history"]) == 2
    assert whole["xe"]["epochs"] == 1 and whole["test"] == {**whole["scst"]["test"]}

    marker = tmp_path / "died"
    args = _overrides(tmp_path, "killed", marker)
    code = f"from fusionbench.cli import main; main(['run', {str(TINY)!r}, *{args!r}])"
    env = {**os.environ, "FUSIONBENCH_NO_PROGRESS": "1"}
    died = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert died.returncode == 3 and marker.exists(), died.stderr[-2000:]
    run_dir = tmp_path / "tiny" / "killed"
    assert (run_dir / "checkpoints" / "xe_done.json").is_file()  # the XE phase had finished
    assert (run_dir / "checkpoints" / "scst" / "last.ckpt").is_file() and not (
        run_dir / "metrics.json"
    ).exists()

    resumed = run_experiment(load_config(TINY, args), progress=False, resume=True)
    assert resumed["scst"]["resumed"] is True
    for block in ("xe", "scst"):
        for key in ("val", "val_history", "test", "test_novel"):
            assert resumed[block][key] == whole[block][key], (block, key)
    for split in ("test", "test_novel"):
        assert resumed[split] == whole[split], split
        a = json.loads((run_dir / f"scores_{split}.json").read_text())
        b = json.loads((Path(whole["run_dir"]) / f"scores_{split}.json").read_text())
        assert a == b
    assert (run_dir / "predictions.json").read_text() == (
        Path(whole["run_dir"]) / "predictions.json"
    ).read_text()


def test_scst_is_left_out_of_the_hash_only_while_disabled():
    from fusionbench.grid.spec import config_hash, training_hash

    off = load_config(TINY)
    assert "scst" in OmegaConf.to_container(off)
    assert config_hash(off) == config_hash(load_config(TINY, ["scst.epochs=9"]))  # never read
    on = load_config(TINY, ["scst.enabled=true"])
    assert training_hash(on) != training_hash(off)
    assert training_hash(on) != training_hash(load_config(TINY, ["scst.enabled=true", "scst.lr=1e-4"]))


def test_the_scst_axis_is_the_training_column_and_names_the_cells(tmp_path):
    from grids import write_grid

    from fusionbench.grid import load_grid
    from fusionbench.leaderboard.load import RunResult, group_configurations

    grid = load_grid(write_grid(tmp_path, {"axes": {"scst.enabled": [False, True]}}))
    assert [c.name for c in grid.cells] == ["xe-s0", "xe+scst-s0"]
    runs = [RunResult(c.name, {"assignment": c.assignment, "components": {}}, {}, None) for c in grid.cells]
    assert sorted(c.extras["training"] for c in group_configurations(runs)) == ["xe", "xe+scst"]
