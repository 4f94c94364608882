"""The ViT-patch and R-CNN-region encoders, and the detector behind ``box_source: detector``.

Everything is tiny and randomly initialised (no downloads): the whole file runs in well under a
minute on two CPU cores. The detector is trained for a handful of steps on four shapes images,
enough to check that training lowers the loss and that ``regions`` loads what it writes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf

from fusionbench.data.base import CaptionSplit
from fusionbench.decoding import DecodingConfig
from fusionbench.detection import (
    ARCHITECTURE,
    CHECKPOINT_FORMAT,
    LEGACY_ARCHITECTURE,
    build_detector,
    evaluate_detector,
    load_detector,
    save_detector,
    select_boxes,
    train_detector,
)
from fusionbench.encoders.base import VisualFeatures
from fusionbench.encoders.regions import RegionEncoder
from fusionbench.encoders.vit import ViTEncoder, default_num_heads
from fusionbench.errors import ConfigError, DataError, FusionbenchError
from fusionbench.model import build_model, build_tokenizer
from fusionbench.registry import DATASETS, ENCODERS

# Small but real: one block of ViT, resnet10t at stride 8 for regions.
VIT = {"name": "vit", "depth": 1, "embed_dim": 32}
REGIONS = {"name": "regions", "model_name": "resnet10t"}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUSIONBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        ds = DATASETS.build(
            {"name": "shapes", "num_train": 40, "num_val": 4, "num_test": 4, "num_test_novel": 4}
        )
        return {name: ds.split(name) for name in ("train", "val")}


def subset(split: CaptionSplit, n: int) -> CaptionSplit:
    return dataclasses.replace(
        split,
        image_ids=split.image_ids[:n],
        captions=split.captions[:n],
        images=split.images[:n],
        boxes=split.boxes[:n],
        box_labels=split.box_labels[:n],
    )


def batch_of(split: CaptionSplit, n: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    images = torch.from_numpy(split.images[:n]).permute(0, 3, 1, 2).float().div(255.0)
    return images, [torch.from_numpy(b) for b in split.boxes[:n]]


@pytest.fixture(scope="module")
def detector(shapes, tmp_path_factory):
    """A detector trained for 4 steps on 16 images (2 epochs of 2 batches): (checkpoint path, metrics)."""
    path = tmp_path_factory.mktemp("detector") / "detector.pt"
    metrics = train_detector(
        subset(shapes["train"], 16),
        epochs=2,
        batch_size=8,
        lr=1e-3,
        out_path=path,
        seed=0,
        val_split=subset(shapes["val"], 2),
        representation_size=32,
        hflip=False,
    )
    return path, metrics


def check_features(vis: VisualFeatures, batch: int, dim: int) -> None:
    n = vis.tokens.shape[1]
    assert vis.tokens.shape == (batch, n, dim)
    assert vis.mask.shape == (batch, n) and vis.mask.dtype == torch.bool
    assert vis.mask.any(dim=1).all(), "every image needs at least one real token"
    assert vis.pooled.shape == (batch, dim)
    assert torch.isfinite(vis.tokens).all() and torch.isfinite(vis.pooled).all()
    if vis.boxes is not None:
        assert vis.boxes.shape == (batch, n, 4)


def backbone_trainable(encoder) -> int:
    return sum(p.numel() for p in encoder.backbone.parameters() if p.requires_grad)


# -- vit ----------------------------------------------------------------------------------------------
def test_vit_default_config_patch_tokens_and_cls():
    enc = ENCODERS.build({"name": "vit"})
    assert enc.config.img_size == 64 and enc.config.patch_size == 8 and enc.config.depth == 4
    assert len(enc.backbone.blocks) == 4
    images = torch.rand(2, 3, 64, 64)
    vis = enc(images)
    check_features(vis, 2, 192)
    assert vis.tokens.shape[1] == 64  # 8x8 patches, no CLS among the tokens
    assert vis.mask.all() and vis.boxes is None
    full = enc.backbone.forward_features(enc.normalize(images))
    assert torch.allclose(vis.pooled, full[:, 0]) and torch.allclose(vis.tokens, full[:, 1:])


def test_vit_resizes_other_image_sizes():
    enc = ENCODERS.build(VIT).eval()
    vis = enc(torch.rand(2, 3, 40, 96))
    check_features(vis, 2, 32)
    assert vis.tokens.shape[1] == 64


def test_vit_width_heads_and_models_without_class_token():
    assert default_num_heads(32) == 1 and default_num_heads(192) == 3 and default_num_heads(768) == 12
    enc = ENCODERS.build({"name": "vit", "depth": 1, "embed_dim": 128})
    assert enc.out_dim == 128 and enc.backbone.blocks[0].attn.num_heads == 2
    enc = ENCODERS.build({"name": "vit", "depth": 1, "embed_dim": 48, "num_heads": 4})
    assert enc.backbone.blocks[0].attn.num_heads == 4
    gap = ENCODERS.build({**VIT, "model_name": "vit_base_patch16_gap_224", "img_size": 32}).eval()
    vis = gap(torch.rand(2, 3, 32, 32))
    check_features(vis, 2, 32)
    assert vis.tokens.shape[1] == 16 and torch.allclose(vis.pooled, vis.tokens.mean(dim=1), atol=1e-6)


def test_vit_freeze_and_gradients():
    frozen = ENCODERS.build({**VIT, "freeze": True}).train()
    assert backbone_trainable(frozen) == 0 and not frozen.backbone.training
    enc = ENCODERS.build(VIT).train()
    vis = enc(torch.rand(2, 3, 64, 64))
    (vis.tokens.sum() + vis.pooled.sum()).backward()
    assert enc.backbone.patch_embed.proj.weight.grad.abs().sum() > 0
    assert enc.backbone.cls_token.grad.abs().sum() > 0


def test_vit_local_weights_are_resampled_and_truncated(tmp_path):
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2, num_classes=10)
    path = tmp_path / "vit.pth"
    torch.save(src.state_dict(), path)
    enc = ENCODERS.build({"name": "vit", "depth": 1, "pretrained": str(path)})
    assert enc.backbone.pos_embed.shape == (1, 65, 192)  # 2x2+1 resampled to 8x8+1
    assert enc.backbone.patch_embed.proj.weight.shape[-2:] == (8, 8)  # 16x16 patches resampled
    assert torch.equal(enc.backbone.cls_token, src.cls_token)
    assert torch.equal(enc.backbone.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    with pytest.raises(ConfigError, match=r"model\.encoder\.pretrained.*embed_dim"):
        ENCODERS.build({**VIT, "pretrained": str(path)})


@pytest.mark.parametrize(
    "options, match",
    [
        ({"img_size": 60}, r"model\.encoder\.img_size=60.*patch_size"),
        ({"embed_dim": 48, "num_heads": 5}, r"model\.encoder\.embed_dim=48.*num_heads"),
        ({"depth": 0}, r"model\.encoder\.depth"),
        ({"model_name": "resnet18"}, r"model\.encoder\.model_name.*resnet18"),
        ({"model_name": "vit_tiny_patch16_22"}, r"model\.encoder\.model_name.*Did you mean"),
        ({"pretrained": "/nonexistent/vit.pth"}, r"model\.encoder\.pretrained.*does not exist"),
        ({"patch_sise": 8}, r"model\.encoder\.patch_sise.*Did you mean 'patch_size'"),
        ({"depth": "four"}, r"model\.encoder\.depth"),
    ],
)
def test_vit_bad_configs_name_the_key(options, match):
    with pytest.raises(FusionbenchError, match=match):
        ENCODERS.build({**VIT, **options})


# -- regions (dataset boxes) ----------------------------------------------------------------------------
def test_regions_dataset_boxes_variable_counts_and_padding(shapes):
    enc = ENCODERS.build({**REGIONS, "max_boxes": 3}).eval()
    images, boxes = batch_of(shapes["train"], 3)
    boxes[1] = torch.zeros(0, 4)  # an image without objects
    boxes[2] = torch.tensor(
        [[1.0, 1, 9, 9], [10, 10, 20, 20], [30, 30, 40, 40], [40, 40, 50, 50], [5, 5, 5, 20]]
    )
    vis = enc(images, boxes)
    check_features(vis, 3, enc.out_dim)
    counts = vis.mask.sum(dim=1).tolist()
    assert counts == [1 + min(3, len(shapes["train"].boxes[0])), 1, 4]  # whole image + first max_boxes
    assert vis.tokens.shape[1] == 4
    assert torch.equal(vis.boxes[:, 0], torch.tensor([[0.0, 0, 64, 64]] * 3))  # whole image first
    assert torch.equal(vis.boxes[2, 1:], boxes[2][:3])
    assert torch.equal(vis.boxes[0, 1 : counts[0]], boxes[0][:3])
    padded = ~vis.mask
    assert (vis.tokens[padded] == 0).all() and (vis.boxes[padded] == 0).all()
    for i, k in enumerate(counts):
        assert torch.allclose(vis.pooled[i], vis.tokens[i, :k].mean(dim=0), atol=1e-5)


def test_regions_without_global_box_never_leaves_an_image_empty(shapes):
    enc = ENCODERS.build({**REGIONS, "add_global_box": False}).eval()
    images, boxes = batch_of(shapes["train"], 2)
    boxes[1] = torch.tensor([[70.0, 70, 90, 90]])  # entirely outside the image: dropped
    vis = enc(images, boxes)
    check_features(vis, 2, enc.out_dim)
    assert vis.mask.sum(dim=1).tolist() == [len(shapes["train"].boxes[0]), 1]
    assert torch.equal(vis.boxes[0, : len(boxes[0])], boxes[0])
    assert torch.equal(vis.boxes[1, 0], torch.tensor([0.0, 0, 64, 64]))


def test_regions_geometry_distinguishes_positions():
    enc = ENCODERS.build(REGIONS).eval()
    images = torch.zeros(1, 3, 64, 64)  # identical content everywhere
    vis = enc(images, [torch.tensor([[4.0, 4, 20, 20], [44, 44, 60, 60]])])
    assert not torch.allclose(vis.tokens[0, 1], vis.tokens[0, 2])


def test_regions_freeze_and_gradients(shapes):
    images, boxes = batch_of(shapes["train"], 2)
    frozen = ENCODERS.build({**REGIONS, "freeze": True}).train()
    assert backbone_trainable(frozen) == 0 and not frozen.backbone.training
    assert all(p.requires_grad for p in frozen.box_geometry.parameters())
    enc = ENCODERS.build(REGIONS).train()
    vis = enc(images, boxes)
    (vis.tokens.sum() + vis.pooled.sum()).backward()
    grads = [p.grad for p in enc.backbone.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    assert enc.box_geometry.weight.grad.abs().sum() > 0


def test_regions_dataset_source_without_boxes_explains_the_fix():
    enc = ENCODERS.build(REGIONS)
    with pytest.raises(ConfigError, match=r"dataset gives no object boxes.*box_source: detector"):
        enc(torch.rand(1, 3, 64, 64), None)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"box_source": "gt"}, r"model\.encoder\.box_source.*dataset, detector"),
        ({"box_source": "detector"}, r"model\.encoder\.detector_checkpoint.*fusionbench detector train"),
        ({"max_boxes": 0}, r"model\.encoder\.max_boxes"),
        ({"pool_size": 0}, r"model\.encoder\.pool_size"),
        ({"score_threshold": 1.5}, r"model\.encoder\.score_threshold"),
        (
            {"nms_threshold": 0.0},
            r"Invalid value 0.0 for model\.encoder\.nms_threshold: it must be in \(0, 1\]",
        ),
        ({"min_box_size": -1.0}, r"Invalid value -1.0 for model\.encoder\.min_box_size: it must be >= 0"),
        ({"feature_stride": 7}, r"model\.encoder\.feature_stride=7.*\[2, 4, 8, 16, 32\]"),
        ({"model_name": "resnet10"}, r"model\.encoder\.model_name"),
        ({"max_box": 5}, r"model\.encoder\.max_box.*Did you mean 'max_boxes'"),
    ],
)
def test_regions_bad_configs_name_the_key(options, match):
    with pytest.raises(FusionbenchError, match=match):
        ENCODERS.build({**REGIONS, **options})


def test_regions_detector_checkpoint_errors(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(ConfigError, match=r"detector_checkpoint.*does not exist.*fusionbench detector train"):
        ENCODERS.build({**REGIONS, "box_source": "detector", "detector_checkpoint": str(missing)})
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ConfigError, match=r"detector_checkpoint.*not a fusionbench detector checkpoint"):
        ENCODERS.build({**REGIONS, "box_source": "detector", "detector_checkpoint": str(other)})
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=r"detector_checkpoint.*not a readable detector checkpoint"):
        ENCODERS.build({**REGIONS, "box_source": "detector", "detector_checkpoint": str(garbage)})


# -- regions (detector boxes) ---------------------------------------------------------------------------
def test_regions_detector_source_loads_the_checkpoint_and_stays_frozen(shapes, detector):
    path, _ = detector
    enc = ENCODERS.build(
        {**REGIONS, "box_source": "detector", "detector_checkpoint": str(path), "score_threshold": 0.0}
    )
    assert enc.detector is not None and enc.detector_meta["label_names"] == ["object"]
    assert enc.detector_meta["architecture"] == ARCHITECTURE
    assert not any(p.requires_grad for p in enc.detector.parameters())
    enc.train()
    assert not enc.detector.training and enc.backbone.training
    images, boxes = batch_of(shapes["val"], 2)
    vis = enc(images, boxes)  # dataset boxes are ignored
    check_features(vis, 2, enc.out_dim)
    assert (vis.mask.sum(dim=1) > 1).all(), "the detector gives regions besides the whole image"
    assert (vis.mask.sum(dim=1) <= 1 + enc.config.max_boxes).all()
    real = vis.boxes[vis.mask]
    assert (real >= 0).all() and (real[:, 2] <= 64).all() and (real[:, 3] <= 64).all()
    assert (real[:, 2] > real[:, 0]).all() and (real[:, 3] > real[:, 1]).all()


def test_regions_detector_boxes_are_thresholded_and_top_k(tmp_path):
    path = save_detector(
        build_detector(2, 64, 64, representation_size=16),
        tmp_path / "d.pt",
        num_classes=2,
        label_names=["object"],
        label_mode="object",
        min_size=64,
        max_size=64,
        representation_size=16,
    )
    enc = ENCODERS.build(
        {**REGIONS, "box_source": "detector", "detector_checkpoint": str(path), "max_boxes": 2}
    ).eval()

    class Stub(torch.nn.Module):  # fixed detections: scores 0.2 / 0.9 / 0.5 / 0.8
        def forward(self, images):
            boxes = torch.tensor([[0.0, 0, 8, 8], [8, 8, 16, 16], [16, 16, 32, 32], [32, 32, 64, 64]])
            scores = torch.tensor([0.2, 0.9, 0.5, 0.8])
            return [{"boxes": boxes, "scores": scores, "labels": torch.ones(4, dtype=torch.long)}] * len(
                images
            )

    enc.detector = Stub()
    vis = enc(torch.rand(2, 3, 64, 64))
    expected = torch.tensor([[0.0, 0, 64, 64], [8, 8, 16, 16], [32, 32, 64, 64]])
    assert torch.equal(vis.boxes[0], expected) and torch.equal(vis.boxes[1], expected)
    enc.config.score_threshold = 0.95  # nothing detected: the whole image remains
    assert enc(torch.rand(1, 3, 64, 64)).mask.sum().item() == 1


def test_select_boxes_filters_score_size_duplicates_and_keeps_the_best():
    output = {
        "boxes": torch.tensor(
            [[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 21.5, 40], [30, 30, 50, 50], [40, 0, 60, 20]]
        ),
        "scores": torch.tensor([0.9, 0.8, 0.95, 0.2, 0.6]),
        "labels": torch.tensor([1, 2, 1, 1, 1]),  # box 1 repeats box 0 under another class
    }
    boxes, scores, labels = select_boxes(
        output, score_threshold=0.3, nms_threshold=0.5, min_box_size=2.0, max_boxes=10
    )
    assert scores.tolist() == pytest.approx([0.9, 0.6]) and labels.tolist() == [1, 1]
    assert torch.equal(boxes, output["boxes"][[0, 4]])
    loose = select_boxes(output, nms_threshold=None, max_boxes=3)[1]
    assert loose.tolist() == pytest.approx([0.95, 0.9, 0.8])


# -- detector architecture and checkpoints --------------------------------------------------------------
def test_detector_sees_small_objects_of_small_images():
    """The FPN's finest level has stride 4 and the anchors span 8-64 px at 64 px: torchvision's
    model gives a 2x2 map at stride 32 here, and shapes' 9-27 px objects fall between its anchors."""
    model = build_detector(2, 64, 64)
    features = model.backbone(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert model.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,))
    assert model.transform.min_size == (64,) and model.transform.max_size == 64
    legacy = build_detector(2, 64, 64, architecture=LEGACY_ARCHITECTURE)
    assert [tuple(f.shape[-2:]) for f in legacy.backbone(torch.rand(1, 3, 64, 64)).values()][0] == (2, 2)


