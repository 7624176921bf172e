"""The worker side of weight delivery: take what add replies announce, measure the acting lag.

Numpy and Ray only (no torch), so the load test's synthetic workers use it as the env workers do.
"""

from __future__ import annotations

import time

import ray

from distributed_sac.acting_lag import ActingLag
from distributed_sac.data import AddReply


class WeightsClient:
    """Fetches the newest weights the add replies name, without ever blocking the worker."""

    def __init__(self) -> None:
        self.version = -1
        """The version acting now (-1: none yet)."""
        self.lag = ActingLag()
        self._fetch: ray.ObjectRef | None = None
        self._fetch_version = -1

    def acted(self, n: int) -> None:
        """``n`` steps were just taken with the acting weights."""
        if self.version >= 0:
            self.lag.step(time.time(), self.version, n)

    @property
    def since(self) -> float:
        """Passed with each ``add``: the publish history the replay should answer with."""
        return self.lag.since

    def offer(self, reply: AddReply) -> None:
        self.lag.resolve(reply.publishes, reply.sent_at)
        version = reply.weights_version
        if reply.weights and version > max(self.version, self._fetch_version):
            self._fetch, self._fetch_version = reply.weights[0], version

    def arrived(self) -> tuple[int, ray.ObjectRef] | None:
        """(version, ref) of fetched weights once they are on this node, else None; the caller
        loads them and calls ``loaded``."""
        if self._fetch is None or not ray.wait([self._fetch], timeout=0, fetch_local=True)[0]:
            return None
        ref, self._fetch = self._fetch, None
        return self._fetch_version, ref

    def loaded(self, version: int) -> None:
        self.version = version

    def lost(self) -> None:
        """The fetched weights could not be read (their publisher died): wait for the next."""
        self._fetch_version = self.version
