"""Env-worker actor: steps K environments, ships chunks to replay, pulls newer weights.

Adds to the replay actor stay bounded in flight (a full replay throttles stepping through
them); weight pulls are non-blocking: the worker keeps acting with the weights it has until
the newer ones have arrived (RLlib's pull-based weight server, sample-factory's versions).
"""

from __future__ import annotations

import os
import threading
import time

import ray
import torch

from distributed_sac.config import ACTION_DIMS, TrainConfig
from distributed_sac.policy import Policy
from distributed_sac.remote.telemetry import WorkerTelemetry
from distributed_sac.rollout import Rollout

ADDS_IN_FLIGHT = 2


class EnvWorker:
    """One Ray actor per CPU: a `Rollout` plus the plumbing to replay and learner."""

    def __init__(
        self,
        index: int,
        cfg: TrainConfig,
        replay: ray.actor.ActorHandle | str,
        learner: ray.actor.ActorHandle | str,
    ) -> None:
        torch.set_num_threads(1)
        self.index = index
        self.cfg = cfg
        # By name for a restartable worker: an actor handle among a constructor's arguments
        # makes Ray warn that restarts may fail (ray#53727); a name is looked up again.
        self.replay = ray.get_actor(replay) if isinstance(replay, str) else replay
        self.learner = ray.get_actor(learner) if isinstance(learner, str) else learner
        seed = cfg.seed + 1000 * (index + 1)
        self.rollout = Rollout(cfg.env, cfg.wrappers, cfg.rollout, cfg.envs_per_worker, seed)
        self.policy = Policy(cfg.wrappers.obs_shape, ACTION_DIMS[cfg.env], cfg.agent, seed=seed)
        self._stop = threading.Event()
        self._global_steps = 0
        self._first_use: dict[int, float] = {}
        self._steps_per_s = 0.0
        self.telemetry = WorkerTelemetry(index, cfg.wrappers.action_repeat)

    def run(self) -> int:
        """Step until the replay actor reports collection done or `stop()`; returns steps."""
        adds: list[ray.ObjectRef] = []
        poll: ray.ObjectRef | None = None
        fetch: ray.ObjectRef | None = None
        done = False
        since_poll = 0
        t_window, steps_window = time.monotonic(), 0
        while not done and not self._stop.is_set():
            explore = self._global_steps < self.cfg.rollout.exploration_steps
            chunks, episodes = self.rollout.step(
                self.policy if self.policy.version >= 0 else None, explore
            )
            self._global_steps += len(self.rollout.envs)
            steps_window += len(self.rollout.envs)
            self.telemetry.record_steps(len(self.rollout.envs))
            for episode in episodes:
                self.telemetry.record_episode(episode.episode_return, episode.length)
            if chunks or episodes:
                adds.append(self.replay.add.remote(self.index, chunks, episodes))
            while len(adds) > ADDS_IN_FLIGHT or (adds and ray.wait(adds[:1], timeout=0)[0]):
                self._global_steps, done = ray.get(adds.pop(0))
                if done:
                    break
            since_poll += 1
            if poll is None and fetch is None and since_poll >= self.cfg.rollout.weights_poll_every:
                poll, since_poll = self.learner.latest_weights.remote(self.policy.version), 0
            if poll is not None and ray.wait([poll], timeout=0)[0]:
                found, poll = ray.get(poll), None
                fetch = found[0] if found else None
            if fetch is not None and ray.wait([fetch], timeout=0)[0]:
                self.policy.load(ray.get(fetch))
                self._first_use.setdefault(self.policy.version, time.time())
                self.telemetry.policy_version(self.policy.version)
                fetch = None
            now = time.monotonic()
            if now - t_window >= 2.0:
                self._steps_per_s = steps_window / (now - t_window)
                self.telemetry.steps_per_s(self._steps_per_s)
                t_window, steps_window = now, 0
        for ref in adds:
            ray.get(ref)
        return self.rollout.steps

    def pid(self) -> int:
        """This actor's process id (fault-injection tests kill it)."""
        return os.getpid()

    def ready(self) -> bool:
        """Answers once the actor is placed and constructed."""
        return True

    def stop(self) -> None:
        self._stop.set()

    def stats(self) -> dict:
        return {
            "worker": self.index,
            "steps": self.rollout.steps,
            "steps_per_s": self._steps_per_s,
            "policy_version": self.policy.version,
            "node_id": ray.get_runtime_context().get_node_id(),
            "first_use": dict(list(self._first_use.items())[-8:]),
        }