def test_version_1_checkpoints_load_as_the_legacy_architecture(tmp_path):
    """Detectors written before architectures were named (no ``architecture`` key) still load."""
    old = build_detector(2, 64, 64, architecture=LEGACY_ARCHITECTURE, representation_size=16)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "num_classes": 2,
        "label_names": ["object"],
        "min_size": 64,
        "max_size": 64,
        "anchor_sizes": [8, 16, 32, 64, 128],
        "representation_size": 16,
        "state_dict": old.state_dict(),
    }
    torch.save(payload, tmp_path / "v1.pt")
    model, meta = load_detector(tmp_path / "v1.pt")
    assert meta["architecture"] == LEGACY_ARCHITECTURE
    assert model.rpn.anchor_generator.sizes[0] == (8, 16, 32, 64, 128)


def test_mismatched_detector_checkpoints_name_both_sides(tmp_path):
    key = r"model\.encoder\.detector_checkpoint"
    path = save_detector(
        build_detector(2, 64, 64, representation_size=16), tmp_path / "d.pt", label_names=["object"]
    )
    _, meta = load_detector(path)
    assert meta["architecture"] == ARCHITECTURE and meta["label_names"] == ["object"]
    # the detector a model was built with vs the file given now: another label set, another architecture
    labels = {**meta, "label_names": ["circle", "square"], "num_classes": 3}
    with pytest.raises(
        ConfigError, match=rf"{key}.*classes \['object'\].*but .*classes \['circle', 'square'\]"
    ):
        load_detector(path, expect=labels)
    with pytest.raises(
        ConfigError, match=rf"architecture '{ARCHITECTURE}'.*but architecture '{LEGACY_ARCHITECTURE}'"
    ):
        load_detector(path, expect={**meta, "architecture": LEGACY_ARCHITECTURE})
    load_detector(path, expect=meta)  # the same detector passes
    # metadata and weights that disagree (the weights are for another architecture / label set)
    legacy = build_detector(2, 64, 64, architecture=LEGACY_ARCHITECTURE, representation_size=16)
    state = torch.load(path, weights_only=True)
    torch.save({**state, "state_dict": legacy.state_dict()}, tmp_path / "arch.pt")
    with pytest.raises(
        ConfigError, match=rf"{key}.*architecture '{ARCHITECTURE}'.*weights do not fit.*missing"
    ):
        ENCODERS.build(
            {**REGIONS, "box_source": "detector", "detector_checkpoint": str(tmp_path / "arch.pt")}
        )
    torch.save({**state, "label_names": ["a", "b", "c"], "num_classes": 4}, tmp_path / "labels.pt")
    with pytest.raises(
        ConfigError, match=r"classes \['a', 'b', 'c'\].*weights for 1 classes, metadata for 3"
    ):
        load_detector(tmp_path / "labels.pt")
    torch.save({**state, "architecture": "yolo"}, tmp_path / "yolo.pt")
    with pytest.raises(
        ConfigError, match=rf"architecture 'yolo'.*builds: {ARCHITECTURE}, {LEGACY_ARCHITECTURE}"
    ):
        load_detector(tmp_path / "yolo.pt")


