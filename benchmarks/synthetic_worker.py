"""A synthetic env worker for load tests: prerecorded chunks, numpy only (no torch import).

It pushes chunks to the real replay at a steady rate, the way ``EnvWorker`` does (two adds in
flight, throttled adds sent again), and takes weights as they do, with ``WeightsClient`` (a
``weights`` call parked on the replay); "loading" them is having the object on its node, so the
per-step acting lag is measured as the real worker measures it, without unpickling torch weights.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
import ray

from distributed_sac.config.data import AddReply, Chunk
from distributed_sac.remote.weights_client import REFRESH_AFTER_S, WeightsClient


def random_chunks(
    rng: np.random.Generator, n: int, frame_shape: tuple[int, ...], stack: int, length: int
) -> list[Chunk]:
    """``n`` chunks of ``length`` transitions with random pixels (frames of ``frame_shape``,
    (H, W) or (C, H, W)), 1-d actions, no episode end."""
    return [
        Chunk(
            rng.integers(0, 256, (length + stack, *frame_shape), dtype=np.uint8),
            rng.uniform(-1, 1, (length, 1)).astype(np.float32),
            rng.normal(size=length).astype(np.float32),
            np.zeros(length, bool),
            np.zeros(length, bool),
            0,
        )
        for _ in range(n)
    ]


class SyntheticWorker:
    """Steps at ``steps_per_s`` (a step is a sleep), adds a prerecorded chunk every ``chunk``
    steps, and checks for new weights every step, as ``EnvWorker`` does."""

    def __init__(
        self, index: int, frame_shape: tuple[int, ...], stack: int, chunk: int, steps_per_s: float
    ) -> None:
        rng = np.random.default_rng(index)
        self.index, self.chunk, self.rate = index, chunk, steps_per_s
        self.chunks = random_chunks(rng, 4, frame_shape, stack, chunk)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.weights = None

    def stop(self) -> None:
        self._stop.set()

    def lag(self) -> np.ndarray:
        """Per-step acting lag resolved since the last call."""
        with self._lock:
            return self.weights.lag.drain() if self.weights else np.empty(0, np.int64)

    def run(self, replay) -> int:
        adds: deque = deque()
        start, steps = time.monotonic(), 0
        with self._lock:
            self.weights = WeightsClient(replay)

        def add(chunk: Chunk) -> ray.ObjectRef:
            return replay.add.remote(self.index, [chunk], [])

        while not self._stop.is_set():
            time.sleep(max(0.0, start + (steps + 1) / self.rate - time.monotonic()))
            steps += 1
            with self._lock:
                self.weights.acted(1)
            if steps % self.chunk == 0:
                chunk = self.chunks[(steps // self.chunk) % 4]
                adds.append((add(chunk), chunk))
            blocked = 0.0
            while len(adds) > 2 or (adds and ray.wait([adds[0][0]], timeout=0)[0]):
                ref, chunk = adds.popleft()
                t0 = time.monotonic()
                reply: AddReply = ray.get(ref)
                blocked += time.monotonic() - t0
                if reply.throttled:
                    adds.appendleft((add(chunk), chunk))
            with self._lock:
                w = self.weights
                arrived = w.refresh() if blocked > REFRESH_AFTER_S else w.poll()
            if arrived is not None:
                self.weights.loaded(arrived[0])
        for ref, _ in adds:
            ray.get(ref)
        return steps
