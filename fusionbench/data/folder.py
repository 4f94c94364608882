"""``folder``: your own images, captioned in a ``captions.jsonl`` or ``captions.csv`` beside them.

The quickest way to benchmark on your own data: a folder of images and one captions file.

Expected files::

    <root>/                         data.root (required)
        captions.jsonl              or captions.csv / captions.tsv (data.captions: auto-detected)
        beach.jpg
        city/street-01.png          image paths are relative to <root>; subfolders are fine
        ...

``captions.jsonl``: one JSON object per line; ``split`` is optional, other keys are ignored::

    {"image": "beach.jpg", "caption": "Two people walk along a sandy beach.", "split": "train"}
    {"image": "beach.jpg", "caption": "A couple strolling by the sea."}
    {"image": "city/street-01.png", "caption": "A busy street at night."}

``captions.csv`` (or ``.tsv``, tab-separated): a header row with ``image`` and ``caption`` and an
optional ``split`` column (other columns are ignored), standard CSV quoting::

    image,caption,split
    beach.jpg,"Two people walk along a sandy beach.",train
    city/street-01.png,A busy street at night.,test

Several rows for one image are several reference captions. ``split`` values (lower-cased) must
be ``train``, ``val``, ``test`` or another name made of letters, digits, ``_`` and ``-`` (an extra
evaluation split, scored like ``test``); the three standard splits must end up non-empty. An
image without a split value (no column, or an empty cell) is assigned deterministically: the
unassigned images are ordered by ``sha256`` of their path, the first ``round(test_fraction * n)``
go to ``test``, the next ``round(val_fraction * n)`` to ``val`` (at least one each when the
fraction is positive and there are three or more images), the rest to ``train``. The order
depends only on the names, so it is the same on every run and machine.

Image ids are positions (from 1) in the sorted list of image paths; ``split.meta["files"]`` maps
them back. Empty or whitespace-only captions are dropped and counted, an image left with none is
skipped and counted, and image files under ``root`` that no row mentions are counted in
``dataset.problems`` (``uncaptioned_files``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fusionbench.checks import Fraction, full_key
from fusionbench.data.base import (
    ImageFileDataset,
    ImageFileOptions,
    ImageRecord,
    SkipLog,
    read_text,
    type_name,
)
from fusionbench.data.images import IMAGE_EXTENSIONS
from fusionbench.errors import ConfigError, DataError
from fusionbench.registry import DATASETS

CAPTION_FILES = ("captions.jsonl", "captions.csv", "captions.tsv")
LAYOUT = """
captions.jsonl: {"image": "beach.jpg", "caption": "Two people on a beach.", "split": "train"}   (one object per line; split optional)
captions.csv:   header `image,caption[,split]`, then one row per caption
"""
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _norm(image: str) -> str:
    """Canonical spelling of an image path (``./a.jpg`` == ``a.jpg``; backslashes as ``/``)."""
    text = image.strip().replace("\\", "/")
    return str(PurePosixPath(text)) if text else ""


def assign_splits(names: list[str], val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Deterministic split per image name (see the module docstring)."""
    ordered = sorted(names, key=lambda n: hashlib.sha256(n.encode("utf-8")).hexdigest())
    n = len(ordered)

    def count(fraction: float) -> int:
        k = round(fraction * n)
        return max(k, 1) if fraction > 0 and n >= 3 else k

    n_test, n_val = count(test_fraction), count(val_fraction)
    out: dict[str, str] = {}
    for k, name in enumerate(ordered):
        out[name] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return out


