"""Env-worker actor: steps K environments, ships chunks to replay, takes the weights it is given.

Adds to the replay actor stay bounded in flight (a full replay throttles stepping through
them); a throttled add comes back and is sent again. New weights come from a ``weights`` call
kept parked on the replay, which answers when the learner publishes (``weights_client.py``),
so weights reach the worker without polling the learner; the fetch is non-blocking and the
worker acts with the weights it has until the newer ones have arrived (RLlib's versioned
weights, sample-factory's policy lag). The replies also carry the recent publish history, from
which the worker measures how far behind the newest published weights each step acted
(``weights/acting_lag.py``).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque

import numpy as np
import ray
import torch

from distributed_sac.agent.policy import Policy, PolicyWeights
from distributed_sac.config.data import AddReply, WorkerStats
from distributed_sac.config.fields import TrainConfig
from distributed_sac.envs.registry import action_dim as env_action_dim
from distributed_sac.envs.rollout import Rollout, worker_seed
from distributed_sac.remote.telemetry import WorkerTelemetry
from distributed_sac.remote.weights_client import REFRESH_AFTER_S, WeightsClient

ADDS_IN_FLIGHT = 2
LAG_KEPT = 4096
"""Per-step acting-lag values kept between two ``stats`` calls."""
FIRST_USE_KEPT = 8


class EnvWorker:
    """One Ray actor per CPU: a ``Rollout`` plus the plumbing to replay."""

    def __init__(self, index: int, cfg: TrainConfig, replay: ray.actor.ActorHandle | str) -> None:
        torch.set_num_threads(1)
        self.index = index
        self.cfg = cfg
        # By name for a restartable worker: an actor handle among a constructor's arguments
        # makes Ray warn that restarts may fail (ray#53727); a name is looked up again.
        self.replay = ray.get_actor(replay) if isinstance(replay, str) else replay
        self._start(restarts=0)
        self._stop = threading.Event()
        self._global_steps = 0
        self._steps_per_s = 0.0
        self._lag_lock = threading.Lock()
        self._lag_window: deque[int] = deque(maxlen=LAG_KEPT)
        self._first_use: dict[int, float] = {}
        self.telemetry = WorkerTelemetry(index, cfg.wrappers.action_repeat)

    def _start(self, restarts: int) -> None:
        # A worker restarted by Ray draws a fresh stream: the same seed would replay its tracks.
        seed = worker_seed(self.cfg.seed, self.index, restarts)
        cfg = self.cfg
        self.rollout = Rollout(cfg.env, cfg.wrappers, cfg.rollout, cfg.envs_per_worker, seed)
        self.policy = Policy(
            cfg.wrappers.obs_shape, env_action_dim(cfg.env), cfg.agent, seed, cfg.wrappers.channels
        )
        self.weights = WeightsClient(self.replay)

    def run(self, restarts: int = 0) -> int:
        """Step until the replay reports collection done or ``stop()``; returns steps.

        ``restarts``: how often the driver has restarted this worker (reseeds the rollout).
        """
        if restarts:
            self.rollout.close()
            self._start(restarts)
        adds: deque[tuple[ray.ObjectRef, list, list]] = deque()
        done = False
        t_window, steps_window = time.monotonic(), 0
        num_envs = len(self.rollout.envs)
        while not done and not self._stop.is_set():
            explore = self._global_steps < self.cfg.rollout.exploration_steps
            acting = self.policy.weights_version >= 0 and not explore
            chunks, episodes = self.rollout.step(self.policy if acting else None, explore)
            if acting:
                with self._lag_lock:
                    self.weights.acted(num_envs)
            self._global_steps += num_envs
            steps_window += num_envs
            self.telemetry.record_steps(num_envs)
            for episode in episodes:
                self.telemetry.record_episode(episode.episode_return, episode.length)
            if chunks or episodes:
                adds.append((self._add(chunks, episodes), chunks, episodes))
            blocked = 0.0
            while len(adds) > ADDS_IN_FLIGHT or (adds and ray.wait([adds[0][0]], timeout=0)[0]):
                ref, chunks, episodes = adds.popleft()
                t0 = time.monotonic()
                reply: AddReply = ray.get(ref)
                blocked += time.monotonic() - t0
                if reply.throttled:
                    adds.appendleft((self._add(chunks, episodes), chunks, episodes))
                    continue
                self._global_steps, done = reply.agent_steps, reply.done
                if done:
                    break
            self._take_weights(refresh=blocked > REFRESH_AFTER_S)
            now = time.monotonic()
            if now - t_window >= 2.0:
                self._steps_per_s = steps_window / (now - t_window)
                self.telemetry.steps_per_s(self._steps_per_s)
                with self._lag_lock:
                    recent = self.weights.lag.drain()
                    self._lag_window.extend(recent.tolist())
                if recent.size:
                    self.telemetry.acting_lag(*np.percentile(recent, [50, 90]))
                t_window, steps_window = now, 0
        for ref, _, _ in adds:
            ray.get(ref)
        return self.rollout.steps

    def _take_weights(self, refresh: bool = False) -> None:
        with self._lag_lock:
            arrived = self.weights.refresh() if refresh else self.weights.poll()
        if arrived is None:
            return
        try:
            weights: PolicyWeights = ray.get(arrived[1])
        except ray.exceptions.ObjectLostError:
            self.weights.lost()  # published by a learner that has died since: keep acting
            return
        self.policy.load(weights)
        self.weights.loaded(weights.weights_version)
        self._first_use[weights.weights_version] = time.time()
        while len(self._first_use) > FIRST_USE_KEPT:
            del self._first_use[min(self._first_use)]
        self.telemetry.weights_version(self.policy.weights_version)

    def _add(self, chunks: list, episodes: list) -> ray.ObjectRef:
        return self.replay.add.remote(self.index, chunks, episodes)

    def pid(self) -> int:
        """This actor's process id (fault-injection tests kill it)."""
        return os.getpid()

    def ready(self) -> bool:
        """Answers once the actor is placed and constructed."""
        return True

    def stop(self) -> None:
        self._stop.set()

    def stats(self) -> WorkerStats:
        """Counters, and the per-step acting lag since the last call (drained)."""
        with self._lag_lock:
            lag = np.concatenate([np.asarray(self._lag_window, np.int64), self.weights.lag.drain()])
            self._lag_window.clear()
        return WorkerStats(
            worker=self.index,
            steps=self.rollout.steps,
            steps_per_s=self._steps_per_s,
            weights_version=self.policy.weights_version,
            node_id=ray.get_runtime_context().get_node_id(),
            acting_lag=lag,
            first_use=dict(self._first_use),
        )
