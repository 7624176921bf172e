"""The driver's metrics records, with its actors faked (no Ray cluster): the evaluation that
finishes at the end is recorded, and rates count from where a resumed learner starts."""

from __future__ import annotations

import dataclasses
from collections import deque
from types import SimpleNamespace

import pytest

from distributed_sac.data import EpisodeStats, EvalRecord, LearnerStats, ReplayStats
from distributed_sac.presets import tiny_preset
from distributed_sac.remote import driver as driver_module
from distributed_sac.remote.driver import Driver
from distributed_sac.run_dir import RunDir


class Ref:
    """An object ref whose value is already there."""

    def __init__(self, value):
        self.value = value


class FakeRay:
    @staticmethod
    def get(refs):
        return [r.value for r in refs] if isinstance(refs, list) else refs.value

    @staticmethod
    def wait(refs, num_returns=1, timeout=None):
        return list(refs), []


class Actor:
    """`actor.method.remote(*args)` calls `methods[method](*args)` and returns its Ref."""

    def __init__(self, **methods):
        self._methods = methods

    def __getattr__(self, name):
        fn = self._methods[name]
        return SimpleNamespace(remote=lambda *args: Ref(fn(*args)))


class Recorder:
    def __init__(self):
        self.records = []

    def log(self, record, step):
        self.records.append(record)

    def finish(self):
        pass


RESUMED_UPDATES = 5_000


@pytest.fixture
def driver(tmp_path, monkeypatch):
    monkeypatch.setattr(driver_module, "ray", FakeRay)
    cfg = dataclasses.replace(tiny_preset(), wandb="disabled", total_steps=400)
    replay_stats = ReplayStats(
        agent_steps=400,
        replay_size=400,
        episodes_total=3,
        episodes=[EpisodeStats(-100.0, 67, False, False)],
        replay_ratio_held=1.0,
        worker_steps={},
        sample_age=float("nan"),
        closed=True,
    )
    # A resumed learner: its update count and wait time were not made in this session.
    learner_stats = LearnerStats(
        updates=RESUMED_UPDATES,
        weights_version=RESUMED_UPDATES,
        wait_s=123.0,
        update_s=0.0,
        losses={},
        publish_times={},
    )
    d = Driver.__new__(Driver)
    d.cfg = cfg
    d.run = RunDir.create(tmp_path / "run", cfg)
    d.replay = Actor(
        stats=lambda: replay_stats,
        close=lambda: None,
        state=lambda: {},
        snapshot=lambda *path: {},
    )
    d.learner = Actor(stats=lambda: learner_stats, run=lambda *a: 0, state=lambda: {})
    d.workers, d._restarts, d._coming_back = [], [], {}
    d.counters = {"worker_restarts": 0, "learner_restarts": 0, "episodes": 0}
    d.wandb = Recorder()
    d._last_checkpoint, d._returns, d._last_eval = -1, deque(maxlen=20), None
    d._warned_stats = False
    # An evaluation still running when collection ends.
    d._eval = Ref(EvalRecord(400, 4_900, -482.0, 1.0, 120.0, None))
    return d


def test_the_evaluation_that_finishes_at_the_end_is_recorded(driver):
    record = driver.train()
    assert record["eval_return_mean"] == -482.0
    assert record["eval_max_episode_steps"] == driver.cfg.eval.max_episode_steps
    assert driver.run.read_metrics()[-1]["eval_return_mean"] == -482.0
    assert driver.wandb.records[-1]["eval_return_mean"] == -482.0


def test_rates_after_resume_count_only_this_sessions_updates(driver):
    record = driver.train()
    assert record["learner_updates"] == RESUMED_UPDATES
    assert record["updates_per_s"] == 0.0
    assert record["learner_idle_frac"] == 0.0


def test_a_failed_stats_call_is_retried_and_warned_once(driver, caplog):
    from ray.exceptions import RayTaskError

    healthy = driver.learner._methods["stats"]
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) in (2, 3):  # the final record's first two tries
            raise RayTaskError("stats", "", RuntimeError("deque mutated during iteration"))
        return healthy()

    driver.learner._methods["stats"] = flaky
    record = driver.train()  # before: the RayTaskError ended the run without its record
    assert record["learner_updates"] == RESUMED_UPDATES
    assert driver.run.read_metrics()[-1]["learner_updates"] == RESUMED_UPDATES
    warnings = [r for r in caplog.records if "stats call failed" in r.getMessage()]
    assert len(warnings) == 1 and "deque mutated" in warnings[0].getMessage()


def test_a_checkpoints_granted_updates_leave_out_the_pretraining():
    from distributed_sac.remote.lifecycle import granted_updates

    payload = {
        "agent": {"num_updates": 1_300},
        "counters": {"pretrain_updates": 1_000},
        "replay": {"limiter": {"samples": 340}},  # in flight when it was taken: not made
    }
    assert granted_updates(payload) == 300
    del payload["counters"]["pretrain_updates"]  # a checkpoint from before the count was kept
    assert granted_updates(payload) == 340
