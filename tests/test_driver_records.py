"""The driver's metrics records, with its actors faked (no Ray cluster): the evaluation that
finishes at the end is recorded, and rates count from where a resumed learner starts."""

from __future__ import annotations

import dataclasses
from collections import deque
from types import SimpleNamespace

import pytest

from distributed_sac.config.data import EpisodeStats, EvalRecord, LearnerStats, ReplayStats
from distributed_sac.config.presets import tiny_preset
from distributed_sac.remote import driver as driver_module
from distributed_sac.remote import evaluations, worker_pool
from distributed_sac.remote.driver import Driver
from distributed_sac.remote.evaluations import Evaluations
from distributed_sac.remote.worker_pool import WorkerPool
from distributed_sac.run.records import CheckpointPayload, MetricsRecord, RunCounters
from distributed_sac.run.run_dir import RunDir, load_run_checkpoint
from tests.conftest import run_payload


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
    for module in (driver_module, evaluations, worker_pool):
        monkeypatch.setattr(module, "ray", FakeRay)
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
        snapshot=lambda: run_payload({}).replay.to_dict(),
    )
    d.learner = Actor(stats=lambda: learner_stats, run=lambda *a: 0, state=lambda: {})
    d.counters = RunCounters()
    d.pool = WorkerPool([], d.counters)
    d.wandb = Recorder()
    d._last_checkpoint, d._returns = -1, deque(maxlen=20)
    d._warned_stats = False
    d.evals = Evaluations(None, d.learner, cfg.eval.every, 0, None)
    # An evaluation still running when collection ends.
    d.evals.running = Ref(EvalRecord(400, 4_900, -482.0, 1.0, 120.0, None))
    return d


def test_the_evaluation_that_finishes_at_the_end_is_recorded(driver):
    record = driver.train()
    assert record["eval_return_mean"] == -482.0
    assert record["eval_max_episode_steps"] == driver.cfg.eval.max_episode_steps
    assert driver.run.read_metrics()[-1]["eval_return_mean"] == -482.0
    assert driver.wandb.records[-1]["eval_return_mean"] == -482.0


def test_a_final_point_never_evaluated_is_evaluated_on_the_final_weights(driver):
    """A short run reached --total-steps and drained within one log interval, so no
    evaluation started: one of the final point starts on the final weights and lands in the
    final record (a resumed sweep trial finished with no evaluation at all)."""
    stats = driver.replay._methods["stats"]()
    first = iter([stats._replace(agent_steps=100)])  # where this session started
    driver.replay._methods["stats"] = lambda: next(first, stats)
    driver.evals.running = None
    asked = []

    def evaluate(weights, steps, video):
        asked.append((weights, steps))
        return EvalRecord(steps, 7, -300.0, 2.0, 67.0, None)

    driver.learner._methods["latest_weights"] = lambda: (7, ["final weights"])
    driver.evals.evaluator = Actor(evaluate=evaluate)
    record = driver.train()
    assert asked == [("final weights", 400)]
    assert record["eval_return_mean"] == -300.0 and record["eval_agent_steps"] == 400
    assert driver.run.read_metrics()[-1] == record


def test_an_evaluated_final_point_is_not_evaluated_again(driver):
    """The fixture's run resumed at 400 of 400: its final point was evaluated before."""
    driver.evals.evaluator = Actor(evaluate=lambda *a: pytest.fail("evaluated again"))
    assert driver.train()["eval_return_mean"] == -482.0


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
    replay = run_payload({}).replay.to_dict()
    state = {
        "agent": {"num_updates": 1_300},
        "counters": {"pretrain_updates": 1_000},
        "replay": {**replay, "limiter": {"inserts": 400, "samples": 340, "closed": False}},
    }
    assert CheckpointPayload.from_state(state).granted_updates == 300
    del state["counters"]["pretrain_updates"]  # a checkpoint from before the count was kept
    old = CheckpointPayload.from_state(state)
    assert (old.granted_updates, old.counters.pretrain_updates) == (340, 960)
    # Grants still in flight when it was taken (samples above the updates) were never made.
    state["replay"]["limiter"]["samples"] = 1_400
    assert CheckpointPayload.from_state(state).granted_updates == 1_300


METRICS_KEYS = [
    "time", "agent_steps", "env_steps", "learner_updates", "weights_version", "acting_lag",
    "acting_lag_p90", "sample_age", "demo_fraction_held", "replay_size", "agent_steps_per_s",
    "updates_per_s", "learner_idle_frac", "replay_ratio_held", "episodes",
    "episode_return_mean", "worker_restarts", "learner_restarts",
]  # fmt: skip
"""The keys of a metrics record as metrics.jsonl has always held them, in order."""
EVAL_KEYS = [
    "eval_return_mean", "eval_return_std", "eval_length_mean", "eval_video", "eval_agent_steps",
    "eval_max_episode_steps",
]  # fmt: skip


def test_metrics_records_keep_their_keys(driver):
    driver.learner._methods["stats"] = lambda: LearnerStats(
        RESUMED_UPDATES, RESUMED_UPDATES, 0.0, 0.0, {"critic_loss": 1.5, "alpha": 0.1}, {}
    )
    driver.train()
    with_eval, *_ = (r for r in driver.run.read_metrics() if "eval_return_mean" in r)
    assert list(with_eval) == METRICS_KEYS + ["loss/alpha", "loss/critic_loss"] + EVAL_KEYS
    assert with_eval["episodes"] == 3 and with_eval["sample_age"] is None
    record = MetricsRecord.from_json(with_eval)
    assert record.losses == {"alpha": 0.1, "critic_loss": 1.5} and record.eval_agent_steps == 400
    assert record.to_json() == with_eval


def test_the_final_checkpoint_holds_the_drivers_counters(driver):
    driver.counters.worker_restarts = 2
    driver.train()
    payload = load_run_checkpoint(driver.run.checkpoints / "ckpt_000000000400.pt", driver.cfg)
    # `episodes` is the count of the last record before the checkpoint: none ran here.
    assert payload.counters == RunCounters(episodes=0, worker_restarts=2)
    assert payload.replay == run_payload({}).replay


def test_a_worker_that_died_just_before_the_end_is_counted(driver, monkeypatch):
    """The replay finished collection at --total-steps and the learner drained before Ray
    failed the killed worker's run call: the driver waits for the calls still out, so the final
    record counts the restart (a fault-matrix cell once saw 0 worker restarts after a kill)."""
    from ray.exceptions import RayActorError

    dead = object()  # the run call of a worker whose process has died

    class LateRay(FakeRay):
        @staticmethod
        def get(refs):
            if refs is dead:
                raise RayActorError()
            return FakeRay.get(refs)

        @staticmethod
        def wait(refs, num_returns=1, timeout=None):
            alive = [r for r in refs if r is not dead]  # Ray has not noticed the death yet
            return (alive or list(refs)), []

    for module in (driver_module, evaluations, worker_pool):
        monkeypatch.setattr(module, "ray", LateRay)
    driver.pool = WorkerPool(
        [
            SimpleNamespace(
                run=SimpleNamespace(remote=lambda *a: dead),
                stats=SimpleNamespace(remote=lambda: dead),
                ready=SimpleNamespace(remote=lambda: Ref(True)),
            )
        ],
        driver.counters,
    )
    record = driver.train()
    assert record["worker_restarts"] == 1
    assert driver.run.read_metrics()[-1]["worker_restarts"] == 1
