"""The grid results store: one JSON line per cell attempt in ``<output_dir>/<grid>/results.jsonl``.

Appends are one ``write`` of a complete line under an exclusive ``flock``, followed by ``fsync``,
so two processes (``--jobs``, or two grid invocations) never interleave or half-write a record.
Readers take the last record of each cell. ``grid.json`` beside it records which grid file owns
the folder, so results of two different grids never mix, and the grid's ``leaderboard`` settings
(which split ranks it), so a leaderboard rebuilt from the folder later ranks as the grid said.

A record names its cell, its ``status`` (``running``, ``completed``, ``failed``, ``interrupted``)
and what the attempt did: ``action`` ``train`` (records written before the field existed are
training attempts too) or ``re-evaluate`` (the trained checkpoint tested with other test-time
settings). ``hash`` covers everything that can change the cell's results, ``train_hash`` what its
trained checkpoint depends on, and ``evaluation`` holds the test-time settings (decoding, scoring,
extra metrics) the results were computed with (``fusionbench.grid.spec``).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fusionbench.errors import ConfigError
from fusionbench.io import atomic_write_json


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The current commit of the working directory's git checkout (``+dirty`` if modified), or None."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


# The installed packages whose versions change a cell's numbers (initialisation, kernels, data
# pipeline, seeding, scores): recorded with every cell, shown in the leaderboard's header, and pinned
# in the repo's constraints.txt so a fresh install reproduces the committed leaderboard bit for bit.
NUMERICS_PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "transformers",
    "pytorch-lightning",
    "torchmetrics",
    "numpy",
    "pillow",
    "pycocoevalcap",
)


def package_versions(names: tuple[str, ...] = NUMERICS_PACKAGES) -> dict[str, str]:
    """``{package: installed version}`` (read from the installed metadata, nothing imported)."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class ResultsStore:
    """Append-only JSONL of cell records for one grid."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "results.jsonl"

    def claim(
        self,
        grid_name: str,
        source: Path,
        force: bool = False,
        leaderboard: dict[str, Any] | None = None,
        settings: list[dict[str, Any]] | None = None,
    ) -> None:
        """Mark the folder as this grid's; a folder written by another grid file is an error.

        ``leaderboard`` (the grid's ``grid.leaderboard`` settings, plain values) is recorded beside
        the owner, and so are ``settings`` (its ``grid.settings`` rules, which the leaderboard's
        header names); neither decides ownership."""
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / "grid.json"
        mine = {"grid": grid_name, "source": source.name}
        if manifest.is_file() and not force:
            theirs = json.loads(manifest.read_text(encoding="utf-8"))
            if {k: theirs.get(k) for k in mine} != mine:
                raise ConfigError(
                    f"Results folder '{self.folder}' belongs to grid '{theirs.get('grid')}' from "
                    f"'{theirs.get('source')}', not to '{source.name}'. Give this grid another `name:` "
                    f"(or output_dir=...), or pass --force to take the folder over."
                )
        extra = {"leaderboard": dict(leaderboard)} if leaderboard is not None else {}
        if settings:
            extra["settings"] = [dict(rule) for rule in settings]
        atomic_write_json(manifest, {**mine, **extra, "updated_at": now_iso()})

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record, in order (a torn last line, should one exist, is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last record of each cell."""
        return {r["cell"]: r for r in self.records() if "cell" in r}

    def trained(self) -> dict[str, dict[str, Any]]:
        """Per cell, the last ``completed`` record not followed by a training attempt: the attempt
        whose trained checkpoint is in the run folder now. Re-evaluations (completed, failed or
        interrupted) leave the checkpoint as it is; a later training attempt replaces it."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.records():
            cell = r.get("cell")
            if cell is None:
                continue
            if r.get("status") == "completed":
                out[cell] = r
            elif r.get("action", "train") == "train":
                out.pop(cell, None)
        return out
