import torch
from omegaconf import OmegaConf

from fusionbench.model import build_model, build_tokenizer
from fusionbench.registry import ENCODERS, FUSIONS, METRICS


def test_components_are_found_through_entry_points():
    assert (
        "film" in FUSIONS.names() and "convnext_grid" in ENCODERS.names() and "self_bleu" in METRICS.names()
    )
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
