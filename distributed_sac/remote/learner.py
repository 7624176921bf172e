"""Learner actor: feeds its replay mirror, runs SAC-AE updates, publishes weights.

Pixels cross once: each ``ReplayServer.feed`` reply carries the chunks inserted since the last
one and index batches for several updates; the learner places the chunks in its
``DeviceMirror`` (GPU memory on CUDA) and gathers every batch there. Two feeds stay in flight so
the replay prepares the next while this one trains (STYLE.md habit 7). The update loop never
waits on the host: metrics are summed on the device and read every ``METRICS_EVERY`` updates
(and before each publish), and publishing (device copy, numpy, ``ray.put``) runs on a
background thread. A threaded actor: ``run`` holds one thread, ``stats`` and ``state`` answer
from others.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Mapping

import numpy as np
import ray
import torch

from distributed_sac.config import TrainConfig
from distributed_sac.data import Feed, LearnerStats
from distributed_sac.mirror import DeviceMirror, concat_batches
from distributed_sac.policy import PolicyWeights
from distributed_sac.remote.replay_server import new_client_id
from distributed_sac.remote.telemetry import LearnerTelemetry
from distributed_sac.sac_ae import SacAeAgent

log = logging.getLogger(__name__)

FEEDS_IN_FLIGHT = 2
UPDATES_PER_FEED = 64
"""Updates one feed carries indices for: about 50 ms of GPU work per round trip."""
METRICS_EVERY = 50
"""Updates between reads of the device-side metric sums (the only host sync of the loop)."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; the run stops and keeps its last good checkpoint."""


