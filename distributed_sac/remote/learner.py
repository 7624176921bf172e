"""Learner actor: feeds its replay mirror, runs SAC-AE updates, publishes weights.

Pixels cross once: each ``ReplayServer.feed`` reply carries the chunks its mirror lacks and
index batches for several updates; the learner's ``ReplayMirror`` places the chunks (GPU memory
on CUDA) and gathers every batch there. Each request states the mirror and the updates granted
so far, including the feed about to be trained, and goes out before that feed trains, so the
replay prepares the next while this one trains and its count is exact (docs/design.md, "The
feed protocol"). The update loop never waits on the host: metrics are summed on the device and
read every ``METRICS_EVERY`` updates (and before each publish), and publishing (device copy,
numpy, ``ray.put``) runs on a background thread, whose error stops the loop. A threaded actor:
``run`` holds one thread, ``stats`` and ``state`` answer from others.
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

from distributed_sac.agent.policy import PolicyWeights
from distributed_sac.agent.sac_ae import SacAeAgent
from distributed_sac.config.data import Feed, FeedRequest, LearnerStats
from distributed_sac.config.fields import TrainConfig
from distributed_sac.remote.telemetry import LearnerTelemetry
from distributed_sac.replay.feed import ReplayMirror

log = logging.getLogger(__name__)

UPDATES_PER_FEED = 64
"""Updates one feed carries indices for: about 50 ms of GPU work per round trip."""
METRICS_EVERY = 50
"""Updates between reads of the device-side metric sums (the only host sync of the loop)."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; the run stops and keeps its last good checkpoint."""


class PublishError(RuntimeError):
    """The weights publisher thread failed; the run stops with its error."""


