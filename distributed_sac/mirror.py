"""The learner's mirror of the replay's rings: pixels cross once, stacks are gathered there.

The replay actor stays the one store (it decides what is kept, runs the rate limiter, holds the
demonstrations, writes snapshots). It ships each inserted chunk to the learner once, in
insertion order, with index batches; the mirror places the chunks with the same
``replay.RingLayout``, so it evicts exactly what the replay evicted and a logical index means
the same transition on both sides. On CUDA the rings live in GPU memory (0.75 GB at 100k
transitions) and uploads are non-blocking copies through small reused pinned buffers
(``staging.Staging``: bounded, and guarded by CUDA events); on the CPU the rings are numpy
arrays that torch tensors share, gathered with numpy's fancy indexing (about 2.5x torch's here).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from distributed_sac.data import ChunkRun, Geometry, stacked_shape
from distributed_sac.ring import RingLayout, ring_write
from distributed_sac.staging import Staging
from distributed_sac.tensors import BatchTensors


class DeviceMirror:
    """Rings on ``device`` holding what a ``ReplayBuffer`` of the same geometry holds."""

    def __init__(self, geometry: Geometry, device: str | torch.device = "cpu") -> None:
        self.geometry = geometry
        self.device = torch.device(device)
        g = geometry
        self.layout = RingLayout(g.capacity, g.frame_capacity, g.stack)
        self._cuda = self.device.type == "cuda"

        def ring(shape, dtype) -> torch.Tensor:
            return torch.empty(shape, dtype=dtype, device=self.device)

        self.frames = ring((g.frame_capacity, *g.frame_shape), torch.uint8)
        self.frame_idx = ring((g.capacity,), torch.int64)
        self.action = ring((g.capacity, g.action_dim), torch.float32)
        self.reward = ring((g.capacity,), torch.float32)
        self.terminated = ring((g.capacity,), torch.float32)
        self.offsets = torch.arange(g.stack + 1, device=self.device)
        # A gather's S + 1 frames read as one (S + 1) * C-channel image; obs and next_obs are
        # its first and last S * C channels.
        self._gathered_shape = stacked_shape(g.frame_shape, g.stack + 1)
        self._channels = self._gathered_shape[0] // (g.stack + 1)
        if not self._cuda:
            self._frames_np = self.frames.numpy()
            self._frame_idx_np = self.frame_idx.numpy()
            self._offsets_np = self.offsets.numpy()

    def __len__(self) -> int:
        return self.layout.size

    def _upload(self, *arrays: np.ndarray, indices: bool = False) -> list[torch.Tensor]:
        """``arrays`` on the device, through one of two reused staging buffers (pinned on
        CUDA): chunk data (two slots, 32 MiB each at most) or index batches (eight small slots,
        so the host can queue several updates' gathers ahead of the GPU)."""
        return _stagings(self)[indices].upload(*arrays)

    def apply(self, run: ChunkRun, reset: bool = False) -> None:
        """Place ``run``'s chunks in order (after clearing everything when ``reset``)."""
        if reset:
            self.layout.clear()
        if len(run.lengths) == 0:
            return
        g = self.geometry
        terminated = run.terminated.astype(np.float32)
        if self._cuda:  # one staging slot for all four when they fit: one event to wait on
            data = self._upload(run.frames, run.action, run.reward, terminated)
            rings = (self.frames, self.frame_idx, self.action, self.reward, self.terminated)
            arange = functools.partial(torch.arange, device=self.device)
        else:  # numpy views of the same memory: no copy, and no torch view of read-only arrays
            data = [run.frames, run.action, run.reward, terminated]
            rings = tuple(r.numpy() for r in (self.frames, self.frame_idx, self.action))
            rings += (self.reward.numpy(), self.terminated.numpy())
            arange = np.arange
        frames, action, reward, terminated = data
        t0 = f0 = 0
        for t in run.lengths.tolist():
            where = self.layout.place(t)
            ring_write(rings[0], where.frame_start, frames[f0 : f0 + t + g.stack])
            ring_write(
                rings[1], where.trans_start, (where.frame_start + arange(t)) % g.frame_capacity
            )
            ring_write(rings[2], where.trans_start, action[t0 : t0 + t])
            ring_write(rings[3], where.trans_start, reward[t0 : t0 + t])
            ring_write(rings[4], where.trans_start, terminated[t0 : t0 + t])
            t0, f0 = t0 + t, f0 + t + g.stack

    def gather(self, idx: np.ndarray) -> BatchTensors:
        """Transitions at logical indices ``idx`` as ``ReplayBuffer.gather`` has them, on device."""
        pos_np = self.layout.positions(idx)
        b = len(pos_np)
        fc = self.geometry.frame_capacity
        # The S + 1 distinct frames of each transition once; obs and next_obs are overlapping
        # views of them (5/8 of the bytes of two stacks). Nothing downstream writes to them.
        if self._cuda:
            (pos,) = self._upload(pos_np, indices=True)
            stacks = (self.frame_idx[pos][:, None] + self.offsets) % fc
            frames = torch.index_select(self.frames, 0, stacks.reshape(-1))
            frames = frames.view(b, *self._gathered_shape)
        else:
            pos = torch.from_numpy(pos_np)
            stacks = (self._frame_idx_np[pos_np][:, None] + self._offsets_np) % fc
            # numpy's fancy indexing gathers uint8 rows about 2.5x faster than torch's on a CPU.
            frames = torch.from_numpy(self._frames_np[stacks].reshape(b, *self._gathered_shape))
        c = self._channels
        return BatchTensors(
            obs=frames[:, :-c],
            action=self.action[pos],
            reward=self.reward[pos],
            next_obs=frames[:, c:],
            terminated=self.terminated[pos],
        )


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
