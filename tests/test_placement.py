"""Multi-node placement on a `ray.cluster_utils.Cluster`: two nodes, one offering a GPU."""

from __future__ import annotations

import pytest
import ray
from ray.cluster_utils import Cluster

from distributed_sac.remote.driver import Driver
from distributed_sac.run_dir import RunDir
from tests.conftest import tiny_ray_config

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
    cfg = tiny_ray_config(total_steps=120)
    run = RunDir.create(tmp_path_factory.mktemp("placement") / "run", cfg)
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
