"""Tests of the Transformer and BERT decoders under early, late and attention fusion.

Tiny models (d_model=32, one or two layers, a resnet10t on 32x32 images) keep the file fast on
CPU. The key invariant: teacher-forced ``forward`` and successive incremental ``step`` calls (KV
cache) give the same logits, so greedy and beam search decode what training optimised.
"""

from __future__ import annotations

import json
import os
import pickle
import time

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fusionbench.decoding import DecodingConfig
from fusionbench.decoding.search import beam_search
from fusionbench.errors import ConfigError
from fusionbench.fusion.base import FusedContext
from fusionbench.model import build_model, build_tokenizer
from fusionbench.registry import DECODERS
from fusionbench.text.wordpiece import WordPieceTokenizer

CAPTIONS = [
    "A large red circle is left of the blue square.",
    "Two small green triangles sit above a yellow circle",
    "the blue square lies below the red triangle",
    "a purple circle is right of two green squares",
]
ENCODER = {"name": "cnn", "model_name": "resnet10t", "feature_stride": 8}  # 32x32 -> 4x4 = 16 tokens
DECODER_CFGS = {
    "transformer": {"name": "transformer", "num_layers": 2, "num_heads": 4, "ff_dim": 64},
    "bert": {"name": "bert", "pretrained": "none", "num_layers": 2, "num_heads": 4},
}
FUSIONS = ["early", "late", "attention"]
COMBOS = [(d, f) for d in DECODER_CFGS for f in FUSIONS]
TOL = 1e-5


