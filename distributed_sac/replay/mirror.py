"""The learner's mirror of the replay's rings: pixels cross once, stacks are gathered there.

The replay actor stays the one store (it decides what is kept, runs the rate limiter, holds the
demonstrations, writes snapshots). It ships each inserted chunk to the learner once, in
insertion order, with index batches; the mirror is a ``ring.RingStore`` of the same geometry
(the replay's own store type, with the same one write and one gather), so it evicts exactly what
the replay evicted and a logical index means the same transition on both sides. On CUDA the
rings are torch tensors in GPU memory (``TorchRings``; 0.75 GB at 100k transitions) and uploads
are non-blocking copies through small reused pinned buffers (``staging.Staging``: bounded, and
guarded by CUDA events); on the CPU the rings are numpy arrays that torch tensors share,
gathered with numpy's fancy indexing (about 2.5x torch's here).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from distributed_sac.agent.tensors import BatchTensors
from distributed_sac.config.data import ChunkRun, Geometry, stacked_shape
from distributed_sac.replay.ring import NUMPY, RingStore
from distributed_sac.replay.staging import Staging, torch_dtype

MIRROR_FIELDS = {"action": np.float32, "reward": np.float32, "terminated": np.float32}
"""Per-transition fields the learner reads; ``terminated`` as float for the Bellman target."""


class TorchRings:
    """Rings as torch tensors on ``device`` (the learner on CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def empty(self, shape: tuple[int, ...], dtype: Any) -> torch.Tensor:
        return torch.empty(shape, dtype=torch_dtype(np.dtype(dtype)), device=self.device)

    def arange(self, n: int) -> torch.Tensor:
        return torch.arange(n, device=self.device)

    def take(self, ring: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return torch.index_select(ring, 0, idx.reshape(-1)).view(*idx.shape, *ring.shape[1:])


class DeviceMirror:
    """Rings on ``device`` holding what a ``ReplayBuffer`` of the same geometry holds.

    ``torch_rings``: keep the rings as torch tensors (default: on CUDA only); on the CPU that
    runs the CUDA code path with CPU tensors (tests, ``benchmarks/gpu_checks.py``).
    """

    def __init__(
        self,
        geometry: Geometry,
        device: str | torch.device = "cpu",
        torch_rings: bool | None = None,
    ) -> None:
        self.geometry = g = geometry
        self.device = torch.device(device)
        self.torch_rings = self.device.type == "cuda" if torch_rings is None else torch_rings
        fields = {
            name: (dtype, (g.action_dim,) if name == "action" else ())
            for name, dtype in MIRROR_FIELDS.items()
        }
        backend = TorchRings(self.device) if self.torch_rings else NUMPY
        self.store = RingStore(
            g.capacity, g.frame_capacity, g.frame_shape, g.stack, fields, backend
        )
        self.layout = self.store.layout
        # A gather's S + 1 frames read as one (S + 1) * C-channel image; obs and next_obs are
        # its first and last S * C channels.
        self._gathered_shape = stacked_shape(g.frame_shape, g.stack + 1)
        self._channels = self._gathered_shape[0] // (g.stack + 1)

    @classmethod
    def holding(
        cls,
        run: ChunkRun,
        like: Geometry,
        device: str | torch.device,
        torch_rings: bool | None = None,
    ) -> DeviceMirror:
        """A mirror sized to hold exactly ``run`` (the demonstrations), filled with it."""
        n = run.num_transitions
        geometry = like._replace(capacity=n, frame_capacity=n + like.stack * len(run.lengths))
        mirror = cls(geometry, device, torch_rings)
        mirror.add_run(run)
        return mirror

    def __len__(self) -> int:
        return self.layout.size

    @property
    def next_seq(self) -> int:
        """The sequence number the next chunk gets: what a feed request states."""
        return self.layout.chunks_added

    def restart(self, next_seq: int) -> None:
        """Drop everything; the next chunk placed is numbered ``next_seq`` (a resync)."""
        self.layout.clear(next_seq)

    def _upload(self, *arrays: np.ndarray, indices: bool = False) -> list[torch.Tensor]:
        """``arrays`` on the device, through one of two reused staging buffers (pinned on
        CUDA): chunk data (two slots, 32 MiB each at most) or index batches (eight small slots,
        so the host can queue several updates' gathers ahead of the GPU)."""
        return _stagings(self)[indices].upload(*arrays)

    def add_run(self, run: ChunkRun) -> None:
        """Place ``run``'s chunks in order, as the replay placed them."""
        if len(run.lengths) == 0:
            return
        data = [run.frames, run.action, run.reward, run.terminated.astype(np.float32)]
        if self.torch_rings:  # one staging slot for all four when they fit: one event to wait on
            data = self._upload(*data)
        # numpy rings: no copy, and no torch view of Ray's read-only arrays.
        self.store.write_run(data[0], run.lengths, dict(zip(MIRROR_FIELDS, data[1:], strict=True)))

    def gather(self, idx: np.ndarray) -> BatchTensors:
        """Transitions at logical indices ``idx`` as ``ReplayBuffer.gather`` has them, on device."""
        pos = self.layout.positions(idx)
        if self.torch_rings:
            (pos,) = self._upload(pos, indices=True)
        # The S + 1 distinct frames of each transition once; obs and next_obs are overlapping
        # views of them (5/8 of the bytes of two stacks). Nothing downstream writes to them.
        frames = self.store.gather(pos).reshape(len(pos), *self._gathered_shape)
        fields = self.store.fields
        if not self.torch_rings:
            frames = torch.from_numpy(frames)
            fields = {k: torch.from_numpy(v[pos]) for k, v in fields.items()}
        else:
            fields = {k: v[pos] for k, v in fields.items()}
        c = self._channels
        return BatchTensors(obs=frames[:, :-c], next_obs=frames[:, c:], **fields)


DATA_STAGING_BYTES = 32 << 20
"""Most bytes of host staging per slot for chunk data; a full resync crosses in pieces."""
INDEX_STAGING_SLOTS = 8
"""Index-batch staging slots: how many gathers the host may queue before waiting on the GPU."""


def _stagings(mirror: DeviceMirror) -> tuple[Staging, Staging]:
    """The mirror's (chunk data, index) staging buffers, made on first use."""
    stagings = getattr(mirror, "_stagings", None)
    if stagings is None:
        stagings = (
            Staging(mirror.device, max_bytes=DATA_STAGING_BYTES, slots=2),
            Staging(mirror.device, max_bytes=1 << 20, slots=INDEX_STAGING_SLOTS),
        )
        mirror._stagings = stagings
    return stagings


def concat_batches(parts: list[BatchTensors]) -> BatchTensors:
    """One batch from several (demonstrations first, then replay), field by field."""
    if len(parts) == 1:
        return parts[0]
    return BatchTensors(*(torch.cat(f) for f in zip(*parts, strict=True)))
