"""Runs on a two-node `ray.cluster_utils.Cluster`, one node offering a GPU: where the actors
are placed, and a second session resuming the first run (its counts and replay restored).

The resume test ends the first run's actors, so it stays last in this module."""

from __future__ import annotations

import dataclasses

import pytest
import ray
import torch
from ray.cluster_utils import Cluster

from distributed_sac.remote import session
from distributed_sac.remote.driver import Driver
from distributed_sac.run.run_dir import RunDir
from tests.conftest import end_actors, tiny_ray_config

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False},
    )
    # The "GPU" node: Ray schedules on the resource; torch here sees no CUDA device.
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        yield cluster, gpu_node
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def placed(two_nodes, tmp_path_factory):
    _, gpu_node = two_nodes
    path = tmp_path_factory.mktemp("placement") / "run"
    cfg = tiny_ray_config(total_steps=120, run_dir=str(path))
    run = RunDir.create(path, cfg)
    driver = Driver(cfg, run)
    record = driver.train()
    workers = ray.get([w.stats.remote() for w in driver.workers])
    return driver, gpu_node, record, workers


def test_learner_and_replay_sit_on_the_gpu_node(placed):
    driver, gpu_node, _, _ = placed
    assert driver.device == "cuda"  # the cluster offers a GPU, so the learner asks for it
    assert driver.node == gpu_node.node_id
    replay_node = ray.get(driver.replay.node_id.remote())
    assert replay_node == gpu_node.node_id


def test_learner_falls_back_to_cpu_without_cuda(placed):
    driver, _, record, _ = placed
    assert ray.get(driver.learner.describe_device.remote()).startswith("cpu")
    assert record["learner_updates"] > 0


def test_workers_spread_over_both_nodes(placed):
    _, _, _, workers = placed
    assert len({w.node_id for w in workers}) == 2


def test_resume_continues_from_the_checkpoints_counts_and_replay(placed):
    """A second session on the run directory, as `--resume` plans it, starts from the first
    session's updates, agent steps and replay, and ends where one uninterrupted run of the
    whole budget would. (Resume that did nothing would start at 0 and end there too.)"""
    driver, gpu_node, before, _ = placed
    cfg = driver.cfg
    end_actors(driver)
    min_size, ratio = cfg.replay.min_size, cfg.replay.replay_ratio
    assert (before["agent_steps"], before["learner_updates"]) == (
        120,
        int(ratio * (120 - min_size)),
    )
    plan = session.prepare(
        dataclasses.replace(cfg, total_steps=200), str(driver.run.path), given={"total_steps"}
    )
    assert plan.checkpoint[0].name == "ckpt_000000000120.pt"
    resumed = Driver(plan.cfg, plan.run, resume=True, checkpoint=plan.checkpoint)
    learner, replay = ray.get([resumed.learner.stats.remote(), resumed.replay.stats.remote()])
    assert learner.updates == before["learner_updates"]
    assert (replay.agent_steps, replay.replay_size) == (120, 120)
    assert resumed.node == gpu_node.node_id
    record = resumed.train()
    assert (record["agent_steps"], record["learner_updates"]) == (
        200,
        int(ratio * (200 - min_size)),
    )
    later = [r for r in plan.run.read_metrics() if r["time"] > before["time"]]
    assert later and min(r["agent_steps"] for r in later) >= 120
    saved = torch.load(plan.run.checkpoints / "ckpt_000000000200.pt", weights_only=True)
    assert saved["agent"]["num_updates"] == record["learner_updates"]
