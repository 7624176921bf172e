"""Which stored rows each granted update's batch takes, and what the recent batches held.

The replay actor draws the indices; the learner gathers the pixels from its mirror. With
demonstrations, `demo_fraction` of every batch comes from them (``buffer.mix_indices``);
pretraining batches are demonstrations only. Pure numpy: the replay actor holds one of these
under its lock.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from distributed_sac.config.data import Chunk, ChunkRun
from distributed_sac.replay.buffer import ReplayBuffer, mix_indices

RECENT = 64
"""Granted feeds (and sample ages) the held demonstration share and sample age average over."""


class BatchDraws:
    """The batches' indices, from one seeded generator (checkpointed with the replay)."""

    def __init__(self, batch_size: int, demo_fraction: float, seed: int) -> None:
        self.batch_size = batch_size
        self.demo_fraction = demo_fraction
        self.rng = np.random.default_rng(seed)
        self._demo_rows: deque[tuple[int, int]] = deque(maxlen=RECENT)
        """(demonstration rows, batch rows) of the recent granted feeds."""
        self.sample_ages: deque[float] = deque(maxlen=RECENT)
        """Newest weights version minus the median version that acted in a batch's rows."""

    def pretraining(self, k: int, demo_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(demonstration indices (k, B), no replay indices) for `k` pretraining updates."""
        return self.rng.integers(0, demo_size, (k, self.batch_size)), np.empty((k, 0), np.int64)

    def granted(
        self, k: int, buffer: ReplayBuffer, demo_size: int, weights_version: int
    ) -> tuple[np.ndarray, np.ndarray, float | None]:
        """(demonstration indices (k, d), replay indices (k, B - d), their sample age or None
        when no row was acted on by a policy) for `k` granted updates of the learner at
        `weights_version`; records their share and sample age."""
        b = self.batch_size
        if k == 0:
            return np.empty((0, 0), np.int64), np.empty((0, b), np.int64), None
        demo_idx, replay_idx = mix_indices(
            len(buffer), demo_size, b, self.demo_fraction, k, self.rng
        )
        self._demo_rows.append((demo_idx.size, demo_idx.size + replay_idx.size))
        age = None
        if replay_idx.size:
            versions = buffer.weights_versions(replay_idx.reshape(-1))
            acted = versions[versions >= 0]
            if acted.size:
                # Both in weights versions (every update, pretraining too). A learner restarted
                # from an older checkpoint counts from below the data's versions: age 0 then.
                age = max(0.0, float(weights_version - np.median(acted)))
                self.sample_ages.append(age)
        return demo_idx, replay_idx, age

    def sample_age(self) -> float:
        """Median sample age over the recent batches; NaN before any acted row was drawn."""
        return float(np.median(self.sample_ages)) if self.sample_ages else float("nan")

    def demo_fraction_held(self, buffer_size: int, demo_size: int | None) -> float:
        """Demonstration rows per batch row over the recent granted feeds; before any (a new
        or restarted replay), the share the next batch draws (`demo_size` None: no demos)."""
        if self._demo_rows:
            demo_rows, rows = map(sum, zip(*self._demo_rows, strict=True))
            return demo_rows / rows
        if demo_size is None:
            return 0.0
        b = self.batch_size
        d = round(self.demo_fraction * b)
        return 1.0 if buffer_size < b - d else d / b


def demo_buffer(
    like: ReplayBuffer,
    batch_size: int,
    chunks: list[Chunk] | None = None,
    run: ChunkRun | None = None,
) -> ReplayBuffer:
    """A buffer of exactly the demonstrations (`chunks`, or a saved `run` of them), at least a
    batch in capacity, with `like`'s frame shape and stack."""
    if (chunks is None) == (run is None):
        raise ValueError("give the demonstrations as chunks or as one run")
    if chunks is not None:
        n = sum(c.num_transitions for c in chunks)
        action_dim, shortest = chunks[0].action.shape[1], min(c.num_transitions for c in chunks)
    else:
        n, action_dim, shortest = run.num_transitions, run.action.shape[1], int(run.lengths.min())
    demos = ReplayBuffer(
        max(n, batch_size),
        like.frame_shape,
        like.stack,
        action_dim,
        chunk_length_hint=max(1, shortest),
    )
    for chunk in chunks or ():
        demos.add(chunk)
    if run is not None:
        demos.add_run(run)
    return demos
