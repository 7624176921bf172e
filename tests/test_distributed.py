"""End-to-end: 2 env workers on VisualPendulum (tiny preset) through replay, learner and back."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.request

import pytest
import torch

from distributed_sac.remote.driver import Driver
from distributed_sac.run.run_dir import RunDir
from tests.conftest import end_actors, tiny_ray_config
from tests.wandb_records import history

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def finished_run(ray_cluster, tmp_path_factory):
    cfg = tiny_ray_config(eval_every=150, total_steps=400, log_every_s=0.5, wandb="offline")
    run = RunDir.create(tmp_path_factory.mktemp("run") / "r", cfg)
    driver = Driver(cfg, run)
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(record=driver.train()), daemon=True)
    thread.start()
    SCRAPES.extend(_scrape_while(thread.is_alive, interval=1.0))
    thread.join(timeout=300)
    worker_stats = ray_cluster.get([w.stats.remote() for w in driver.workers])
    end_actors(driver)  # their names are free for the next run in this module
    return cfg, run, outcome["record"], worker_stats


SCRAPES: list[dict[str, float]] = []


def _scrape_while(alive, interval: float) -> list[dict[str, float]]:
    """Sums of each `ray_sac_*` series from the node's Prometheus endpoint, every interval."""
    import ray

    port = ray.nodes()[0]["MetricsExportPort"]
    scrapes = []
    while alive():
        time.sleep(interval)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        totals: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("ray_sac_"):
                name, value = line.split("{")[0].split(" ")[0], float(line.rsplit(" ", 1)[1])
                totals[name] = totals.get(name, 0.0) + value
        scrapes.append(totals)
    return scrapes


def test_run_ends_exactly_and_the_last_record_and_checkpoint_agree(finished_run):
    cfg, run, record, _ = finished_run
    assert record["agent_steps"] == record["replay_size"] == cfg.total_steps
    expected_updates = cfg.replay.replay_ratio * (cfg.total_steps - cfg.replay.min_size)
    assert record["learner_updates"] == int(expected_updates)
    ckpt = sorted(run.checkpoints.glob("ckpt_*.pt"))[-1]
    saved = torch.load(ckpt, weights_only=True)
    assert saved["agent"]["num_updates"] == record["learner_updates"]
    assert saved["replay"]["limiter"]["inserts"] == record["agent_steps"]


def test_new_weight_versions_reach_the_workers(finished_run):
    cfg, _, record, worker_stats = finished_run
    assert record["weights_version"] > 0
    for stats in worker_stats:
        assert stats.weights_version > 0, stats
        assert stats.steps > 0


def test_metrics_jsonl_is_well_formed(finished_run):
    _, run, _, _ = finished_run
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) >= 2
    required = {
        "env_steps",
        "agent_steps",
        "learner_updates",
        "weights_version",
        "acting_lag",
        "acting_lag_p90",
        "sample_age",
        "replay_size",
        "agent_steps_per_s",
        "updates_per_s",
        "episode_return_mean",
    }
    for r in records:
        assert required <= set(r), required - set(r)
    steps = [r["agent_steps"] for r in records]
    assert steps == sorted(steps)
    assert any(r.get("eval_return_mean") is not None for r in records)
    lags = [r["acting_lag"] for r in records if r["acting_lag"] is not None]
    assert lags and all(0 <= lag <= 10 * 10 for lag in lags)  # publish_every 10 in tiny


def test_final_checkpoint_written(finished_run):
    _, run, record, _ = finished_run
    ckpts = sorted(run.checkpoints.glob("ckpt_*.pt"))
    assert ckpts and ckpts[-1].name == f"ckpt_{record['agent_steps']:012d}.pt"
    assert (run.checkpoints / "replay" / "manifest.json").exists()


