"""From config to Ray: joining or starting a cluster, the learner's device, actor options."""

from __future__ import annotations

import logging
import os

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from distributed_sac.config import TrainConfig

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """Ray cannot be reached or cannot host the run as configured."""


def default_num_workers() -> int:
    """One env worker per core, keeping one core for the learner (at least 1)."""
    return max(1, (os.cpu_count() or 2) - 1)


def connect(cfg: TrainConfig, num_workers: int) -> bool:
    """Join `cfg.address` or start a local Ray; returns True if this process started it."""
    if cfg.address:
        try:
            ray.init(address=cfg.address, log_to_driver=True, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterError(f"cannot reach Ray at {cfg.address!r}: {first}") from None
        return False
    # A laptop may have fewer cores than actors; oversubscribing is better than never scheduling.
    needed = num_workers + 1
    ray.init(
        num_cpus=max(os.cpu_count() or 1, needed),
        include_dashboard=True,
        dashboard_host=cfg.dashboard_host,
        logging_level=logging.WARNING,
    )
    return True


def learner_device(cfg: TrainConfig) -> str:
    """`cuda` when asked, or on auto when the cluster offers a GPU; else `cpu`."""
    gpus = ray.cluster_resources().get("GPU", 0)
    if cfg.device == "cuda" and gpus < 1:
        raise ClusterError("--device cuda, but the Ray cluster has no GPU")
    if cfg.device == "cpu" or gpus < 1:
        return "cpu"
    return "cuda"


def learner_options(device: str) -> dict:
    opts = {"name": "learner", "max_concurrency": 4, "num_cpus": 1}
    if device == "cuda":
        opts["num_gpus"] = 1
    return opts


def on_node(node_id: str) -> NodeAffinitySchedulingStrategy:
    """Pin an actor to a node (the replay actor sits beside the learner)."""
    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


def worker_options(index: int) -> dict:
    # Restarted by Ray if its process dies; the driver calls `run` again on the new one.
    return {
        "name": f"env-worker-{index}",
        "num_cpus": 1,
        "max_concurrency": 2,
        "max_restarts": -1,
        "scheduling_strategy": "SPREAD",
    }