# -- detector evaluation --------------------------------------------------------------------------------
class Oracle(torch.nn.Module):
    """Detects a split's true boxes (score 0.9), plus a junk box at score 0.1, image by image."""

    def __init__(self, split: CaptionSplit) -> None:
        super().__init__()
        self.split, self.next = split, 0
        self.weight = torch.nn.Parameter(torch.zeros(1))  # evaluate_detector reads the device

    def forward(self, images):
        out = []
        for _ in images:
            gt = torch.from_numpy(self.split.boxes[self.next]).float()
            self.next += 1
            boxes = torch.cat([gt, torch.tensor([[0.0, 0.0, 3.0, 3.0]])])
            scores = torch.tensor([0.9] * len(gt) + [0.1])
            out.append({"boxes": boxes, "scores": scores, "labels": torch.ones(len(boxes), dtype=torch.long)})
        return out


def test_evaluate_detector_is_the_coco_protocol(shapes):
    split = subset(shapes["train"], 12)
    scores = evaluate_detector(Oracle(split), split, score_threshold=0.3, max_boxes=10, batch_size=5)
    assert scores["map_50"] == pytest.approx(1.0) and scores["map"] == pytest.approx(1.0)
    assert scores["recall_iou50_top36"] == pytest.approx(1.0) and scores["recall_iou50_top100"] == 1.0
    n_gt = sum(len(b) for b in split.boxes)
    assert scores["recall_iou50_top1"] == pytest.approx(len(split) / n_gt)  # one box per image
    assert scores["recall_iou50"] == 1.0 and scores["precision_iou50"] == pytest.approx(1.0)  # junk dropped
    assert scores["mean_detections"] == pytest.approx(n_gt / len(split))
    everything = evaluate_detector(Oracle(split), split, score_threshold=0.0, max_boxes=10)
    assert everything["precision_iou50"] == pytest.approx(n_gt / (n_gt + len(split)))


