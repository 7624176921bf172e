"""Parked adds cannot starve the learner or the driver: concurrency groups, bounded waits."""

from __future__ import annotations

import time

import numpy as np
import pytest

from distributed_sac.config.data import EMPTY_MIRROR, Chunk, FeedRequest
from distributed_sac.config.fields import ReplayConfig
from distributed_sac.remote.replay_server import ReplayServer, remote_replay
from distributed_sac.remote.weights_client import WeightsClient
from distributed_sac.replay.buffer import ReplaySpec

pytestmark = pytest.mark.ray

SHAPE, STACK, T = (4, 4), 2, 8


def _chunk(rng: np.random.Generator) -> Chunk:
    return Chunk(
        rng.integers(0, 256, (T + STACK, *SHAPE), dtype=np.uint8),
        rng.uniform(-1, 1, (T, 1)).astype(np.float32),
        rng.normal(size=T).astype(np.float32),
        np.zeros(T, bool),
        np.zeros(T, bool),
        0,
    )


def test_many_parked_adds_never_block_feed_or_stats(ray_cluster):
    ray = ray_cluster
    # Two add threads: the old single-pool actor deadlocked once its slots held parked adds.
    groups = {"add": 2, "feed": 1, "control": 1, "snapshot": 1, "weights": 1}
    cfg = ReplayConfig(capacity=4096, min_size=16, replay_ratio=1.0, ratio_tolerance=0.0)
    spec = ReplaySpec(cfg, SHAPE, STACK, 1, 4, 10**9, 0, chunk_length=T, max_insert=T)
    replay = ray.remote(concurrency_groups=groups)(ReplayServer).options(num_cpus=0).remote(spec)
    rng = np.random.default_rng(0)
    # min_size and one chunk: with a slack of ratio * chunk + 1 = 9 updates the limiter then
    # holds every further add until the learner samples.
    assert not any(
        r.throttled for r in ray.get([replay.add.remote(0, [_chunk(rng)], []) for _ in range(3)])
    )
    # Four times the add threads: parked adds hold every add thread, and more wait for one.
    parked = [replay.add.remote(w, [_chunk(rng)], []) for w in range(8)]
    stats = ray.get(replay.stats.remote(), timeout=60)
    assert stats.agent_steps == 24
    feed = ray.get(replay.feed.remote(FeedRequest(EMPTY_MIRROR, 64, 0)), timeout=60)
    assert feed.updates > 0 and feed.reset
    replies = ray.get(parked, timeout=300)  # bounded waits: every parked add answers
    assert any(r.throttled for r in replies)  # ... some of them: "send again"
    assert ray.get(replay.stats.remote(), timeout=60).agent_steps > 24


def _until(fn, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while (value := fn()) is None:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return value


def test_workers_get_each_publish_from_their_parked_call_and_measure_the_lag(ray_cluster):
    ray = ray_cluster
    cfg = ReplayConfig(capacity=256, min_size=16)
    spec = ReplaySpec(cfg, SHAPE, STACK, 1, 4, 10**9, 0, chunk_length=T, max_insert=T)
    replay = remote_replay(workers=1).options(num_cpus=0).remote(spec)
    client = WeightsClient(replay)
    assert client.poll() is None  # parks a call: nothing is published yet
    ray.get(replay.set_weights.remote(10, [ray.put("w10")], time.time()))
    version, ref = _until(client.poll)  # the parked call answered the publish
    assert (version, ray.get(ref)) == (10, "w10")
    client.loaded(10)
    client.acted(5)
    ray.get(replay.set_weights.remote(20, [ray.put("w20")], time.time()))
    time.sleep(0.01)
    client.acted(3)  # still version 10, with 20 out: 10 updates behind
    version, ref = client.refresh()  # after a blocked add: the newest, without waiting
    assert (version, ray.get(ref)) == (20, "w20")
    client.loaded(20)
    np.testing.assert_array_equal(client.lag.drain(), [0] * 5 + [10] * 3)
