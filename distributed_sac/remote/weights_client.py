"""The worker side of weight delivery: one ``weights`` call parked on the replay at all times.

The replay answers it as soon as new weights are published, so a worker acts with the newest
weights within one publish plus one transfer, without polling the learner. The reply also
carries the publish history that resolves the worker's acting lag (``weights/acting_lag.py``). Numpy
and Ray only (no torch), so the load test's synthetic workers use it as the env workers do.
"""

from __future__ import annotations

import time

import ray

from distributed_sac.config.data import WeightsReply
from distributed_sac.weights.acting_lag import ActingLag

REFRESH_AFTER_S = 0.2
"""A worker blocked this long on a throttled replay calls ``refresh`` before it steps again."""


class WeightsClient:
    """Keeps a ``weights`` call in flight and fetches what it names, never blocking."""

    def __init__(self, replay: ray.actor.ActorHandle) -> None:
        self.replay = replay
        self.weights_version = -1
        """The weights version acting now (-1: none yet)."""
        self.lag = ActingLag()
        self._call: ray.ObjectRef | None = None
        self._fetch: ray.ObjectRef | None = None
        self._fetch_version = -1

    def acted(self, n: int) -> None:
        """``n`` steps were just taken with the acting weights."""
        if self.weights_version >= 0:
            self.lag.step(time.time(), self.weights_version, n)

    @property
    def _have(self) -> int:
        return self._fetch_version if self._fetch is not None else self.weights_version

    def _take(self, reply: WeightsReply) -> None:
        self.lag.resolve(reply.publishes, reply.sent_at)
        news = reply.weights_version
        if reply.weights and news not in (self.weights_version, self._fetch_version):
            self._fetch, self._fetch_version = reply.weights[0], news

    def poll(self) -> tuple[int, ray.ObjectRef] | None:
        """Call once per step: (weights version, ref) of new weights once they are on this node, for
        the caller to load and then call ``loaded``; else None."""
        if self._call is not None and ray.wait([self._call], timeout=0)[0]:
            reply, self._call = ray.get(self._call), None
            self._take(reply)
        if self._call is None:
            self._call = self.replay.weights.remote(self._have, self.lag.since)
        if self._fetch is None or not ray.wait([self._fetch], timeout=0, fetch_local=True)[0]:
            return None
        ref, self._fetch = self._fetch, None
        return self._fetch_version, ref

    def refresh(self) -> tuple[int, ray.ObjectRef] | None:
        """After the worker was blocked (a throttled replay): ask for the newest weights now,
        without parking, and wait until they are here, so no step acts with weights as old as
        the wait. (version, ref) as ``poll``, or None if it has the newest."""
        self._take(ray.get(self.replay.weights.remote(self._have, self.lag.since, 0.0)))
        if self._fetch is None:
            return None
        ray.wait([self._fetch], fetch_local=True)
        ref, self._fetch = self._fetch, None
        return self._fetch_version, ref

    def loaded(self, weights_version: int) -> None:
        """The fetched weights of ``weights_version`` act from now on."""
        self.weights_version = weights_version

    def lost(self) -> None:
        """The fetched weights could not be read (their publisher died): wait for the next."""
        self._fetch_version = self.weights_version
