"""The weights board without Ray: news answers parked waits, replace, close, the lag history."""

from __future__ import annotations

import threading
import time

import numpy as np

from distributed_sac.weights.acting_lag import ActingLag
from distributed_sac.weights.board import WeightsBoard


def _parked(board: WeightsBoard, have_version: int, n: int = 1) -> tuple[list, list]:
    """``n`` threads each parked in ``board.wait(have_version)`` for up to a minute; their
    replies land in the returned list as they answer."""
    replies: list = []
    threads = [
        threading.Thread(target=lambda: replies.append(board.wait(have_version, timeout=60.0)))
        for _ in range(n)
    ]
    for t in threads:
        t.start()
    time.sleep(0.05)
    assert all(t.is_alive() for t in threads)  # parked: nothing new yet
    return threads, replies


def _join(threads: list) -> None:
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)


def test_a_publish_answers_a_parked_wait_at_once():
    board = WeightsBoard()
    board.publish(0, ["v0"], 1.0)
    threads, replies = _parked(board, have_version=0)
    t0 = time.monotonic()
    assert board.publish(10, ["v10"], 2.0)
    _join(threads)
    assert time.monotonic() - t0 < 5.0  # answered by the publish, not its 60 s timeout
    (reply,) = replies
    assert (reply.weights_version, reply.weights) == (10, ["v10"])


def test_a_wait_with_nothing_new_times_out_and_answers_no_weights():
    board = WeightsBoard()
    t0 = time.monotonic()
    empty = board.wait(-1, timeout=0.05)  # nothing published yet
    assert time.monotonic() - t0 >= 0.05
    assert (empty.weights_version, empty.weights) == (-1, None)
    board.publish(3, ["v3"], 1.0)
    assert board.wait(3, timeout=0.01).weights is None  # it has them: no news
    assert board.wait(-1, timeout=0.01).weights == ["v3"]


def test_older_publishes_are_ignored():
    board = WeightsBoard()
    assert board.publish(40, ["v40"], 100.0)
    assert not board.publish(30, ["late30"], 101.0)
    assert not board.publish(40, ["again40"], 102.0)
    reply = board.wait(-1, since=0.0)
    assert (reply.weights_version, reply.weights, reply.publishes) == (40, ["v40"], ((40, 100.0),))


def test_a_restarted_learner_replaces_the_history_and_lowers_the_version():
    board = WeightsBoard()
    board.publish(40, ["old40"], 100.0)
    board.publish(50, ["old50"], 101.0)
    threads, replies = _parked(board, have_version=50)
    assert board.publish(20, ["new20"], 102.0, replace=True)
    _join(threads)
    assert board.weights_version == 20
    assert (replies[0].weights_version, replies[0].weights) == (20, ["new20"])
    # Lower, but what acts now; the dead learner's publishes are gone from the history.
    reply = board.wait(50, since=0.0)
    assert (reply.weights, reply.publishes) == (["new20"], ((20, 102.0),))
    assert board.publish(21, ["new21"], 103.0)  # and the new learner's next ones count again


def test_close_wakes_every_waiter_and_later_waits_answer_at_once():
    board = WeightsBoard()
    board.publish(5, ["v5"], 1.0)
    threads, replies = _parked(board, have_version=5, n=8)
    board.close()
    _join(threads)
    assert len(replies) == 8 and all(r.weights is None for r in replies)
    t0 = time.monotonic()
    assert board.wait(5, timeout=60.0).weights is None
    assert time.monotonic() - t0 < 5.0


def test_the_history_in_a_reply_resolves_acting_lag():
    board, lag = WeightsBoard(keep=4), ActingLag()
    board.publish(0, ["v0"], 1.0)
    lag.step(2.0, 0, n=3)
    board.publish(10, ["v10"], 3.0)
    lag.step(4.0, 0, n=2)  # version 10 is out, the worker has not heard of it yet
    board.publish(20, ["v20"], 5.0)
    reply = board.wait(0, since=lag.since)
    # The publishes since the oldest unresolved step and the one before it.
    assert reply.publishes == ((0, 1.0), (10, 3.0), (20, 5.0))
    lag.resolve(reply.publishes, horizon=reply.sent_at)
    np.testing.assert_array_equal(lag.drain(), [0, 0, 0, 10, 10])
    assert board.wait(20, since=lag.since).publishes == ((20, 5.0),)  # nothing unresolved
