"""Shared fixtures: tiny configs and one Ray cluster per test module that asks for it."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def one_torch_thread():
    """Tiny networks run fastest, and most repeatably, on one torch thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray for the module (4 logical CPUs: 2 workers, the replay, the evaluator; the
    learner asks for none), always shut down."""
    import ray

    ray.init(
        # Always a new local Ray: a bare ray.init() joins whatever cluster the address file in
        # /tmp/ray names, e.g. the live-cluster test's `ray start` head while it shuts down.
        address="local",
        num_cpus=4,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        # Export metrics every second, so a short test run sees them move.
        _system_config={"metrics_report_interval_ms": 1000},
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def tiny_ray_config(eval_every: int = 0, video: bool = False, **overrides):
    """The tiny preset sized for a 2-CPU test cluster: 2 workers, the learner on no CPU."""
    import dataclasses

    from distributed_sac.config.presets import tiny_preset

    cfg = tiny_preset()
    defaults = {"num_workers": 2, "learner_cpus": 0, "wandb": "disabled"}
    return dataclasses.replace(
        cfg,
        eval=dataclasses.replace(cfg.eval, every=eval_every, video=video),
        **{**defaults, **overrides},
    )


def end_actors(driver) -> None:
    """Kill a finished driver's named actors and wait until their names are free again."""
    import time

    import ray

    for actor in [driver.learner, driver.replay, driver.evaluator, *driver.workers]:
        ray.kill(actor)
    names = ["learner", "replay", "evaluator"]
    for name in names + [f"env-worker-{i}" for i in range(len(driver.workers))]:
        while True:
            try:
                ray.get_actor(name)
            except ValueError:
                break
            time.sleep(0.1)


def run_payload(agent: dict):
    """A run's checkpoint payload around agent state ``agent``, as a run that has collected
    nothing yet writes it (a fresh replay's counters, no restarts)."""
    import numpy as np

    from distributed_sac.run.records import (
        CheckpointPayload,
        LimiterCounts,
        ReplayCounters,
        RunCounters,
    )

    rng = np.random.default_rng(0).bit_generator.state
    replay = ReplayCounters(LimiterCounts(0, 0, False), 0, rng)
    return CheckpointPayload(agent, replay, RunCounters())
