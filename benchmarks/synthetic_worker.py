"""A synthetic env worker for load tests: prerecorded chunks, numpy only (no torch import).

It pushes chunks to the real replay at a steady rate, the way ``EnvWorker`` does (two adds in
flight, throttled adds sent again), and takes weights from the add replies; "loading" them is
having the object on its node (``ray.wait``), so the per-step acting lag is measured as the
real worker measures it, without unpickling torch weights.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
import ray

from distributed_sac.data import AddReply, Chunk


def random_chunks(
    rng: np.random.Generator, n: int, frame_shape, stack: int, length: int
) -> list[Chunk]:
    """``n`` chunks of ``length`` transitions with random pixels, 1-d actions, no episode end."""
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
    def __init__(self, index: int, frame_shape, stack: int, chunk: int, steps_per_s: float):
        rng = np.random.default_rng(index)
        self.index, self.chunk, self.rate = index, chunk, steps_per_s
        self.chunks = random_chunks(rng, 4, frame_shape, stack, chunk)
        self._stop = threading.Event()
        self._lag: list[int] = []
        self.version, self.newest = -1, -1

    def stop(self) -> None:
        self._stop.set()

    def lag(self) -> np.ndarray:
        lag, self._lag = self._lag, []
        return np.asarray(lag, np.int64)

    def run(self, replay) -> int:
        adds: deque = deque()
        fetch, fetch_version = None, -1
        start, steps = time.monotonic(), 0
        while not self._stop.is_set():
            time.sleep(max(0.0, start + (steps + self.chunk) / self.rate - time.monotonic()))
            # One chunk's steps, acted with the weights held now.
            self._lag.extend([self.newest - self.version] * self.chunk if self.version >= 0 else [])
            chunk = self.chunks[(steps // self.chunk) % 4]
            steps += self.chunk
            adds.append((replay.add.remote(self.index, [chunk], [], self.version), chunk))
            while len(adds) > 2 or (adds and ray.wait([adds[0][0]], timeout=0)[0]):
                ref, chunk = adds.popleft()
                reply: AddReply = ray.get(ref)
                self.newest = max(self.newest, reply.weights_version)
                if reply.weights and reply.weights_version > max(self.version, fetch_version):
                    fetch, fetch_version = reply.weights[0], reply.weights_version
                if reply.throttled:
                    adds.appendleft(
                        (replay.add.remote(self.index, [chunk], [], self.version), chunk)
                    )
            if fetch is not None and ray.wait([fetch], timeout=0)[0]:
                self.version, fetch = fetch_version, None
        for ref, _ in adds:
            ray.get(ref)
        return steps
