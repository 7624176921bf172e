"""The env workers as the driver sees them: one `run` call out per worker until collection ends.

A worker whose process dies fails its `run` call; Ray restarts the actor, the pool counts the
restart, asks the actor `ready` until it answers, then sends `run` again with the worker's
restart count (a fresh seed stream, so it does not replay its tracks).
"""

from __future__ import annotations

import logging
import time

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from distributed_sac.run.records import RunCounters

log = logging.getLogger("distributed_sac")


class WorkerPool:
    """The `run` calls of the env workers, and those coming back from a restart."""

    def __init__(self, workers: list[ray.actor.ActorHandle], counters: RunCounters) -> None:
        """`counters.worker_restarts` counts every restart seen here."""
        self.workers = workers
        self.counters = counters
        self.restarts = [0] * len(workers)
        """Restarts per worker index: the seed stream its next `run` call draws."""
        self.runs: dict[ray.ObjectRef, int] = {}
        """`run` calls out, by worker index."""
        self.coming_back: dict[ray.ObjectRef, int] = {}
        """`ready` calls to restarted workers, by worker index."""

    def start(self) -> None:
        """A `run` call to every worker (again, after the replay came back from an older
        snapshot at the end: the workers' envs go on where they were)."""
        self.runs = {w.run.remote(): i for i, w in enumerate(self.workers)}

    @property
    def refs(self) -> list[ray.ObjectRef]:
        """What the driver waits on for the workers."""
        return [*self.runs, *self.coming_back]

    @property
    def done(self) -> bool:
        """Every run call has returned and no worker is coming back: collection is over."""
        return not self.runs and not self.coming_back

    def handle(self, ref: ray.ObjectRef) -> bool:
        """React to `ref` of `refs` having finished; False for a ref that is not the pool's."""
        if ref in self.coming_back:
            self._back(ref)
        elif ref in self.runs:
            self._finished(ref)
        else:
            return False
        return True

    def settle(self, timeout_s: float) -> None:
        """The run has ended (the replay finished collection and the learner drained): wait up
        to `timeout_s` for the run calls still out, so that a worker whose process died near
        the end is counted."""
        if self.runs:
            ready, _ = ray.wait(list(self.runs), num_returns=len(self.runs), timeout=timeout_s)
            for ref in ready:
                self._finished(ref)

    def stats(self) -> list:
        """Stats of the workers that answer; one dying or restarting is skipped this time."""
        refs = [w.stats.remote() for w in self.workers]
        stats = []
        for ref in refs:
            try:
                stats.append(ray.get(ref))
            except RayActorError:  # includes ActorUnavailableError while Ray restarts it
                continue
        return stats

    def _finished(self, ref: ray.ObjectRef) -> None:
        index = self.runs.pop(ref)
        try:
            ray.get(ref)
        except RayActorError:
            # The worker's process died; Ray restarts the actor, so ask it to go on.
            self.counters.worker_restarts += 1
            self.restarts[index] += 1
            log.warning(
                "env-worker-%d died; restarted (%d restarts)", index, self.counters.worker_restarts
            )
            # Its `run` goes out once it answers again (calls fail while Ray restarts it); the
            # driver's loop goes on meanwhile.
            self.coming_back[self.workers[index].ready.remote()] = index

    def _back(self, ref: ray.ObjectRef) -> None:
        index = self.coming_back.pop(ref)
        worker = self.workers[index]
        try:
            ray.get(ref)
        except ActorUnavailableError:  # still restarting: ask again shortly
            time.sleep(0.1)
            self.coming_back[worker.ready.remote()] = index
            return
        self.runs[worker.run.remote(self.restarts[index])] = index
