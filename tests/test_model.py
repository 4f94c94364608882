"""The foundation slice as a plain nn.Module: learning, decoding and incremental state."""

import pytest
import torch
from omegaconf import OmegaConf

from fusionbench.decoding import _block_ngrams
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
    greedy = model.generate(images, max_len=12)
    assert [tok.decode(r.tolist()) for r in greedy] == CAPTIONS
    beam1 = model.generate(images, max_len=12, beam_size=1, strategy="beam")
    assert torch.equal(greedy, beam1)
    beam3 = model.caption(images, max_len=12, beam_size=3)
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
    out = model.generate(images, max_len=5, beam_size=3)
    assert out.shape[1] <= 6  # 5 words + <eos>


def test_ngram_blocking_bans_the_repeat():
    seqs = torch.tensor([[5, 6, 7, 5]])
    logp = torch.zeros(1, 10)
    blocked = _block_ngrams(logp, seqs, 2)
    assert blocked[0, 6] == float("-inf")  # "5 6" already occurred
    assert torch.isfinite(blocked[0, [0, 1, 2, 3, 4, 5, 7, 8, 9]]).all()
