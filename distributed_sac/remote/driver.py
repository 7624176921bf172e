"""The driver: starts the actors, watches them, logs, evaluates and checkpoints.

Data flows one way: EnvWorker.run -> ReplayServer.add -> Learner.run (ReplayServer.sample,
SacAeAgent.update) -> Learner.publish -> EnvWorker pulls the new weights.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from distributed_sac.checkpoint import save_checkpoint
from distributed_sac.config import ACTION_DIMS, TrainConfig
from distributed_sac.progress import Progress
from distributed_sac.remote.env_worker import EnvWorker
from distributed_sac.remote.evaluator import Evaluator
from distributed_sac.remote.learner import Learner
from distributed_sac.remote.placement import (
    HEADLESS,
    await_placement,
    learner_device,
    learner_options,
    on_node,
    replay_options,
    worker_options,
)
from distributed_sac.remote.replay_server import ReplayServer
from distributed_sac.run_dir import RunDir, config_to_dict, fingerprint, latest_run_checkpoint
from distributed_sac.wandb_logger import WandbLogger, saved_run_id

log = logging.getLogger("distributed_sac")

REPLAY_SNAPSHOT = "replay.npz"
RECONSTRUCTION_SAMPLES = 4


class TrainingError(RuntimeError):
    """Training stopped on an error; the last good checkpoint is kept."""


class Driver:
    """Owns one training run's actors on an already-connected Ray."""

    def __init__(
        self,
        cfg: TrainConfig,
        run: RunDir,
        resume: bool = False,
        checkpoint: tuple[Path, dict] | None = None,
    ) -> None:
        """`checkpoint` (path, payload) to resume from; by default, on resume, the newest intact."""
        self.cfg = cfg
        self.run = run
        self.obs_shape = cfg.wrappers.obs_shape
        self.action_dim = ACTION_DIMS[cfg.env]
        self.device = learner_device(cfg)
        self.learner = (
            ray.remote(Learner)
            .options(**learner_options(self.device, cfg.learner_cpus))
            .remote(cfg, self.obs_shape, self.action_dim, self.device)
        )
        self.node = ray.get(self.learner.node_id.remote())
        log.info("learner on %s", ray.get(self.learner.describe_device.remote()))
        if resume and checkpoint is None:
            checkpoint = latest_run_checkpoint(run.checkpoints, cfg)
        snapshot = run.checkpoints / REPLAY_SNAPSHOT
        self.replay = (
            ray.remote(ReplayServer)
            .options(**replay_options(self.node))
            .remote(
                cfg.replay,
                self.obs_shape[1:],
                self.obs_shape[0],
                self.action_dim,
                cfg.agent.batch_size,
                cfg.total_steps,
                cfg.seed,
                cfg.rollout.chunk_length,
                cfg.rollout.chunk_length * cfg.envs_per_worker,
                str(snapshot),
            )
        )
        self.counters = {"worker_restarts": 0, "episodes": 0}
        if checkpoint is not None:
            ckpt, payload = checkpoint
            ray.get(
                [
                    self.learner.load_state.remote(payload["agent"]),
                    self.replay.restore.remote(payload["replay"]),
                ]
            )
            self.counters.update(payload["counters"])
            log.info("resumed from %s", ckpt)
        self.evaluator = (
            ray.remote(Evaluator)
            .options(
                name="evaluator",
                num_cpus=0,
                scheduling_strategy=on_node(self.node),
                runtime_env=HEADLESS,
            )
            .remote(cfg)
        )
        self.workers = [
            ray.remote(EnvWorker)
            .options(**worker_options(i))
            .remote(i, cfg, "replay", "learner")  # names: see EnvWorker.__init__
            for i in range(cfg.num_workers)
        ]
        await_placement(
            {f"env-worker-{i}": w for i, w in enumerate(self.workers)}
            | {"evaluator": self.evaluator},
            "ready",
            cfg.schedule_timeout_s,
        )
        self.wandb = WandbLogger(
            cfg.wandb,
            cfg.wandb_project,
            cfg.wandb_entity,
            run.path,
            config_to_dict(cfg),
            resume_id=saved_run_id(run.path) if resume else None,
            name=cfg.wandb_name or run.path.name,
            group=cfg.wandb_group or cfg.env,
            tags=cfg.wandb_tags or (cfg.env,),
        )
        self._last_checkpoint = -1
        self._returns: deque[float] = deque(maxlen=20)
        self._eval: ray.ObjectRef | None = None
        self._last_eval: dict | None = None

    def pretrain(self, chunks: list, updates: int) -> None:
        """Load demonstrations into replay and run `updates` learner updates on them first."""
        n = ray.get(self.replay.load_demos.remote(chunks))
        log.info("loaded %d demonstration transitions; pretraining for %d updates", n, updates)
        ray.get(self.learner.pretrain.remote(self.replay, updates))

    def train(self) -> dict:
        """Run to `total_steps`; Ctrl-C stops cleanly with a final checkpoint."""
        cfg = self.cfg
        start = ray.get(self.replay.stats.remote())
        progress = Progress(cfg.total_steps, initial=start["agent_steps"])
        ratio_updates = cfg.replay.replay_ratio * max(0, cfg.total_steps - cfg.replay.min_size)
        learner_run = self.learner.run.remote(self.replay, int(ratio_updates))
        runs = {w.run.remote(): i for i, w in enumerate(self.workers)}
        next_log = time.monotonic()
        next_ckpt = (start["agent_steps"] // cfg.checkpoint_every + 1) * cfg.checkpoint_every
        next_eval = (
            (start["agent_steps"] // cfg.eval.every + 1) * cfg.eval.every
            if cfg.eval.every
            else None
        )
        # Rates count from here: a resumed or pretrained learner starts with updates done.
        learner = ray.get(self.learner.stats.remote())
        prev = {
            "t": time.monotonic(),
            **start,
            **{k: learner[k] for k in ("learner_updates", "learner_wait_s")},
        }
        record: dict = {}
        interrupted = _InterruptFlag()
        try:
            while not interrupted.is_set():
                waiting = list(runs) + [learner_run]
                timeout = max(0.0, next_log - time.monotonic())
                ready, _ = ray.wait(waiting, num_returns=1, timeout=timeout)
                for ref in ready:
                    if ref == learner_run:
                        self._check(ref)
                        learner_run = None
                    else:
                        self._finish_worker(ref, runs)
                if not runs:
                    ray.get(self.replay.close.remote())
                if learner_run is None:
                    break
                if time.monotonic() >= next_log:
                    record, prev = self._log(prev, progress)
                    next_log = time.monotonic() + cfg.log_every_s
                    steps = record["agent_steps"]
                    if next_eval is not None and steps >= next_eval and self._eval is None:
                        self._start_eval(steps)
                        next_eval += cfg.eval.every
                    if steps >= next_ckpt:
                        self.checkpoint(steps)
                        next_ckpt += cfg.checkpoint_every
            if interrupted.is_set():
                progress.write("interrupted: stopping workers and writing a final checkpoint")
                self._stop_all(learner_run, runs)
            elif self._eval is not None:
                ray.wait([self._eval])  # finished, so the final _log below records it
        finally:
            interrupted.restore()
            progress.close()
        try:
            record, _ = self._log(prev, None)
            progress.summary(record)
            if record["agent_steps"] != self._last_checkpoint:
                self.checkpoint(record["agent_steps"])
        finally:
            self.wandb.finish()
        return record

    def _check(self, ref: ray.ObjectRef):
        try:
            return ray.get(ref)
        except RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise TrainingError(str(cause).strip().splitlines()[-1]) from None

    def _finish_worker(self, ref: ray.ObjectRef, runs: dict) -> None:
        index = runs.pop(ref)
        try:
            ray.get(ref)
        except RayActorError:
            # The worker's process died; Ray restarts the actor, so ask it to go on.
            self.counters["worker_restarts"] += 1
            log.warning(
                "env-worker-%d died; restarted (%d restarts)",
                index,
                self.counters["worker_restarts"],
            )
            runs[self.workers[index].run.remote()] = index

    def _stop_all(self, learner_run, runs: dict) -> None:
        for w in self.workers:
            w.stop.remote()
        ray.get(self.replay.close.remote())
        self.learner.stop.remote()
        ray.wait(
            list(runs) + ([learner_run] if learner_run else []),
            num_returns=len(runs) + bool(learner_run),
            timeout=30,
        )

    def _start_eval(self, steps: int) -> None:
        found = ray.get(self.learner.latest_weights.remote(-1))
        video = str(self.run.videos / f"eval_{steps:09d}.mp4") if self.cfg.eval.video else None
        self._eval = self.evaluator.evaluate.remote(found[0], steps, video)

    def _log(self, prev: dict, progress: Progress | None) -> tuple[dict, dict]:
        replay, learner = ray.get([self.replay.stats.remote(), self.learner.stats.remote()])
        now = time.monotonic()
        dt = max(1e-9, now - prev["t"])
        self._returns.extend(e["episode_return"] for e in replay["episodes"])
        self.counters["episodes"] = replay["episodes_total"]
        if self._eval is not None and ray.wait([self._eval], timeout=0)[0]:
            self._last_eval, self._eval = ray.get(self._eval), None
            eval_record = self._last_eval
        else:
            eval_record = None
        d_updates = learner["learner_updates"] - prev["learner_updates"]
        version = replay["data_version_mean"]
        record = {
            "time": time.time(),
            "agent_steps": replay["agent_steps"],
            "env_steps": replay["agent_steps"] * self.cfg.wrappers.action_repeat,
            "learner_updates": learner["learner_updates"],
            "weights_version": learner["weights_version"],
            "policy_lag": learner["learner_updates"] - version if version >= 0 else 0.0,
            "replay_size": replay["replay_size"],
            "agent_steps_per_s": (replay["agent_steps"] - prev["agent_steps"]) / dt,
            "updates_per_s": d_updates / dt,
            "learner_idle_frac": min(
                1.0, (learner["learner_wait_s"] - prev["learner_wait_s"]) / dt
            ),
            "replay_ratio_held": replay["replay_ratio_held"],
            "episodes": replay["episodes_total"],
            "episode_return_mean": float(np.mean(self._returns)) if self._returns else None,
            "worker_restarts": self.counters["worker_restarts"],
            **{f"loss/{k}": v for k, v in sorted(learner["losses"].items())},
        }
        if eval_record is not None:
            record.update({k: v for k, v in eval_record.items() if k.startswith("eval_")})
            record["eval_agent_steps"] = eval_record["agent_steps"]
            record["eval_max_episode_steps"] = self.cfg.eval.max_episode_steps
        self.run.log_metrics(record)
        self.wandb.log(record, record["agent_steps"])
        if eval_record is not None:
            self._log_media(eval_record)
        if progress is not None:
            progress.update(record)
        nxt = {
            "t": now,
            "agent_steps": replay["agent_steps"],
            **{k: learner[k] for k in ("learner_updates", "learner_wait_s")},
        }
        return record, nxt

    def _log_media(self, eval_record: dict) -> None:
        """The eval video and a grid of autoencoder reconstructions beside their inputs."""
        steps = eval_record["agent_steps"]
        if eval_record.get("eval_video"):
            self.wandb.log_video(eval_record["eval_video"], steps)
        if self.cfg.wandb != "disabled":
            obs = ray.get(self.replay.peek.remote(RECONSTRUCTION_SAMPLES))
            if obs is not None:
                recon = ray.get(self.learner.reconstruct.remote(obs))
                self.wandb.log_reconstructions(obs, recon, steps)

    def checkpoint(self, agent_steps: int) -> Path:
        """Learner state and counters in one atomic file; replay snapshot beside it."""
        agent, replay_state = ray.get([self.learner.state.remote(), self.replay.state.remote()])
        ray.get(self.replay.snapshot.remote(str(self.run.checkpoints / REPLAY_SNAPSHOT)))
        state = {"agent": agent, "replay": replay_state, "counters": dict(self.counters)}
        path = save_checkpoint(
            self.run.checkpoints,
            agent_steps,
            state,
            fingerprint(self.cfg),
            self.cfg.keep_checkpoints,
        )
        log.info("checkpoint %s", path)
        self._last_checkpoint = agent_steps
        return path


class _InterruptFlag:
    """First Ctrl-C asks the loop to stop cleanly; a second one interrupts at once."""

    def __init__(self) -> None:
        self._set = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self._set:
            raise KeyboardInterrupt
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
