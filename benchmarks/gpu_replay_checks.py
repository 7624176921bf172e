"""The replay side of the CUDA-path checks (``benchmarks/gpu_checks.py``): ``mirror`` (the
learner's ``DeviceMirror`` against a ``ReplayBuffer`` fed the same read-only chunk runs) and
``resync`` (a forced resync through the production feed protocol), and the sizes every check
shares. Their descriptions: gpu_checks.py's docstring."""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time

import numpy as np
import torch

from distributed_sac.agent.tensors import BatchTensors
from distributed_sac.config.data import Batch, Chunk, ChunkRun, stacked_shape
from distributed_sac.config.fields import AgentConfig, ReplayConfig
from distributed_sac.remote.replay_server import ReplayServer
from distributed_sac.replay.buffer import ReplayBuffer, ReplaySpec
from distributed_sac.replay.feed import ReplayMirror
from distributed_sac.replay.mirror import DeviceMirror


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Replay geometry and networks of the checks."""

    frame_shape: tuple[int, ...] = (84, 84)
    """One stored frame: (H, W) grayscale, (C, H, W) with channels."""
    stack: int = 4
    action_dim: int = 3
    capacity: int = 4096
    chunk_length: int = 64
    batch_size: int = 128
    agent: AgentConfig = AgentConfig()
    """Networks of the bf16 check (the default, full-size ones)."""

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        """(S * C, H, W): ``stack`` frames stacked channels first."""
        return stacked_shape(self.frame_shape, self.stack)

    @property
    def channels(self) -> int:
        """Channels per frame: 1 for (H, W) frames."""
        return self.obs_shape[0] // self.stack

    def rgb(self) -> Sizes:
        """These sizes with 3-channel frames."""
        return dataclasses.replace(self, frame_shape=(3, *self.frame_shape[-2:]))


TINY = Sizes(
    frame_shape=(16, 16),
    stack=3,
    action_dim=2,
    capacity=300,
    chunk_length=16,
    batch_size=16,
    agent=AgentConfig(num_conv_layers=2, num_filters=8, latent_dim=16, hidden_dim=32),
)


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_mirror(rb: ReplayBuffer, device: torch.device, torch_branch: bool) -> DeviceMirror:
    """A mirror of ``rb``'s geometry; ``torch_branch`` on the CPU takes the CUDA code path."""
    # Torch rings on the CPU: the code CUDA runs, with CPU tensors.
    return DeviceMirror(rb.geometry, device, torch_rings=torch_branch or device.type == "cuda")


def random_chunk(rng: np.random.Generator, sizes: Sizes, ends: bool = True) -> Chunk:
    """A chunk of random content and length; its last transition may end the episode."""
    t = int(rng.integers(1, sizes.chunk_length + 1))
    end = np.zeros(t, bool)
    terminated, truncated = end.copy(), end.copy()
    if ends and rng.uniform() < 0.3:
        (terminated if rng.uniform() < 0.5 else truncated)[-1] = True
    return Chunk(
        rng.integers(0, 256, (t + sizes.stack, *sizes.frame_shape), dtype=np.uint8),
        rng.uniform(-1, 1, (t, sizes.action_dim)).astype(np.float32),
        rng.normal(size=t).astype(np.float32),
        terminated,
        truncated,
        int(rng.integers(-1, 100)),
    )


def read_only(run: ChunkRun) -> ChunkRun:
    """``run`` with every array read-only, as a feed arrives from Ray's object store."""
    for arr in run:
        arr.setflags(write=False)
    return run


def mismatches(mirrored: BatchTensors, batch: Batch) -> list[str]:
    """Fields of a mirror gather that differ in any byte from ``ReplayBuffer.gather``'s."""
    want = {
        "obs": batch.obs,
        "action": batch.action,
        "reward": batch.reward,
        "next_obs": batch.next_obs,
        "terminated": batch.terminated.astype(np.float32),
    }
    bad = []
    for name, expected in want.items():
        got = getattr(mirrored, name).cpu().numpy()
        same = got.dtype == expected.dtype and got.shape == expected.shape
        if not (same and np.ascontiguousarray(got).tobytes() == expected.tobytes()):
            bad.append(name)
    return bad


def _compare(mirror: DeviceMirror, rb: ReplayBuffer, idx: np.ndarray) -> list[str]:
    idx = idx.copy()
    idx.setflags(write=False)  # index batches arrive read-only too
    if len(mirror) != len(rb):
        return ["len"]
    return mismatches(mirror.gather(idx), rb.gather(idx))


def _staging_stats(mirror: DeviceMirror) -> dict:
    stagings = getattr(mirror, "_stagings", None)
    if stagings is None:  # the CPU's numpy branch uploads nothing
        return {}
    return {
        name: {"allocations": s.allocations, "nbytes": s.nbytes, "waits": s.waits}
        for name, s in zip(("data", "index"), stagings, strict=True)
    }