def model_cfg(decoder: str | dict, fusion: str | dict, **dec_overrides):
    dec = dict(DECODER_CFGS[decoder]) if isinstance(decoder, str) else dict(decoder)
    dec.update(dec_overrides)
    fus = {"name": fusion} if isinstance(fusion, str) else fusion
    return OmegaConf.create({"d_model": 32, "encoder": ENCODER, "fusion": fus, "decoder": dec})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only contend on shared CPUs (100x slower under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizers():
    """One tokenizer per decoder (the WordPiece one is the slow part to build)."""
    return {d: build_tokenizer(model_cfg(d, "late"), CAPTIONS, 1) for d in DECODER_CFGS}


def make(tokenizers, decoder: str, fusion: str | dict, seed: int = 0, **dec_overrides):
    torch.manual_seed(seed)
    return build_model(model_cfg(decoder, fusion, **dec_overrides), tokenizers[decoder])


def batch(tok, captions=CAPTIONS[:2], max_len: int = 12) -> torch.Tensor:
    rows = [tok.encode(c, max_len) for c in captions]
    width = max(map(len, rows))
    return torch.tensor([r + [tok.pad_id] * (width - len(r)) for r in rows])


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def incremental_logits(model, ctx: FusedContext, ids: torch.Tensor):
    state = model.decoder.init_state(ctx)
    logits, attention = [], []
    for t in range(ids.shape[1]):
        hidden, state = model.decoder.step(ids[:, t], state, ctx)
        logits.append(model.logits(hidden, ctx))
        if "attention" in state:
            attention.append(state["attention"])
    return torch.stack(logits, 1), (torch.stack(attention, 1) if attention else None)


# -- forward == incremental ---------------------------------------------------------------------
@pytest.mark.parametrize("decoder,fusion", COMBOS)
def test_forward_matches_incremental(tokenizers, decoder, fusion):
    model = make(tokenizers, decoder, fusion).eval()
    ids = batch(model.tokenizer)[:, :-1]
    with torch.no_grad():
        ctx = model.context(images())
        hidden, extras = model.decoder(ids, ctx)
        full = model.logits(hidden, ctx)
        steps, attention = incremental_logits(model, ctx, ids)
    assert hidden.shape == (2, ids.shape[1], 32)
    assert full.shape == (2, ids.shape[1], len(model.tokenizer))
    assert torch.isfinite(full).all()
    assert (full - steps).abs().max().item() < TOL
    if fusion == "attention":
        n = ctx.memory.shape[1]
        assert extras["attention"].shape == (2, ids.shape[1], n)
        assert torch.allclose(extras["attention"].sum(-1), torch.ones(2, ids.shape[1]), atol=1e-5)
        assert (extras["attention"] - attention).abs().max().item() < TOL
    else:
        assert "attention" not in extras and attention is None


@pytest.mark.parametrize("decoder", list(DECODER_CFGS))
def test_padded_prefix_tokens_are_never_attended(tokenizers, decoder):
    """Early fusion with a token prefix: changing padded prefix tokens changes nothing."""
    model = make(tokenizers, decoder, {"name": "early", "prefix": "tokens"}).eval()
    ids = batch(model.tokenizer)[:, :-1]
    with torch.no_grad():
        ctx = model.context(images())
        mask = ctx.prefix_mask.clone()
        mask[0, 5:] = False  # image 0 has 5 real prefix tokens, the rest is padding
        mask[1, 0] = False  # even a padded first token leaves the rest finite
        ctx = FusedContext(prefix=ctx.prefix, prefix_mask=mask)
        noisy = ctx.prefix.clone()
        noisy[~mask] = 100.0 * torch.randn_like(noisy[~mask])
        ctx_noisy = FusedContext(prefix=noisy, prefix_mask=mask)
        a = model.logits(model.decoder(ids, ctx)[0], ctx)
        b = model.logits(model.decoder(ids, ctx_noisy)[0], ctx_noisy)
        steps, _ = incremental_logits(model, ctx_noisy, ids)
    assert torch.isfinite(a).all()
    assert (a - b).abs().max().item() < TOL
    assert (b - steps).abs().max().item() < TOL


@pytest.mark.parametrize("decoder,fusion", COMBOS)
def test_reorder_state_follows_beams(tokenizers, decoder, fusion):
    """After reordering the state (as beam search does), steps continue the selected rows."""
    model = make(tokenizers, decoder, fusion).eval()
    ids = batch(model.tokenizer)[:, :4]
    index = torch.tensor([1, 0, 1])
    with torch.no_grad():
        ctx = model.context(images())
        full = model.logits(model.decoder(ids[index], ctx.index_select(index))[0], ctx.index_select(index))
        state = model.decoder.init_state(ctx)
        for t in range(2):
            _, state = model.decoder.step(ids[:, t], state, ctx)
        state = model.decoder.reorder_state(state, index)
        rctx = ctx.index_select(index)
        for t in range(2, 4):
            hidden, state = model.decoder.step(ids[index, t], state, rctx)
            assert (model.logits(hidden, rctx) - full[:, t]).abs().max().item() < TOL


# -- training and decoding ----------------------------------------------------------------------
@pytest.mark.parametrize("decoder,fusion", COMBOS)
def test_training_steps_lower_the_loss(tokenizers, decoder, fusion):
    model = make(tokenizers, decoder, fusion)
    tok = model.tokenizer
    ids = batch(tok, CAPTIONS, max_len=10)
    imgs = images(4)

    def loss() -> torch.Tensor:
        logits, extras = model(imgs, ids[:, :-1])
        ce = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=tok.pad_id
        )
        return ce + extras.get("aux_loss", 0.0)

    model.eval()
    with torch.no_grad():
        before = loss().item()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(6):
        opt.zero_grad()
        value = loss()
        assert torch.isfinite(value)
        value.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = loss().item()
    assert after < before - 0.1, (before, after)


@pytest.mark.parametrize("decoder,fusion", COMBOS)
def test_greedy_and_beam_decoding(tokenizers, decoder, fusion):
    model = make(tokenizers, decoder, fusion).eval()
    tok = model.tokenizer
    imgs = images(2)
    greedy = model.generate(imgs, None, DecodingConfig(beam_size=1, max_len=6))
    ids = dict(bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id)
    beam1 = beam_search(model, model.context(imgs), beam_size=1, max_len=6, **ids)
    beam3 = model.generate(imgs, None, DecodingConfig(max_len=6, beam_size=3, no_repeat_ngram=2))
    assert torch.equal(greedy, beam1)
    for out in (greedy, beam3):
        assert out.shape[0] == 2 and out.shape[1] <= 7
        assert ((out == tok.eos_id).sum(1) == 1).all()  # every caption ends, exactly once
    captions = model.caption(imgs, None, DecodingConfig(max_len=6, beam_size=3))
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    assert all(c == c.lower() and "[" not in c for c in captions)  # no [CLS]/[SEP]/[PAD] text


