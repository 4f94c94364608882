"""Every encoder x fusion x decoder combination through one interface (tiny sizes)."""

import itertools

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fusionbench.decoding import DecodingConfig
from fusionbench.decoding.search import beam_search, sample
from fusionbench.model import build_model, build_tokenizer
from fusionbench.scst.loss import advantages, scst_loss
from fusionbench.scst.reward import CiderReward

ENCODERS = {
    "cnn": {"name": "cnn", "model_name": "resnet10t", "feature_stride": 8},
    "regions": {"name": "regions", "model_name": "resnet10t", "feature_stride": 8, "max_boxes": 4},
    "vit": {"name": "vit", "img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 32},
}
FUSIONS = ["early", "late", "attention"]
DECODERS = {
    "lstm": {"name": "lstm", "attention_dim": 16},
    "transformer": {"name": "transformer", "num_layers": 1, "num_heads": 2, "ff_dim": 64},
    "bert": {"name": "bert", "num_layers": 1, "num_heads": 2},
}
CAPTIONS = ["a red circle left of a blue square", "two green triangles", "a small yellow diamond above a box"]


def make_batch(tok):
    torch.manual_seed(1)
    images = torch.rand(3, 3, 32, 32)
    boxes = [
        torch.tensor([[2.0, 2.0, 14.0, 14.0], [16.0, 4.0, 30.0, 20.0]]),
        torch.tensor([[0.0, 0.0, 10.0, 31.0]]),
        torch.zeros(0, 4),
    ]
    rows = [tok.encode(c) for c in CAPTIONS]
    ids = torch.full((3, max(map(len, rows))), tok.pad_id)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return images, boxes, ids


@pytest.mark.parametrize("encoder, fusion, decoder", list(itertools.product(ENCODERS, FUSIONS, DECODERS)))
def test_combination_trains_decodes_and_steps_incrementally(encoder, fusion, decoder):
    torch.set_num_threads(1)
    cfg = OmegaConf.create(
        {
            "d_model": 32,
            "encoder": ENCODERS[encoder],
            "fusion": {"name": fusion},
            "decoder": DECODERS[decoder],
        }
    )
    tok = build_tokenizer(cfg, CAPTIONS, 1)
    torch.manual_seed(0)
    model = build_model(cfg, tok)
    images, boxes, ids = make_batch(tok)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(5):
        logits, extras = model(images, ids[:, :-1], boxes)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=tok.pad_id
        )
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses

    model.eval()
    with torch.no_grad():
        full, extras = model(images, ids, boxes)
        ctx = model.context(images, boxes)
        state = model.start(ctx)
        steps = []
        for t in range(ids.shape[1]):
            logp, state = model.step_logprobs(ids[:, t], state, ctx)
            steps.append(logp)
    torch.testing.assert_close(torch.log_softmax(full, -1), torch.stack(steps, 1), atol=1e-5, rtol=1e-5)
    if fusion == "attention":
        assert extras["attention"].shape[:2] == ids.shape

    greedy = model.generate(images, boxes, DecodingConfig(beam_size=1, max_len=8))
    ids = dict(bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id)
    assert torch.equal(
        greedy, beam_search(model, model.context(images, boxes), beam_size=1, max_len=8, **ids)
    )
    beams = model.caption(images, boxes, DecodingConfig(max_len=8, beam_size=3, no_repeat_ngram=2))
    assert len(beams) == 3 and all(isinstance(c, str) for c in beams)
    assert np.isfinite(sum(model.parameter_counts().values()))
    scst_step(model, tok, images, boxes)


def scst_step(model, tok, images, boxes):
    """One self-critical step: sampled captions decode, the loss is finite, and its gradient reaches
    the decoder and (when it trains) the encoder; samples are reproducible from the seed."""
    reward = CiderReward.for_train({i: [c] for i, c in enumerate(CAPTIONS)})
    model.train()
    model.zero_grad()
    torch.manual_seed(3)
    drawn = sample(model, model.context(images, boxes), n=2, max_len=8, temperature=1.5, **ids_of(tok))
    assert drawn.ids.shape[0] == 6 and drawn.logprobs.requires_grad
    captions = [tok.decode(row) for row in drawn.ids.tolist()]
    assert all(isinstance(c, str) for c in captions)
    rewards = torch.as_tensor(reward([0, 0, 1, 1, 2, 2], captions, drawn.ended.tolist())).view(3, 2)
    adv, _ = advantages(rewards, "mean")
    loss = scst_loss(drawn.logprobs, drawn.mask, adv.reshape(-1))
    assert torch.isfinite(loss)
    # every reward may tie on an untrained model (zero advantage): the gradient path is checked
    # on the same samples' log-likelihood
    (loss + scst_loss(drawn.logprobs, drawn.mask, torch.ones(6))).backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("decoder."))
    encoder = {n: g for n, g in grads.items() if n.startswith("encoder.")}
    if encoder:
        assert any(g is not None and g.abs().sum() > 0 for g in encoder.values())
    torch.manual_seed(3)
    again = sample(model, model.context(images, boxes), n=2, max_len=8, temperature=1.5, **ids_of(tok))
    assert torch.equal(again.ids, drawn.ids)


def ids_of(tok):
    return dict(bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id)