def check_mirror(
    device: torch.device, sizes: Sizes, wraps: int = 4, seed: int = 0, torch_branch: bool = False
) -> dict:
    """Byte equality of mirror and replay gathers while the rings wrap ``wraps`` times."""
    rng = np.random.default_rng(seed)
    rb = ReplayBuffer(
        sizes.capacity, sizes.frame_shape, sizes.stack, sizes.action_dim, sizes.chunk_length
    )
    mirror = make_mirror(rb, device, torch_branch)
    sent = applies = gathers = resyncs = 0
    bad: list[str] = []
    start = time.perf_counter()
    while rb.total_added < wraps * sizes.capacity and not bad:
        for _ in range(int(rng.integers(1, 9))):  # the learner hears of several chunks at once
            rb.add(random_chunk(rng, sizes))
        if sent < rb.layout.first_seq:  # fell a whole buffer behind: start over, as a learner
            mirror.layout.clear()
            sent = mirror.layout.chunks_added = rb.layout.first_seq
            resyncs += 1
        mirror.add_run(read_only(rb.run_since(sent)))
        sent = rb.layout.chunks_added
        applies += 1
        batch = min(sizes.batch_size, len(rb))
        for idx in (rng.integers(0, len(rb), batch), np.array([0, len(rb) - 1])):
            bad += _compare(mirror, rb, idx)
            gathers += 1
    sync_device(device)
    return {
        "ok": not bad,
        "mismatches": sorted(set(bad)),
        "transitions_added": rb.total_added,
        "wraps": rb.total_added / sizes.capacity,
        "applies": applies,
        "gathers": gathers,
        "resyncs": resyncs,
        "staging": _staging_stats(mirror),
        "seconds": time.perf_counter() - start,
    }


def check_resync(
    device: torch.device, sizes: Sizes, seed: int = 1, torch_branch: bool = False
) -> dict:
    """A forced learner resync through the production protocol: the learner's ``ReplayMirror``
    follows a ``ReplayServer``'s feeds, the replay restarts from its snapshot (a new lineage),
    and the next feed resyncs the mirror in full; every feed's batches are gathered against the
    replay's own, then the whole content, then a few incremental feeds again."""
    rng = np.random.default_rng(seed)
    cfg = ReplayConfig(
        capacity=sizes.capacity, min_size=sizes.batch_size, replay_ratio=1.0, ratio_tolerance=1e9
    )
    spec = ReplaySpec(
        cfg,
        sizes.frame_shape,
        sizes.stack,
        sizes.action_dim,
        sizes.batch_size,
        10**12,
        seed,
        chunk_length=sizes.chunk_length,
        max_insert=sizes.chunk_length,
    )
    mirror = ReplayMirror(device, torch_rings=torch_branch or device.type == "cuda")
    bad, resets = [], 0

    def take(server: ReplayServer, updates: int = 2) -> bool:
        nonlocal resets
        feed = server.feed(mirror.request(updates, 0))
        feed = feed._replace(chunks=read_only(feed.chunks))  # as Ray's object store hands it
        if not mirror.follow(feed):
            bad.append("a feed did not follow")
            return False
        resets += feed.reset
        for batch, idx in zip(mirror.batches(feed), feed.replay_idx, strict=True):
            bad.extend(mismatches(batch, server.buffer.gather(idx)))
        return feed.reset

    with tempfile.TemporaryDirectory() as folder:
        server = ReplayServer(spec, snapshot=folder)
        while server.buffer.total_added < 2.5 * sizes.capacity:  # wrapped: content mid-ring
            server.add(0, [random_chunk(rng, sizes)], [])
            if len(server.buffer) >= sizes.batch_size and rng.uniform() < 0.3:
                take(server)
        take(server)
        server.snapshot()
        back = ReplayServer(spec, snapshot=folder)  # the replay restarted by Ray
        sync_device(device)
        start = time.perf_counter()
        forced = take(back)
        sync_device(device)
        seconds = time.perf_counter() - start
        n = len(back.buffer)
        for lo in range(0, n, sizes.batch_size):
            idx = np.arange(lo, min(lo + sizes.batch_size, n))
            bad += mismatches(mirror.replay.gather(idx), back.buffer.gather(idx))
        for _ in range(5):  # and it follows incrementally again afterwards
            back.add(0, [random_chunk(rng, sizes)], [])
            if take(back):
                bad.append("an incremental feed after the resync was a reset")
    sync_device(device)
    frame_bytes = n * math.prod(sizes.frame_shape)
    return {
        "ok": forced and not bad and len(mirror.replay) == len(back.buffer),
        "mismatches": sorted(set(bad)),
        "forced_reset": forced,
        "resets": resets,
        "transitions_resynced": n,
        "resync_seconds": seconds,
        "resync_mb_per_s": frame_bytes / seconds / 1e6 if seconds > 0 else None,
        "staging": _staging_stats(mirror.replay),
    }