class MetricsWindow:
    """Sums each update metric on its device; ``read`` syncs once and checks they are finite."""

    def __init__(self, keep: int = 200) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._first_update = 0
        self.recent: deque[dict[str, float]] = deque(maxlen=max(1, keep // METRICS_EVERY))
        self._recent_lock = threading.Lock()  # the update thread appends, ``stats`` reads

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
        with self._recent_lock:
            self.recent.append(means)
        return means

    def means(self) -> dict[str, float]:
        """Means over the recent reads."""
        with self._recent_lock:
            recent = list(self.recent)
        keys = {k for m in recent for k in m}
        return {k: float(np.mean([m[k] for m in recent if k in m])) for k in keys}


class WeightsPublisher:
    """A thread that turns device weight copies into numpy ``PolicyWeights`` in the object store.

    Newest wins: a publish asked for while the previous one is still being put replaces any
    waiting one. ``on_published(weights_version, ref)`` runs on the thread. An exception there ends
    the thread and is kept in ``error``; ``submit`` and ``flush`` then raise ``PublishError``.
    """

    def __init__(self, on_published) -> None:
        self._on_published = on_published
        self._pending: queue.Queue = queue.Queue(maxsize=1)
        self._idle = threading.Event()
        self._idle.set()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="publisher", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise ``PublishError`` if the thread failed."""
        if self.error is not None:
            raise PublishError(
                f"publishing weights failed: {type(self.error).__name__}: {self.error}"
            ) from self.error

    def submit(self, weights_version: int, state: dict[str, torch.Tensor]) -> None:
        self.check()
        self._idle.clear()
        try:
            self._pending.get_nowait()
        except queue.Empty:
            pass
        self._pending.put((weights_version, state))

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every submitted publish is in the object store."""
        self._idle.wait(timeout)
        self.check()

    def _loop(self) -> None:
        try:
            while True:
                weights_version, state = self._pending.get()
                self._publish(weights_version, state)
                if self._pending.empty():
                    self._idle.set()
        except BaseException as exc:  # kept for the update loop, which stops the run with it
            self.error = exc
            self._idle.set()

    def _publish(self, weights_version: int, state: dict[str, torch.Tensor]) -> None:
        weights = PolicyWeights(weights_version, {k: v.cpu().numpy() for k, v in state.items()})
        self._on_published(weights_version, ray.put(weights))


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
        self.agent = SacAeAgent(
            obs_shape, action_dim, cfg.agent, device, cfg.seed, cfg.wrappers.channels
        )
        self.replay = replay
        self.mirror = ReplayMirror(device)
        """The replay as this learner holds it, and the updates it was granted (the feed
        protocol's learner side, without Ray)."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._weights: tuple[int, ray.ObjectRef | None] = (-1, None)
        self._published_at = 0.0
        self._publish_times: deque[tuple[int, float]] = deque(maxlen=8)
        self._times_lock = threading.Lock()  # the publisher appends, ``stats`` reads
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
            weights_version = self.agent.num_updates
            state = {k: v.detach().clone() for k, v in self.agent.actor.state_dict().items()}
        self._publisher.submit(weights_version, state)
        if wait:
            self._publisher.flush()
        return weights_version

    def _published(self, weights_version: int, ref: ray.ObjectRef) -> None:
        self._weights, self._published_at = (weights_version, ref), time.time()
        with self._times_lock:
            self._publish_times.append((weights_version, self._published_at))
        self.telemetry.weights_version(weights_version)
        if self.replay is not None:
            self.replay.set_weights.remote(weights_version, [ref], self._published_at)

    def attach(self, replay: ray.actor.ActorHandle) -> None:
        """The replay actor that hands published weights to the workers; this learner's
        weights replace whatever it holds (those of a learner that died)."""
        self.replay = replay
        self._publisher.flush()
        weights_version, ref = self._weights
        if ref is not None:
            publish = replay.set_weights.remote(
                weights_version, [ref], self._published_at, replace=True
            )
            ray.get(publish)

    def latest_weights(self) -> tuple[int, list[ray.ObjectRef] | None]:
        """(weights version, ``[ref]``) of the newest published weights (evaluator, tests)."""
        self._publisher.flush()
        weights_version, ref = self._weights
        return weights_version, None if ref is None else [ref]

    # -- the update loop ----------------------------------------------------------------------

    def _train(self, feed: Feed, max_updates: int | None) -> None:
        for batch in self.mirror.batches(feed):
            if self._stop.is_set() or (
                max_updates is not None and self.agent.num_updates >= max_updates
            ):
                return
            self._update(batch, num_demo=feed.demo_idx.shape[1])

    def _update(self, batch, num_demo: int = 0) -> None:
        t0 = time.monotonic()
        with self._lock:
            metrics = self.agent.update_on_device(batch, num_demo)
        seconds = time.monotonic() - t0
        self._update_s += seconds
        self.telemetry.update(seconds)
        self.metrics.add(metrics)
        self._publisher.check()
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

    def _request(self, updates: int, pretrain: bool = False) -> FeedRequest:
        return self.mirror.request(updates, self.agent.num_updates, pretrain)

    def _loop(self, replay, updates, max_updates: int | None, pretrain: bool = False) -> None:
        """Follow feeds and train on them until the replay says done, ``stop()`` or
        ``max_updates``. One request is in flight: it goes out once the previous feed is
        followed (stating it), so the replay prepares it while that feed trains.

        ``updates(in_hand)``: how many updates the next request asks for, given the updates of
        the feed about to train (0: send none).
        """
        first = updates(0)
        pending = replay.feed.remote(self._request(first, pretrain)) if first > 0 else None
        while pending is not None and not self._stop.is_set():
            t0 = time.monotonic()
            ready, _ = ray.wait([pending], timeout=1.0)
            self._wait_s += time.monotonic() - t0
            if not ready:
                continue
            feed: Feed = ray.get(pending)
            pending = None
            if feed.done or (max_updates is not None and self.agent.num_updates >= max_updates):
                break
            # Counted as granted at once: the next request, sent before training, states it.
            followed = self.mirror.follow(feed, pretrain)
            ask = updates(feed.updates if followed else 0)
            if ask > 0:
                pending = replay.feed.remote(self._request(ask, pretrain))
            if followed:
                self._train(feed, max_updates)
        self._read_metrics()
        self.publish(wait=True)

    def pretrain(self, replay: ray.actor.ActorHandle, updates: int) -> int:
        """Off-policy pretraining on the replay actor's demonstrations before collection."""
        target = self.agent.num_updates + updates

        def ask(in_hand: int) -> int:
            return min(UPDATES_PER_FEED, target - self.agent.num_updates - in_hand)

        self._loop(replay, ask, target, pretrain=True)
        return self.agent.num_updates

    def run(self, replay: ray.actor.ActorHandle, max_updates: int | None = None) -> int:
        """Update until the replay reports collection over and drained, ``stop()``, or
        ``max_updates`` in all (benchmarks)."""
        self._loop(replay, lambda in_hand: UPDATES_PER_FEED, max_updates)
        return self.agent.num_updates

    def stop(self) -> None:
        self._stop.set()

    # -- monitoring and checkpoints -----------------------------------------------------------

    def stats(self) -> LearnerStats:
        with self._times_lock:
            publish_times = dict(self._publish_times)
        return LearnerStats(
            updates=self.agent.num_updates,
            weights_version=self._weights[0],
            wait_s=self._wait_s,
            update_s=self._update_s,
            losses=self.metrics.means(),
            publish_times=publish_times,
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
            self.mirror.granted = self.agent.num_updates if granted is None else granted
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
