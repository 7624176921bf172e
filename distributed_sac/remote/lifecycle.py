"""How a run stops and comes back: the stop sequence, Ctrl-C, a checkpoint's granted updates.

Used by the driver and by the benchmarks that run its actors themselves.
"""

from __future__ import annotations

import signal
import threading

import ray


def granted_updates(payload: dict) -> int:
    """Updates of a checkpoint's learner that the replay's rate limiter granted (all but the
    pretraining on demonstrations)."""
    updates = int(payload["agent"]["num_updates"])
    if "pretrain_updates" in payload["counters"]:
        return updates - int(payload["counters"]["pretrain_updates"])
    # Checkpoints from before the count was kept: the limiter's count, at most the updates.
    return min(updates, int(payload["replay"]["limiter"]["samples"]))


def stop_run(workers: list, replay, learner, pending: list, timeout: float = 30.0) -> None:
    """Stop a run in order, the way a user's Ctrl-C does: workers stop stepping, the replay
    closes (parked adds answer done), the learner stops; then wait for their ``run`` calls."""
    for w in workers:
        w.stop.remote()
    ray.get(replay.close.remote())
    learner.stop.remote()
    pending = [ref for ref in pending if ref is not None]
    ray.wait(pending, num_returns=len(pending), timeout=timeout)


class InterruptFlag:
    """First Ctrl-C asks the loop to stop cleanly; a second one interrupts at once."""

    def __init__(self) -> None:
        self._set = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self._set:
            raise KeyboardInterrupt
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
