"""The one ring store of the frame-deduplicated replay, with a numpy and a torch backend.

``RingLayout`` is the bookkeeping (where each chunk's frames and transitions go, which whole
chunks are evicted); ``RingStore`` adds the rings themselves, with the one write of a chunk and
the one gather of frame stacks. ``replay.ReplayBuffer`` (the replay actor's store) holds a numpy
``RingStore``; ``mirror.DeviceMirror`` (the learner's copy) holds one with numpy rings on the CPU
and torch rings on CUDA (``mirror.TorchRings``). Both place the same chunks in the same order,
so an index means the same transition on both sides.

Torch is not imported here: the replay actor never loads it.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import numpy as np

TRANSITION_DTYPES = {
    "action": np.float32,
    "reward": np.float32,
    "terminated": np.bool_,
    "truncated": np.bool_,
    "weights_version": np.int64,
}
"""Per-transition arrays beside the frame ring, with their dtypes."""


def frame_capacity(capacity: int, stack: int, chunk_length_hint: int) -> int:
    """Frame-ring slots that hold ``capacity`` transitions arriving in chunks of the hint length."""
    return capacity + stack * math.ceil(capacity / chunk_length_hint) + stack


def replay_nbytes(
    capacity: int,
    frame_shape: tuple[int, ...],
    stack: int,
    action_dim: int,
    chunk_length_hint: int = 64,
) -> int:
    """Bytes a ``ReplayBuffer`` with these arguments preallocates, computed without allocating."""
    frames = frame_capacity(capacity, stack, chunk_length_hint) * math.prod(frame_shape)
    per_transition = np.dtype(np.int64).itemsize  # the frame-ring index of the obs
    for name, dtype in TRANSITION_DTYPES.items():
        per_transition += np.dtype(dtype).itemsize * (action_dim if name == "action" else 1)
    return frames + capacity * per_transition


class Placement(NamedTuple):
    """Where one chunk goes: its first transition slot and first frame slot."""

    trans_start: int
    frame_start: int


class RingLayout:
    """FIFO placement of whole chunks in a transition ring and a frame ring (indices only)."""

    def __init__(self, capacity: int, frame_capacity: int, stack: int) -> None:
        self.capacity, self.frame_capacity, self.stack = capacity, frame_capacity, stack
        self.lengths: collections.deque[int] = collections.deque()
        self.clear()

    def clear(self, next_seq: int = 0) -> None:
        """Empty the rings; the next chunk placed is numbered ``next_seq``."""
        self.lengths.clear()
        self.size = self.num_frames = self.frame_head = self.trans_head = 0
        self.total_added = 0
        self.chunks_added = int(next_seq)
        """Chunks ever placed: the sequence number the next chunk gets."""

    @property
    def trans_tail(self) -> int:
        return (self.trans_head - self.size) % self.capacity

    @property
    def frame_tail(self) -> int:
        return (self.frame_head - self.num_frames) % self.frame_capacity

    @property
    def first_seq(self) -> int:
        """Sequence number of the oldest live chunk (== ``chunks_added`` when empty)."""
        return self.chunks_added - len(self.lengths)

    def place(self, t: int) -> Placement:
        """Evict the oldest whole chunks until ``t`` transitions fit, then claim their slots."""
        if t > self.capacity:
            raise ValueError(f"chunk of {t} transitions exceeds replay capacity {self.capacity}")
        nf = t + self.stack
        while self.num_frames + nf > self.frame_capacity or self.size + t > self.capacity:
            oldest = self.lengths.popleft()
            self.size -= oldest
            self.num_frames -= oldest + self.stack
        where = Placement(self.trans_head, self.frame_head)
        self.lengths.append(t)
        self.frame_head = (self.frame_head + nf) % self.frame_capacity
        self.trans_head = (self.trans_head + t) % self.capacity
        self.size += t
        self.num_frames += nf
        self.total_added += t
        self.chunks_added += 1
        return where

    def span(
        self, first_seq: int, max_transitions: int | None = None
    ) -> tuple[int, int, int, int, list[int]]:
        """(trans start, transitions, frame start, frames, lengths) of live chunks from
        ``first_seq`` on: all of them, or as many as fit in ``max_transitions`` (at least one)."""
        skip = first_seq - self.first_seq
        if skip < 0 or skip > len(self.lengths):
            raise ValueError(
                f"chunk {first_seq} is not live ({self.first_seq}..{self.chunks_added})"
            )
        lengths = list(self.lengths)
        before = sum(lengths[:skip])
        lengths = lengths[skip:]
        if max_transitions is not None:
            total = 0
            for k, t in enumerate(lengths):
                if k and total + t > max_transitions:
                    lengths = lengths[:k]
                    break
                total += t
        n = sum(lengths)
        return (
            (self.trans_tail + before) % self.capacity,
            n,
            (self.frame_tail + before + self.stack * skip) % self.frame_capacity,
            n + self.stack * len(lengths),
            lengths,
        )

    def positions(self, idx: np.ndarray) -> np.ndarray:
        """Ring slots of logical indices ``idx`` (0 is the oldest stored transition)."""
        idx = np.asarray(idx, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.size):
            raise ValueError(
                f"replay indices must lie in [0, {self.size}), got {idx.min()}..{idx.max()}"
            )
        return (self.trans_tail + idx) % self.capacity


class Backend(Protocol):
    """How a ``RingStore`` makes and reads its rings: numpy arrays, or torch tensors."""

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """An uninitialised ring of numpy ``dtype``."""

    def arange(self, n: int) -> Any:
        """0 .. n - 1 as int64 of this backend."""

    def take(self, ring: Any, idx: Any) -> Any:
        """``ring[idx]`` for an int64 index array of any shape."""


class NumpyRings:
    """Rings as numpy arrays in host memory (the replay actor; the learner on a CPU)."""

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        # np.empty leaves pages untouched until written: a 1M buffer costs RAM as it fills.
        return np.empty(shape, dtype)

    def arange(self, n: int) -> np.ndarray:
        return np.arange(n)

    def take(self, ring: np.ndarray, idx: np.ndarray) -> np.ndarray:
        # numpy's fancy indexing gathers uint8 rows about 2.5x faster than torch's on a CPU.
        return ring[idx]


NUMPY = NumpyRings()


class RingStore:
    """A frame ring, each transition's first-frame index, and per-transition field rings,
    written chunk by chunk in FIFO order through one ``RingLayout``.

    ``fields``: name -> (numpy dtype, shape of one transition's value beyond the ring axis).
    """

    def __init__(
        self,
        capacity: int,
        frame_capacity: int,
        frame_shape: tuple[int, ...],
        stack: int,
        fields: Mapping[str, tuple[Any, tuple[int, ...]]],
        backend: Backend = NUMPY,
    ) -> None:
        self.layout = RingLayout(capacity, frame_capacity, stack)
        self.backend = backend
        self.frames = backend.empty((frame_capacity, *frame_shape), np.uint8)
        self.frame_idx = backend.empty((capacity,), np.int64)
        """Per transition: the frame-ring slot of its observation's first frame."""
        self.fields = {
            name: backend.empty((capacity, *tail), dtype) for name, (dtype, tail) in fields.items()
        }
        self._offsets = backend.arange(stack + 1)

    def __len__(self) -> int:
        return self.layout.size

    @property
    def nbytes(self) -> int:
        """Bytes of all rings."""
        rings = (self.frames, self.frame_idx, *self.fields.values())
        return sum(r.nbytes for r in rings)

    def write(self, frames, fields: Mapping[str, Any]) -> None:
        """Place one chunk (``T + S`` frames, ``T`` values per field), evicting the oldest whole
        chunks until it fits."""
        layout = self.layout
        t = len(frames) - layout.stack
        where = layout.place(t)
        ring_write(self.frames, where.frame_start, frames)
        slots = (where.frame_start + self.backend.arange(t)) % layout.frame_capacity
        ring_write(self.frame_idx, where.trans_start, slots)
        for name, ring in self.fields.items():
            ring_write(ring, where.trans_start, fields[name])

    def write_run(self, frames, lengths: np.ndarray, fields: Mapping[str, Any]) -> None:
        """Place chunks laid end to end (``data.ChunkRun`` layout), each as ``write`` would."""
        t0 = f0 = 0
        stack = self.layout.stack
        for t in np.asarray(lengths).tolist():
            self.write(frames[f0 : f0 + t + stack], {k: v[t0 : t0 + t] for k, v in fields.items()})
            t0, f0 = t0 + t, f0 + t + stack

    def stack_slots(self, pos) -> Any:
        """Frame-ring slots of the ``S + 1`` frames behind each transition at ring slots
        ``pos``: (B, S + 1), oldest first (obs reads ``[:, :-1]``, next_obs ``[:, 1:]``)."""
        first = self.backend.take(self.frame_idx, pos)
        return (first[:, None] + self._offsets) % self.layout.frame_capacity

    def gather(self, pos) -> Any:
        """The ``S + 1`` frames behind each transition at ring slots ``pos``: (B, S + 1,
        *frame_shape), each distinct frame once."""
        return self.backend.take(self.frames, self.stack_slots(pos))


def ring_write(ring, start: int, data) -> None:
    """Write ``data`` into ``ring`` from ``start``, wrapping at its end (numpy or torch)."""
    end = start + len(data)
    if end <= len(ring):
        ring[start:end] = data
    else:
        split = len(ring) - start
        ring[start:] = data[:split]
        ring[: end - len(ring)] = data[split:]


def ring_segments(ring: np.ndarray, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` slots from ``start`` as two views (the second is empty unless they wrap)."""
    end = start + n
    if end <= len(ring):
        return ring[start:end], ring[:0]
    return ring[start:], ring[: end - len(ring)]


def ring_read(ring: np.ndarray, start: int, n: int) -> np.ndarray:
    return np.concatenate(ring_segments(ring, start, n))
