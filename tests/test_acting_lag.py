"""Acting lag against the newest published weights, and the driver's ``Every`` (no Ray)."""

from __future__ import annotations

import numpy as np

from distributed_sac.run.schedule import Every
from distributed_sac.weights.acting_lag import ActingLag, PublishHistory, lag_percentiles, step_lag


def test_step_lag_counts_against_the_newest_published_at_each_step():
    publishes = [(0, 10.0), (10, 20.0), (20, 30.0)]
    times = np.array([5.0, 10.0, 15.0, 25.0, 31.0, 31.0])
    acting = np.array([0, 0, 0, 0, 10, 20])
    # Before any publish nothing was newer; at 25 s version 10 was out while 0 acted.
    np.testing.assert_array_equal(step_lag(times, acting, publishes), [0, 0, 0, 10, 10, 0])
    # Weights kept from before a learner restart are newer than its publishes: no lag, not < 0.
    np.testing.assert_array_equal(step_lag([31.0], [500], publishes), [0])
    np.testing.assert_array_equal(step_lag([1.0, 2.0], [3, 4], []), [0, 0])


def test_steps_resolve_once_the_history_reaching_them_arrives():
    history, lag = PublishHistory(keep=4), ActingLag()
    history.add(0, 1.0)
    lag.step(2.0, 0, n=3)
    history.add(10, 3.0)
    lag.step(4.0, 0, n=2)  # version 10 is out, the worker has not heard of it yet
    history.add(20, 5.0)
    assert lag.since == 2.0
    # The reply names the publishes since the oldest unresolved step and the one before it.
    assert history.since(lag.since) == ((0, 1.0), (10, 3.0), (20, 5.0))
    lag.resolve(history.since(lag.since), horizon=3.5)  # sent before the steps at 4 s
    assert lag.since == 4.0
    lag.resolve(history.since(lag.since), horizon=6.0)
    np.testing.assert_array_equal(lag.drain(), [0, 0, 0, 10, 10])
    assert lag.drain().size == 0 and lag.since == float("inf")
    assert history.since(float("inf")) == ((20, 5.0),)
    history.clear()
    assert history.since(0.0) == ()


def test_every_fires_once_per_multiple_and_resumes_after_the_start():
    due = Every(100, start=250)
    assert [v for v in (260, 299, 300, 301, 450, 520, 600) if due(v)] == [300, 450, 520, 600]
    never = Every(0)
    assert not any(never(v) for v in (0, 10**9))


def test_the_records_lag_pools_every_workers_recent_steps():
    # One worker's 10 steps at lag 0 and another's 10 at lag 20 (a slow worker): the median
    # of the pooled 20 steps lies between them, the 90th percentile at the slow one's.
    median, p90 = lag_percentiles([np.zeros(10, np.int64), np.full(10, 20)])
    assert (median, p90) == (10.0, 20.0)
    assert lag_percentiles([]) == (None, None)
    assert lag_percentiles([np.array([], np.int64)]) == (None, None)  # none acted yet
