"""Feature files in the bottom-up-attention style: per image ``features [K, D]``, ``boxes [K, 4]``
and the image size; ``K`` may differ from image to image.

Two layouts, one reader (``FeatureStore``):

* a folder with one ``<image_id>.npz`` per image. Arrays: ``features`` ``[K, D]`` (float),
  optional ``boxes`` ``[K, 4]`` (x1, y1, x2, y2 in pixels), ``image_size`` ``[2]`` (height, width)
  or ``image_h``/``image_w``, optional ``scores`` ``[K]`` (detection confidence; the top
  ``max_boxes`` by score are kept), optional ``pooled`` ``[D]`` and ``grid`` ``[2]``. The names of
  the widely shared bottom-up-attention files (``x`` for features, ``bbox`` for boxes) are read too.
* one ``.h5``/``.hdf5`` file with a group per image id holding the same arrays (needs ``h5py``).

Either may carry a manifest (``manifest.json`` in the folder, a ``manifest`` attribute on the HDF5
root) written by ``fusionbench extract-features``: the feature width, the number of images and the
key of the encoder that produced them. Writers write to a temporary name and rename, so a reader
never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fusionbench.errors import ConfigError, DataError
from fusionbench.io import AtomicPath, atomic_write, atomic_write_json

MANIFEST = "manifest.json"
HDF5_SUFFIXES = (".h5", ".hdf5")
ALIASES = {"features": ("features", "x"), "boxes": ("boxes", "bbox")}


def _h5py(path: Path):
    try:
        import h5py
    except ImportError:
        raise ConfigError(
            f"Reading or writing the HDF5 feature file '{path}' needs h5py: pip install h5py "
            "(or use a folder of .npz files)."
        ) from None
    return h5py


def is_hdf5(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in HDF5_SUFFIXES


def _normalise(arrays: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """The canonical array names and shapes from one image's stored arrays."""
    out: dict[str, np.ndarray] = {}
    for name, aliases in ALIASES.items():
        for alias in aliases:
            if alias in arrays:
                out[name] = np.asarray(arrays[alias])
                break
    if "features" not in out:
        raise DataError(f"{where} has no 'features' array (found: {', '.join(sorted(arrays)) or 'nothing'}).")
    feats = out["features"]
    if feats.ndim != 2 or feats.shape[0] < 1:
        raise DataError(f"{where}: 'features' must be [K, D] with K >= 1, got shape {feats.shape}.")
    if "boxes" in out and out["boxes"].shape != (feats.shape[0], 4):
        raise DataError(
            f"{where}: 'boxes' must be [K, 4] with the same K as 'features' ({feats.shape[0]}), "
            f"got shape {out['boxes'].shape}."
        )
    if "image_size" in arrays:
        out["image_size"] = np.asarray(arrays["image_size"]).reshape(2)
    elif "image_h" in arrays and "image_w" in arrays:
        out["image_size"] = np.asarray(
            [int(np.asarray(arrays["image_h"])), int(np.asarray(arrays["image_w"]))]
        )
    elif "boxes" in out:
        raise DataError(
            f"{where} has boxes but no image size: add 'image_size' [height, width] (or image_h/image_w) "
            "so box geometry can be normalised."
        )
    else:
        out["image_size"] = np.asarray([1, 1])
    for name in ("scores", "pooled", "grid"):
        if name in arrays:
            out[name] = np.asarray(arrays[name])
    if "scores" in out and out["scores"].reshape(-1).shape[0] != feats.shape[0]:
        raise DataError(f"{where}: 'scores' must have K={feats.shape[0]} entries, got {out['scores'].shape}.")
    return out


def top_k(item: dict[str, np.ndarray], k: int | None) -> dict[str, np.ndarray]:
    """The ``k`` highest-scoring regions (stored order without scores), others dropped."""
    n = len(item["features"])
    if not k or n <= k:
        return item
    order = np.argsort(-item["scores"].reshape(-1), kind="stable")[:k] if "scores" in item else np.arange(k)
    out = dict(item)
    for name in ("features", "boxes", "scores"):
        if name in out:
            out[name] = out[name][order]
    return out


