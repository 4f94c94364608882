"""Stored features: the frozen-encoder cache, precomputed region features, extract-features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fusionbench.cli import main
from fusionbench.config import load_config
from fusionbench.errors import ConfigError, DataError
from fusionbench.experiment import run_experiment
from fusionbench.features.cache import cache_root
from fusionbench.features.key import feature_key, key_digest
from fusionbench.features.store import FeatureStore, FeatureWriter
from fusionbench.registry import ENCODERS

ONE_EPOCH = ["trainer.max_epochs=1", "logger.wandb.mode=disabled"]


def _run(tiny_config, tmp_path, name, *overrides):
    cfg = load_config(tiny_config, [f"output_dir={tmp_path}", f"run_name={name}", *ONE_EPOCH, *overrides])
    metrics = run_experiment(cfg, progress=False)
    state = torch.load(f"{metrics['run_dir']}/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    return metrics, state


def _max_diff(a: dict, b: dict) -> float:
    assert set(b) <= set(a)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in b)


@pytest.mark.parametrize(
    "encoder",
    [
        ["model.encoder.name=cnn"],
        ["model.encoder.name=vit", "model.encoder.img_size=32", "model.encoder.depth=1"],
    ],
    ids=["cnn", "vit"],
)
def test_frozen_encoder_cache_trains_exactly_like_computing_on_the_fly(tiny_config, tmp_path, encoder):
    frozen = [*encoder, "model.encoder.freeze=true", f"features.dir={tmp_path / 'cache'}"]
    fly, fly_state = _run(tiny_config, tmp_path, "fly", *frozen, "features.cache=false")
    miss, miss_state = _run(tiny_config, tmp_path, "miss", *frozen)
    hit, hit_state = _run(tiny_config, tmp_path, "hit", *frozen)

    assert fly["cost"]["features"] is None
    assert miss["cost"]["features"]["hit"] is False and miss["cost"]["features"]["images"] == 72
    assert (
        hit["cost"]["features"]["hit"] is True
        and hit["cost"]["features"]["key"] == miss["cost"]["features"]["key"]
    )
    # Extracting (or reading) the features changes nothing: same weights, scores and captions.
    assert _max_diff(fly_state, miss_state) == 0.0 and _max_diff(fly_state, hit_state) == 0.0
    for other in (miss, hit):
        assert other["test"]["CIDEr"] == fly["test"]["CIDEr"] and other["val"] == fly["val"]
    preds = [json.loads((tmp_path / "tiny" / n / "predictions.json").read_text()) for n in ("fly", "hit")]
    assert preds[0] == preds[1]
    # Costs are still measured from pixels, so a cached cell compares with an uncached one.
    assert hit["cost"]["flops_per_image"] == fly["cost"]["flops_per_image"]


def test_a_trainable_encoder_is_never_cached(tiny_config, tmp_path):
    metrics, _ = _run(tiny_config, tmp_path, "trainable", f"features.dir={tmp_path / 'cache'}")
    assert metrics["cost"]["features"] is None
    assert not (tmp_path / "cache").exists()


def test_cache_key_changes_with_weights_config_and_data(tiny_config):
    cfg = load_config(tiny_config, ["model.encoder.freeze=true"])
    torch.manual_seed(0)
    a = ENCODERS.build(cfg.model.encoder)
    torch.manual_seed(0)
    same = ENCODERS.build(cfg.model.encoder)
    torch.manual_seed(1)
    other_seed = ENCODERS.build(cfg.model.encoder)
    key = key_digest(feature_key(a, cfg.data))
    assert key == key_digest(feature_key(same, cfg.data))
    assert key != key_digest(feature_key(other_seed, cfg.data))  # other weights
    assert key != key_digest(feature_key(a, {**cfg.data, "image_size": 48}))  # other images
    stride = load_config(tiny_config, ["model.encoder.freeze=true", "model.encoder.feature_stride=16"])
    torch.manual_seed(0)
    assert key != key_digest(feature_key(ENCODERS.build(stride.model.encoder), cfg.data))
    with torch.no_grad():
        next(a.parameters()).add_(1.0)  # e.g. a different weights file
    assert key != key_digest(feature_key(a, cfg.data))


@pytest.mark.parametrize("fmt", ["npz", "h5"])
def test_extract_features_then_train_regions_on_them(tiny_config, tmp_path, fmt):
    """extract-features, then `regions` with box_source: precomputed trains exactly like the frozen
    encoder computing the same features on the fly."""
    out = tmp_path / ("feats" if fmt == "npz" else "feats.h5")
    regions = ["model.encoder.name=regions"]
    assert main(["extract-features", str(tiny_config), *regions, "--out", str(out)]) == 0
    store = FeatureStore(out)
    assert store.manifest["images"] == 72 and store.dim == store.manifest["dim"]
    item = store.load(1000000)
    assert item["features"].shape[1] == store.dim and item["boxes"].shape == (len(item["features"]), 4)
    assert list(item["image_size"]) == [32, 32]

    fly, fly_state = _run(
        tiny_config, tmp_path, "fly", *regions, "model.encoder.freeze=true", "features.cache=false"
    )
    pre, pre_state = _run(
        tiny_config,
        tmp_path,
        "pre",
        *regions,
        "model.encoder.box_source=precomputed",
        f"model.encoder.features={out}",
    )
    assert pre["cost"]["features"]["source"] == "precomputed"
    assert pre["params"]["encoder"] < fly["params"]["encoder"]  # no backbone: only the geometry embedding
    assert _max_diff(fly_state, pre_state) == 0.0
    assert pre["test"]["CIDEr"] == fly["test"]["CIDEr"] and pre["val"] == fly["val"]


def _write_bottom_up(folder, image_id, k, dim=8, scores=None):
    rng = np.random.default_rng(image_id)
    arrays = {
        "x": rng.normal(size=(k, dim)).astype(np.float32),
        "bbox": np.tile(np.array([[1.0, 2.0, 10.0, 12.0]], dtype=np.float32), (k, 1)) + np.arange(k)[:, None],
        "image_h": np.int64(20),
        "image_w": np.int64(30),
        "num_bbox": np.int64(k),
    }
    if scores is not None:
        arrays["cls_prob_max"] = np.asarray(scores)
        arrays["scores"] = np.asarray(scores, dtype=np.float32)
    np.savez(folder / f"{image_id}.npz", **arrays)
    return arrays


def test_store_reads_bottom_up_files_with_variable_regions_and_keeps_the_top_scores(tmp_path):
    a = _write_bottom_up(tmp_path, 1, 5, scores=[0.1, 0.9, 0.5, 0.8, 0.2])
    _write_bottom_up(tmp_path, 2, 2)
    store = FeatureStore(tmp_path, max_boxes=3)
    assert store.dim == 8 and store.missing([1, 2, 3]) == [3]
    top = store.load(1)
    assert np.array_equal(top["features"], a["x"][[1, 3, 2]])  # scores 0.9, 0.8, 0.5
    assert np.array_equal(top["boxes"], a["bbox"][[1, 3, 2]]) and list(top["image_size"]) == [20, 30]
    assert len(store.load(2)["features"]) == 2  # fewer than max_boxes: all kept

    enc = ENCODERS.build(
        {"name": "regions", "box_source": "precomputed", "features": str(tmp_path), "max_boxes": 3}
    )
    assert enc.out_dim == 8 and enc.reads_features
    from fusionbench.encoders.base import RawFeatures

    raw = RawFeatures.collate([store.load(1), store.load(2)])
    vis = enc.assemble(raw)
    assert vis.mask.sum(dim=1).tolist() == [3, 2] and (vis.tokens[1, 2] == 0).all()
    with pytest.raises(ConfigError, match="cannot encode images"):
        enc(torch.zeros(1, 3, 32, 32))


def test_hdf5_writer_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "f.h5"
    writer = FeatureWriter(path)
    writer.write(
        7, {"features": np.ones((3, 4), np.float32), "boxes": np.zeros((3, 4)), "image_size": [5, 6]}
    )
    assert not path.exists()  # nothing at the final name until close
    writer.close({"dim": 4, "images": 1})
    store = FeatureStore(path)
    assert store.manifest["dim"] == 4 and 7 in store and 8 not in store
    assert store.load(7)["features"].shape == (3, 4)
    aborted = FeatureWriter(tmp_path / "g.h5")
    aborted.write(1, {"features": np.ones((1, 4), np.float32)})
    aborted.abort()
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"boxes": np.zeros((2, 4))}, "no 'features' array"),
        ({"features": np.zeros((2, 4)), "boxes": np.zeros((3, 4)), "image_size": [1, 1]}, "'boxes' must be"),
        ({"features": np.zeros((2, 4)), "boxes": np.zeros((2, 4))}, "no image size"),
        ({"features": np.zeros((4,))}, r"must be \[K, D\]"),
    ],
)
def test_malformed_feature_files_name_the_file(tmp_path, arrays, match):
    np.savez(tmp_path / "5.npz", **arrays)
    with pytest.raises(DataError, match=match) as err:
        FeatureStore(tmp_path).load(5)
    assert "5.npz" in str(err.value)


def test_missing_features_are_listed_before_training(tiny_config, tmp_path, capsys):
    for i in range(3):
        _write_bottom_up(tmp_path, 1000000 + i, 2)
    code = main(
        [
            "run",
            str(tiny_config),
            f"output_dir={tmp_path / 'runs'}",
            "model.encoder.name=regions",
            "model.encoder.box_source=precomputed",
            f"model.encoder.features={tmp_path}",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no features for 69 of the dataset's 72 images" in " ".join(err.split())
    assert not (
        tmp_path / "runs" / "tiny" / "regions-attention-lstm-s0" / "checkpoints" / "last.ckpt"
    ).exists()


def test_precomputed_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="model.encoder.features is empty"):
        ENCODERS.build({"name": "regions", "box_source": "precomputed"})
    with pytest.raises(ConfigError, match="not a folder of .npz"):
        ENCODERS.build({"name": "regions", "box_source": "precomputed", "features": str(tmp_path / "nope")})


def test_default_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path))
    assert cache_root() == tmp_path / "features"


def test_grid_cells_sharing_a_frozen_encoder_extract_its_features_once(tmp_path):
    from grids import write_grid

    from fusionbench.grid import load_grid
    from fusionbench.grid.runner import run_grid

    path = write_grid(
        tmp_path,
        {"axes": {"model.fusion.name": ["late", "attention"], "model.decoder.name": ["lstm", "transformer"]}},
        trainer={"max_epochs": 1},
        model={"encoder": {"name": "cnn", "model_name": "resnet10t", "feature_stride": 8, "freeze": True}},
        features={"dir": str(tmp_path / "cache")},
    )
    summary = run_grid(load_grid(path), progress=False)
    assert len(summary.completed) == 4
    runs = tmp_path / "runs" / "g"
    feats = [
        json.loads((runs / c / "metrics.json").read_text())["cost"]["features"] for c in summary.completed
    ]
    assert [f["hit"] for f in feats] == [False, True, True, True]  # computed by the first cell only
    assert len({f["key"] for f in feats}) == 1 and len(list((tmp_path / "cache").iterdir())) == 1


def test_folder_images_get_regions_from_a_detector(tiny_config, tmp_path):
    """Your own images (a `folder` dataset: no boxes) get R-CNN regions: a detector trained on
    shapes proposes them, extract-features writes a BUTD-style file, and a run trains on them."""
    from PIL import Image

    from fusionbench.registry import DATASETS

    det = tmp_path / "detector.pt"
    train = ["detector", "train", str(tiny_config), "--out", str(det), "--epochs", "1", "--max-steps", "2"]
    assert main(train) == 0
    shapes = DATASETS.build(
        {"name": "shapes", "image_size": 32, "num_train": 6, "num_val": 2, "num_test": 2, "num_test_novel": 1}
    )
    photos = tmp_path / "photos"
    photos.mkdir()
    rows = []
    for split in ("train", "val", "test"):
        part = shapes.split(split)
        for i, image in enumerate(part.images):
            name = f"{split}-{i}.png"
            Image.fromarray(image).resize((48, 40)).save(photos / name)  # not the detector's size
            rows += [{"image": name, "caption": c, "split": split} for c in part.captions[i]]
    (photos / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    config = tmp_path / "folder.yaml"
    config.write_text(f"base: {tiny_config}\ndata: {{name: folder, root: {photos}, image_size: 32}}\n")
    regions = [
        "model.encoder.name=regions",
        "model.encoder.box_source=detector",
        f"model.encoder.detector_checkpoint={det}",
        "model.encoder.score_threshold=0",
    ]
    out = tmp_path / "feats.h5"
    assert main(["extract-features", str(config), *regions, "--out", str(out)]) == 0
    store = FeatureStore(out)
    assert store.manifest["images"] == 10
    item = store.load(1)
    assert len(item["boxes"]) > 1 and list(item["image_size"]) == [32, 32]  # whole image + detections
    metrics, state = _run(config, tmp_path, "folder-detector", *regions)
    assert metrics["test"]["CIDEr"] >= 0.0 and any(k.startswith("model.encoder.detector.") for k in state)
