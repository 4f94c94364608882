"""The foundation slice as a plain nn.Module: learning, decoding and incremental state."""

import pytest
import torch
from omegaconf import OmegaConf

from fusionbench.config import load_config
from fusionbench.decoding import DecodingConfig
from fusionbench.decoding.search import _block_ngrams, beam_search, greedy_search
from fusionbench.errors import ConfigError
from fusionbench.model import build_model, build_tokenizer

CAPTIONS = [
    "a red circle left of a blue square",
    "two green triangles above a yellow diamond",
    "a small purple square",
    "an orange disc below a red box",
]


def tiny(fusion: str = "attention", **decoder):
    cfg = OmegaConf.create(
        {
            "d_model": 32,
            "encoder": {"name": "cnn", "model_name": "resnet10t", "feature_stride": 8},
            "fusion": {"name": fusion},
            "decoder": {"name": "lstm", "attention_dim": 16, **decoder},
        }
    )
    tok = build_tokenizer(cfg, CAPTIONS, 1)
    torch.manual_seed(0)
    return build_model(cfg, tok), tok


def batch(tok):
    ids = [tok.encode(c) for c in CAPTIONS]
    longest = max(map(len, ids))
    out = torch.full((len(ids), longest), tok.pad_id)
    for i, row in enumerate(ids):
        out[i, : len(row)] = torch.tensor(row)
    torch.manual_seed(1)
    return torch.rand(len(ids), 3, 32, 32), out


def loss_of(model, tok, images, ids):
    logits, extras = model(images, ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=tok.pad_id
    )
    return loss + extras.get("aux_loss", 0.0)


@pytest.mark.parametrize("fusion", ["attention", "early", "late"])
def test_training_steps_lower_the_loss(fusion):
    model, tok = tiny(fusion, attention_reg=0.1) if fusion == "attention" else tiny(fusion)
    images, ids = batch(tok)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(12):
        loss = loss_of(model, tok, images, ids)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.parametrize("fusion", ["attention", "early", "late"])
def test_incremental_steps_equal_full_forward(fusion):
    model, tok = tiny(fusion, num_layers=2)
    model.eval()
    images, ids = batch(tok)
    with torch.no_grad():
        logits, _ = model(images, ids)
        ctx = model.context(images)
        state = model.start(ctx)
        steps = []
        for t in range(ids.shape[1]):
            logp, state = model.step_logprobs(ids[:, t], state, ctx)
            steps.append(logp)
    torch.testing.assert_close(torch.log_softmax(logits, -1), torch.stack(steps, 1), atol=1e-5, rtol=0)


def test_greedy_decoding_memorises_a_caption_and_beam1_equals_greedy():
    model, tok = tiny("attention")
    images, ids = batch(tok)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(60):
        loss = loss_of(model, tok, images, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    greedy = model.generate(images, None, DecodingConfig(beam_size=1, max_len=12))
    assert [tok.decode(r.tolist()) for r in greedy] == CAPTIONS
    ids = dict(bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id)
    beam1 = beam_search(model, model.context(images), beam_size=1, max_len=12, **ids)
    assert torch.equal(greedy, beam1)
    beam3 = model.caption(images, None, DecodingConfig(beam_size=3, max_len=12))
    assert beam3 == CAPTIONS


def test_attention_weights_are_a_distribution_over_tokens():
    model, tok = tiny("attention")
    images, ids = batch(tok)
    _, extras = model(images, ids)
    att = extras["attention"]
    assert att.shape[:2] == ids.shape
    torch.testing.assert_close(att.sum(-1), torch.ones(ids.shape))


def test_untrained_decoding_respects_max_len():
    model, tok = tiny("late")
    images, _ = batch(tok)
    out = model.generate(images, None, DecodingConfig(max_len=5, beam_size=3))
    assert out.shape[1] <= 6  # 5 words + <eos>


def test_ngram_blocking_bans_the_repeat():
    seqs = torch.tensor([[5, 6, 7, 5]])
    logp = torch.zeros(1, 10)
    blocked = _block_ngrams(logp, seqs, 2)
    assert blocked[0, 6] == float("-inf")  # "5 6" already occurred
    assert torch.isfinite(blocked[0, [0, 1, 2, 3, 4, 5, 7, 8, 9]]).all()


@pytest.mark.parametrize(
    "settings",
    [
        dict(beam_size=1, max_len=7, no_repeat_ngram=2),
        dict(beam_size=3, max_len=6, length_penalty=0.7, no_repeat_ngram=1),
        dict(beam_size=2, max_len=5),
    ],
)
def test_generate_with_a_decoding_config_equals_the_searches_called_by_hand(settings):
    model, tok = tiny("attention")
    model.eval()
    images, _ = batch(tok)
    ctx = model.context(images)
    ids = dict(bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id)
    if settings["beam_size"] == 1:
        search = {k: v for k, v in settings.items() if k != "beam_size"}
        expected = greedy_search(model, ctx, **ids, **search)
    else:
        expected = beam_search(model, ctx, **ids, **settings)
    assert torch.equal(model.generate(images, None, DecodingConfig(**settings)), expected)
    assert model.caption(images, None, DecodingConfig(**settings)) == [
        tok.decode(r.tolist()) for r in expected
    ]


def test_decoding_defaults_are_the_configs():
    cfg = load_config(None)
    assert DecodingConfig.from_cfg(cfg.decoding) == DecodingConfig()
    assert DecodingConfig().beam_size == 3 and DecodingConfig().for_validation().greedy
    assert DecodingConfig.from_cfg({"beam_size": 5}) == DecodingConfig(beam_size=5)  # older configs


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("beam_size", 0, ">= 1"),
        ("max_len", 0, ">= 1"),
        ("val_beam_size", -1, ">= 1"),
        ("no_repeat_ngram", -2, ">= 0"),
        ("length_penalty", float("nan"), r"in \(-inf, inf\)"),
        ("beam_size", 2.5, "whole number"),
    ],
)
def test_bad_decoding_values_name_key_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ConfigError, match=rf"Invalid value {value!r} for decoding\.{key}: .*{allowed}"):
        DecodingConfig(**{key: value})
    with pytest.raises(ConfigError, match=rf"decoding\.{key}"):
        load_config(None, [f"decoding.{key}={value}"])
    with pytest.raises(ConfigError, match="Unknown decoding setting.*decoding.beam"):
        DecodingConfig.from_cfg({"beam": 2})