def test_init_vector_enters_the_first_position(tokenizers):
    """Attention fusion's init vector changes the Transformer's outputs (added at <bos>)."""
    model = make(tokenizers, "transformer", "attention").eval()
    ids = batch(model.tokenizer)[:, :-1]
    with torch.no_grad():
        ctx = model.context(images())
        with_init = model.decoder(ids, ctx)[0]
        without = model.decoder(ids, FusedContext(memory=ctx.memory, memory_mask=ctx.memory_mask))[0]
    assert (with_init - without).abs().max().item() > 1e-4


# -- configuration --------------------------------------------------------------------------------
def test_registered_with_configs():
    assert {"transformer", "bert", "lstm"} <= set(DECODERS.names())
    cfg = DECODERS.resolve_config({"name": "transformer"})
    assert (cfg.num_layers, cfg.num_heads, cfg.ff_dim, cfg.pre_norm, cfg.max_positions) == (
        2,
        4,
        512,
        True,
        64,
    )
    assert DECODERS.resolve_config({"name": "bert"}).pretrained == "none"


def test_transformer_config_errors(tokenizers):
    with pytest.raises(ConfigError, match="num_heads"):
        make(tokenizers, "transformer", "late", num_heads=5)
    model = make(tokenizers, "transformer", "late", max_positions=4).eval()
    with pytest.raises(ConfigError, match="max_positions"):
        model(images(), batch(model.tokenizer))


def test_post_norm_and_tied_embeddings(tokenizers):
    model = make(tokenizers, "transformer", "attention", pre_norm=False, tie_embeddings=True).eval()
    assert model.decoder.head.weight is model.decoder.embed.weight
    ids = batch(model.tokenizer)[:, :-1]
    with torch.no_grad():
        ctx = model.context(images())
        full = model.logits(model.decoder(ids, ctx)[0], ctx)
        steps, _ = incremental_logits(model, ctx, ids)
    assert (full - steps).abs().max().item() < TOL


def test_bert_freeze_embeddings(tokenizers):
    model = make(tokenizers, "bert", "late", freeze_embeddings=True)
    emb = model.decoder.bert.bert.embeddings
    assert not any(p.requires_grad for p in emb.parameters())
    assert any(p.requires_grad for p in model.decoder.bert.bert.encoder.parameters())


# -- WordPiece tokenizer ----------------------------------------------------------------------------
def test_wordpiece_round_trip():
    tok = build_tokenizer(model_cfg("bert", "late", vocab="full"), CAPTIONS, 1)
    assert isinstance(tok, WordPieceTokenizer)
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 101, 102, 100)
    cases = {
        "A large red circle is left of the Blue square.": "a large red circle is left of the blue square",
        "The man's unbelievably small, purple triangle!": "the man's unbelievably small purple triangle",
        "  two   GREEN squares -- above (a) circle ": "two green squares above a circle",
        "": "",
    }
    for caption, words in cases.items():
        ids = tok.encode(caption)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert tok.decode(ids) == words
    ids = tok.encode("unbelievably small triangle")
    assert len(ids) > 5  # word pieces: un ##bel ##ie ##va ##bly
    assert (
        tok.decode(ids + [tok.pad_id, tok.encode("circle")[1]]) == "unbelievably small triangle"
    )  # stops at [SEP]
    short = tok.encode("unbelievably small triangle", max_len=3)
    assert len(short) == 5 and short[-1] == tok.eos_id
    assert tok.decode(short) == "unbelie"  # un ##bel ##ie


def test_wordpiece_to_dict_and_pickle(tokenizers):
    tok = tokenizers["bert"]
    data = json.loads(json.dumps(tok.to_dict()))
    assert data["type"] == "wordpiece" and len(data["vocab"]) == len(tok) < 200  # pruned to CAPTIONS
    assert WordPieceTokenizer.from_dict(data).source_ids == tok.source_ids
    for other in (WordPieceTokenizer.from_dict(data), pickle.loads(pickle.dumps(tok))):
        assert len(other) == len(tok)
        for caption in CAPTIONS:
            assert other.encode(caption, 8) == tok.encode(caption, 8)
            assert other.decode(tok.encode(caption)) == tok.decode(tok.encode(caption))
    with pytest.raises(ValueError):
        WordPieceTokenizer.from_dict({"type": "word", "itos": []})


