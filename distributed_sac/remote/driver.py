"""The driver: starts the actors, watches them, logs, evaluates and checkpoints.

Data flows one way: EnvWorker.run -> ReplayServer.add -> ReplayServer.feed (new chunks once,
index batches) -> Learner mirror -> SacAeAgent.update -> Learner.publish -> ReplayServer hands
the newest weights to each worker's parked ``weights`` call.

A run ends in order: collection stops at ``total_steps`` exactly (the replay cuts the last
chunk), the driver closes the replay, the learner drains the updates the ratio still allows,
then the final checkpoint and the final metrics record, which agree.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import NamedTuple

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from distributed_sac.config.data import EvalRecord
from distributed_sac.config.fields import TrainConfig
from distributed_sac.envs.registry import action_dim as env_action_dim
from distributed_sac.remote.env_worker import EnvWorker
from distributed_sac.remote.evaluations import Evaluations
from distributed_sac.remote.evaluator import Evaluator
from distributed_sac.remote.learner import Learner
from distributed_sac.remote.lifecycle import InterruptFlag, stop_run
from distributed_sac.remote.placement import (
    actor_name,
    await_placement,
    evaluator_options,
    learner_device,
    learner_options,
    replay_options,
    wait_until_back,
    worker_options,
)
from distributed_sac.remote.replay_server import remote_replay
from distributed_sac.remote.worker_pool import WorkerPool
from distributed_sac.replay.buffer import ReplaySpec
from distributed_sac.run.progress import Progress
from distributed_sac.run.records import (
    CheckpointPayload,
    MetricsRecord,
    ReplayCounters,
    RunCounters,
)
from distributed_sac.run.run_dir import (
    RunDir,
    config_to_dict,
    latest_run_checkpoint,
    save_run_checkpoint,
)
from distributed_sac.run.schedule import Every
from distributed_sac.run.wandb_logger import WandbLogger, saved_run_id
from distributed_sac.weights.acting_lag import lag_percentiles

log = logging.getLogger("distributed_sac")

REPLAY_SNAPSHOT = "replay"
RECONSTRUCTION_SAMPLES = 4
WORKERS_SETTLE_S = 10.0
"""After the learner's last update, how long the driver waits for the env workers' run calls
to end (a worker killed just before the end fails within it and is counted as restarted)."""


class TrainingError(RuntimeError):
    """Training stopped on an error; the last good checkpoint is kept."""


class Driver:
    """Owns one training run's actors on an already-connected Ray."""

    def __init__(
        self,
        cfg: TrainConfig,
        run: RunDir,
        resume: bool = False,
        checkpoint: tuple[Path, CheckpointPayload] | None = None,
    ) -> None:
        """`checkpoint` (path, payload) to resume from; by default, on resume, the newest intact."""
        self.cfg = cfg
        self.run = run
        self.obs_shape = cfg.wrappers.obs_shape
        self.action_dim = env_action_dim(cfg.env)
        self.counters = RunCounters()
        self.learner, self.node = self._start_learner()
        self.replay = (
            remote_replay(cfg.num_workers)
            .options(**replay_options(self.node))
            .remote(
                ReplaySpec.from_config(cfg, self.action_dim),
                str(run.checkpoints / REPLAY_SNAPSHOT),
            )
        )
        ray.get(self.learner.attach.remote(self.replay))
        if resume and checkpoint is None:
            checkpoint = latest_run_checkpoint(run.checkpoints, cfg)
        if checkpoint is not None:
            self._resume(*checkpoint)
        evaluator, workers = self._start_collectors()
        self.pool = WorkerPool(workers, self.counters)
        videos = run.videos if cfg.eval.video else None
        self.evals = Evaluations(evaluator, self.learner, cfg.eval.every, 0, videos)
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
        self._returns: deque[float] = deque(maxlen=20)
        self._warned_stats = False

    @property
    def workers(self) -> list[ray.actor.ActorHandle]:
        """The env-worker actors, by index."""
        return self.pool.workers

    @property
    def evaluator(self) -> ray.actor.ActorHandle:
        """The evaluator actor."""
        return self.evals.evaluator

    def _start_learner(self) -> tuple[ray.actor.ActorHandle, str]:
        self.device = learner_device(self.cfg)
        learner = (
            ray.remote(Learner)
            .options(**learner_options(self.device, self.cfg.learner_cpus))
            .remote(self.cfg, self.obs_shape, self.action_dim, self.device)
        )
        node = ray.get(learner.node_id.remote())
        log.info("learner on %s", ray.get(learner.describe_device.remote()))
        return learner, node

    def _resume(self, path: Path, payload: CheckpointPayload) -> None:
        """The learner from the checkpoint; the replay has restored itself from its snapshot
        (contents and counters agree there), or, with none, takes the checkpoint's counters.
        The learner's first feed request aligns the rate limiter to the checkpoint's count."""
        self.counters = dataclasses.replace(payload.counters)
        calls = [self.learner.load_state.remote(payload.agent, payload.granted_updates)]
        if not ray.get(self.replay.was_restored.remote()):
            calls.append(self.replay.restore.remote(payload.replay.to_dict()))
        ray.get(calls)
        log.info("resumed from %s", path)

    def _start_collectors(self) -> tuple[ray.actor.ActorHandle, list[ray.actor.ActorHandle]]:
        """The evaluator beside the learner and the env workers, once all are placed."""
        cfg = self.cfg
        evaluator = ray.remote(Evaluator).options(**evaluator_options(self.node, cfg)).remote(cfg)
        # The replay by name, not by handle: see EnvWorker.__init__.
        workers = [
            ray.remote(EnvWorker).options(**worker_options(i)).remote(i, cfg, actor_name("replay"))
            for i in range(cfg.num_workers)
        ]
        await_placement(
            {f"env-worker-{i}": w for i, w in enumerate(workers)} | {"evaluator": evaluator},
            "ready",
            cfg.schedule_timeout_s,
        )
        return evaluator, workers

    def pretrain(self, chunks: list, updates: int) -> None:
        """Load demonstrations into replay and run `updates` learner updates on them first; a
        learner that dies meanwhile is restarted and pretrains again from its start."""
        n = ray.get(self.replay.load_demos.remote(chunks))
        log.info("loaded %d demonstration transitions; pretraining for %d updates", n, updates)
        self._pretrain(updates)

    def _pretrain(self, updates: int) -> None:
        """`updates` pretraining updates on the replay's demonstrations (which it keeps across
        its own restarts); a learner that dies meanwhile is restarted and starts them over."""
        while updates:
            try:
                ray.get(self.learner.pretrain.remote(self.replay, updates))
                break
            except RayActorError:
                self._learner_back("it died during pretraining and pretrains again")
                ray.get(self.learner.attach.remote(self.replay))
        self.counters.pretrain_updates += updates

    def train(self) -> dict:
        """Run to `total_steps`; Ctrl-C stops cleanly with a final checkpoint. Returns the final
        metrics record as metrics.jsonl holds it."""
        cfg = self.cfg
        start = ray.get(self.replay.stats.remote())
        progress = Progress(cfg.total_steps, initial=start.agent_steps)
        learner_run = self.learner.run.remote(self.replay)
        pool = self.pool
        pool.start()
        log_due = Every(cfg.log_every_s, time.monotonic())
        checkpoint_due = Every(cfg.checkpoint_every, start.agent_steps)
        self.evals.due = Every(cfg.eval.every, start.agent_steps)
        learner0 = ray.get(self.learner.stats.remote())
        prev = _Previous(time.monotonic(), start.agent_steps, learner0.updates, learner0.wait_s)
        closed = False
        interrupted = InterruptFlag()
        try:
            while not interrupted.is_set() and learner_run is not None:
                timeout = max(0.0, log_due.next - time.monotonic())
                ready, _ = ray.wait([*pool.refs, learner_run], num_returns=1, timeout=timeout)
                for ref in ready:
                    if ref == learner_run:
                        learner_run = self._learner_returned(ref)
                    else:
                        pool.handle(ref)
                if pool.done and not closed:
                    # Collection is over: the learner drains what the ratio allows, then returns.
                    ray.get(self.replay.close.remote())
                    closed = True
                if learner_run is None or not log_due(time.monotonic()):
                    continue
                try:
                    record, prev = self._log(prev, progress)
                    steps = record.agent_steps
                    if closed and steps < cfg.total_steps:
                        # The replay died after the end and came back from an older snapshot:
                        # collect the lost steps again.
                        log.warning("the replay restarted at %d agent steps: collecting on", steps)
                        pool.start()
                        closed = False
                    self.evals.maybe_start(steps)
                    if checkpoint_due(steps):
                        self.checkpoint(steps)
                except RayActorError:
                    continue  # the learner died: its run call fails next and restarts it
                except RayTaskError as exc:
                    self._stats_failed(exc)  # logged again at the next interval
            if interrupted.is_set():
                progress.write("interrupted: stopping workers and writing a final checkpoint")
                stop_run(pool.workers, self.replay, self.learner, [*pool.runs, learner_run])
            else:
                pool.settle(WORKERS_SETTLE_S)
                prev = self._last_evaluation(prev, progress)
        finally:
            interrupted.restore()
            progress.close()
        try:
            # Always: a checkpoint taken at these steps while the learner drained lacks updates.
            self.checkpoint(ray.get(self.replay.stats.remote()).agent_steps)
            record = self._final_log(prev).to_json()
            progress.summary(record)
        finally:
            self.wandb.finish()
        return record

    def _last_evaluation(self, prev: _Previous, progress: Progress) -> _Previous:
        """The final record holds an evaluation of the final point (`Evaluations.finish`)."""

        def log_record() -> None:
            nonlocal prev
            _, prev = self._log(prev, progress)

        self.evals.finish(ray.get(self.replay.stats.remote()).agent_steps, log_record)
        return prev

    def _final_log(self, prev: _Previous, attempts: int = 5) -> MetricsRecord:
        """The final metrics record; a failed stats call is retried."""
        for attempt in range(attempts):
            try:
                return self._log(prev, None)[0]
            except RayTaskError as exc:
                if attempt == attempts - 1:
                    raise
                self._stats_failed(exc)
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def _stats_failed(self, exc: RayTaskError) -> None:
        """A stats call that raised: the run goes on and retries at the next interval; warned
        once per run."""
        if not self._warned_stats:
            cause = str(getattr(exc, "cause", None) or exc).strip().splitlines()[-1]
            log.warning("a stats call failed (%s); retrying at the next log interval", cause)
            self._warned_stats = True

    def _learner_returned(self, ref: ray.ObjectRef) -> ray.ObjectRef | None:
        """None once the learner's loop has ended; a new run call if its process died."""
        try:
            ray.get(ref)
            return None
        except RayActorError:
            return self._restart_learner()
        except RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise TrainingError(str(cause).strip().splitlines()[-1]) from None

    def _restart_learner(self) -> ray.ObjectRef:
        """Ray restarts the learner's actor; load the newest checkpoint into it and go on.

        Its mirror resyncs in full (a client the replay does not know), and the replay's rate
        limiter counts the checkpoint's updates again, so the updates lost with the old process
        are granted again. Without a checkpoint yet, the pretraining on demonstrations reruns.
        """
        found = latest_run_checkpoint(self.run.checkpoints, self.cfg)
        self._learner_back(f"restarted from {found[0] if found else 'its initial weights'}")
        if found is not None:
            payload = found[1]
            ray.get(self.learner.load_state.remote(payload.agent, payload.granted_updates))
            self.counters.pretrain_updates = payload.counters.pretrain_updates
        ray.get(self.learner.attach.remote(self.replay))
        if found is None and self.counters.pretrain_updates:
            updates, self.counters.pretrain_updates = self.counters.pretrain_updates, 0
            self._pretrain(updates)
        return self.learner.run.remote(self.replay)

    def _learner_back(self, how: str) -> None:
        """Count a learner restart and wait until Ray has its process back."""
        self.counters.learner_restarts += 1
        wait_until_back(self.learner, "node_id", self.cfg.schedule_timeout_s)
        log.warning("the learner died; %s (%d restarts)", how, self.counters.learner_restarts)

    def _log(self, prev: _Previous, progress: Progress | None) -> tuple[MetricsRecord, _Previous]:
        replay, learner = ray.get([self.replay.stats.remote(), self.learner.stats.remote()])
        workers = self.pool.stats()
        now = time.monotonic()
        dt = max(1e-9, now - prev.t)
        self._returns.extend(e.episode_return for e in replay.episodes)
        self.counters.episodes = replay.episodes_total
        eval_record = self.evals.result()
        lag_median, lag_p90 = lag_percentiles([w.acting_lag for w in workers])
        record = MetricsRecord(
            time=time.time(),
            agent_steps=replay.agent_steps,
            env_steps=replay.agent_steps * self.cfg.wrappers.action_repeat,
            learner_updates=learner.updates,
            weights_version=learner.weights_version,
            acting_lag=lag_median,
            acting_lag_p90=lag_p90,
            sample_age=None if math.isnan(replay.sample_age) else replay.sample_age,
            demo_fraction_held=replay.demo_fraction_held,
            replay_size=replay.replay_size,
            agent_steps_per_s=(replay.agent_steps - prev.agent_steps) / dt,
            updates_per_s=(learner.updates - prev.updates) / dt,
            learner_idle_frac=min(1.0, (learner.wait_s - prev.wait_s) / dt),
            replay_ratio_held=replay.replay_ratio_held,
            episodes=replay.episodes_total,
            episode_return_mean=float(np.mean(self._returns)) if self._returns else None,
            worker_restarts=self.counters.worker_restarts,
            learner_restarts=self.counters.learner_restarts,
            losses=dict(learner.losses),
        )
        if eval_record is not None:
            record = record.with_eval(eval_record, self.cfg.eval.max_episode_steps)
        line = record.to_json()
        self.run.log_metrics(line)
        self.wandb.log(line, record.agent_steps)
        if eval_record is not None:
            self._log_media(eval_record)
        if progress is not None:
            progress.update(line)
        return record, _Previous(now, replay.agent_steps, learner.updates, learner.wait_s)

    def _log_media(self, eval_record: EvalRecord) -> None:
        """The eval video and a grid of autoencoder reconstructions beside their inputs."""
        steps = eval_record.agent_steps
        if eval_record.video:
            self.wandb.log_video(eval_record.video, steps)
        if self.cfg.wandb != "disabled":
            obs = ray.get(self.replay.peek.remote(RECONSTRUCTION_SAMPLES))
            if obs is not None:
                recon = ray.get(self.learner.reconstruct.remote(obs))
                self.wandb.log_reconstructions(obs, recon, steps, self.cfg.wrappers.channels)

    def checkpoint(self, agent_steps: int) -> Path:
        """Learner state and counters in one atomic file; replay snapshot beside it."""
        agent = ray.get(self.learner.state.remote())
        # The replay's counters as its snapshot holds them (taken with its chunks).
        replay = ReplayCounters.from_dict(ray.get(self.replay.snapshot.remote()))
        payload = CheckpointPayload(agent, replay, dataclasses.replace(self.counters))
        path = save_run_checkpoint(self.run.checkpoints, agent_steps, payload, self.cfg)
        log.info("checkpoint %s", path)
        return path


class _Previous(NamedTuple):
    """The counters of the previous metrics record, for rates."""

    t: float
    agent_steps: int
    updates: int
    wait_s: float
