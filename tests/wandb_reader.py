"""Read an offline W&B run back from disk (test helper; wandb 0.31 ships no Python reader).

``run-<id>.wandb`` is a LevelDB-style log: a 7-byte file header (``:W&B``, magic ``0xBEE1``,
version 0), then 32 KiB blocks of chunks, each with a 7-byte header ``crc32 (uint32 LE), length
(uint16 LE), type (uint8)`` where the CRC is zlib's CRC-32 of the type byte followed by the data,
and type is FULL (1), or FIRST (2) / MIDDLE (3) / LAST (4) for a record split across blocks. A
block tail shorter than a header is zero padding. Each record is a serialized
``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    ident, magic, version = HEADER.unpack_from(data, 0)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (ident, hex(magic), version)
    records, pending, pos = [], b"", HEADER.size
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:
            pos += left
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        if crc == 0 and length == 0 and kind == 0:  # zero padding at the end of a block
            pos += left
            continue
        chunk = data[pos + CHUNK.size : pos + CHUNK.size + length]
        assert len(chunk) == length, f"truncated chunk at byte {pos}"
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"bad CRC at byte {pos}"
        pos += CHUNK.size + length
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        elif kind == LAST:
            pending += chunk
        else:
            raise AssertionError(f"unknown chunk type {kind} at byte {pos}")
        record = pb.Record()
        record.ParseFromString(pending)
        records.append(record)
        pending = b""
    return records


def _set(tree: dict, keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        tree = tree.setdefault(k, {})
    tree[keys[-1]] = value


def _keys(item) -> list[str]:
    return list(item.nested_key) if item.nested_key else [item.key]


@dataclass
class OfflineRun:
    """What the transaction log says about one run."""

    folder: Path
    records: list[pb.Record]
    run: pb.RunRecord
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[pb.ArtifactRecord] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def tags(self) -> list[str]:
        return list(self.run.tags)

    @property
    def group(self) -> str:
        return self.run.run_group

    @property
    def job_type(self) -> str:
        return self.run.job_type

    @property
    def name(self) -> str:
        return self.run.display_name

    def table(self, key: str) -> dict[str, Any]:
        """The full JSON of a logged ``wandb.Table`` (its ``run_table`` artifact's staged file)."""
        for art in reversed(self.artifacts):  # the last logged version of the key
            if art.type != "run_table" or not art.name.startswith(f"run-{self.run.run_id}-"):
                continue
            for entry in art.manifest.contents:
                if entry.path == f"{key}.table.json":
                    return json.loads(Path(entry.local_path).read_text(encoding="utf-8"))
        raise KeyError(f"no table {key!r} in {self.folder}")


def read_run(folder: str | Path) -> OfflineRun:
    """``folder``: an ``offline-run-*`` directory holding ``run-<id>.wandb``."""
    folder = Path(folder)
    (log,) = folder.glob("run-*.wandb")
    records = read_records(log)
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs, f"no run record in {log}"
    out = OfflineRun(folder=folder, records=records, run=runs[0])
    for item in runs[0].config.update:
        _set(out.config, _keys(item), json.loads(item.value_json))
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "config":
            for item in record.config.update:
                _set(out.config, _keys(item), json.loads(item.value_json))
        elif kind == "summary":
            for item in record.summary.update:
                _set(out.summary, _keys(item), json.loads(item.value_json))
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                row[".".join(_keys(item))] = json.loads(item.value_json)
            out.history.append(row)
        elif kind == "artifact":
            out.artifacts.append(record.artifact)
        elif kind == "exit":
            out.exit_code = record.exit.exit_code
    return out
