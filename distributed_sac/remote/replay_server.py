"""Replay actor: owns the frame-deduplicated buffer and the samples-per-insert rate limiter.

An asyncio actor: `add` and `sample` await on one condition until the limiter lets their side
proceed, so whichever side runs ahead is throttled without polling (Reverb's
SampleToInsertRatio). All buffer work runs on the event loop thread, so it never races.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from pathlib import Path

import numpy as np

from distributed_sac.atomic import atomic_write
from distributed_sac.config import ReplayConfig
from distributed_sac.data import Batch, Chunk
from distributed_sac.rate_limiter import RateLimiter
from distributed_sac.remote.telemetry import ReplayTelemetry
from distributed_sac.replay import ReplayBuffer
from distributed_sac.rollout import EpisodeStats


class ReplayServer:
    """Takes chunks from env workers, serves batches to the learner, counts agent steps."""

    def __init__(
        self,
        cfg: ReplayConfig,
        frame_shape: tuple[int, int],
        stack: int,
        action_dim: int,
        batch_size: int,
        total_steps: int,
        seed: int,
        chunk_length: int = 64,
        max_insert: int = 64,
        snapshot: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.batch_size = batch_size
        self.total_steps = total_steps
        self.rng = np.random.default_rng(seed)
        if snapshot is not None and Path(snapshot).exists():
            self.buffer = ReplayBuffer.load(snapshot)
        else:
            self.buffer = ReplayBuffer(cfg.capacity, frame_shape, stack, action_dim, chunk_length)
        self.demos: ReplayBuffer | None = None
        self.limiter = RateLimiter(cfg.replay_ratio, cfg.min_size, cfg.ratio_tolerance, max_insert)
        self._cond: asyncio.Condition | None = None
        self._closed = False
        self._episodes: deque[EpisodeStats] = deque(maxlen=1000)
        self._episodes_total = 0
        self._recent_versions: deque[int] = deque(maxlen=16)
        self._insert_wait_s = 0.0
        self._sample_wait_s = 0.0
        self._worker_steps: dict[int, int] = {}
        self._started = time.monotonic()
        self.telemetry = ReplayTelemetry()
        sidecar = _sidecar(snapshot) if snapshot else None
        if sidecar is not None and sidecar.exists() and Path(snapshot).exists():
            # Restarted by Ray after a crash: carry on from the last snapshot's counters.
            self.restore(json.loads(sidecar.read_text()))

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    @property
    def agent_steps(self) -> int:
        return self.limiter.inserts

    async def add(
        self, worker: int, chunks: list[Chunk], episodes: list[EpisodeStats]
    ) -> tuple[int, bool]:
        """Insert chunks once the limiter allows; returns (agent steps so far, collection done)."""
        n = sum(c.num_transitions for c in chunks)
        cond = self._condition()
        async with cond:
            t0 = time.monotonic()
            await cond.wait_for(lambda: self._closed or self.limiter.can_insert(n))
            waited = time.monotonic() - t0
            self._insert_wait_s += waited
            self.telemetry.insert_waited(waited)
            if self._closed or self.agent_steps >= self.total_steps:
                return self.agent_steps, True
            for chunk in chunks:
                self.buffer.add(chunk)
                if chunk.weights_version >= 0:
                    self._recent_versions.append(chunk.weights_version)
            self.limiter.insert(n)
            self._worker_steps[worker] = self._worker_steps.get(worker, 0) + n
            self._episodes.extend(episodes)
            self._episodes_total += len(episodes)
            self.telemetry.inserted(n)
            self.telemetry.size(len(self.buffer))
            if self._recent_versions:
                self.telemetry.policy_lag(
                    self.limiter.samples - float(np.mean(self._recent_versions))
                )
            cond.notify_all()
            return self.agent_steps, self.agent_steps >= self.total_steps

    async def sample(self) -> Batch | None:
        """One batch once the limiter allows; None after `close()`."""
        cond = self._condition()
        async with cond:
            t0 = time.monotonic()
            await cond.wait_for(lambda: self._closed or self.limiter.can_sample(1))
            waited = time.monotonic() - t0
            self._sample_wait_s += waited
            self.telemetry.sample_waited(waited)
            if self._closed and not self.limiter.can_sample(1):
                return None
            self.limiter.sample(1)
            self.telemetry.sampled(1)
            cond.notify_all()
            return self._draw()

    def _draw(self) -> Batch:
        if self.demos is None or len(self.demos) == 0:
            return self.buffer.sample(self.batch_size, self.rng)
        n_demo = int(round(self.cfg.demo_fraction * self.batch_size))
        if len(self.buffer) < self.batch_size - n_demo:
            n_demo = self.batch_size
        parts = [self.demos.sample(n_demo, self.rng)]
        if n_demo < self.batch_size:
            parts.append(self.buffer.sample(self.batch_size - n_demo, self.rng))
        return Batch(*(np.concatenate(f) for f in zip(*parts, strict=True)))

    def peek(self, n: int) -> np.ndarray | None:
        """A few stored observations for monitoring; not counted by the rate limiter."""
        if len(self.buffer) < n:
            return None
        return self.buffer.sample(n, np.random.default_rng()).obs

    def sample_demos(self) -> Batch:
        """A batch of demonstrations only (off-policy pretraining, before online collection)."""
        if self.demos is None or len(self.demos) < self.batch_size:
            raise ValueError("not enough demonstration transitions for one batch")
        return self.demos.sample(self.batch_size, self.rng)

    def load_demos(self, chunks: list[Chunk]) -> int:
        """Keep demonstrations in their own buffer, sampled at `demo_fraction` of each batch."""
        n = sum(c.num_transitions for c in chunks)
        c0 = chunks[0]
        self.demos = ReplayBuffer(
            max(n, self.batch_size),
            c0.frames.shape[1:],
            self.buffer.stack,
            c0.action.shape[1],
            chunk_length_hint=max(1, min(c.num_transitions for c in chunks)),
        )
        for chunk in chunks:
            self.demos.add(chunk)
        return len(self.demos)

    async def close(self) -> None:
        """End collection: wake every waiter; the learner drains what the ratio still allows."""
        cond = self._condition()
        async with cond:
            self._closed = True
            self.limiter.finish()
            cond.notify_all()

    def snapshot(self, path: str) -> int:
        """Write buffer and counters atomically (on this actor's node); returns transitions saved.

        A Ray restart of this actor reloads them (fault tolerance); `--resume` does too.
        """
        self.buffer.save(path)
        text = json.dumps(self.state()).encode()
        atomic_write(_sidecar(path), lambda f: f.write(text))
        return len(self.buffer)

    def state(self) -> dict:
        """Counters to checkpoint beside the learner state."""
        return {
            "limiter": self.limiter.state_dict(),
            "episodes_total": self._episodes_total,
            "rng": self.rng.bit_generator.state,
            "worker_steps": {str(k): v for k, v in self._worker_steps.items()},
        }

    def restore(self, state: dict) -> None:
        self.limiter.load_state_dict(state["limiter"])
        self.limiter.closed = False  # a resumed run may collect further (a larger --total-steps)
        self._episodes_total = int(state["episodes_total"])
        self.rng.bit_generator.state = state["rng"]
        self._worker_steps = {int(k): int(v) for k, v in state.get("worker_steps", {}).items()}

    def pid(self) -> int:
        """This actor's process id (fault-injection tests kill it)."""
        return os.getpid()

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def stats(self) -> dict:
        """Counters for metrics; drains the episodes finished since the last call."""
        episodes = list(self._episodes)
        self._episodes.clear()
        versions = list(self._recent_versions)
        return {
            "agent_steps": self.agent_steps,
            "replay_size": len(self.buffer),
            "updates_served": self.limiter.samples,
            "episodes_total": self._episodes_total,
            "episodes": [e._asdict() for e in episodes],
            "data_version_mean": float(np.mean(versions)) if versions else -1.0,
            "insert_wait_s": self._insert_wait_s,
            "sample_wait_s": self._sample_wait_s,
            "replay_ratio_held": self.limiter.ratio_held(),
            "worker_steps": dict(self._worker_steps),
            "replay_bytes": self.buffer.nbytes,
        }


def _sidecar(snapshot: str) -> Path:
    """The counters file written beside a replay snapshot."""
    return Path(snapshot).with_suffix(".json")
