"""Read back what W&B wrote offline (wandb 0.31 ships no Python reader for .wandb files)."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path


def parse_wandb_log(data: bytes) -> list:
    """Records of a ``run-<id>.wandb`` file: a 7-byte W&B header, then LevelDB log framing.

    wandb 0.31 ships no Python reader; the framing is LevelDB's log format (32 KiB blocks,
    7-byte record headers: crc32c, length, type FULL=1/FIRST=2/MIDDLE=3/LAST=4) and each
    payload is a ``wandb_internal_pb2.Record``. A record still being written is left out.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    assert data[:4] == b":W&B"
    records, pos, parts, block = [], 7, b"", 32 * 1024
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or kind == 0:
            pos += left
            continue
        if pos + 7 + length > len(data):
            break
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def read_wandb_log(path: Path, timeout: float = 10.0) -> list:
    """The run's records once its final `exit` record is on disk.

    `run.finish()` can return before wandb-core has flushed the file (seen with 0.31 offline).
    """
    deadline = time.monotonic() + timeout
    while True:
        records = parse_wandb_log(path.read_bytes())
        done = records and records[-1].WhichOneof("record_type") == "exit"
        if done or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def history(path: Path) -> list[dict]:
    """Logged rows; media values are nested dicts (``nested_key`` is their path)."""
    rows = []
    for r in read_wandb_log(path):
        if r.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in r.history.item:
            *parents, leaf = list(item.nested_key) or [item.key]
            node = row
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = json.loads(item.value_json)
        rows.append(row)
    return rows


def config(path: Path) -> dict:
    run = next(r.run for r in read_wandb_log(path) if r.WhichOneof("record_type") == "run")
    return {u.key: json.loads(u.value_json) for u in run.config.update}
