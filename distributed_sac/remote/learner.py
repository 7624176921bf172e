"""Learner actor: samples batches from the replay actor, runs SAC-AE updates, publishes weights.

A threaded actor: `run` holds one thread for the update loop while `latest_weights`, `stats`
and `state` answer from others. Sample requests stay in flight so that sampling and
deserialization overlap the update (STYLE.md habit 7).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque

import numpy as np
import ray
import torch

from distributed_sac.config import TrainConfig
from distributed_sac.remote.telemetry import LearnerTelemetry
from distributed_sac.sac_ae import SacAeAgent

log = logging.getLogger(__name__)

SAMPLES_IN_FLIGHT = 3


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; the run stops and keeps its last good checkpoint."""


class Learner:
    """Wraps `SacAeAgent`; holds no algorithm of its own."""

    def __init__(
        self,
        cfg: TrainConfig,
        obs_shape: tuple[int, int, int],
        action_dim: int,
        device: str,
    ) -> None:
        self.cfg = cfg
        if device == "cuda" and not torch.cuda.is_available():
            log.warning("the learner was given a GPU, but torch sees no CUDA device: using the CPU")
            device = "cpu"
        self.device = device
        if device == "cpu":
            torch.set_num_threads(
                max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
            )
        self.agent = SacAeAgent(obs_shape, action_dim, cfg.agent, device=device, seed=cfg.seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._weights_ref: ray.ObjectRef | None = None
        self._weights_version = -1
        self._publish_times: dict[int, float] = {}
        self._metrics: deque[dict[str, float]] = deque(maxlen=200)
        self._wait_s = 0.0
        self._update_s = 0.0
        self._started = time.monotonic()
        self.telemetry = LearnerTelemetry()
        self.publish()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def describe_device(self) -> str:
        if self.device == "cuda":
            return f"cuda ({torch.cuda.get_device_name(0)})"
        return f"cpu ({torch.get_num_threads()} threads)"

    def publish(self) -> int:
        """Put the actor's inference weights in the object store once, with their version."""
        with self._lock:
            weights = self.agent.policy_weights()
        self._weights_ref = ray.put(weights)
        self._weights_version = weights.version
        self._publish_times[weights.version] = time.time()
        self.telemetry.weights_version(weights.version)
        return weights.version

    def latest_weights(self, have_version: int) -> list[ray.ObjectRef] | None:
        """The newest weights' reference (wrapped so Ray does not resolve it), if newer."""
        if self._weights_version > have_version and self._weights_ref is not None:
            return [self._weights_ref]
        return None

    def _update(self, batch) -> dict[str, float]:
        t0 = time.monotonic()
        with self._lock:
            metrics = self.agent.update(batch)
        seconds = time.monotonic() - t0
        self._update_s += seconds
        self.telemetry.update(seconds)
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteLossError(
                f"non-finite {', '.join(bad)} at update {self.agent.num_updates}; stopping"
            )
        self._metrics.append(metrics)
        self.telemetry.losses(metrics)
        if "alpha" in metrics:
            self.telemetry.temperature(metrics["alpha"])
        if self.agent.num_updates % self.cfg.weights_publish_every == 0:
            self.publish()
        return metrics

    def pretrain(self, replay: ray.actor.ActorHandle, updates: int) -> int:
        """Off-policy pretraining on the replay actor's demonstrations before collection."""
        pending = [replay.sample_demos.remote() for _ in range(min(updates, SAMPLES_IN_FLIGHT))]
        for i in range(updates):
            batch = ray.get(pending.pop(0))
            if i + len(pending) + 1 < updates:
                pending.append(replay.sample_demos.remote())
            self._update(batch)
        self.publish()
        return self.agent.num_updates

    def run(self, replay: ray.actor.ActorHandle, max_updates: int) -> int:
        """Update until `max_updates` total, `stop()`, or the replay actor closes."""
        pending = [replay.sample.remote() for _ in range(SAMPLES_IN_FLIGHT)]
        while self.agent.num_updates < max_updates and not self._stop.is_set():
            t0 = time.monotonic()
            ready, _ = ray.wait(pending[:1], timeout=1.0)
            if not ready:
                self._wait_s += time.monotonic() - t0
                continue
            batch = ray.get(pending.pop(0))
            self._wait_s += time.monotonic() - t0
            if batch is None:
                break
            if self.agent.num_updates + len(pending) + 1 < max_updates:
                pending.append(replay.sample.remote())
            self._update(batch)
        self.publish()
        return self.agent.num_updates

    def stop(self) -> None:
        self._stop.set()

    def stats(self) -> dict:
        """Update counts, speeds, the mean of recent metrics and the weights version."""
        recent = list(self._metrics)
        means = {}
        for key in {k for m in recent for k in m}:
            values = [m[key] for m in recent if key in m]
            means[key] = float(np.mean(values))
        elapsed = time.monotonic() - self._started
        return {
            "learner_updates": self.agent.num_updates,
            "weights_version": self._weights_version,
            "learner_wait_s": self._wait_s,
            "learner_update_s": self._update_s,
            "learner_elapsed_s": elapsed,
            "publish_times": dict(list(self._publish_times.items())[-8:]),
            "losses": means,
        }

    def state(self) -> dict:
        """Agent state (networks, optimizers, temperature, counters, RNG) as CPU tensors."""
        with self._lock:
            state = self.agent.state_dict()
            return _to_cpu_copy(state)

    def load_state(self, state: dict) -> int:
        with self._lock:
            self.agent.load_state_dict(state)
        self.publish()
        return self.agent.num_updates

    def reconstruct(self, obs: np.ndarray) -> np.ndarray:
        with self._lock:
            return self.agent.reconstruct(obs)


def _to_cpu_copy(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu_copy(v) for v in obj)
    return obj