class MetricsWindow:
    """Sums each update metric on its device; ``read`` syncs once and checks they are finite."""

    def __init__(self, keep: int = 200) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._first_update = 0
        self.recent: deque[dict[str, float]] = deque(maxlen=max(1, keep // METRICS_EVERY))

    def add(self, metrics: Mapping[str, torch.Tensor]) -> None:
        for name, value in metrics.items():
            value = value.detach().float()
            if name in self._sums:
                self._sums[name] += value
                self._counts[name] += 1
            else:
                self._sums[name], self._counts[name] = value.clone(), 1

    def read(self, num_updates: int) -> dict[str, float] | None:
        """Means since the last read (None if none); NonFiniteLossError if any is NaN or inf."""
        if not self._sums:
            return None
        names = list(self._sums)
        values = torch.stack([self._sums[k] for k in names]).tolist()
        means = {k: v / self._counts[k] for k, v in zip(names, values, strict=True)}
        first, self._first_update = self._first_update, num_updates
        self._sums.clear()
        self._counts.clear()
        bad = sorted(k for k, v in means.items() if not math.isfinite(v))
        if bad:
            raise NonFiniteLossError(
                f"non-finite {', '.join(bad)} in updates {first}..{num_updates}; stopping"
            )
        self.recent.append(means)
        return means

    def means(self) -> dict[str, float]:
        """Means over the recent reads."""
        keys = {k for m in self.recent for k in m}
        return {k: float(np.mean([m[k] for m in self.recent if k in m])) for k in keys}


class WeightsPublisher:
    """A thread that turns device weight copies into numpy ``PolicyWeights`` in the object store.

    Newest wins: a publish asked for while the previous one is still being put replaces any
    waiting one. ``on_published(version, ref)`` runs on the thread.
    """

    def __init__(self, on_published) -> None:
        self._on_published = on_published
        self._pending: queue.Queue = queue.Queue(maxsize=1)
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._loop, name="publisher", daemon=True)
        self._thread.start()

    def submit(self, version: int, state: dict[str, torch.Tensor]) -> None:
        self._idle.clear()
        try:
            self._pending.get_nowait()
        except queue.Empty:
            pass
        self._pending.put((version, state))

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every submitted publish is in the object store."""
        self._idle.wait(timeout)

    def _loop(self) -> None:
        while True:
            version, state = self._pending.get()
            weights = PolicyWeights(version, {k: v.cpu().numpy() for k, v in state.items()})
            self._on_published(version, ray.put(weights))
            if self._pending.empty():
                self._idle.set()


class Learner:
    """Wraps ``SacAeAgent`` and the mirror; holds no algorithm of its own."""

    def __init__(
        self,
        cfg: TrainConfig,
        obs_shape: tuple[int, int, int],
        action_dim: int,
        device: str,
        replay: ray.actor.ActorHandle | None = None,
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
        self.replay = replay
        self.mirror: DeviceMirror | None = None
        self.demos: DeviceMirror | None = None
        self._client = new_client_id()  # a restarted learner is new to the replay: full resync
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._weights: tuple[int, ray.ObjectRef | None] = (-1, None)
        self._published_at = 0.0
        self.granted = 0
        """Updates the replay's rate limiter granted this learner (not pretraining)."""
        self._publish_times: deque[tuple[int, float]] = deque(maxlen=8)
        self.metrics = MetricsWindow()
        self._wait_s = self._update_s = 0.0
        self.telemetry = LearnerTelemetry()
        self._publisher = WeightsPublisher(self._published)
        self.publish()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        """This actor's process id (fault-injection tests kill it)."""
        return os.getpid()

    def describe_device(self) -> str:
        if self.device == "cuda":
            return f"cuda ({torch.cuda.get_device_name(0)})"
        return f"cpu ({torch.get_num_threads()} threads)"

    # -- weights ------------------------------------------------------------------------------

    def publish(self, wait: bool = False) -> int:
        """Hand a device copy of the inference weights to the publisher thread."""
        with self._lock:
            version = self.agent.num_updates
            state = {k: v.detach().clone() for k, v in self.agent.actor.state_dict().items()}
        self._publisher.submit(version, state)
        if wait:
            self._publisher.flush()
        return version

    def _published(self, version: int, ref: ray.ObjectRef) -> None:
        self._weights, self._published_at = (version, ref), time.time()
        self._publish_times.append((version, self._published_at))
        self.telemetry.weights_version(version)
        if self.replay is not None:
            self.replay.set_weights.remote(version, [ref], self._published_at)

    def attach(self, replay: ray.actor.ActorHandle) -> None:
        """The replay actor that hands published weights to the workers; this learner's
        weights replace whatever it holds (those of a learner that died)."""
        self.replay = replay
        self._publisher.flush()
        version, ref = self._weights
        if ref is not None:
            ray.get(replay.set_weights.remote(version, [ref], self._published_at, replace=True))

    def latest_weights(self) -> tuple[int, list[ray.ObjectRef] | None]:
        """(version, ``[ref]``) of the newest published weights (evaluator, tests)."""
        self._publisher.flush()
        version, ref = self._weights
        return version, None if ref is None else [ref]

    # -- the update loop ----------------------------------------------------------------------

    def _apply(self, feed: Feed) -> bool:
        """Bring the mirrors up to date with ``feed``; False if it cannot follow (resync)."""
        if feed.reset or self.mirror is None or self.mirror.geometry != feed.geometry:
            if self.mirror is None or self.mirror.geometry != feed.geometry:
                self.mirror = DeviceMirror(feed.geometry, self.device)
            self.mirror.layout.clear()
            self.mirror.layout.chunks_added = feed.first_seq
        elif feed.first_seq != self.mirror.layout.chunks_added:
            log.warning("replay feed out of order; resyncing the mirror")
            self._client = new_client_id()
            return False
        self.mirror.apply(feed.chunks)
        if feed.demos is not None:
            n = feed.demos.num_transitions
            geometry = feed.geometry._replace(
                capacity=n, frame_capacity=n + feed.geometry.stack * len(feed.demos.lengths)
            )
            self.demos = DeviceMirror(geometry, self.device)
            self.demos.apply(feed.demos)
        return True

    def _train(self, feed: Feed, max_updates: int | None) -> None:
        for j in range(feed.updates):
            if self._stop.is_set() or (
                max_updates is not None and self.agent.num_updates >= max_updates
            ):
                return
            parts = []
            if feed.demo_idx.shape[1]:
                parts.append(self.demos.gather(feed.demo_idx[j]))
            if feed.replay_idx.shape[1]:
                parts.append(self.mirror.gather(feed.replay_idx[j]))
            self._update(concat_batches(parts), num_demo=feed.demo_idx.shape[1])

    def _update(self, batch, num_demo: int = 0) -> None:
        t0 = time.monotonic()
        with self._lock:
            metrics = self.agent.update_on_device(batch, num_demo)
        seconds = time.monotonic() - t0
        self._update_s += seconds
        self.telemetry.update(seconds)
        self.metrics.add(metrics)
        n = self.agent.num_updates
        publish = n % self.cfg.weights_publish_every == 0
        if publish or n % METRICS_EVERY == 0:
            self._read_metrics()  # never publish weights a NaN loss made
        if publish:
            self.publish()

    def _read_metrics(self) -> None:
        means = self.metrics.read(self.agent.num_updates)
        if means is not None:
            self.telemetry.losses(means)
            if "alpha" in means:
                self.telemetry.temperature(means["alpha"])

    def _loop(self, request, max_updates: int | None, counted: bool = False) -> None:
        """``counted``: the feeds' updates are the rate limiter's (not pretraining)."""
        pending = deque(request() for _ in range(FEEDS_IN_FLIGHT))
        while pending and not self._stop.is_set():
            t0 = time.monotonic()
            ready, _ = ray.wait([pending[0]], timeout=1.0)
            self._wait_s += time.monotonic() - t0
            if not ready:
                continue
            feed: Feed = ray.get(pending.popleft())
            if feed.done or (max_updates is not None and self.agent.num_updates >= max_updates):
                break
            applied = self._apply(feed)
            if applied and counted:
                self.granted += feed.updates  # before the next request, which reports it
            pending.append(request())
            if applied:
                self._train(feed, max_updates)
        self._read_metrics()
        self.publish(wait=True)

    def pretrain(self, replay: ray.actor.ActorHandle, updates: int) -> int:
        """Off-policy pretraining on the replay actor's demonstrations before collection."""
        target = self.agent.num_updates + updates

        def request():
            left = target - self.agent.num_updates
            return replay.feed.remote(self._client, max(1, min(UPDATES_PER_FEED, left)), True)

        self._loop(request, target)
        return self.agent.num_updates

    def run(self, replay: ray.actor.ActorHandle, max_updates: int | None = None) -> int:
        """Update until the replay reports collection over and drained, ``stop()``, or
        ``max_updates`` in all (benchmarks)."""
        self._loop(
            lambda: replay.feed.remote(self._client, UPDATES_PER_FEED, False, self.granted),
            max_updates,
            counted=True,
        )
        return self.agent.num_updates

    def stop(self) -> None:
        self._stop.set()

    # -- monitoring and checkpoints -----------------------------------------------------------

    def stats(self) -> LearnerStats:
        return LearnerStats(
            updates=self.agent.num_updates,
            weights_version=self._weights[0],
            wait_s=self._wait_s,
            update_s=self._update_s,
            losses=self.metrics.means(),
            publish_times=dict(self._publish_times),
        )

    def state(self) -> dict:
        """Agent state (networks, optimizers, temperature, counters, RNG) as CPU tensors."""
        with self._lock:
            return _to_cpu_copy(self.agent.state_dict())

    def load_state(self, state: dict, granted: int | None = None) -> int:
        """Load a checkpoint's agent state; ``granted``: how many of its updates the rate
        limiter granted (the rest were pretraining on demonstrations); by default all."""
        with self._lock:
            self.agent.load_state_dict(state)
            self.granted = self.agent.num_updates if granted is None else granted
        self.publish(wait=True)
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