# -- detector training ----------------------------------------------------------------------------------
def test_train_detector_lowers_the_loss_and_writes_a_loadable_checkpoint(detector):
    path, metrics = detector
    assert metrics["steps"] == 4 and metrics["num_classes"] == 2
    assert metrics["final_loss"] < metrics["first_epoch_loss"]
    parts = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg")
    assert sum(metrics[f"final_{p}"] for p in parts) == pytest.approx(metrics["final_loss"], rel=1e-4)
    for key in ("val_map_50", "val_map", "val_recall_iou50_top36", "val_recall_iou50", "val_precision_iou50"):
        assert 0.0 <= metrics[key] <= 1.0
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    model, meta = load_detector(path)
    assert not model.training
    assert meta["min_size"] == meta["max_size"] == 64 and meta["label_mode"] == "object"
    assert meta["metrics"]["final_loss"] == pytest.approx(metrics["final_loss"])
    out = model([torch.rand(3, 64, 64)])[0]
    assert set(out) == {"boxes", "scores", "labels"}


def test_train_detector_label_mode_and_input_errors(shapes, tmp_path):
    split = subset(shapes["train"], 1)
    metrics = train_detector(
        split,
        epochs=1,
        batch_size=2,
        lr=1e-3,
        out_path=tmp_path / "d.pt",
        seed=0,
        label_mode="label",
        representation_size=16,
        max_steps=1,
    )
    names = sorted({lab for labels in split.box_labels for lab in labels})
    assert metrics["label_names"] == names and metrics["num_classes"] == len(names) + 1
    _, meta = load_detector(tmp_path / "d.pt")
    assert meta["label_names"] == names and meta["num_classes"] == len(names) + 1
    with pytest.raises(ConfigError, match="label_mode"):
        train_detector(
            split, epochs=1, batch_size=2, lr=1e-3, out_path=tmp_path / "x.pt", seed=0, label_mode="shape"
        )
    no_boxes = dataclasses.replace(split, boxes=None, box_labels=None)
    with pytest.raises(DataError, match="no object boxes"):
        train_detector(no_boxes, epochs=1, batch_size=2, lr=1e-3, out_path=tmp_path / "x.pt", seed=0)
    assert not (tmp_path / "x.pt").exists()


