"""The fault matrix: tiny runs that kill an env worker, the replay or the learner once, at an
agent step drawn from a seeded generator, with and without demonstrations (pretrained on or
not), on a fresh run and on a resumed one. Every run ends at exactly ``total_steps`` agent steps
and exactly the rate limiter's count of updates (pretraining + ratio x (steps - min_size)), and
a run with demonstrations still samples them after the kill.

The whole cross (18 runs, a few minutes) is marked slow; CI runs a seeded sample of it, one
cell per victim, and the learner killed during its initial pretraining. The replay and then the
learner killed in one run is slow too.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import threading
import time

import numpy as np
import pytest
import ray

from distributed_sac.config.data import Chunk
from distributed_sac.remote import session
from distributed_sac.remote.driver import Driver
from distributed_sac.run.run_dir import RunDir
from tests.conftest import end_actors, tiny_ray_config

pytestmark = pytest.mark.ray

VICTIMS = ("worker", "replay", "learner")
DEMOS = ("none", "pretrained", "unpretrained")
STARTS = ("fresh", "resume")
CELLS = list(itertools.product(VICTIMS, DEMOS, STARTS))
SEED = 22
PRETRAIN = 40
TOTAL, FIRST_SESSION = 240, 100


def _sample(rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """One cell per victim, its demos and start modes drawn at random."""
    return [(v, DEMOS[rng.integers(3)], STARTS[rng.integers(2)]) for v in VICTIMS]


CI_CELLS = _sample(np.random.default_rng(SEED))
SLOW_CELLS = [c for c in CELLS if c not in CI_CELLS]


def _demo_chunks(cfg, n: int = 4, t: int = 16) -> list[Chunk]:
    rng = np.random.default_rng(0)
    stack, h, w = cfg.wrappers.obs_shape
    return [
        Chunk(
            rng.integers(0, 256, (t + stack, h, w), dtype=np.uint8),
            rng.uniform(-1, 1, (t, 1)).astype(np.float32),
            rng.normal(size=t).astype(np.float32),
            np.zeros(t, bool),
            np.eye(1, t, t - 1, dtype=bool)[0],
        )
        for _ in range(n)
    ]


def _config(demos: str, total: int):
    cfg = tiny_ray_config(total_steps=total, checkpoint_every=60, log_every_s=0.2)
    return dataclasses.replace(cfg, replay=dataclasses.replace(cfg.replay, min_size=48))


def expected_updates(cfg, pretrain: int) -> int:
    ratio = cfg.replay.replay_ratio
    return pretrain + int(np.floor(ratio * (cfg.total_steps - cfg.replay.min_size) + 1e-9))


def _pid(driver: Driver, victim: str) -> int:
    actor = {"worker": driver.workers[0], "replay": driver.replay, "learner": driver.learner}
    return ray.get(actor[victim].pid.remote())


class Killer:
    """Kills each victim once the replay has collected its agent step (in order)."""

    def __init__(self, driver: Driver, kills: list[tuple[str, int]]) -> None:
        self.driver, self.kills, self.done = driver, list(kills), []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self.kills and not self._stop.is_set():
            victim, step = self.kills[0]
            try:
                steps = ray.get(self.driver.replay.stats.remote(), timeout=5).agent_steps
                if steps >= step:
                    os.kill(_pid(self.driver, victim), signal.SIGKILL)
                    self.done.append((victim, steps))
                    self.kills.pop(0)
                    time.sleep(1.0)  # let Ray notice before the next kill
            except (ray.exceptions.RayError, ProcessLookupError):
                pass
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _train(driver: Driver, chunks, pretrain: int) -> dict:
    if chunks is not None:
        driver.pretrain(chunks, pretrain)
    return driver.train()


def run_cell(tmp_path, victims: list[str], demos: str, start: str, seed: int):
    """One tiny run (or a first session, then a resumed one) with the kills; returns
    (cfg, final record, metrics records, kills done, pretraining updates)."""
    rng = np.random.default_rng(seed)
    pretrain = PRETRAIN if demos == "pretrained" else 0
    cfg = _config(demos, FIRST_SESSION if start == "resume" else TOTAL)
    chunks = _demo_chunks(cfg) if demos != "none" else None
    run = RunDir.create(tmp_path / "run", cfg)
    driver = Driver(cfg, run)
    if start == "resume":
        _train(driver, chunks, pretrain)
        end_actors(driver)
        plan = session.prepare(
            dataclasses.replace(cfg, total_steps=TOTAL), str(run.path), given={"total_steps"}
        )
        cfg = plan.cfg
        driver = Driver(cfg, plan.run, resume=True, checkpoint=plan.checkpoint)
        chunks = None  # the resumed run's replay has its own copy
    low = FIRST_SESSION + 10 if start == "resume" else 10
    # At least 120 steps before the end: Ray has time to report a killed worker before it.
    steps = sorted(rng.integers(low, TOTAL - 120, len(victims)))
    killer = Killer(driver, list(zip(victims, steps, strict=True)))
    try:
        record = _train(driver, chunks, pretrain)
    finally:
        killer.stop()
        records = driver.run.read_metrics()
        end_actors(driver)
    return cfg, record, records, killer.done, pretrain


def check_cell(cfg, record, records, kills, victims, demos, pretrain) -> None:
    assert [v for v, _ in kills] == victims, f"not every kill happened before the end: {kills}"
    assert record["agent_steps"] == cfg.total_steps == TOTAL
    assert record["learner_updates"] == expected_updates(cfg, pretrain)
    if "learner" in victims:
        assert record["learner_restarts"] >= 1
    if "worker" in victims:
        assert record["worker_restarts"] >= 1
    assert all(r.get("sample_age") is None or r["sample_age"] >= 0 for r in records)
    if demos != "none":
        last_kill = kills[-1][1]
        after = [r for r in records if r["agent_steps"] > last_kill + 10]
        assert after and all(r["demo_fraction_held"] > 0 for r in after), [
            (r["agent_steps"], r["demo_fraction_held"]) for r in records
        ]
    else:
        assert all(r["demo_fraction_held"] == 0 for r in records)


def _cell(tmp_path, victim, demos, start):
    seed = SEED + CELLS.index((victim, demos, start))
    cfg, record, records, kills, pretrain = run_cell(tmp_path, [victim], demos, start, seed)
    check_cell(cfg, record, records, kills, [victim], demos, pretrain)


@pytest.mark.parametrize("victim,demos,start", CI_CELLS)
def test_a_kill_ends_at_the_exact_counts(ray_cluster, tmp_path, victim, demos, start):
    _cell(tmp_path, victim, demos, start)


@pytest.mark.slow
@pytest.mark.parametrize("victim,demos,start", SLOW_CELLS)
def test_a_kill_ends_at_the_exact_counts_whole_cross(ray_cluster, tmp_path, victim, demos, start):
    _cell(tmp_path, victim, demos, start)


@pytest.mark.slow
def test_the_replay_then_the_learner_killed_in_one_run(ray_cluster, tmp_path):
    victims = ["replay", "learner"]
    cfg, record, records, kills, pretrain = run_cell(tmp_path, victims, "pretrained", "fresh", 5)
    check_cell(cfg, record, records, kills, victims, "pretrained", pretrain)


def test_a_learner_killed_during_pretraining_is_restarted_and_pretrains_again(
    ray_cluster, tmp_path
):
    cfg = _config("pretrained", 120)
    run = RunDir.create(tmp_path / "run", cfg)
    driver = Driver(cfg, run)
    pretrain = 300
    killed = {}

    def kill_while_pretraining() -> None:
        while True:
            try:
                if ray.get(driver.learner.stats.remote(), timeout=5).updates >= 20:
                    killed["pid"] = _pid(driver, "learner")
                    os.kill(killed["pid"], signal.SIGKILL)
                    return
            except ray.exceptions.RayError:
                pass
            time.sleep(0.01)

    thread = threading.Thread(target=kill_while_pretraining, daemon=True)
    thread.start()
    try:
        record = _train(driver, _demo_chunks(cfg), pretrain)
    finally:
        thread.join(timeout=30)
        end_actors(driver)
    assert "pid" in killed
    assert record["learner_restarts"] == 1
    assert (record["agent_steps"], record["learner_updates"]) == (
        120,
        expected_updates(cfg, pretrain),
    )
