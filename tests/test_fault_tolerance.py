"""Fault injection in a tiny run: an env worker's process and the replay actor's are killed."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from distributed_sac.remote.driver import Driver
from distributed_sac.run_dir import RunDir
from tests.conftest import tiny_ray_config

pytestmark = pytest.mark.ray


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _last_steps(run: RunDir) -> int:
    records = run.read_metrics()
    return records[-1]["agent_steps"] if records else 0


@pytest.fixture(scope="module")
def faulty_run(ray_cluster, tmp_path_factory):
    cfg = tiny_ray_config(total_steps=500, checkpoint_every=120, log_every_s=0.3)
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
    _wait_for(lambda: _last_steps(run) > 60, 120, "first transitions")
    os.kill(ray_cluster.get(driver.workers[0].pid.remote()), signal.SIGKILL)
    manifest = run.checkpoints / "replay" / "manifest.json"
    _wait_for(manifest.exists, 180, "a replay snapshot")
    snapshot_steps = json.loads(manifest.read_text())["counters"]["limiter"]["inserts"]
    os.kill(ray_cluster.get(driver.replay.pid.remote()), signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive(), "training hung after the faults"
    if "error" in outcome:
        raise outcome["error"]
    stats = ray_cluster.get(driver.replay.stats.remote())
    return cfg, run, outcome["record"], stats, snapshot_steps


def test_run_completes_and_counts_the_restart(faulty_run):
    cfg, _, record, _, _ = faulty_run
    assert record["agent_steps"] == cfg.total_steps
    assert record["worker_restarts"] >= 1
    # At least the ratio's updates. Not exactly: the replay restored from its snapshot grants
    # again the updates the learner made between that snapshot and the replay's death (its
    # counters go back to the snapshot's; noted as a known issue).
    assert record["learner_updates"] >= int(
        cfg.replay.replay_ratio * (cfg.total_steps - cfg.replay.min_size)
    )


def test_replay_came_back_from_its_snapshot(faulty_run):
    cfg, _, record, stats, snapshot_steps = faulty_run
    assert snapshot_steps >= cfg.checkpoint_every
    # Per-worker counts survive the restart and add up to the global count.
    assert sum(stats.worker_steps.values()) == stats.agent_steps == record["agent_steps"]
    assert set(stats.worker_steps) == {0, 1}
    assert stats.replay_size >= min(cfg.replay.capacity, snapshot_steps)


def test_metrics_stay_monotonic_through_the_faults(faulty_run):
    _, run, _, _, _ = faulty_run
    updates = [r["learner_updates"] for r in run.read_metrics()]
    assert updates == sorted(updates)