# -- end to end -----------------------------------------------------------------------------------------
CAPTIONS = ["a red circle left of a blue square", "two green triangles above a yellow diamond"]


@pytest.mark.parametrize("source", ["vit", "regions", "regions-detector"])
def test_build_model_with_each_encoder(source, shapes, detector):
    encoder = {
        "vit": VIT,
        "regions": REGIONS,
        "regions-detector": {**REGIONS, "box_source": "detector", "detector_checkpoint": str(detector[0])},
    }[source]
    cfg = OmegaConf.create(
        {
            "d_model": 32,
            "encoder": encoder,
            "fusion": {"name": "attention"},
            "decoder": {"name": "lstm", "attention_dim": 16},
        }
    )
    tok = build_tokenizer(cfg, CAPTIONS, 1)
    model = build_model(cfg, tok)
    images, boxes = batch_of(shapes["train"], 2)
    ids = [tok.encode(c) for c in CAPTIONS]
    input_ids = torch.full((2, max(map(len, ids))), tok.pad_id)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row)
    logits, _ = model(images, input_ids[:, :-1], boxes)
    assert logits.shape == (2, input_ids.shape[1] - 1, len(tok))
    assert torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(tok)), input_ids[:, 1:].reshape(-1))
    loss.backward()
    assert model.token_proj[0].weight.grad.abs().sum() > 0
    captions = model.caption(images, boxes, DecodingConfig(beam_size=2, max_len=5))
    assert len(captions) == 2


