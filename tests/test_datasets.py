"""Real-dataset loaders (Karpathy splits, official COCO, folder), image decoding and bad input.

Every fixture is a handful of tiny images written with PIL into ``tmp_path``; nothing is
downloaded. The end-to-end tests train and evaluate one epoch of the tiny model on each format.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusionbench.data.base import SKIP_REASONS, CaptionSplit, ImageFileDataset
from fusionbench.data.coco import CocoDataset, split_order_key
from fusionbench.data.folder import FolderDataset, assign_splits
from fusionbench.data.images import (
    PAD_COLOUR,
    BadImageError,
    UnsafePathError,
    check_images,
    load_rgb,
    safe_image_path,
)
from fusionbench.data.karpathy import CocoKarpathy, Flickr8k, Flickr30k
from fusionbench.data.module import Collate, _image_item
from fusionbench.data.stats import data_report, dataset_stats, format_stats
from fusionbench.errors import ConfigError, DataError
from fusionbench.registry import DATASETS

S = 32  # image_size used throughout
WORDS = ("red", "green", "blue", "yellow")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 230), "yellow": (230, 220, 30)}


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FUSIONBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread (the machine is shared), restored for the tests that follow."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- fixture builders -----------------------------------------------------------------------------
def write_image(path: Path, colour: str, size: tuple[int, int] = (40, 30), fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, COLOURS[colour]).save(path, format=fmt)


def captions_for(colour: str, k: int = 2) -> list[str]:
    return [f"A {colour} square.", f"a plain {colour} picture"][:k]


def truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def odd_images(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Images in unusual storage; ``{file: expected RGB of the top-left pixel}``."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("L", (20, 16), 100).save(folder / "gray.png")
    Image.new("1", (20, 16), 1).save(folder / "bilevel.png")
    Image.new("RGBA", (20, 16), (255, 0, 0, 0)).save(folder / "transparent.png")  # -> white
    Image.new("RGBA", (20, 16), (0, 0, 255, 255)).save(folder / "opaque.png")
    Image.new("LA", (20, 16), (50, 255)).save(folder / "gray_alpha.png")
    pal = Image.new("P", (20, 16), 1)
    pal.putpalette([0, 255, 0, 200, 0, 200] + [0] * 762)
    pal.save(folder / "palette.png")
    pal_t = Image.new("P", (20, 16), 0)
    pal_t.putpalette([0, 255, 0, 200, 0, 200] + [0] * 762)
    pal_t.save(folder / "palette_transparent.png", transparency=0)  # index 0 transparent -> white
    Image.new("CMYK", (20, 16), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=95)
    Image.new("CMYK", (20, 16), (255, 0, 255, 0)).save(folder / "cmyk.tif")
    Image.fromarray(np.full((16, 20), 65535, np.uint16)).save(folder / "white16.png")
    Image.fromarray(np.full((16, 20), 32896, np.uint16)).save(folder / "mid16.png")  # 32896/257 = 128
    Image.fromarray(np.full((16, 20), 1000, np.int32), mode="I").save(folder / "int32.tif")
    rot = Image.new("RGB", (40, 20), (255, 0, 0))
    rot.paste((0, 0, 255), (20, 0, 40, 20))  # stored: left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: red on top, blue below
    rot.save(folder / "exif_rotated.jpg", exif=exif, quality=95)
    Image.new("RGB", (20, 16), (10, 20, 30)).save(folder / "plain.bmp")
    return {
        "gray.png": (100, 100, 100),
        "bilevel.png": (255, 255, 255),
        "transparent.png": (255, 255, 255),
        "opaque.png": (0, 0, 255),
        "gray_alpha.png": (50, 50, 50),
        "palette.png": (200, 0, 200),
        "palette_transparent.png": (255, 255, 255),
        "cmyk.jpg": (255, 0, 0),
        "cmyk.tif": (0, 255, 0),
        "white16.png": (255, 255, 255),
        "mid16.png": (128, 128, 128),
        "int32.tif": (4, 4, 4),  # 1000 * 255 / 65535 = 3.9
        "exif_rotated.jpg": (255, 0, 0),
        "plain.bmp": (10, 20, 30),
    }


def karpathy_json(path: Path, images: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "dataset": "coco"}), encoding="utf-8")
    return path


def karpathy_entry(
    i: int, filename: str, split: str, colour: str, filepath: str | None = "train2014"
) -> dict:
    entry = {
        "filename": filename,
        "imgid": i,
        "cocoid": 1000 + i,
        "split": split,
        "sentences": [{"raw": c, "tokens": c.lower().split()} for c in captions_for(colour)],
        "sentids": [2 * i, 2 * i + 1],
    }
    if filepath is not None:
        entry["filepath"] = filepath
    return entry


def make_karpathy(tmp: Path, n_train: int = 8, n_restval: int = 2, n_val: int = 3, n_test: int = 3) -> Path:
    """``tmp/coco/{dataset_coco.json, train2014/, val2014/}``; returns the coco folder."""
    root = tmp / "coco"
    entries = []
    plan = [("train", n_train), ("restval", n_restval), ("val", n_val), ("test", n_test)]
    i = 0
    for split, n in plan:
        for _ in range(n):
            colour = WORDS[i % len(WORDS)]
            folder = "train2014" if split == "train" else "val2014"
            name = f"COCO_{folder}_{i:012d}.jpg"
            write_image(root / folder / name, colour, size=(40 + i, 30 + (i % 3)))
            entries.append(karpathy_entry(i, name, split, colour, folder))
            i += 1
    karpathy_json(root / "dataset_coco.json", entries)
    return root


def karpathy(root: Path, **kw) -> CocoKarpathy:
    cfg = CocoKarpathy.Config(
        annotations=str(root / "dataset_coco.json"), image_root=str(root), image_size=S, **kw
    )
    return CocoKarpathy(cfg)


def make_coco(tmp: Path, n_train: int = 8, n_val: int = 8) -> Path:
    """Official-format ``tmp/coco2014/{annotations/, train2014/, val2014/}``."""
    root = tmp / "coco2014"
    ann_id = 0
    for part, n, base in (("train", n_train, 10), ("val", n_val, 500)):
        images, anns = [], []
        for k in range(n):
            image_id = base + 3 * k
            colour = WORDS[k % len(WORDS)]
            name = f"COCO_{part}2014_{image_id:012d}.jpg"
            write_image(root / f"{part}2014" / name, colour, size=(36 + k, 28))
            images.append({"id": image_id, "file_name": name, "height": 28, "width": 36 + k})
            for c in captions_for(colour):
                ann_id += 1
                anns.append({"id": ann_id, "image_id": image_id, "caption": c + " \n"})
        doc = {"info": {}, "licenses": [], "images": images, "annotations": anns}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"captions_{part}2014.json").write_text(json.dumps(doc), encoding="utf-8")
    return root


def coco(root: Path, **kw) -> CocoDataset:
    opts = {"num_val": 3, "num_test": 3, **kw}
    cfg = CocoDataset.Config(
        train_annotations=str(root / "annotations" / "captions_train2014.json"),
        val_annotations=str(root / "annotations" / "captions_val2014.json"),
        train_images=str(root / "train2014"),
        val_images=str(root / "val2014"),
        image_size=S,
        **opts,
    )
    return CocoDataset(cfg)


def make_folder(tmp: Path, fmt: str = "jsonl", with_split: bool = True, n: int = 14) -> Path:
    root = tmp / f"folder_{fmt}"
    rows = []
    for k in range(n):
        colour = WORDS[k % len(WORDS)]
        name = f"sub/img{k:02d}.png" if k % 2 else f"img{k:02d}.jpg"
        write_image(root / name, colour, size=(30 + k, 24))
        split = "val" if k in (1, 2) else "test" if k in (3, 4) else "train"
        for c in captions_for(colour):
            rows.append({"image": name, "caption": c, **({"split": split} if with_split else {})})
    if fmt == "jsonl":
        (root / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    else:
        with open(root / "captions.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root


def folder(root: Path, **kw) -> FolderDataset:
    return FolderDataset(FolderDataset.Config(root=str(root), image_size=S, **kw))


def assert_images_ok(split: CaptionSplit) -> None:
    for i in range(len(split)):
        img = split.load_image(i)
        assert img.dtype == np.uint8 and img.shape == (S, S, 3)


# -- image decoding ---------------------------------------------------------------------------------
def test_load_rgb_handles_every_mode(tmp_path):
    expected = odd_images(tmp_path / "odd")
    for name, rgb in expected.items():
        img = load_rgb(tmp_path / "odd" / name, S)
        assert img.dtype == np.uint8 and img.shape == (S, S, 3), name
        tol = 12 if name.endswith(".jpg") else 1
        assert np.abs(img[2, 2].astype(int) - rgb).max() <= tol, (name, img[2, 2], rgb)
        native = load_rgb(tmp_path / "odd" / name)  # no resize: native size, still RGB
        assert native.ndim == 3 and native.shape[2] == 3 and native.dtype == np.uint8


def test_exif_orientation_is_applied(tmp_path):
    odd_images(tmp_path)
    img = load_rgb(tmp_path / "exif_rotated.jpg")
    assert img.shape == (40, 20, 3)  # stored 40 wide x 20 high, displayed 20 wide x 40 high
    assert img[2, 10, 0] > 200 and img[2, 10, 2] < 50  # red on top
    assert img[-3, 10, 2] > 200 and img[-3, 10, 0] < 50  # blue at the bottom


def test_resize_modes(tmp_path):
    path = tmp_path / "wide.png"
    im = Image.new("RGB", (64, 16), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 8, 16))  # a blue strip on the far left
    im.save(path)
    stretch = load_rgb(path, S, "stretch")
    crop = load_rgb(path, S, "crop")
    pad = load_rgb(path, S, "pad")
    assert stretch.shape == crop.shape == pad.shape == (S, S, 3)
    assert stretch[S // 2, 0, 2] > 200  # the left strip survives a stretch ...
    assert crop[S // 2, 0, 0] > 200  # ... and is cropped away by a centre crop
    assert tuple(pad[0, S // 2]) == PAD_COLOUR and pad[S // 2, S // 2, 0] > 200  # grey border, image centred
    with pytest.raises(ValueError):
        load_rgb(path, S, "squash")


@pytest.mark.parametrize("kind", ["truncated", "text", "empty", "garbage_png"])
def test_unreadable_files_raise_bad_image_error(tmp_path, kind):
    path = tmp_path / ("x.png" if kind == "garbage_png" else "x.jpg")
    if kind == "truncated":
        truncated_jpeg(path)
    elif kind == "text":
        path.write_text("not an image")
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    with pytest.raises(BadImageError) as err:
        load_rgb(path, S)
    assert str(path) in str(err.value) and "on_bad_image" in str(err.value)
    assert isinstance(err.value, DataError)


def test_safe_image_path(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    write_image(root / "sub" / "a.jpg", "red")
    outside = tmp_path / "secret.jpg"
    write_image(outside, "blue")
    (root / "escape.jpg").symlink_to(outside)
    (root / "inside.jpg").symlink_to(root / "sub" / "a.jpg")
    assert safe_image_path(root, "sub/a.jpg") == root / "sub" / "a.jpg"
    assert safe_image_path(root, "inside.jpg") == root / "inside.jpg"  # a symlink within the root is fine
    bad = {
        "../secret.jpg": "'..'",
        "sub/../../secret.jpg": "'..'",
        "..\\secret.jpg": "'..'",
        str(outside): "absolute",
        "/etc/passwd": "absolute",
        "C:\\Windows\\x.jpg": "absolute",
        "escape.jpg": "outside the root",
        "": "empty",
    }
    for rel, why in bad.items():
        with pytest.raises(UnsafePathError) as err:
            safe_image_path(root, rel)
        assert why in str(err.value) and str(root) in str(err.value), rel


def test_check_images_caches_verdicts(tmp_path, monkeypatch):
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    write_image(good, "red")
    truncated_jpeg(bad)
    assert set(check_images([good, bad], S)) == {bad}
    import fusionbench.data.images as images

    calls = []
    real = images._verdict
    monkeypatch.setattr(images, "_verdict", lambda p, s, r: calls.append(p) or real(p, s, r))
    assert set(check_images([good, bad], S)) == {bad}
    assert calls == []  # both verdicts came from the cache
    write_image(bad, "blue")  # fixed: a new mtime/size, so it is checked again
    os.utime(bad, ns=(1, 1))
    assert check_images([good, bad], S) == {}
    assert calls == [bad]


# -- Karpathy splits --------------------------------------------------------------------------------
def test_karpathy_coco_splits_images_and_references(tmp_path):
    root = make_karpathy(tmp_path)
    ds = karpathy(root)
    assert ds.splits() == ["train", "val", "test"] and ds.eval_splits() == ["test"]
    train, val, test = (ds.split(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (10, 3, 3)  # restval folded into train
    assert train.image_ids[:2] == [1000, 1001]  # cocoid
    assert test.references()[1013] == captions_for(WORDS[13 % 4])
    assert all(len(c) == 2 for c in train.captions)
    assert val.meta["files"][0] == "val2014/COCO_val2014_000000000010.jpg"
    assert val.meta["skipped"] == dict.fromkeys(SKIP_REASONS, 0)
    for split in (train, val, test):
        assert_images_ok(split)
    assert len(karpathy(root, restval="drop").split("train")) == 8
    assert DATASETS.get("coco_karpathy").obj is CocoKarpathy


@pytest.mark.parametrize("cls", [Flickr8k, Flickr30k])
def test_flickr_layout_without_filepath(tmp_path, cls):
    images = tmp_path / "images"
    entries = []
    for i, split in enumerate(["train"] * 4 + ["val", "test"]):
        write_image(images / f"{1000 + i}_abc.jpg", WORDS[i % 4])
        entry = karpathy_entry(i, f"{1000 + i}_abc.jpg", split, WORDS[i % 4], filepath=None)
        del entry["cocoid"]
        entries.append(entry)
    ann = karpathy_json(tmp_path / "dataset_flickr.json", entries)
    ds = cls(cls.Config(annotations=str(ann), image_root=str(images), image_size=S))
    assert ds.split("train").image_ids == [0, 1, 2, 3]  # imgid
    assert ds.split("test").references() == {5: captions_for(WORDS[1])}
    assert_images_ok(ds.split("val"))
    assert cls.Config().annotations.endswith(f"dataset_{ds.dataset_name}.json")
    assert ds.dataset_name in DATASETS.names()


def test_karpathy_captions_and_empty_images_are_counted(tmp_path):
    root = make_karpathy(tmp_path)
    ann = json.loads((root / "dataset_coco.json").read_text())
    ann["images"][0]["sentences"] = []  # an image without captions
    ann["images"][1]["sentences"][0]["raw"] = "   "  # one whitespace caption
    ann["images"][2]["sentences"] = [{"raw": ""}, {"raw": "\t\n"}]  # only empty captions
    karpathy_json(root / "dataset_coco.json", ann["images"])
    train = karpathy(root).split("train")
    assert train.meta["skipped"] == {
        "missing_images": 0,
        "bad_images": 0,
        "no_captions": 2,
        "empty_captions": 3,
    }
    assert len(train) == 8 and 1000 not in train.image_ids and 1002 not in train.image_ids
    assert train.references()[1001] == ["a plain green picture"]
    assert "train2014/COCO_train2014_000000000000.jpg" in train.meta["skipped_examples"]["no_captions"]


# -- official COCO ----------------------------------------------------------------------------------
def test_coco_official_splits_and_raw_references(tmp_path):
    root = make_coco(tmp_path)
    ds = coco(root)
    train, val, test = (ds.split(s) for s in ("train", "val", "test"))
    val_ids = [500 + 3 * k for k in range(8)]
    ordered = sorted(val_ids, key=split_order_key)
    assert val.image_ids == ordered[:3] and test.image_ids == ordered[3:6]
    assert len(train) == 8 + 2  # restval folded in
    assert set(ordered[6:]) <= set(train.image_ids)
    k = val_ids.index(val.image_ids[0])
    assert val.references()[val.image_ids[0]] == [
        c + " \n" for c in captions_for(WORDS[k % 4])
    ]  # raw, as written
    for split in (train, val, test):
        assert_images_ok(split)
    assert len(coco(root, restval="drop").split("train")) == 8
    assert len(coco(root, num_test=-1).split("test")) == 5
    with pytest.raises(DataError, match="num_val"):
        coco(root, num_val=6, num_test=3).split("train")


def test_coco_uncaptioned_images_and_orphan_annotations(tmp_path):
    root = make_coco(tmp_path)
    path = root / "annotations" / "captions_train2014.json"
    doc = json.loads(path.read_text())
    first = doc["images"][0]["id"]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != first]
    doc["annotations"].append({"id": 999, "image_id": 424242, "caption": "orphan"})
    doc["annotations"][0]["caption"] = " "
    path.write_text(json.dumps(doc))
    ds = coco(root)
    train = ds.split("train")
    assert train.meta["skipped"]["no_captions"] == 1 and train.meta["skipped"]["empty_captions"] == 1
    assert first not in train.image_ids
    assert ds.problems.counts["all"]["orphan_annotations"] == 1


# -- folder -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_folder_with_split_column(tmp_path, fmt):
    root = make_folder(tmp_path, fmt)
    ds = folder(root)
    assert ds.splits() == ["train", "val", "test"]
    val = ds.split("val")
    assert val.meta["files"] == ["img02.jpg", "sub/img01.png"]  # sorted names
    assert val.references() == {2: captions_for("blue"), 8: captions_for("green")}  # ids: sorted position
    assert len(ds.split("train")) == 10 and len(ds.split("test")) == 2
    for s in ds.splits():
        assert_images_ok(ds.split(s))


def test_folder_without_split_is_deterministic(tmp_path):
    root = make_folder(tmp_path, "csv", with_split=False, n=20)
    a, b = folder(root), folder(root, val_fraction=0.1, test_fraction=0.1)
    sizes = {s: len(a.split(s)) for s in a.splits()}
    assert sizes == {"train": 16, "val": 2, "test": 2}
    assert all(a.split(s).image_ids == b.split(s).image_ids for s in a.splits())
    names = [f"x{i}.jpg" for i in range(3)]
    assert sorted(assign_splits(names, 0.1, 0.1).values()) == ["test", "train", "val"]  # at least one each
    assert assign_splits(names[::-1], 0.1, 0.1) == assign_splits(names, 0.1, 0.1)  # order-free


def test_folder_extra_split_mixed_assignment_and_uncaptioned_files(tmp_path):
    root = tmp_path / "f"
    rows = []
    for k in range(12):
        write_image(root / f"{k}.png", WORDS[k % 4])
        split = "ood" if k < 2 else ""  # two images in an extra split, the rest assigned by hash
        rows.append({"image": f"./{k}.png", "caption": f"a {WORDS[k % 4]} thing", "split": split})
    rows.append({"image": "3.png", "caption": "   ", "split": ""})  # dropped, counted
    write_image(root / "extra" / "lonely.jpg", "red")  # no caption row
    (root / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = folder(root, val_fraction=0.2, test_fraction=0.2)
    assert ds.splits() == ["train", "val", "test", "ood"] and ds.eval_splits() == ["test", "ood"]
    assert ds.split("ood").meta["files"] == ["0.png", "1.png"]
    assert sum(len(ds.split(s)) for s in ds.splits()) == 12
    assert sum(ds.split(s).meta["skipped"]["empty_captions"] for s in ds.splits()) == 1
    assert ds.problems.counts["all"] == {"uncaptioned_files": 1}


def test_folder_config_and_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.root is not set"):
        FolderDataset(FolderDataset.Config())
    with pytest.raises(ConfigError, match="val_fraction"):
        FolderDataset(FolderDataset.Config(root="x", val_fraction=0.6, test_fraction=0.5))
    with pytest.raises(ConfigError, match="on_bad_image"):
        FolderDataset(FolderDataset.Config(root="x", on_bad_image="ignore"))
    with pytest.raises(DataError, match="does not exist"):
        folder(tmp_path / "nowhere").split("train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="captions.jsonl"):
        folder(tmp_path / "empty").split("train")
    root = make_folder(tmp_path, "csv")
    (root / "captions.csv").write_text("file,text\na.jpg,hello\n")
    with pytest.raises(DataError, match="no 'image' column"):
        folder(root).split("train")
    (root / "captions.csv").write_text("image,caption,split\nimg00.jpg,a,train\nimg00.jpg,b,test\n")
    with pytest.raises(DataError, match="belongs to one split"):
        folder(root).split("train")
    (root / "captions.csv").unlink()
    (root / "captions.jsonl").write_text('{"image": "img00.jpg", "caption": "x"}\n{"image": "img00.jpg"}\n')
    with pytest.raises(DataError, match=r"captions.jsonl:2 has no 'caption' key"):
        folder(root).split("train")
    (root / "captions.jsonl").write_text('{"image": "img00.jpg", "caption": "x"\n')
    with pytest.raises(DataError, match=r"captions.jsonl:1 is not valid JSON"):
        folder(root).split("train")


def test_folder_zero_image_split_names_the_values_found(tmp_path):
    root = make_folder(tmp_path, "csv")
    text = (root / "captions.csv").read_text().replace(",val", ",train")
    (root / "captions.csv").write_text(text)
    with pytest.raises(DataError) as err:
        folder(root).split("train")
    msg = str(err.value)
    assert "Split 'val'" in msg and "zero images" in msg and "test (2), train (12)" in msg


# -- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rel, why",
    [("../outside.jpg", "'..'"), ("/tmp/x.jpg", "absolute"), ("train2014/link.jpg", "outside the root")],
)
def test_paths_escaping_the_root_are_rejected(tmp_path, rel, why):
    root = make_karpathy(tmp_path)
    write_image(tmp_path / "outside.jpg", "red")
    (root / "train2014" / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    ann = json.loads((root / "dataset_coco.json").read_text())
    ann["images"][0]["filepath"] = ""
    ann["images"][0]["filename"] = rel
    karpathy_json(root / "dataset_coco.json", ann["images"])
    with pytest.raises(DataError) as err:
        karpathy(root).split("train")
    assert "leave the image root" in str(err.value) and why in str(err.value) and rel in str(err.value)


def _with_bad_files(root: Path) -> None:
    truncated_jpeg(root / "train2014" / "COCO_train2014_000000000000.jpg")
    (root / "train2014" / "COCO_train2014_000000000001.jpg").write_text("not an image")


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    root = make_karpathy(tmp_path)
    _with_bad_files(root)
    train = karpathy(root).split("train")
    assert train.meta["skipped"]["bad_images"] == 2 and len(train) == 8
    assert any("truncated" in e for e in train.meta["skipped_examples"]["bad_images"])
    assert_images_ok(train)


def test_corrupt_images_fail_with_on_bad_image_error(tmp_path):
    root = make_karpathy(tmp_path)
    _with_bad_files(root)
    with pytest.raises(DataError) as err:
        karpathy(root, on_bad_image="error").split("train")
    msg = str(err.value)
    assert "2 image(s)" in msg and "COCO_train2014_000000000000.jpg" in msg and "on_bad_image=skip" in msg


def test_odd_image_modes_load_in_a_dataset(tmp_path):
    root = tmp_path / "odd"
    expected = odd_images(root)
    rows = [{"image": name, "caption": "an odd image", "split": "train"} for name in expected]
    write_image(root / "v.jpg", "red")
    write_image(root / "t.jpg", "blue")
    rows += [
        {"image": "v.jpg", "caption": "red", "split": "val"},
        {"image": "t.jpg", "caption": "blue", "split": "test"},
    ]
    (root / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    train = folder(root).split("train")
    assert len(train) == len(expected) and train.meta["skipped"]["bad_images"] == 0
    for i, name in enumerate(train.meta["files"]):
        img = train.load_image(i)
        assert img.shape == (S, S, 3)
        assert np.abs(img[2, 2].astype(int) - expected[name]).max() <= 12, name


def test_missing_files_are_listed_before_training(tmp_path):
    root = make_karpathy(tmp_path, n_train=14)
    for k in range(12):
        (root / "train2014" / f"COCO_train2014_{k:012d}.jpg").unlink()
    with pytest.raises(DataError) as err:
        karpathy(root).split("train")
    msg = str(err.value)
    assert "12 of 22 images" in msg and "(2 more)" in msg and "data.image_root" in msg
    assert "COCO_train2014_000000000000.jpg" in msg and "COCO_train2014_000000000011.jpg" not in msg
    train = karpathy(root, on_missing="skip").split("train")
    assert train.meta["skipped"]["missing_images"] == 12 and len(train) == 4
    assert len(train.meta["skipped_examples"]["missing_images"]) == 10


def test_non_utf8_json_names_the_byte_offset(tmp_path):
    root = make_karpathy(tmp_path)
    raw = (root / "dataset_coco.json").read_bytes().replace(b"A red square.", b"A caf\xe9 square.", 1)
    (root / "dataset_coco.json").write_bytes(raw)
    offset = raw.index(b"\xe9")
    with pytest.raises(DataError) as err:
        karpathy(root).split("train")
    assert f"byte offset {offset}" in str(err.value) and "UTF-8" in str(err.value)


@pytest.mark.parametrize(
    "doc, expected",
    [
        ([1, 2], "the top level must be an object"),
        ({"pictures": []}, "has no 'images' key"),
        ({"images": {"a": 1}}, "'images' must be a list"),
        ({"images": [{"filename": "a.jpg", "imgid": 0, "sentences": []}]}, "has no 'split' key"),
        ({"images": [{"filename": "a.jpg", "imgid": 0, "split": "dev", "sentences": []}]}, "has split 'dev'"),
        ({"images": [{"filename": "a.jpg", "split": "train", "sentences": []}]}, "has no 'imgid'"),
        ({"images": [{"filename": "a.jpg", "imgid": 0, "split": "train"}]}, "has no 'sentences' key"),
        (
            {"images": [{"filename": "a.jpg", "imgid": 0, "split": "train", "sentences": [{"tokens": []}]}]},
            "sentences[0] (a.jpg) has no 'raw' key",
        ),
        ({"images": []}, "'images' is empty"),
    ],
)
def test_wrong_json_shape_names_the_key_and_layout(tmp_path, doc, expected):
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(doc))
    ds = CocoKarpathy(CocoKarpathy.Config(annotations=str(path), image_root=str(tmp_path), image_size=S))
    with pytest.raises(DataError) as err:
        ds.split("train")
    assert expected in str(err.value) and "Expected layout" in str(err.value) and str(path) in str(err.value)


def test_coco_wrong_shape_and_invalid_json(tmp_path):
    root = make_coco(tmp_path)
    path = root / "annotations" / "captions_val2014.json"
    path.write_text(json.dumps({"images": [], "annotations": [{"image_id": 1}]}))
    with pytest.raises(DataError, match=r"annotations\[0\] has no 'caption' key"):
        coco(root).split("train")
    path.write_text('{"images": [')
    with pytest.raises(DataError, match="is not valid JSON.*line 1"):
        coco(root).split("train")
    path.unlink()
    with pytest.raises(DataError, match="data.val_annotations: .* does not exist"):
        coco(root).split("train")


def test_split_with_zero_images(tmp_path):
    root = make_karpathy(tmp_path, n_val=0)
    with pytest.raises(DataError) as err:
        karpathy(root).split("train")
    assert "Split 'val'" in str(err.value) and "zero images" in str(err.value) and "test: 3" in str(err.value)
    root = make_karpathy(tmp_path / "b", n_test=2)
    for k in (13, 14):  # every test image corrupt: empty after skipping
        (root / "val2014" / f"COCO_val2014_{k:012d}.jpg").write_text("broken")
    with pytest.raises(DataError, match="Split 'test'.*after leaving out.*bad_images: 2"):
        karpathy(root).split("train")


def test_duplicate_image_ids(tmp_path):
    root = make_karpathy(tmp_path)
    ann = json.loads((root / "dataset_coco.json").read_text())
    ann["images"][1]["cocoid"] = ann["images"][0]["cocoid"]
    karpathy_json(root / "dataset_coco.json", ann["images"])
    with pytest.raises(DataError, match="Image id 1000 is used twice"):
        karpathy(root).split("train")


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.restval"):
        CocoKarpathy(CocoKarpathy.Config(restval="keep"))
    with pytest.raises(ConfigError, match="data.image_size"):
        CocoKarpathy(CocoKarpathy.Config(image_size=4))
    with pytest.raises(ConfigError, match="data.resize"):
        CocoDataset(CocoDataset.Config(resize="squash"))
    with pytest.raises(ConfigError, match="data.num_test"):
        CocoDataset(CocoDataset.Config(num_test=0))


# -- data module --------------------------------------------------------------------------------------
def test_file_broken_after_the_check_does_not_crash_the_epoch(tmp_path, caplog):
    root = make_karpathy(tmp_path)
    train = karpathy(root).split("train")
    train.image_paths[0].write_text("broken after the check")
    item = _image_item(train, 0)
    assert item["image"].shape == (S, S, 3) and tuple(item["image"][0, 0]) == PAD_COLOUR
    assert train.meta["bad_after_check"] == [str(train.image_paths[0])]
    train.meta["on_bad_image"] = "error"
    with pytest.raises(BadImageError):
        _image_item(train, 0)


def test_collate_names_images_of_different_sizes():
    items = [
        {"image": np.zeros((8, 8, 3), np.uint8), "image_id": 1},
        {"image": np.zeros((9, 8, 3), np.uint8), "image_id": 2},
    ]
    with pytest.raises(DataError, match="different sizes.*image_size"):
        Collate(0)(items)


# -- stats ----------------------------------------------------------------------------------------------
def test_dataset_stats_counts_problems_without_failing(tmp_path):
    root = make_karpathy(tmp_path)
    _with_bad_files(root)
    (root / "val2014" / "COCO_val2014_000000000010.jpg").unlink()
    ds = karpathy(root)  # on_missing=error: a run would stop, stats still report
    stats = dataset_stats(ds)
    json.dumps(stats)
    train, val = stats["splits"]["train"], stats["splits"]["val"]
    assert train["images"] == 8 and train["bad_images"] == 2 and val["missing_images"] == 1
    assert train["captions"] == 16 and train["captions_per_image"] == {"min": 2, "mean": 2.0, "max": 2}
    assert train["caption_length"]["min"] == 3 and train["caption_length"]["max"] == 4
    assert train["caption_length"]["histogram"]["0-4"] == 16
    assert stats["vocabulary"]["train"] == len({"a", "plain", "picture", "square", *WORDS})
    assert val["oov_rate"] == 0.0 and "oov_rate" not in train
    assert stats["totals"]["bad_images"] == 2 and stats["totals"]["missing_images"] == 1
    assert "COCO_val2014_000000000010.jpg" in val["examples"]["missing_images"][0]

    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(format_stats(stats))
    text = console.export_text()
    assert "coco_karpathy" in text and "corrupt" in text and "missing" in text

    report = data_report(karpathy(root, on_missing="skip"))
    assert report["train"] == {"images": 8, **dict.fromkeys(SKIP_REASONS, 0), "bad_images": 2}
    assert report["val"]["missing_images"] == 1


def test_stats_of_shapes_and_folder_problems(tmp_path):
    shapes = DATASETS.build(
        {"name": "shapes", "num_train": 8, "num_val": 4, "num_test": 4, "num_test_novel": 4}
    )
    stats = dataset_stats(shapes)
    assert set(stats["splits"]) == {"train", "val", "test", "test_novel"}
    assert stats["splits"]["train"]["captions_per_image"]["min"] == 5
    root = make_folder(tmp_path)
    write_image(root / "stray.png", "red")
    assert dataset_stats(folder(root))["problems"]["uncaptioned_files"] == {
        "count": 1,
        "examples": ["stray.png"],
    }


# -- end to end: train and evaluate on every format ----------------------------------------------------
def _build_for_e2e(kind: str, tmp: Path) -> list[str]:
    if kind == "coco_karpathy":
        root = make_karpathy(tmp, n_train=10, n_restval=2, n_val=3, n_test=3)
        truncated_jpeg(root / "train2014" / "COCO_train2014_000000000000.jpg")  # skipped, counted
        return [f"data.annotations={root / 'dataset_coco.json'}", f"data.image_root={root}"]
    if kind == "coco":
        root = make_coco(tmp, n_train=10, n_val=8)
        return [
            f"data.train_annotations={root / 'annotations' / 'captions_train2014.json'}",
            f"data.val_annotations={root / 'annotations' / 'captions_val2014.json'}",
            f"data.train_images={root / 'train2014'}",
            f"data.val_images={root / 'val2014'}",
            "data.num_val=3",
            "data.num_test=3",
        ]
    root = make_folder(tmp, kind.split("_")[1])
    (root / "img06.jpg").write_text("corrupt")
    return [f"data.root={root}"]


@pytest.mark.parametrize("kind", ["coco_karpathy", "coco", "folder_jsonl", "folder_csv"])
def test_train_and_evaluate_end_to_end(tmp_path, tiny_config, kind):
    from fusionbench.config import load_config
    from fusionbench.experiment import run_experiment

    overrides = [
        f"data.name={kind.split('_')[0] if kind.startswith('folder') else kind}",
        *_build_for_e2e(kind, tmp_path / "data"),
        f"data.image_size={S}",
        f"output_dir={tmp_path / 'runs'}",
        "threads=1",
        "trainer.max_epochs=1",
        "loader.batch_size=8",
        "decoding.beam_size=1",
    ]
    cfg = load_config(tiny_config, overrides)
    assert cfg.data.image_size == S and "num_train" not in cfg.data
    metrics = run_experiment(cfg, progress=False)
    assert set(metrics["test"]) >= {"Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}
    preds = json.loads((Path(metrics["run_dir"]) / "predictions.json").read_text())
    dataset = DATASETS.build(cfg.data)
    assert sorted(p["image_id"] for p in preds) == sorted(dataset.split("test").image_ids)
    skipped = sum(dataset.split(s).meta["skipped"]["bad_images"] for s in dataset.splits())
    assert skipped == (0 if kind == "coco" else 1)
    assert isinstance(dataset, ImageFileDataset)
