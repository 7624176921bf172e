"""Fault injection in a tiny run: an env worker's process, the replay actor's and the learner's
are killed, one after the other; the run completes with the ratio's updates."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from distributed_sac.remote.driver import Driver
from distributed_sac.remote.learner import UPDATES_PER_FEED
from distributed_sac.run_dir import RunDir
from tests.conftest import tiny_ray_config

pytestmark = pytest.mark.ray


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _last(run: RunDir, key: str) -> int:
    records = run.read_metrics()
    return records[-1][key] if records else 0


def _wait_for_checkpoint(run: RunDir) -> int:
    """The update count of the run's first checkpoint."""
    _wait_for(lambda: any(run.checkpoints.glob("ckpt_*.pt")), 120, "a checkpoint")
    first = min(run.checkpoints.glob("ckpt_*.pt"))
    return int(torch.load(first, weights_only=True)["agent"]["num_updates"])


@pytest.fixture(scope="module")
def faulty_run(ray_cluster, tmp_path_factory):
    cfg = tiny_ray_config(total_steps=600, checkpoint_every=80, log_every_s=0.3)
    run = RunDir.create(tmp_path_factory.mktemp("faults") / "run", cfg)
    driver = Driver(cfg, run)
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["record"] = driver.train()
        except BaseException as exc:  # surfaced by the assertions below
            outcome["error"] = exc

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    _wait_for(lambda: _last(run, "agent_steps") > 60, 120, "first transitions")
    os.kill(ray_cluster.get(driver.workers[0].pid.remote()), signal.SIGKILL)
    # The learner dies after a checkpoint, having made updates since: those are lost.
    ckpt_updates = _wait_for_checkpoint(run)
    _wait_for(lambda: _last(run, "learner_updates") > ckpt_updates + 5, 120, "more updates")
    assert _last(run, "agent_steps") < cfg.total_steps, "the run ended before the learner's kill"
    os.kill(ray_cluster.get(driver.learner.pid.remote()), signal.SIGKILL)
    _wait_for(lambda: _last(run, "learner_restarts") > 0, 120, "the learner's restart")
    manifest = run.checkpoints / "replay" / "manifest.json"
    snapshot_steps = json.loads(manifest.read_text())["counters"]["limiter"]["inserts"]
    os.kill(ray_cluster.get(driver.replay.pid.remote()), signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive(), "training hung after the faults"
    if "error" in outcome:
        raise outcome["error"]
    stats = ray_cluster.get(driver.replay.stats.remote())
    return cfg, run, outcome["record"], stats, snapshot_steps


def test_run_completes_and_counts_the_restarts(faulty_run):
    cfg, _, record, _, _ = faulty_run
    assert record["agent_steps"] == cfg.total_steps
    assert record["worker_restarts"] >= 1
    assert record["learner_restarts"] == 1
    # The ratio's updates: those the dead learner made after its checkpoint are granted again.
    # A replay restored from its snapshot takes the learner's count of granted updates, so it
    # grants again at most the feed that was in flight when it died.
    ratio = int(cfg.replay.replay_ratio * (cfg.total_steps - cfg.replay.min_size))
    assert ratio <= record["learner_updates"] <= ratio + UPDATES_PER_FEED


def test_replay_came_back_from_its_snapshot(faulty_run):
    cfg, _, record, stats, snapshot_steps = faulty_run
    assert snapshot_steps >= cfg.checkpoint_every
    # Per-worker counts survive the restart and add up to the global count.
    assert sum(stats.worker_steps.values()) == stats.agent_steps == record["agent_steps"]
    assert set(stats.worker_steps) == {0, 1}
    assert stats.replay_size >= min(cfg.replay.capacity, snapshot_steps)


def test_the_update_count_goes_back_only_where_the_learner_restarted(faulty_run):
    _, run, record, _, _ = faulty_run
    # (Agent steps may go back too: a replay restored from its snapshot has lost what came
    # after it, and collects it again.)
    updates = [r["learner_updates"] for r in run.read_metrics()]
    assert int(np.sum(np.diff(updates) < 0)) <= record["learner_restarts"]
