"""Shared fixtures: tiny configs and one Ray cluster per test module that asks for it."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-CPU local Ray for the module, always shut down."""
    import ray

    ray.init(
        num_cpus=2,
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
