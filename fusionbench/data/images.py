"""Image files: safe paths under an image root, robust decoding to RGB, a cached verification pass.

Real datasets (``coco_karpathy``, ``flickr8k``, ``flickr30k``, ``coco``, ``folder``) name their
images by a path relative to an image root. Three things happen to every such path:

1. ``safe_image_path`` rejects a path that could read outside the root: ``..`` components,
   absolute paths (POSIX ``/x``, Windows ``C:\\x`` or ``\\\\server\\x``) and symlinks whose target
   lies outside the root. An annotation file is data, and data must not choose which files of the
   machine are read.
2. ``load_rgb`` decodes the file to uint8 ``[size, size, 3]`` RGB, whatever its storage:

   - EXIF orientation is applied first (``ImageOps.exif_transpose``): a phone photo stored
     sideways with an orientation tag comes out the way it is displayed;
   - ``1``/``L`` (grayscale) are replicated to three channels; ``P`` (palette) is expanded;
     ``CMYK`` and ``YCbCr`` use Pillow's conversion (no ICC colour management);
   - 16-bit grayscale (``I;16*``, and ``I`` with values in 0..65535) is scaled to 8 bits
     (``round(v * 255 / 65535)``), not clipped; other ``I`` and ``F`` images are min-max stretched
     (``F`` in [0, 1] is scaled by 255);
   - transparency (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, a palette or RGB image
     with a ``transparency`` key) is composited on **white**, as a browser shows it: dropping the
     alpha channel instead would reveal whatever colour the transparent pixels happen to store
     (usually black);
   - then the image is resized to ``size`` x ``size`` (``resize``): ``stretch`` (default: the
     whole image, aspect ratio not kept, nothing a caption mentions is cut away), ``crop`` (shorter
     side to ``size``, centre crop) or ``pad`` (longer side to ``size``, centred on a grey
     border of the ImageNet mean colour). Pillow's bilinear filter is antialiased when shrinking.
     Files are decoded at full resolution (no reduced-scale JPEG ``draft``), so a file and the
     same picture given as a PIL image or array (``fusionbench.inference``) give the same pixels.

   A file that cannot be decoded (truncated, corrupt, not an image, unsupported mode, too large
   for Pillow's decompression-bomb limit) raises ``BadImageError`` naming the file and why.
3. ``check_images`` decodes every image once, before training, so that a bad file is found (and
   skipped or reported, ``on_bad_image``) before the first epoch instead of crashing it. Verdicts
   are cached in ``<cache>/image-checks/`` per folder, keyed by file name, modification time and
   size, so the pass is paid once per dataset and machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fusionbench.errors import DataError

log = logging.getLogger(__name__)

#: ``resize`` values: how an image becomes ``size`` x ``size``.
ResizeMode = Literal["stretch", "crop", "pad"]
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)
#: Border colour of ``resize: pad`` (the ImageNet mean, ~0 after the usual normalisation).
PAD_COLOUR = (124, 116, 104)
#: File extensions taken for images when a folder is scanned.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
#: Bump when ``load_rgb`` accepts or rejects files differently, so cached verdicts are redone.
CHECK_VERSION = 1
#: Threads of the verification pass (JPEG/PNG decoding releases the GIL).
MAX_CHECK_THREADS = 8


class BadImageError(DataError):
    """An image file exists but cannot be decoded (truncated, corrupt, not an image, ...)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"Cannot read image {path}: {reason}. Replace the file, or set data.on_bad_image=skip "
            f"to leave such images out (they are counted in the results)."
        )


class UnsafePathError(DataError):
    """An annotation names an image outside its image root."""

    def __init__(self, rel: str, root: Path, reason: str) -> None:
        self.rel = rel
        self.root = root
        self.reason = reason
        super().__init__(
            f"Image path {rel!r} is rejected: {reason} (image root {root}). Image paths must be "
            f"relative to the image root and stay inside it: no '..', no absolute paths, no symlinks "
            f"pointing outside."
        )


# -- paths --------------------------------------------------------------------------------------
def safe_image_path(root: str | Path, rel: str) -> Path:
    """``root / rel``, after checking that it cannot leave ``root``.

    Rejects (``UnsafePathError``, a ``DataError``) an empty path, ``..`` components, absolute
    paths (POSIX or Windows style) and paths that resolve outside ``root`` through a symlink. A
    symlink that stays inside ``root`` is fine. Backslashes count as separators for these checks,
    so a Windows-written ``..\\x.jpg`` is rejected too.
    """
    root = Path(root)
    if not isinstance(rel, str) or not rel.strip():
        raise UnsafePathError(str(rel), root, "the path is empty")
    if "\x00" in rel:
        raise UnsafePathError(rel, root, "the path contains a NUL character")
    win = PureWindowsPath(rel)
    if PurePosixPath(rel).is_absolute() or win.drive or win.root:
        raise UnsafePathError(rel, root, "it is an absolute path")
    parts = rel.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafePathError(rel, root, "it contains '..'")
    path = root / rel
    try:
        real_root = root.resolve()
        real = path.resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise UnsafePathError(rel, root, f"it cannot be resolved ({err})") from None
    if real != real_root and not real.is_relative_to(real_root):
        raise UnsafePathError(rel, root, f"it resolves to {real}, outside the root (a symlink?)")
    return path


