"""fusionbench.io: one atomic-write recipe whose files are readable as the umask allows."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fusionbench.io import AtomicPath, atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield lambda mask: os.umask(mask)
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_every_writer_makes_files_the_umask_allows(tmp_path, umask):
    atomic_write_text(tmp_path / "a.txt", "hello\n")
    atomic_write_json(tmp_path / "sub" / "b.json", {"x": 1})  # folders are created
    atomic_write_bytes(tmp_path / "c.bin", b"\x00\x01")
    atomic_write(tmp_path / "d.npz", lambda f: np.savez(f, x=np.arange(3)), fsync=False)
    with AtomicPath(tmp_path / "e.zip") as tmp:
        with zipfile.ZipFile(tmp, "w") as z:
            z.writestr("x.txt", "x")
    for name in ("a.txt", "sub/b.json", "c.bin", "d.npz", "e.zip"):
        assert mode(tmp_path / name) == 0o644, name
    assert (tmp_path / "a.txt").read_text() == "hello\n"
    assert json.loads((tmp_path / "sub" / "b.json").read_text()) == {"x": 1}
    assert np.load(tmp_path / "d.npz")["x"].tolist() == [0, 1, 2]
    assert zipfile.ZipFile(tmp_path / "e.zip").read("x.txt") == b"x"
    assert no_temp_files(tmp_path)

    umask(0o077)  # a private umask gives private files
    atomic_write_text(tmp_path / "a.txt", "again\n")
    assert mode(tmp_path / "a.txt") == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, umask):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"old": True})

    def half(f):
        f.write(b'{"new": ')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, half)
    with pytest.raises(RuntimeError):
        with AtomicPath(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"old": True}
    assert no_temp_files(tmp_path)


def test_feature_files_are_readable_by_the_group(tmp_path, umask):
    from fusionbench.features.store import FeatureStore, FeatureWriter

    writer = FeatureWriter(tmp_path / "feats")
    writer.write(7, {"features": np.ones((2, 3), np.float32)})
    writer.close({"dim": 3})
    assert mode(tmp_path / "feats" / "7.npz") == mode(tmp_path / "feats" / "manifest.json") == 0o644
    assert FeatureStore(tmp_path / "feats").load(7)["features"].shape == (2, 3)
    assert no_temp_files(tmp_path / "feats")
