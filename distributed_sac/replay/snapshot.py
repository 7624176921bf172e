"""Incremental replay snapshots: each one writes only the chunks added since the previous one.

A snapshot folder holds ``part_<first>_<end>.npz`` files (chunks ``first`` to ``end - 1`` laid
end to end, at most ``PART_TRANSITIONS`` transitions each, plain arrays) and ``manifest.json``
(the live parts, the first live chunk, the replay's counters). Parts and manifest are written
atomically, the manifest last, and parts that hold no live chunk are deleted only after it: a
crash at any point leaves the previous snapshot whole. Copying a part out of the buffer holds
the replay's lock; writing it to disk does not, so sampling goes on while a snapshot is written.
Chunks that eviction takes while a snapshot is being written are left out of it (they were
going anyway): the manifest's first live chunk is the first one its parts hold without a gap.

A run's demonstrations are kept beside the parts (``demos.npz``, written once, atomically), so a
replay restarted from the snapshot holds them again.
"""

from __future__ import annotations

import json
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from distributed_sac.config.atomic import atomic_write
from distributed_sac.config.data import ChunkRun
from distributed_sac.replay.buffer import ReplayBuffer

PART_TRANSITIONS = 4096
"""Transitions per part file (about 30 MB at 84x84, 87 MB in RGB): the most copied under the
lock at once."""
MANIFEST = "manifest.json"
DEMOS = "demos.npz"
FORMAT_VERSION = 1


class SnapshotError(ValueError):
    """A snapshot folder that cannot be read back."""


class SnapshotWriter:
    """Writes snapshots of one buffer into ``folder``, each adding to the parts already there."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._parts: list[tuple[str, int, int]] = []  # (file name, first chunk, end chunk)
        self._end = 0
        self._writing = threading.Lock()

    def continue_from(self, manifest: dict) -> None:
        """Carry on after a restart from ``manifest`` (the buffer was restored from it)."""
        self._parts = [tuple(p) for p in manifest["parts"]]
        self._end = int(manifest["end_seq"])

    def write(
        self, lock: threading.Lock, buffer: ReplayBuffer, counters: Callable[[], dict]
    ) -> dict:
        """Snapshot ``buffer`` (guarded by ``lock``) and ``counters()`` (called under the
        lock, so they match the chunks); returns those counters."""
        with self._writing:
            with lock:
                layout = buffer.layout
                state, end, first_live = counters(), layout.chunks_added, layout.first_seq
                total_added = layout.total_added
            seq, new_parts = max(self._end, first_live), []
            while seq < end:
                with lock:
                    seq = max(seq, buffer.layout.first_seq)  # evicted meanwhile: gone anyway
                    if seq >= end:
                        break
                    run = buffer.run_since(seq, PART_TRANSITIONS)
                stop = min(seq + len(run.lengths), end)
                run = _head(run, stop - seq, buffer.stack)
                name = f"part_{seq:012d}_{stop:012d}.npz"
                atomic_write(self.folder / name, lambda f, r=run: np.savez(f, **r._asdict()))
                new_parts.append((name, seq, stop))
                seq = stop
            parts = [p for p in self._parts if p[2] > first_live] + new_parts
            first_live, parts = _contiguous(parts, first_live, end)
            manifest = {
                "format_version": FORMAT_VERSION,
                "first_live_seq": first_live,
                "end_seq": end,
                "total_added": total_added,
                "parts": parts,
                "counters": state,
            }
            text = json.dumps(manifest).encode()
            atomic_write(self.folder / MANIFEST, lambda f: f.write(text))
            keep = {p[0] for p in parts}
            for stale in self.folder.glob("part_*.npz"):
                if stale.name not in keep:
                    stale.unlink(missing_ok=True)
            self._parts, self._end = parts, end
            return state


def _contiguous(
    parts: list[tuple[str, int, int]], first_live: int, end: int
) -> tuple[int, list[tuple[str, int, int]]]:
    """The first chunk from which ``parts`` hold every chunk up to ``end`` without a gap, and
    the parts that hold any of those. A gap is where eviction overtook the writer: the chunks
    before it are gone from the buffer too."""
    start = end
    for _, first, stop in sorted(parts, key=lambda p: p[2], reverse=True):
        if stop < start or first >= start:
            break
        start = first
    start = max(start, first_live)
    return start, [p for p in parts if p[2] > start]


def _head(run: ChunkRun, chunks: int, stack: int) -> ChunkRun:
    """The first ``chunks`` chunks of ``run``."""
    if chunks >= len(run.lengths):
        return run
    lengths = run.lengths[:chunks]
    n = int(lengths.sum())
    per_t = {k: v[:n] for k, v in run._asdict().items() if k not in ("frames", "lengths")}
    return ChunkRun(frames=run.frames[: n + stack * chunks], lengths=lengths, **per_t)


def read_manifest(folder: str | Path) -> dict | None:
    """The snapshot's manifest, or None when the folder holds none."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"cannot read {path}: {exc}") from exc


