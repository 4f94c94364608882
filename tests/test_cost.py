"""Cost metrics: parameter counts, FLOPs, inference time and peak memory are present and sane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from fusionbench import cost
from fusionbench.decoding import DecodingConfig
from fusionbench.model import build_model, build_tokenizer

CAPTIONS = ["a red circle left of a blue square", "two green triangles above a yellow diamond"]


class Toy(nn.Module):
    """A captioner-shaped module whose parameters and FLOPs are easy to count by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(3 * 4 * 4, 8)  # 48*8 + 8 = 392
        self.embed = nn.Embedding(10, 8)  # 80
        self.norm = nn.LayerNorm(8)  # 16
        self.head = nn.Linear(8, 5, bias=False)  # 40, frozen below
        self.head.weight.requires_grad_(False)
        self.tied = nn.Linear(8, 10, bias=False)
        self.tied.weight = self.embed.weight  # shared with the embedding: counted once

    def forward(self, images, input_ids, boxes=None):
        pooled = self.encoder(images.flatten(1))  # [B, 8]
        hidden = self.norm(self.embed(input_ids) + pooled[:, None])  # [B, T, 8]
        return self.head(hidden), {}


def test_count_parameters_matches_a_hand_count():
    counts = cost.count_parameters(Toy())
    assert counts["total"] == 392 + 80 + 16 + 40
    assert counts["trainable"] == 392 + 80 + 16
    assert counts["components"] == {"encoder": 392, "embed": 80, "norm": 16, "head": 40, "tied": 80}
    assert counts["trainable_components"]["head"] == 0


def test_count_flops_matches_a_hand_count():
    images = torch.rand(3, 3, 4, 4)
    # encoder: 2*48*8 per image; head: 2*8*5 per token (norm, embedding, additions are not counted)
    assert cost.count_flops(Toy(), images, caption_length=7, token_id=1) == 2 * 48 * 8 + 7 * 2 * 8 * 5


def tiny_model():
    cfg = OmegaConf.create(
        {
            "d_model": 32,
            "encoder": {"name": "cnn", "model_name": "resnet10t", "feature_stride": 8},
            "fusion": {"name": "attention"},
            "decoder": {"name": "lstm", "attention_dim": 16},
        }
    )
    torch.manual_seed(0)
    return build_model(cfg, build_tokenizer(cfg, CAPTIONS, 1))


def test_tiny_captioner_cost_is_sane():
    model = tiny_model()
    model.train()
    images = torch.rand(4, 3, 32, 32)

    counts = model.parameter_counts()
    generic = cost.count_parameters(model)
    assert counts["total"] == generic["total"] == generic["trainable"] > 0
    assert counts["projection"] == 2 * (model.encoder.out_dim * 32 + 32 + 2 * 32)  # Linear + LayerNorm, twice
    assert counts["decoder"] == generic["components"]["decoder"]

    short = cost.count_flops(model, images, caption_length=4)
    long = cost.count_flops(model, images, caption_length=12)
    assert 0 < short < long  # the LSTM's matrix multiplications are counted per step
    assert model.training  # restored

    decoding = DecodingConfig(beam_size=2, max_len=6)
    report = cost.measure_model(model, images, decoding=decoding, caption_length=4, repeats=1)
    assert report["flops_per_image"] == short
    assert report["greedy"] > 0 and report["beam"] > 0
    assert report["setup"]["beam_size"] == 2 and report["setup"]["images"] == 4
    assert model.training


def test_peak_memory_sees_a_large_allocation():
    cost.reset_peak_memory()
    before = cost.peak_memory_mb()
    assert before > 0
    block = torch.ones(48 * 2**20 // 4)  # 48 MiB, touched
    after = cost.peak_memory_mb()
    del block
    assert after >= before + 40 or "ru_maxrss" in cost.peak_memory_source()
    sources = {"process RSS high-water mark (VmHWM)", "getrusage ru_maxrss"}
    assert cost.peak_memory_source() in {s + cost.PER_PROCESS for s in sources}


def test_typical_caption_length():
    assert cost.typical_caption_length([9, 10, 12]) == 10
    assert cost.typical_caption_length([]) == 12


def test_run_writes_cost_metrics(tmp_path):
    from fusionbench.cli import main

    config = Path(__file__).parent / "configs" / "tiny.yaml"
    overrides = ["trainer.max_epochs=1", "data.num_train=16", "data.num_test_novel=4"]
    assert main(["run", str(config), f"output_dir={tmp_path}", *overrides, "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "tiny" / "cnn-attention-lstm-s0" / "metrics.json").read_text())
    c = metrics["cost"]
    assert c["flops_per_image"] > 0 and c["flops_caption_length"] >= 2
    assert c["peak_memory_mb"] > 0 and c["peak_memory_source"]
    ms = c["inference_ms_per_image"]
    assert ms["test"] > 0 and ms["test_novel"] > 0 and ms["greedy"] > 0 and ms["beam"] > 0
    assert c["test_decode_ms_per_image"] == {"test": ms["test"], "test_novel": ms["test_novel"]}
    assert c["inference_setup"]["beam_size"] == 2 and c["inference_setup"]["images"] == 8
    assert c["train_images_per_s"] is None or c["train_images_per_s"] > 0
    assert c["wall_seconds"] >= c["train_seconds"] > 0
    p = metrics["params"]
    assert p["total"] == sum(p[k] for k in ("encoder", "projection", "fusion", "decoder")) == p["trainable"]


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))
