"""Atomic file writes: a result file is either the old one or the complete new one, never half.

Every writer goes through one recipe: write a temporary file beside the destination (same folder,
so the rename cannot cross file systems), optionally ``fsync`` it, then ``os.replace`` it over the
destination. The temporary file is created with ``os.open(..., 0o666)``, so the kernel applies the
process's umask (and a folder's default ACL) exactly as for a plain ``open(path, "w")``: under the
usual umask 0o022 a result file is 0o644, readable by teammates on a shared cluster.
(``tempfile.mkstemp`` would make every file 0o600.)

* ``atomic_write_text`` / ``atomic_write_json`` / ``atomic_write_bytes``: content in hand;
* ``atomic_write(path, write)``: ``write(f)`` fills a binary file object (``torch.save``,
  ``np.savez``, ``zipfile.ZipFile``, ``pickle.dump`` ...);
* ``AtomicPath``: for writers that open the path themselves and may keep it open a while
  (``h5py.File``); ``commit()`` publishes it, ``discard()`` removes it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_TMP_SUFFIX = ".tmp"


def _create_temp(path: Path) -> tuple[int, Path]:
    """An exclusive new file ``.<name>.<random>.tmp`` beside ``path``, mode 0o666 minus the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], *, fsync: bool = True) -> Path:
    """Call ``write(f)`` on a binary file object for a temporary file, then rename it to ``path``.

    ``fsync=True`` flushes the data to disk before the rename, so a crash right after leaves the
    complete new file or the old one (results, checkpoints). Pass ``False`` for many small,
    reproducible files (a dataset's images, a feature cache) where the flush costs more than a
    rewrite would. On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """``data`` written atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda f: f.write(data), fsync=fsync)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> Path:
    """``text`` as UTF-8, written atomically (see ``atomic_write``)."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | os.PathLike, data: Any, *, fsync: bool = True) -> Path:
    """JSON with readable indentation (keys in insertion order), written atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", fsync=fsync)


class AtomicPath:
    """A temporary path beside ``path`` for a writer that opens files by name; published on ``commit``.

    ``tmp`` exists (empty) from the start, with the umask's mode, so a writer that truncates it
    (``h5py.File(tmp, "w")``) keeps that mode. Use as a context manager (commit on success,
    discard on error) or call ``commit()``/``discard()`` yourself when the writer outlives a block.
    """

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        fd, self.tmp = _create_temp(self.path)
        os.close(fd)

    def commit(self) -> Path:
        """Rename the (closed) temporary file over ``path``."""
        try:
            if self.fsync:
                _fsync_path(self.tmp)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        """Remove the temporary file; ``path`` is untouched."""
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
