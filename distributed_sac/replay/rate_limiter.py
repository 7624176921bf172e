"""Holds the learner's updates per inserted transition near a target replay ratio.

In the spirit of DeepMind Reverb's ``SampleToInsertRatio`` (Cassirer et al. 2021): with
``I`` transitions inserted, ``U`` learner updates done, ratio ``r`` and ``min_size`` ``m``, the
error ``e = U - r * (I - m)`` is kept within ``[-slack, +slack]`` once ``I >= m``, where
``slack = max(r * max_insert + 1, tolerance * r * (I - m))``, ``max_insert`` being the most
transitions one insert brings (the replay's ``ReplaySpec.max_insert``: an ``add`` call's worth of
chunks). The relative term holds the run's ratio ``U / (I - m)`` within ``tolerance`` of ``r``;
the floor gives one insert of room either side so neither side stalls on every insert early in
the run.

A run ends exactly: with ``max_inserts`` (the run's ``total_steps``) the learner never runs
more than ``floor(r * (max_inserts - m))`` updates, and after ``finish`` (collection over) it
may drain up to ``floor(r * (I - m))``, no further; ``grant`` says how many updates a call may
take now.

No deadlock (at every state at least one side may proceed):

* Before ``min_size`` (and after ``finish``) inserts are always allowed.
* Otherwise, whenever the learner is refused (``e + 1 > slack``, or the ``max_inserts``
  budget is spent), ``can_insert`` answers True for any ``n``: waiting workers are never
  refused while the learner waits for data.

That liveness clause never breaks the lower bound for inserts of at most ``max_insert``:
it fires only when ``e > slack - 1``, so after inserting ``n`` the error is above
``slack - 1 - r * n >= -slack`` because ``2 * slack >= 2 * r * max_insert + 2 > r * n + 1``.
Crossing ``min_size`` leaves ``e >= -r * n > -slack`` for the same reason, and updates stop
at ``+slack``; slack never shrinks as ``I`` grows, so ``-slack <= e <= slack`` holds throughout.
A refusal for the budget has ``U = r * (max_inserts - m) >= r * (I - m)``, so ``e >= 0`` and
inserts up to ``max_inserts`` keep ``e >= 0``.
"""

from __future__ import annotations

import math

_COUNTERS = ("inserts", "samples")


def update_budget(replay_ratio: float, min_size: int, inserts: int) -> int:
    """The updates `inserts` transitions allow in all: ``floor(r * (I - m))`` (0 below m)."""
    return math.floor(replay_ratio * max(0, inserts - min_size) + 1e-9)


class RateLimiter:
    """Gates replay inserts and learner updates to hold ``replay_ratio`` updates per insert."""

    def __init__(
        self,
        replay_ratio: float,
        min_size: int,
        tolerance: float = 0.1,
        max_insert: int = 64,
        max_inserts: int | None = None,
    ) -> None:
        """``max_insert``: the most transitions one ``insert`` brings (the slack floor);
        ``max_inserts``: the run's total, past which the learner gets no updates."""
        if replay_ratio <= 0 or min_size < 0 or tolerance < 0 or max_insert < 1:
            raise ValueError(
                "need replay_ratio > 0, min_size >= 0, tolerance >= 0, max_insert >= 1, got "
                f"{replay_ratio}, {min_size}, {tolerance}, {max_insert}"
            )
        self.replay_ratio = float(replay_ratio)
        self.min_size = int(min_size)
        self.tolerance = float(tolerance)
        self.min_slack = self.replay_ratio * max_insert + 1.0
        self.max_inserts = max_inserts
        self.inserts = 0
        self.samples = 0
        self.closed = False

    def _budget(self, inserts: int | None) -> float:
        if inserts is None:
            return math.inf
        return update_budget(self.replay_ratio, self.min_size, inserts)

    @property
    def slack(self) -> float:
        """Updates the learner may run ahead of, or fall behind, the target ratio."""
        since_min = max(0, self.inserts - self.min_size)
        return max(self.min_slack, self.tolerance * self.replay_ratio * since_min)

    @property
    def error(self) -> float:
        """Updates done minus updates the target ratio asks for (positive: learner ahead)."""
        return self.samples - self.replay_ratio * (self.inserts - self.min_size)

    def can_sample(self, n: int = 1) -> bool:
        """Whether ``n`` more updates keep the learner within slack of the target ratio."""
        _check_count(n)
        if self.closed:
            return self.samples + n <= self._budget(self.inserts)
        if self.inserts < self.min_size or self.samples + n > self._budget(self.max_inserts):
            return False
        return self.error + n <= self.slack

    def grant(self, n: int) -> int:
        """The most updates, up to ``n``, that may run now (0 when the learner must wait)."""
        _check_count(n)
        if self.closed:
            room = self._budget(self.inserts) - self.samples
        elif self.inserts < self.min_size:
            return 0
        else:
            room = min(self.slack - self.error, self._budget(self.max_inserts) - self.samples)
        return int(max(0, min(n, math.floor(room + 1e-9))))

    def can_insert(self, n: int) -> bool:
        """Whether inserting ``n`` transitions keeps the workers within slack of the target."""
        _check_count(n)
        if self.closed or self.inserts < self.min_size or not self.can_sample(1):
            return True
        return self.error - self.replay_ratio * n >= -self.slack

    def insert(self, n: int) -> None:
        """Record ``n`` inserted transitions."""
        _check_count(n)
        self.inserts += n

    def sample(self, n: int = 1) -> None:
        """Record ``n`` learner updates granted."""
        _check_count(n)
        self.samples += n

    def align(self, samples: int) -> None:
        """Count ``samples`` updates granted: what the learner reports it was granted, when a
        replay restored from an older snapshot or a learner restored from an older checkpoint
        meets the other side again (so neither lost nor repeated updates skew the ratio)."""
        if samples < 0:
            raise ValueError(f"samples must be >= 0, got {samples}")
        self.samples = samples

    def finish(self) -> None:
        """Collection is over: the learner drains what the ratio allows, then is refused."""
        self.closed = True

    def ratio_held(self) -> float:
        """Updates per transition inserted since ``min_size`` (0.0 before then)."""
        since_min = self.inserts - self.min_size
        return self.samples / since_min if since_min > 0 else 0.0

    def state_dict(self) -> dict[str, int | bool]:
        """Counters as plain ints (the ratio and sizes come from the config)."""
        return {**{name: getattr(self, name) for name in _COUNTERS}, "closed": self.closed}

    def load_state_dict(self, state: dict[str, int | bool]) -> None:
        """Restore the counters written by ``state_dict`` (older states' extra keys ignored)."""
        missing = {*_COUNTERS, "closed"} - set(state)
        if missing:
            raise ValueError(f"rate limiter state lacks {sorted(missing)}")
        values = {name: int(state[name]) for name in _COUNTERS}
        if min(values.values()) < 0:
            raise ValueError(f"rate limiter counters must be >= 0, got {values}")
        for name, value in values.items():
            setattr(self, name, value)
        self.closed = bool(state["closed"])


def _check_count(n: int) -> None:
    if n < 1:
        raise ValueError(f"count must be >= 1, got {n}")