def test_encoders_are_registered():
    assert {"cnn", "vit", "regions"} <= set(ENCODERS.names())
    assert ENCODERS.get("vit").obj is ViTEncoder and ENCODERS.get("regions").obj is RegionEncoder
    assert np.isclose(ENCODERS.build(VIT).pixel_mean.flatten()[0].item(), 0.5)  # ViT's own statistics


def test_detector_and_dataset_boxes_runs_of_a_seed_start_from_the_same_weights(detector):
    """The box-source comparison is paired: building (and loading) the frozen detector draws no
    random numbers, so both models get the same trainable weights and later draws."""
    cfg = OmegaConf.create(
        {
            "d_model": 32,
            "encoder": REGIONS,
            "fusion": {"name": "attention"},
            "decoder": {"name": "transformer"},
        }
    )
    tok = build_tokenizer(cfg, CAPTIONS, 1)
    built = {}
    for source in ("dataset", "detector"):
        cfg.encoder = {**REGIONS, "box_source": source, "detector_checkpoint": str(detector[0])}
        torch.manual_seed(0)
        state = build_model(cfg, tok).state_dict()
        built[source] = ({k: v for k, v in state.items() if ".detector." not in k}, torch.rand(1))
    (dataset, after_dataset), (with_detector, after_detector) = built["dataset"], built["detector"]
    assert dataset.keys() == with_detector.keys()
    assert all(torch.equal(dataset[k], with_detector[k]) for k in dataset)
    assert torch.equal(after_dataset, after_detector)