class FeatureStore:
    """Read per-image features from a folder of ``.npz`` files or one HDF5 file."""

    def __init__(
        self, path: str | os.PathLike, *, key: str = "features", max_boxes: int | None = None
    ) -> None:
        self.path = Path(path).expanduser()
        self.key = key
        self.max_boxes = max_boxes
        self.hdf5 = is_hdf5(self.path)
        if self.hdf5 and not self.path.is_file():
            raise ConfigError(f"{key}: the HDF5 feature file '{self.path}' does not exist.")
        if not self.hdf5 and not self.path.is_dir():
            raise ConfigError(
                f"{key}: '{self.path}' is not a folder of .npz feature files (or an .h5 file). Write one with "
                "`fusionbench extract-features <config> --out DIR`."
            )
        self._file = None
        self._pid = -1
        self.manifest = self._read_manifest()

    def _h5(self):
        if self._file is None or self._pid != os.getpid():  # h5py handles do not survive fork
            self._file = _h5py(self.path).File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def _read_manifest(self) -> dict[str, Any]:
        if self.hdf5:
            raw = self._h5().attrs.get("manifest")
            return json.loads(raw) if raw else {}
        file = self.path / MANIFEST
        return json.loads(file.read_text()) if file.is_file() else {}

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, -1
        return state

    def __contains__(self, image_id: int) -> bool:
        if self.hdf5:
            return str(int(image_id)) in self._h5()
        return (self.path / f"{int(image_id)}.npz").is_file()

    def missing(self, image_ids: Iterable[int]) -> list[int]:
        return [int(i) for i in image_ids if int(i) not in self]

    def load(self, image_id: int) -> dict[str, np.ndarray]:
        """One image's arrays, normalised (see the module doc), top ``max_boxes`` by score."""
        if self.hdf5:
            where = f"{self.path}[{int(image_id)}]"
            group = self._h5().get(str(int(image_id)))
            if group is None:
                raise DataError(f"{self.path} has no features for image {int(image_id)}.")
            arrays = {name: group[name][()] for name in group}
        else:
            file = self.path / f"{int(image_id)}.npz"
            where = str(file)
            try:
                with np.load(file, allow_pickle=False) as z:
                    arrays = {name: z[name] for name in z.files}
            except FileNotFoundError:
                raise DataError(f"No features for image {int(image_id)}: {file} does not exist.") from None
            except (OSError, ValueError) as err:
                raise DataError(f"Cannot read the feature file {file}: {err}") from None
        return top_k(_normalise(arrays, where), self.max_boxes)

    @property
    def dim(self) -> int:
        """The feature width ``D`` (from the manifest, else from the first file)."""
        if "dim" in self.manifest:
            return int(self.manifest["dim"])
        if self.hdf5:
            first = next(iter(self._h5()), None)
        else:
            first = next((p.stem for p in sorted(self.path.glob("*.npz")) if p.stem.isdigit()), None)
        if first is None:
            raise DataError(f"{self.key}: '{self.path}' holds no feature files.")
        return int(self.load(int(first))["features"].shape[1])


class FeatureWriter:
    """Write per-image features; ``close(manifest)`` publishes the manifest last.

    A folder is written as ``<image_id>.npz`` files (each atomically); an HDF5 file is written to a
    temporary name and renamed on ``close``, so an interrupted write leaves no file behind.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        self.hdf5 = is_hdf5(self.path)
        self.count = 0
        if self.hdf5:
            h5py = _h5py(self.path)
            self._pending = AtomicPath(self.path, fsync=False)  # renamed into place by close()
            try:
                self._file = h5py.File(self._pending.tmp, "w")
            except BaseException:
                self._pending.discard()
                raise
        else:
            self.path.mkdir(parents=True, exist_ok=True)

    def write(self, image_id: int, arrays: Mapping[str, np.ndarray]) -> None:
        if self.hdf5:
            group = self._file.require_group(str(int(image_id)))
            for name, value in arrays.items():
                if name in group:
                    del group[name]
                group.create_dataset(name, data=np.asarray(value))
        else:
            data = {k: np.asarray(v) for k, v in arrays.items()}
            # one small file per image, rewritten by a rerun: no fsync (as before)
            atomic_write(self.path / f"{int(image_id)}.npz", lambda f: np.savez(f, **data), fsync=False)
        self.count += 1

    def close(self, manifest: Mapping[str, Any]) -> None:
        if self.hdf5:
            self._file.attrs["manifest"] = json.dumps(dict(manifest))
            self._file.close()
            self._pending.commit()
        else:
            atomic_write_json(self.path / MANIFEST, dict(manifest))

    def abort(self) -> None:
        if self.hdf5:
            self._file.close()
            self._pending.discard()