def test_wandb_offline_run_holds_the_run(finished_run):
    _, run, _, _ = finished_run
    logs = list((run.path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    keys = {k for row in history(logs[0]) for k in row}
    for key in ("agent_steps", "episode_return_mean", "loss/critic_loss", "eval_return_mean"):
        assert key in keys, (key, sorted(keys))


def test_pretraining_on_demonstrations_changes_the_learner(ray_cluster, tmp_path):
    import numpy as np
    import ray

    from distributed_sac.envs.rollout import Rollout
    from distributed_sac.remote.learner import Learner
    from distributed_sac.remote.replay_server import remote_replay
    from distributed_sac.replay.buffer import ReplaySpec
    from distributed_sac.replay.demos import demo_meta, load_demos, save_episode

    cfg = tiny_ray_config()
    rollout = Rollout(
        cfg.env, cfg.wrappers, dataclasses.replace(cfg.rollout, chunk_length=1000), 1, 5
    )
    chunks = []
    while not chunks:
        chunks, _ = rollout.step(None, explore=True)
    c = chunks[0]
    meta = demo_meta(cfg.env, cfg.wrappers, seed=5)
    save_episode(
        tmp_path / "ep0.npz", c.frames, c.action, c.reward, c.terminated, c.truncated, meta
    )
    demos = load_demos([str(tmp_path)], cfg.env, cfg.wrappers)
    assert len(demos) == 1 and np.array_equal(demos[0].frames, c.frames)

    shape = cfg.wrappers.obs_shape
    replay = remote_replay().options(num_cpus=0).remote(ReplaySpec.from_config(cfg, 1))
    learner = (
        ray.remote(Learner).options(max_concurrency=4, num_cpus=0).remote(cfg, shape, 1, "cpu")
    )
    assert ray.get(replay.load_demos.remote(demos)) == c.num_transitions
    before = ray.get(ray.get(learner.latest_weights.remote())[1][0])
    assert ray.get(learner.pretrain.remote(replay, 6)) == 6
    after = ray.get(ray.get(learner.latest_weights.remote())[1][0])
    assert after.weights_version == 6
    moved = [k for k in before.state if not np.array_equal(before.state[k], after.state[k])]
    assert any(k.startswith("trunk") for k in moved) and any("convs" in k for k in moved)


def test_prometheus_export_holds_our_metrics_and_they_grow(finished_run):
    seen = [s for s in SCRAPES if "ray_sac_agent_steps_total" in s]
    assert len(seen) >= 2, [sorted(s) for s in SCRAPES]
    names = set().union(*seen)
    for name in (
        "ray_sac_agent_steps_total",
        "ray_sac_env_steps_total",
        "ray_sac_replay_size",
        "ray_sac_learner_updates_total",
        "ray_sac_weights_version",
    ):
        assert name in names, sorted(names)
    assert seen[-1]["ray_sac_agent_steps_total"] > seen[0]["ray_sac_agent_steps_total"]


def test_a_dmc_task_trains_from_rgb_frames(ray_cluster, tmp_path):
    """dmc:cartpole-swingup end to end: RGB stacks of 3 frames (9 channels) through the workers,
    the replay, the learner's mirror and the evaluator; the run ends at its exact counts."""
    from distributed_sac.envs.registry import with_env_defaults

    cfg = with_env_defaults(
        tiny_ray_config(env="dmc:cartpole-swingup", eval_every=100, total_steps=200)
    )
    cfg = dataclasses.replace(cfg, wrappers=dataclasses.replace(cfg.wrappers, image_size=16))
    assert cfg.wrappers.obs_shape == (9, 16, 16) and cfg.wrappers.action_repeat == 8
    run = RunDir.create(tmp_path / "r", cfg)
    driver = Driver(cfg, run)
    record = driver.train()
    end_actors(driver)
    assert record["agent_steps"] == record["replay_size"] == 200
    assert record["env_steps"] == 200 * 8
    assert record["learner_updates"] == int(cfg.replay.replay_ratio * (200 - cfg.replay.min_size))
    evals = [r for r in run.read_metrics() if r.get("eval_return_mean") is not None]
    assert evals and all(0.0 <= r["eval_return_mean"] <= 30 * 8 for r in evals)
    saved = torch.load(sorted(run.checkpoints.glob("ckpt_*.pt"))[-1], weights_only=True)
    critic = saved["agent"]["critic"]
    first_conv = next(v for k, v in critic.items() if k.endswith("convs.0.weight"))
    assert first_conv.shape[1] == 9