# -- decoding -----------------------------------------------------------------------------------
def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map a 16/32-bit integer or float single-channel image to uint8 (see module docstring)."""
    if mode in _SIXTEEN_BIT:
        wide = arr.astype(np.uint32)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    values = arr.astype(np.float64)
    if values.size == 0:
        return values.astype(np.uint8)
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if mode == "I" and lo >= 0 and hi <= 65535:  # 16-bit data in a 32-bit container (PNG, TIFF)
        return np.rint(values * 255 / 65535).astype(np.uint8)
    if mode == "F" and lo >= 0 and hi <= 1:
        return np.rint(np.nan_to_num(values) * 255).astype(np.uint8)
    span = hi - lo if hi > lo else 1.0
    return np.rint(np.nan_to_num((values - lo) / span) * 255).astype(np.uint8)


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as an 8-bit ``RGB`` image (modes, 16-bit scaling and transparency as documented)."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(im), mode)).convert("RGB")
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    if mode == "1":
        return im.convert("L").convert("RGB")
    return im.convert("RGB")


def resize_image(im: Image.Image, size: int, resize: str = "stretch") -> Image.Image:
    """An RGB PIL image resized to ``size`` x ``size`` by ``resize`` (stretch, crop or pad)."""
    if im.size == (size, size):
        return im
    bilinear = Image.Resampling.BILINEAR
    if resize == "crop":
        return ImageOps.fit(im, (size, size), bilinear)
    if resize == "pad":
        return ImageOps.pad(im, (size, size), bilinear, color=PAD_COLOUR)
    return im.resize((size, size), bilinear)


def load_rgb(path: str | Path, size: int | None = None, resize: str = "stretch") -> np.ndarray:
    """Decode an image file to uint8 RGB ``[size, size, 3]`` (``[H, W, 3]`` when ``size`` is None).

    EXIF orientation, colour modes, 16-bit data and transparency are handled as the module
    docstring describes. Raises ``BadImageError`` when the file cannot be decoded.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    try:
        with Image.open(path) as im:
            im.load()
            try:
                oriented = ImageOps.exif_transpose(im)
            except Exception:  # a malformed EXIF block: keep the stored orientation
                oriented = im
            rgb = to_rgb(oriented)
            if size:
                rgb = resize_image(rgb, int(size), resize)
            out = np.asarray(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise BadImageError(path, "the file does not exist") from None
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image file Pillow can identify") from None
    except Image.DecompressionBombError as err:
        raise BadImageError(path, f"too large to decode safely ({err})") from None
    except MemoryError:
        raise BadImageError(path, "out of memory while decoding") from None
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad data
        raise BadImageError(path, f"{type(err).__name__}: {err}") from None
    if out.ndim != 3 or out.shape[2] != 3:  # pragma: no cover - to_rgb always gives RGB
        raise BadImageError(path, f"decoded to shape {out.shape}, expected [H, W, 3]")
    return np.ascontiguousarray(out)


# -- verification pass --------------------------------------------------------------------------
def _cache_file(folder: Path) -> Path:
    from fusionbench.paths import cache_dir

    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:20]
    return cache_dir() / "image-checks" / f"v{CHECK_VERSION}-{digest}.json"


def _read_cache(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, data: dict[str, list]) -> None:
    from fusionbench.io import atomic_write_text

    try:
        atomic_write_text(path, json.dumps(data, separators=(",", ":")))
    except OSError as err:  # a read-only or full cache must not stop a run
        log.warning("Could not cache image checks at %s (%s); continuing without.", path, err)


def _verdict(path: Path, size: int | None, resize: str) -> str | None:
    try:
        load_rgb(path, size, resize)
        return None
    except BadImageError as err:
        return err.reason


def check_images(
    paths: Sequence[Path], size: int | None = None, resize: str = "stretch", *, use_cache: bool = True
) -> dict[Path, str]:
    """Decode every file once; returns ``{path: reason}`` for the files that cannot be read.

    Verdicts are cached per folder (see the module docstring); only new or changed files are
    decoded. Missing files must be filtered out by the caller (they are reported separately).
    """
    by_folder: dict[Path, list[Path]] = {}
    for p in paths:
        by_folder.setdefault(p.parent, []).append(p)
    bad: dict[Path, str] = {}
    todo: list[tuple[Path, str, list]] = []  # (path, cache key, [mtime_ns, size])
    caches: dict[Path, tuple[Path, dict[str, list]]] = {}
    for folder, files in by_folder.items():
        cache_path = _cache_file(folder)
        cache = _read_cache(cache_path) if use_cache else {}
        caches[folder] = (cache_path, cache)
        for p in files:
            try:
                st = p.stat()
            except OSError as err:
                bad[p] = f"cannot read the file ({err.strerror or err})"
                continue
            stamp = [st.st_mtime_ns, st.st_size]
            hit = cache.get(p.name)
            if isinstance(hit, list) and len(hit) == 3 and hit[:2] == stamp:
                if hit[2] is not None:
                    bad[p] = str(hit[2])
            else:
                todo.append((p, p.name, stamp))
    if not todo:
        return bad
    start = time.perf_counter()
    workers = min(MAX_CHECK_THREADS, os.cpu_count() or 1, max(1, len(todo) // 32))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            verdicts = list(pool.map(lambda t: _verdict(t[0], size, resize), todo))
    else:
        verdicts = [_verdict(p, size, resize) for p, _, _ in todo]
    for (p, key, stamp), verdict in zip(todo, verdicts):
        caches[p.parent][1][key] = [*stamp, verdict]
        if verdict is not None:
            bad[p] = verdict
    if use_cache:
        touched = {p.parent for p, _, _ in todo}
        for folder in touched:
            _write_cache(*caches[folder])
    log.info("Checked %d images in %.1f s (%d unreadable).", len(todo), time.perf_counter() - start, len(bad))
    return bad
