"""The replay server's side of the protocol (no Ray): the ratio count, sample age, weights
calls parked and answered, the end of collection, and the learner's metrics and update loop."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
import torch

from distributed_sac.config.data import EpisodeStats, FeedRequest
from distributed_sac.remote.learner import MetricsWindow, NonFiniteLossError
from distributed_sac.remote.replay_server import ReplayServer
from distributed_sac.replay.feed import ReplayMirror
from tests.test_mirror import add_episodes, small_spec, take
from tests.test_replay import Reference


def test_every_request_sets_the_ratio_count_to_the_learners(tmp_path):
    server = ReplayServer(small_spec(replay_ratio=4.0), snapshot=str(tmp_path / "replay"))
    ref = Reference(np.random.default_rng(2), max_episode=30, max_chunk=8)
    add_episodes(server, ref, 4)
    learner = ReplayMirror()
    take(learner, server, 30)
    assert server.limiter.samples == learner.granted == 30
    server.snapshot()  # counts 30 granted
    take(learner, server, 30)
    assert server.limiter.samples == learner.granted == 60
    # A learner restarted from a checkpoint made 25 of those updates: the rest is granted again.
    restarted = ReplayMirror(granted=25)
    take(restarted, server, 10)
    assert server.limiter.samples == 35
    # A replay restored from the older snapshot takes the count of the learner it meets,
    # the feed that learner holds included: nothing is granted twice.
    back = ReplayServer(small_spec(replay_ratio=4.0), snapshot=str(tmp_path / "replay"))
    assert back.limiter.samples == 30
    take(restarted, back, 5)
    assert back.limiter.samples == restarted.granted == 40


def test_sample_age_counts_in_weights_versions_and_is_never_negative():
    server = ReplayServer(small_spec(replay_ratio=4.0))
    ref = Reference(np.random.default_rng(7), max_episode=30, max_chunk=8)
    for _ in range(4):  # acted by weights after 1,000 pretraining updates
        for chunk in ref.episode_chunks():
            server.add(0, [chunk._replace(weights_version=1000)], [])
    server.feed(FeedRequest(ReplayMirror().state(), 4, 0, weights_version=1010))
    assert server.stats().sample_age == 10.0
    # A learner restarted from an older checkpoint counts from below the data's version.
    server.feed(FeedRequest(ReplayMirror().state(), 4, 4, weights_version=900))
    assert server.draws.sample_ages[-1] == 0.0


def test_weights_calls_answer_on_news_and_a_restarted_learner_replaces_the_dead_ones():
    server = ReplayServer(small_spec())
    # Nothing published: the call waits its time out and answers with no weights.
    assert server.weights(-1, wait_s=0.01).weights is None
    server.set_weights(40, ["old40"], 100.0)
    server.set_weights(30, ["late30"], 101.0)  # older than what it holds: ignored
    reply = server.weights(-1, wait_s=0.01)
    assert (reply.weights_version, reply.weights) == (40, ["old40"])
    assert server.weights(40, wait_s=0.01).weights is None  # it has them: no news
    server.set_weights(20, ["new20"], 102.0, replace=True)
    reply = server.weights(40, since=0.0, wait_s=0.01)  # lower, but what acts now
    assert (reply.weights_version, reply.weights) == (20, ["new20"])
    assert reply.publishes == ((20, 102.0),)  # the dead learner's history is gone


def test_a_parked_weights_call_answers_when_weights_are_published():
    server = ReplayServer(small_spec())
    server.set_weights(0, ["v0"], 1.0)
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(r=server.weights(0, wait_s=60)))
    thread.start()
    time.sleep(0.05)
    assert thread.is_alive()  # parked: nothing new yet
    server.set_weights(10, ["v10"], 2.0)
    thread.join(timeout=10)
    assert not thread.is_alive() and answer["r"].weights == ["v10"]


def test_collection_stops_at_total_steps_exactly_and_the_learner_drains_to_the_ratio():
    spec = dataclasses.replace(small_spec(), total_steps=45)
    server = ReplayServer(spec)
    server.feed_wait_s = 0.0
    ref = Reference(np.random.default_rng(5), max_episode=8, max_chunk=8)
    learner = ReplayMirror()
    done = False
    while not done:
        chunks = ref.episode_chunks()
        reply = server.add(1, chunks, [EpisodeStats(1.0, 8, False, False)])
        _, learner_feed = take(learner, server, 100)
        done = reply.done
    assert server.agent_steps == server.buffer.total_added == 45
    server.close()
    while not learner_feed.done:
        _, learner_feed = take(learner, server, 100)
    assert server.limiter.samples == 45 - 20  # ratio 1 after min_size 20


def test_metrics_window_reads_means_and_stops_on_nan():
    window = MetricsWindow()
    for v in (1.0, 3.0):
        window.add({"critic_loss": torch.tensor(v), "alpha": torch.tensor(0.5)})
    assert window.read(2) == {"critic_loss": 2.0, "alpha": 0.5}
    assert window.read(2) is None
    window.add({"critic_loss": torch.tensor(float("nan")), "alpha": torch.tensor(0.5)})
    with pytest.raises(NonFiniteLossError, match="critic_loss in updates 2..3"):
        window.read(3)


def test_a_failing_publisher_stops_the_update_loop_with_its_error():
    from distributed_sac.remote.learner import PublishError, WeightsPublisher

    class Broken(WeightsPublisher):
        def _publish(self, version, state):
            raise OSError("object store full")

    publisher = Broken(lambda version, ref: None)
    publisher.submit(1, {})
    with pytest.raises(PublishError, match="OSError: object store full"):
        publisher.flush(timeout=10)  # at once, not after the 60 s wait
    with pytest.raises(PublishError):
        publisher.submit(2, {})


def test_stats_never_see_a_container_change_size_while_updates_go_on():
    window = MetricsWindow(keep=10_000)
    server = ReplayServer(small_spec())
    ref = Reference(np.random.default_rng(10), max_episode=4, max_chunk=4)
    chunk = ref.episode_chunks()[0]
    stop = threading.Event()

    def churn() -> None:
        k = 0
        while not stop.is_set():
            window.recent.append({"critic_loss": 1.0, f"m{k % 7}": 2.0})
            window.read(k)
            window.add({"critic_loss": torch.tensor(1.0)})
            server.add(k, [chunk], [])  # a new worker id each time: the dict grows
            k += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            window.means()
            server.state()
    finally:
        stop.set()
        thread.join()