def restore_snapshot(folder: str | Path, buffer: ReplayBuffer) -> dict | None:
    """Fill ``buffer`` from the snapshot in ``folder``; returns its manifest (None: no snapshot).

    The buffer then holds the snapshot's live chunks, numbered as they were when it was taken.
    """
    manifest = read_manifest(folder)
    if manifest is None:
        return _legacy(Path(folder), buffer)
    first_live = int(manifest["first_live_seq"])
    buffer.restart(first_live)
    try:
        for name, first, end in manifest["parts"]:
            with np.load(Path(folder) / name, allow_pickle=False) as npz:
                run = ChunkRun(**{k: npz[k] for k in ChunkRun._fields})
            if len(run.lengths) != end - first:
                raise SnapshotError(f"{name} holds {len(run.lengths)} chunks, not {end - first}")
            if run.frames.shape[1:] != buffer.frame_shape:
                raise SnapshotError(
                    f"{name} holds frames of shape {run.frames.shape[1:]}, the replay's are "
                    f"{buffer.frame_shape}"
                )
            skip = max(0, first_live - first)
            buffer.add_run(_tail(run, skip, buffer.stack))
    except (OSError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise SnapshotError(f"cannot load replay snapshot from {folder}: {exc}") from exc
    if buffer.layout.chunks_added != int(manifest["end_seq"]):
        raise SnapshotError(f"replay snapshot in {folder} is missing chunks")
    buffer.layout.total_added = int(manifest["total_added"])
    return manifest


def write_demos(folder: str | Path, run: ChunkRun, demos_id: str) -> None:
    """Keep a run's demonstrations in its snapshot folder (plain arrays, atomically)."""
    arrays = {**run._asdict(), "demos_id": np.asarray(demos_id)}
    atomic_write(Path(folder) / DEMOS, lambda f: np.savez(f, **arrays))


def read_demos(folder: str | Path) -> tuple[ChunkRun, str] | None:
    """The demonstrations ``write_demos`` kept in ``folder``, with their id; None if none."""
    path = Path(folder) / DEMOS
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            run = ChunkRun(**{k: npz[k] for k in ChunkRun._fields})
            return run, str(npz["demos_id"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SnapshotError(f"cannot load the run's demonstrations from {path}: {exc}") from exc


def _tail(run: ChunkRun, skip: int, stack: int) -> ChunkRun:
    """``run`` without its first ``skip`` chunks."""
    if skip == 0:
        return run
    n = int(run.lengths[:skip].sum())
    per_t = {k: v[n:] for k, v in run._asdict().items() if k not in ("frames", "lengths")}
    return ChunkRun(frames=run.frames[n + stack * skip :], lengths=run.lengths[skip:], **per_t)


def _legacy(folder: Path, buffer: ReplayBuffer) -> dict | None:
    """A run from before incremental snapshots: ``replay.npz`` and ``replay.json`` beside it."""
    npz, sidecar = folder.with_suffix(".npz"), folder.with_suffix(".json")
    if not (npz.exists() and sidecar.exists()):
        return None
    with np.load(npz, allow_pickle=False) as f:
        buffer.load_state_dict(dict(f))
    # Nothing of it is in parts yet: the next snapshot writes every live chunk.
    return {"counters": json.loads(sidecar.read_text()), "parts": [], "end_seq": 0}
