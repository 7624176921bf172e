"""Acting lag: how many updates the weights a worker acts with are behind the newest published.

A worker records, per step, when it stepped and which weights version acted. The replay hands
out the newest weights and keeps the learner's publish history (version, time published); each
reply to a worker's ``weights`` call carries the part of it since the worker's oldest
unresolved step, and the worker then resolves those steps: the lag of a step is the newest
version published at or before the step, minus the version that acted. It includes the wait
until the worker takes the new weights and their transfer, which is what a user means by
staleness. Wall clocks of different nodes are compared, so on a cluster the figure is as good
as their clock sync (milliseconds with NTP, far below one publish interval).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

Publish = tuple[int, float]
"""(weights version, ``time.time()`` it was published)."""


def step_lag(
    step_times: np.ndarray, acting: np.ndarray, publishes: Sequence[Publish]
) -> np.ndarray:
    """Per step: newest version published at or before its time, minus the acting version.

    ``publishes`` sorted by time; a step before all of them counts no lag (none was newer).
    A negative difference (weights kept from before a learner restart) counts as 0.
    """
    acting = np.asarray(acting, np.int64)
    if not publishes:
        return np.zeros_like(acting)
    versions = np.fromiter((v for v, _ in publishes), np.int64, len(publishes))
    times = np.fromiter((t for _, t in publishes), np.float64, len(publishes))
    newest = np.maximum.accumulate(versions)
    i = np.searchsorted(times, np.asarray(step_times, np.float64), side="right") - 1
    known = np.where(i >= 0, newest[np.maximum(i, 0)], acting)
    return np.maximum(known - acting, 0)


class ActingLag:
    """Steps waiting for the publish history that resolves them, and the resolved lags."""

    def __init__(self, keep: int = 4096) -> None:
        self._times: deque[float] = deque(maxlen=keep)
        self._versions: deque[int] = deque(maxlen=keep)
        self._lags: deque[int] = deque(maxlen=keep)

    def step(self, t: float, weights_version: int, n: int = 1) -> None:
        """``n`` steps taken at ``t`` with ``weights_version``."""
        self._times.extend([t] * n)
        self._versions.extend([weights_version] * n)

    @property
    def since(self) -> float:
        """Time of the oldest unresolved step (``inf`` if none): the history to ask for."""
        return self._times[0] if self._times else float("inf")

    def resolve(self, publishes: Sequence[Publish], horizon: float) -> None:
        """Resolve the steps up to ``horizon`` (the replay's time when it sent ``publishes``)."""
        n = int(np.searchsorted(np.asarray(self._times, np.float64), horizon, side="right"))
        if n == 0:
            return
        times = [self._times.popleft() for _ in range(n)]
        versions = [self._versions.popleft() for _ in range(n)]
        self._lags.extend(step_lag(np.asarray(times), np.asarray(versions), publishes).tolist())

    def drain(self) -> np.ndarray:
        """int64 lags resolved since the last call (at most ``keep``)."""
        lags = np.asarray(self._lags, np.int64)
        self._lags.clear()
        return lags


class PublishHistory:
    """The replay's record of recent publishes; ``since(t)`` is what resolves steps after t."""

    def __init__(self, keep: int = 256) -> None:
        self._publishes: deque[Publish] = deque(maxlen=keep)

    def add(self, weights_version: int, published_at: float) -> None:
        self._publishes.append((weights_version, published_at))

    def clear(self) -> None:
        self._publishes.clear()

    def since(self, t: float) -> tuple[Publish, ...]:
        """The publishes after ``t`` and the last one at or before it (the newest then)."""
        out = []
        for p in reversed(self._publishes):
            out.append(p)
            if p[1] <= t:
                break
        return tuple(reversed(out))


def lag_percentiles(per_worker: list[np.ndarray]) -> tuple[float | None, float | None]:
    """Median and 90th percentile of the per-step acting lag over all workers' recent steps."""
    steps = np.concatenate([np.asarray(a, np.int64) for a in per_worker]) if per_worker else []
    if len(steps) == 0:
        return None, None
    median, p90 = np.percentile(steps, [50, 90])
    return float(median), float(p90)
