"""Read a W&B run back from its local ``run-<id>.wandb`` file, with no account and no network.

The file is a LevelDB-style log of protobuf ``Record`` messages (the format
``wandb sync`` uploads): a 7-byte header, then 32 KiB blocks of chunks, each with
a 7-byte header of checksum, length and type (full, first, middle, last).
Reports and tests use this to see exactly what a run logged.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK = 32 * 1024
_FILE_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version
_CHUNK_HEADER = struct.Struct("<IHB")  # crc32c, length, type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    ident, magic, _ = _FILE_HEADER.unpack_from(data)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a W&B run file")
    records, pending, pos = [], b"", _FILE_HEADER.size
    while pos + _CHUNK_HEADER.size <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER.size:  # the block's tail is padding
            pos += left_in_block
            continue
        _, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += left_in_block
            continue
        chunk = data[pos + _CHUNK_HEADER.size : pos + _CHUNK_HEADER.size + length]
        pos += _CHUNK_HEADER.size + length
        if kind == _FULL:
            records.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            records.append(pending + chunk)
            pending = b""
    return records


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class WandbRun:
    """What a run logged: its name, group and tags, history rows, the final summary, its
    config, saved files and artifacts (name -> ``{"type", "files": {path in the artifact:
    staged local copy}}``; tables with images and checkpoints are artifacts)."""

    run_id: str = ""
    name: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def metric(self, name: str) -> list[Any]:
        """Every logged value of a metric, in order."""
        return [row[name] for row in self.history if name in row]


def read_wandb_run(run_dir: str | Path) -> WandbRun:
    """Parse ``<run_dir>/run-<id>.wandb`` (``run_dir`` is ``.../wandb/offline-run-...``)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = Path(run_dir).glob("run-*.wandb")
    run = WandbRun()
    for raw in _records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
            run.name, run.group = record.run.display_name, record.run.run_group
            run.tags = list(record.run.tags)
            # The config given to wandb.init travels in the run record, later updates in
            # config records.
            for item in record.run.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "files":
            run.files.extend(f.path for f in record.files.files)
        elif kind == "artifact":
            art = record.artifact
            run.artifacts[art.name] = {
                "type": art.type,
                "files": {e.path: e.local_path for e in art.manifest.contents},
            }
    return run