@DATASETS.register("folder")
class FolderDataset(ImageFileDataset):
    """Your own images plus captions.jsonl / captions.csv (image, caption[, split]) in one folder.

    Layout (see ``fusionbench.data.folder`` for both file formats and the split rule)::

        <root>/captions.jsonl     {"image": "beach.jpg", "caption": "...", "split": "train"} per line
        <root>/beach.jpg
        <root>/city/street-01.png

    ``captions.csv`` instead (header row; ``split`` optional)::

        image,caption,split
        beach.jpg,"Two people walk along a sandy beach.",train
    """

    dataset_name = "folder"

    @dataclass
    class Config(ImageFileOptions):
        """Options of ``data`` when ``data.name: folder``."""

        root: str = ""  # required: the folder holding the images (and the captions file)
        captions: str = ""  # "" = auto (captions.jsonl / .csv / .tsv in root); relative to root
        val_fraction: Fraction = 0.1  # images without a split value going to val
        test_fraction: Fraction = 0.1  # ... and to test

        def check(self, key: str) -> None:
            if not str(self.root).strip():
                raise ConfigError(
                    f"{full_key(key, 'root')} is not set: point it at the folder holding your images and a "
                    f"captions.jsonl or captions.csv (e.g. {full_key(key, 'root')}=my_images)."
                )
            if self.val_fraction + self.test_fraction >= 1:
                raise ConfigError(
                    f"{full_key(key, 'val_fraction')} + {full_key(key, 'test_fraction')} must stay below 1 "
                    f"(train needs images), got {self.val_fraction} + {self.test_fraction}."
                )

    @property
    def root(self) -> Path:
        return Path(self.config.root).expanduser()

    def captions_file(self) -> Path:
        """The captions file: ``data.captions`` (relative to root) or the one found in root."""
        root = self.root
        if not root.is_dir():
            raise DataError(
                f"data.root: {root} {'is a file, not a folder' if root.exists() else 'does not exist'}. "
                f"Point data.root at the folder holding your images and captions file."
            )
        if self.config.captions:
            path = Path(self.config.captions).expanduser()
            return path if path.is_absolute() else root / path
        found = [root / name for name in CAPTION_FILES if (root / name).is_file()]
        if not found:
            raise DataError(
                f"No captions file in {root}: expected one of {', '.join(CAPTION_FILES)}, or set "
                f"data.captions to its path. Formats:{LAYOUT.rstrip()}"
            )
        if len(found) > 1:
            raise DataError(
                f"{root} has several captions files ({', '.join(p.name for p in found)}); set "
                f"data.captions to the one to use."
            )
        return found[0]

    def describe_source(self) -> str:
        try:
            return str(self.captions_file())
        except DataError:
            return str(self.root)

    def root_key(self) -> str:
        return "root"

    def splits(self) -> list[str]:
        return list(self.load())

    def empty_split_hint(self, name: str, sizes: dict[str, int]) -> str:
        found = ", ".join(f"{k} ({v})" for k, v in sorted(sizes.items())) or "none"
        return (
            f"Split values found (images): {found}. Give some images split '{name}' in the captions "
            f"file, or leave their split empty so they are assigned by data.val_fraction / "
            f"data.test_fraction (currently {self.config.val_fraction} / {self.config.test_fraction})."
        )

    # -- parsing ------------------------------------------------------------------------------------
    def _rows(self, path: Path) -> list[tuple[int, str, object, object]]:
        """``[(line, image, caption, split)]`` as written (types checked by the caller)."""
        text = read_text(path, "captions", f"Formats:{LAYOUT.rstrip()}")
        rows: list[tuple[int, str, object, object]] = []
        if path.suffix.lower() == ".jsonl":
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(
                        f"{path}:{lineno} is not valid JSON ({err.msg}, column {err.colno}). Each line "
                        f"must be one object.{LAYOUT.rstrip()}"
                    ) from None
                if not isinstance(obj, dict):
                    raise DataError(
                        f"{path}:{lineno} must be a JSON object, got {type_name(obj)}. Expected layout:{LAYOUT}"
                    )
                for key in ("image", "caption"):
                    if key not in obj:
                        raise DataError(
                            f"{path}:{lineno} has no '{key}' key (keys: {', '.join(map(repr, obj)) or 'none'}). "
                            f"Expected layout:{LAYOUT}"
                        )
                rows.append((lineno, obj["image"], obj["caption"], obj.get("split")))
            return rows
        if path.suffix.lower() not in (".csv", ".tsv"):
            raise DataError(
                f"data.captions: {path} must end in .jsonl, .csv or .tsv (which says its format)."
            )
        reader = csv.reader(
            io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ","
        )
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path} is empty: it needs a header row `image,caption[,split]`.")
            columns = [h.strip().lower() for h in header]
            for key in ("image", "caption"):
                if key not in columns:
                    raise DataError(
                        f"{path}: the header row {header!r} has no '{key}' column. The first row must "
                        f"name the columns: image,caption[,split]."
                    )
            ci, cc = columns.index("image"), columns.index("caption")
            cs = columns.index("split") if "split" in columns else None
            for row in reader:
                lineno = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) < len(columns):
                    raise DataError(
                        f"{path}:{lineno} has {len(row)} field(s), the header {len(columns)}; quote "
                        f'captions that contain commas ("...").'
                    )
                rows.append((lineno, row[ci], row[cc], row[cs] if cs is not None else None))
        except csv.Error as err:
            raise DataError(f"{path}:{reader.line_num} is not valid CSV: {err}.") from None
        return rows

    def read_records(self, log_: SkipLog) -> list[ImageRecord]:
        cfg = self.config
        path = self.captions_file()
        root = self.root
        captions: dict[str, list[str]] = {}
        split_of: dict[str, tuple[str, int]] = {}
        empty: list[tuple[str, int]] = []  # (image, line) of empty captions, counted once splits are known
        for lineno, image, caption, split in self._rows(path):
            where = f"{path}:{lineno}"
            if not isinstance(image, str) or not _norm(image):
                raise DataError(f"{where}: 'image' must be a non-empty path string, got {image!r}.")
            if not isinstance(caption, str):
                raise DataError(f"{where}: 'caption' must be a string, got {type_name(caption)}.")
            name = _norm(image)
            caps = captions.setdefault(name, [])
            if split is not None and not isinstance(split, str):
                raise DataError(f"{where}: 'split' must be a string or absent, got {type_name(split)}.")
            split = (split or "").strip().lower()
            if split:
                if not _SPLIT_NAME.match(split):
                    raise DataError(
                        f"{where}: split {split!r} is not a valid split name (letters, digits, _ and -; "
                        f"usually train, val or test)."
                    )
                if name in split_of and split_of[name][0] != split:
                    raise DataError(
                        f"{where}: image {name!r} has split {split!r}, but line {split_of[name][1]} gives "
                        f"it {split_of[name][0]!r}. An image belongs to one split."
                    )
                split_of[name] = (split, lineno)
            if caption.strip():
                caps.append(caption)
            else:
                empty.append((name, lineno))
        if not captions:
            raise DataError(f"{path} has no caption rows. Expected layout:{LAYOUT}")

        unassigned = [n for n in captions if n not in split_of]
        assigned = {n: s for n, (s, _) in split_of.items()}
        assigned.update(assign_splits(unassigned, cfg.val_fraction, cfg.test_fraction))
        for name, lineno in empty:
            log_.add(assigned[name], "empty_captions", f"{name} (line {lineno})")

        records: list[ImageRecord] = []
        for image_id, name in enumerate(sorted(captions), 1):
            split = assigned[name]
            if not captions[name]:
                log_.add(split, "no_captions", name)
                continue
            records.append(ImageRecord(image_id, name, root, captions[name], split))
        self._count_uncaptioned(set(captions))
        return records

    def _count_uncaptioned(self, named: set[str]) -> None:
        root = self.root
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for f in sorted(filenames):
                if Path(f).suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                rel = Path(dirpath, f).relative_to(root).as_posix()
                if rel not in named:
                    self.problems.add("all", "uncaptioned_files", rel)
