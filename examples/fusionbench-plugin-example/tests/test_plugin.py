import torch
from omegaconf import OmegaConf

from fusionbench.model import build_model, build_tokenizer
from fusionbench.registry import DECODERS, ENCODERS, FUSIONS, METRICS


def test_components_are_found_through_entry_points():
    assert (
        "film" in FUSIONS.names() and "convnext_grid" in ENCODERS.names() and "self_bleu" in METRICS.names()
    )
    assert "gru" in DECODERS.names()
    assert "fusionbench-plugin-example" in FUSIONS.get("film").origin


def test_film_model_runs_and_self_bleu_scores():
    cfg = OmegaConf.create(
        {
            "d_model": 32,
            "encoder": {"name": "convnext_grid"},
            "fusion": {"name": "film"},
            "decoder": {"name": "lstm"},
        }
    )
    tok = build_tokenizer(cfg, ["a red circle", "a blue square"], 1)
    model = build_model(cfg, tok)
    logits, _ = model(torch.rand(2, 3, 64, 64), torch.tensor([tok.encode("a red circle")] * 2))
    assert torch.isfinite(logits).all()
    metric = METRICS.build({"name": "self_bleu"})
    same = metric.compute({1: "a red circle", 2: "a red circle"}, {})
    varied = metric.compute({1: "a red circle", 2: "two blue squares above"}, {})
    assert same["self_BLEU_4"] > varied["self_BLEU_4"]


def test_gru_decoder_steps_like_its_forward():
    cfg = OmegaConf.create(
        {
            "d_model": 32,
            "encoder": {"name": "convnext_grid"},
            "fusion": {"name": "attention"},
            "decoder": {"name": "gru", "dropout": 0.0},
        }
    )
    tok = build_tokenizer(cfg, ["a red circle", "a blue square"], 1)
    model = build_model(cfg, tok).eval()
    ids = torch.tensor([tok.encode("a red circle")] * 2)
    with torch.no_grad():
        ctx = model.context(torch.rand(2, 3, 64, 64))
        hidden, _ = model.decoder(ids, ctx)
        state = model.decoder.init_state(ctx)
        for t in range(ids.shape[1]):
            step, state = model.decoder.step(ids[:, t], state, ctx)
            assert torch.allclose(step, hidden[:, t], atol=1e-6)