# -- pretrained weights -----------------------------------------------------------------------------
def test_bert_minilm_loads_offline(tokenizers, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = model_cfg("bert", "attention", pretrained="minilm", vocab="full")
    tok = build_tokenizer(cfg, CAPTIONS, 1)
    assert len(tok) == 30522
    torch.manual_seed(0)
    model = build_model(cfg, tok).eval()
    bert = model.decoder.bert
    assert bert.config.hidden_size == 384 and bert.config.num_hidden_layers == 6
    from safetensors import safe_open

    from fusionbench.decoders.bert import resolve_source

    with safe_open(os.path.join(resolve_source("minilm")[1], "model.safetensors"), "pt") as f:
        ref = f.get_tensor("embeddings.word_embeddings.weight")
    assert torch.equal(bert.bert.embeddings.word_embeddings.weight, ref)
    ids = batch(tok)[:, :-1]
    with torch.no_grad():
        ctx = model.context(images())
        hidden, extras = model.decoder(ids, ctx)
        full = model.logits(hidden, ctx)
        steps, _ = incremental_logits(model, ctx, ids)
    assert hidden.shape == (2, ids.shape[1], 32)  # projected back to d_model
    assert torch.isfinite(full).all() and full.shape[-1] == 30522
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)  # 6 layers, logits ~6: relative


def test_pruned_vocabulary_keeps_the_pretrained_logits_of_kept_tokens(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    full_tok = build_tokenizer(model_cfg("bert", "late", pretrained="minilm", vocab="full"), CAPTIONS, 1)
    tok = build_tokenizer(model_cfg("bert", "late", pretrained="minilm"), CAPTIONS, 1)
    assert len(tok) < 200 < len(full_tok)
    for caption in CAPTIONS:  # train captions tokenise exactly as with the full vocabulary
        assert [tok.vocab[i] for i in tok.encode(caption)] == [
            full_tok.vocab[i] for i in full_tok.encode(caption)
        ]
    models = []
    for t, vocab in ((full_tok, "full"), (tok, "train")):
        torch.manual_seed(0)
        models.append(build_model(model_cfg("bert", "late", pretrained="minilm", vocab=vocab), t).eval())
    # same non-vocabulary weights (same seed) so only the vocabulary differs
    models[1].load_state_dict(
        {
            k: v
            for k, v in models[0].state_dict().items()
            if "word_embeddings" not in k and "predictions" not in k
        },
        strict=False,
    )
    ids_full = batch(full_tok)[:, :-1]
    ids = torch.tensor([[tok.stoi[full_tok.vocab[i]] for i in row] for row in ids_full.tolist()])
    with torch.no_grad():
        ref, _ = models[0](images(), ids_full)
        out, _ = models[1](images(), ids)
    torch.testing.assert_close(out, ref[..., tok.source_ids], rtol=1e-5, atol=1e-5)


def test_bert_from_scratch_rebuilds_from_tokenizer_dict(tokenizers, monkeypatch):
    """A checkpoint's tokenizer dict is enough: the MiniLM package is not needed for pretrained=none."""
    import fusionbench.decoders.bert_source as bert_module

    def no_package():
        raise AssertionError("the MiniLM package must not be needed")

    monkeypatch.setattr(bert_module, "_minilm_dir", no_package)
    tok = WordPieceTokenizer.from_dict(json.loads(json.dumps(tokenizers["bert"].to_dict())))
    model = build_model(model_cfg("bert", "early"), tok).eval()
    with torch.no_grad():
        logits, _ = model(images(), batch(tok))
    assert torch.isfinite(logits).all()


def test_hub_name_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = model_cfg("bert", "late", pretrained="google-bert/bert-base-uncased")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="local directory"):
        build_tokenizer(cfg, CAPTIONS, 1)
    with pytest.raises(ConfigError, match="offline"):
        build_model(cfg, None)
    assert time.perf_counter() - start < 2.0


def test_missing_local_directory_is_a_config_error(tmp_path):
    cfg = model_cfg("bert", "late", pretrained=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="does not exist"):
        build_tokenizer(cfg, CAPTIONS, 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="config.json"):
        build_tokenizer(model_cfg("bert", "late", pretrained=str(tmp_path / "empty")), CAPTIONS, 1)
