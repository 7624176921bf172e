"""The weights board: the newest published weights, their publish history, the wait for news.

The learner posts each publish (``publish``); every env worker keeps one ``wait`` parked here,
answered as soon as the board holds weights other than the worker's, with the slice of the
publish history that resolves the worker's acting lag (``weights/acting_lag.py``). It knows
nothing of Ray: the weights are whatever the publisher hands it (``[ObjectRef]`` in a run), and
the replay actor holds one board and delegates its ``set_weights`` and ``weights`` calls to it.

Its own lock and condition, not the replay's, and held by the replay actor, not an actor of its
own; ``benchmarks/weights_board.py`` measured the choice in one process (docs/benchmarks.md,
"weights_board"). On the loaded 2-core machine, an add that arrives at a publish got the
replay's lock after a median 0.20 / 0.17 ms with 8 parked waiters (board on the replay's lock /
on its own) and 1.23 / 1.44 ms with 64, against 0.05 ms with none: the ratios (1.2x, 0.9x) are
those of the control with no waiters (1.0x), and the steady adds' mean waits varied 0.5x-5.3x
from run to run as much as the control's (2.7x). So the lock is not what costs: waking 64
threads costs the replay process about a millisecond of GIL per publish, whichever lock they
take. Its own lock costs nothing measurable and keeps the weights path out of the buffer lock's
queue by construction; an actor of its own would save that millisecond (a few percent of one
core at 20 publishes/s, and only with 64 workers) for a process, a hop per publish and a
placement more, so the measurement does not call for one.
"""

from __future__ import annotations

import threading
import time

from distributed_sac.config.data import WeightsReply
from distributed_sac.weights.acting_lag import PublishHistory


class WeightsBoard:
    """Holds the newest (weights version, weights) and answers parked waits when they change."""

    def __init__(self, keep: int = 256, lock: threading.Lock | None = None) -> None:
        """``keep``: publishes of history kept. ``lock``: guard the board with another
        structure's lock (the benchmark's baseline: the replay's, as before); by default its
        own, so no waiter ever holds up the replay's buffer."""
        self._lock = threading.Lock() if lock is None else lock
        self._changed = threading.Condition(self._lock)
        self._newest: tuple[int, list | None] = (-1, None)
        self._history = PublishHistory(keep)
        self._closed = False

    @property
    def weights_version(self) -> int:
        """The newest weights version posted (-1: none yet)."""
        return self._newest[0]

    def publish(
        self, weights_version: int, weights: list, published_at: float, replace: bool = False
    ) -> bool:
        """Post ``weights`` (published at ``time.time()`` ``published_at``) and wake every
        waiter; whether they were taken. A version not above the newest is ignored, unless
        ``replace``: from a learner restarted from a checkpoint, whose versions start lower
        again; its weights replace the dead learner's and clear that learner's history."""
        with self._lock:
            if replace:
                self._history.clear()
            elif weights_version <= self._newest[0]:
                return False
            self._newest = (weights_version, weights)
            self._history.add(weights_version, published_at)
            self._changed.notify_all()  # every parked worker wants these
            return True

    def wait(
        self, have_version: int, since: float = float("inf"), timeout: float = 0.0
    ) -> WeightsReply:
        """The newest weights once they differ from ``have_version``, waiting at most
        ``timeout`` seconds for them (none in the reply if nothing came, or after ``close``).

        ``since``: time of the caller's oldest step whose acting lag is not yet known; the reply
        carries the publishes since then (``PublishHistory.since``) and the time it was sent.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._closed and (self._newest[1] is None or self._newest[0] == have_version):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            weights_version, weights = self._newest
            news = weights is not None and weights_version != have_version
            return WeightsReply(
                weights_version, weights if news else None, self._history.since(since), time.time()
            )

    def close(self) -> None:
        """Collection is over: wake every waiter, and answer every later wait at once."""
        with self._lock:
            self._closed = True
            self._changed.notify_all()
