"""How fast a learner on the CPU updates with a run's networks: measured, in this process.

The driver asks before training when the learner will run on the CPU, so that the full-size
networks on a machine without a GPU say at once what they cost (no Ray here: pure torch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator

import numpy as np
import torch

from distributed_sac.agent.sac_ae import SacAeAgent
from distributed_sac.agent.tensors import batch_tensors
from distributed_sac.config.data import Batch
from distributed_sac.config.fields import TrainConfig
from distributed_sac.envs.registry import action_dim as env_action_dim
from distributed_sac.replay.rate_limiter import update_budget

SLOW_UPDATES_PER_S = 2.0
"""Below this a CPU learner gets a warning: 100k updates would take over 14 hours."""


def learner_threads(cfg: TrainConfig) -> int:
    """Torch threads of a CPU learner: its whole logical CPUs, at least one (as the Learner
    actor sets them from its assigned resources)."""
    return max(1, int(cfg.learner_cpus))


class UpdateProbe:
    """A throwaway `SacAeAgent` with `cfg`'s networks on the CPU and a random batch of
    `cfg.agent.batch_size`, built and warmed up (one update) on construction, on `threads` torch
    threads (default: the learner's). torch.compile stays off (its warm-up alone would outlast
    the measurement).

    Construction is the slow part for small networks: the first optimizer in a process imports
    torch's compiler (a second or more), so a caller may build the probe on another thread
    while it waits for something else, then time it with `rate`.
    """

    def __init__(self, cfg: TrainConfig, threads: int | None = None) -> None:
        self.threads = learner_threads(cfg) if threads is None else threads
        obs_shape, action_dim = cfg.wrappers.obs_shape, env_action_dim(cfg.env)
        agent_cfg = dataclasses.replace(cfg.agent, compile=False)
        with torch_threads(self.threads):
            self.agent = SacAeAgent(
                obs_shape, action_dim, agent_cfg, "cpu", cfg.seed, cfg.wrappers.channels
            )
            batch = random_batch(cfg.agent.batch_size, obs_shape, action_dim)
            self.data = batch_tensors(batch, obs_shape, action_dim, self.agent.device)
            self.agent.update_on_device(self.data)

    def rate(self, updates: int = 2, budget_s: float = 1.0) -> float:
        """Updates/s over `updates` timed updates, fewer once `budget_s` is spent (at least
        one)."""
        with torch_threads(self.threads):
            start = time.perf_counter()
            done, elapsed = 0, 0.0
            while done < max(1, updates) and (done == 0 or elapsed < budget_s):
                self.agent.update_on_device(self.data)
                done += 1
                elapsed = time.perf_counter() - start
        return done / elapsed if elapsed > 0 else math.inf


def cpu_update_rate(
    cfg: TrainConfig, threads: int | None = None, updates: int = 2, budget_s: float = 1.0
) -> float:
    """Updates/s of a CPU learner with `cfg`'s networks: `UpdateProbe` (one warm-up update)
    timed over `updates` more."""
    return UpdateProbe(cfg, threads).rate(updates, budget_s)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` (process-wide), then back as they were."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def random_batch(size: int, obs_shape: tuple[int, int, int], action_dim: int) -> Batch:
    """Uniform pixels and actions, Gaussian rewards, no episode ends."""
    rng = np.random.default_rng(0)
    return Batch(
        obs=rng.integers(0, 256, (size, *obs_shape), dtype=np.uint8),
        action=rng.uniform(-1, 1, (size, action_dim)).astype(np.float32),
        reward=rng.normal(size=size).astype(np.float32),
        next_obs=rng.integers(0, 256, (size, *obs_shape), dtype=np.uint8),
        terminated=np.zeros(size, bool),
        truncated=np.zeros(size, bool),
    )


def total_updates(cfg: TrainConfig) -> int:
    """Updates a run of `cfg.total_steps` makes: the replay ratio times the steps after the
    replay's `min_size`."""
    return update_budget(cfg.replay.replay_ratio, cfg.replay.min_size, cfg.total_steps)


def slow_cpu_warning(cfg: TrainConfig, rate: float) -> str | None:
    """The one line to log when a CPU learner at `rate` updates/s is too slow for `cfg`."""
    if not rate < SLOW_UPDATES_PER_S:
        return None
    seconds = total_updates(cfg) / rate
    took = f"{seconds / 3600:,.0f} hours" if seconds >= 5400 else f"{seconds / 60:.0f} minutes"
    return (
        f"the learner runs on the CPU at {rate:.2g} updates/s with these networks (about "
        f"{took} for {cfg.total_steps:,} agent steps at replay ratio "
        f"{cfg.replay.replay_ratio:g}); --preset carracing-cpu is sized for CPUs"
    )
