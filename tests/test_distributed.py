"""End-to-end: 2 env workers on VisualPendulum (tiny preset) through replay, learner and back."""

from __future__ import annotations

import dataclasses
import json

import pytest

from distributed_sac.config import tiny_preset
from distributed_sac.remote.driver import Driver
from distributed_sac.run_dir import RunDir
from tests.wandb_records import history

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def finished_run(ray_cluster, tmp_path_factory):
    cfg = tiny_preset()
    cfg = dataclasses.replace(
        cfg,
        num_workers=2,
        learner_cpus=0,
        total_steps=300,
        log_every_s=0.5,
        eval=dataclasses.replace(cfg.eval, every=150, video=False),
    )
    run = RunDir.create(tmp_path_factory.mktemp("run") / "r", cfg)
    driver = Driver(cfg, run)
    record = driver.train()
    worker_stats = ray_cluster.get([w.stats.remote() for w in driver.workers])
    return cfg, run, record, worker_stats


def test_transitions_reach_replay_and_updates_happen(finished_run):
    cfg, run, record, _ = finished_run
    assert record["agent_steps"] >= cfg.total_steps
    assert record["replay_size"] >= cfg.total_steps
    expected_updates = cfg.replay.replay_ratio * (cfg.total_steps - cfg.replay.min_size)
    assert record["learner_updates"] == int(expected_updates)


def test_new_weight_versions_reach_the_workers(finished_run):
    cfg, _, record, worker_stats = finished_run
    assert record["weights_version"] > 0
    for stats in worker_stats:
        assert stats["policy_version"] > 0, stats
        assert stats["steps"] > 0


def test_metrics_jsonl_is_well_formed(finished_run):
    _, run, _, _ = finished_run
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) >= 2
    required = {
        "env_steps", "agent_steps", "learner_updates", "weights_version", "policy_lag",
        "replay_size", "agent_steps_per_s", "updates_per_s", "episode_return_mean",
    }
    for r in records:
        assert required <= set(r), required - set(r)
        assert r["env_steps"] == 3 * r["agent_steps"]
    steps = [r["agent_steps"] for r in records]
    assert steps == sorted(steps)
    assert any(r.get("eval_return_mean") is not None for r in records)


def test_replay_ratio_is_held(finished_run):
    cfg, _, record, _ = finished_run
    # The limiter's slack is one chunk of updates either side, or 10% once the run is long.
    slack = max(cfg.replay.replay_ratio * cfg.rollout.chunk_length + 1,
                cfg.replay.ratio_tolerance * (record["agent_steps"] - cfg.replay.min_size))
    target = cfg.replay.replay_ratio * (record["agent_steps"] - cfg.replay.min_size)
    assert abs(record["learner_updates"] - target) <= slack + 3  # + samples in flight


def test_final_checkpoint_written(finished_run):
    _, run, record, _ = finished_run
    ckpts = sorted(run.checkpoints.glob("ckpt_*.pt"))
    assert ckpts and ckpts[-1].name == f"ckpt_{record['agent_steps']:012d}.pt"
    assert (run.checkpoints / "replay.npz").exists()


def test_wandb_offline_run_holds_the_run(finished_run):
    _, run, _, _ = finished_run
    logs = list((run.path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    keys = {k for row in history(logs[0]) for k in row}
    for key in ("agent_steps", "episode_return_mean", "loss/critic_loss", "eval_return_mean"):
        assert key in keys, (key, sorted(keys))
