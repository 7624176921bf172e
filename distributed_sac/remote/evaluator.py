"""Evaluator actor: runs `evaluation.evaluate` on published weights, off the training path."""

from __future__ import annotations

from pathlib import Path

import torch

from distributed_sac.agent.policy import Policy, PolicyWeights
from distributed_sac.config.data import EvalRecord
from distributed_sac.config.fields import TrainConfig, training_eval_seed
from distributed_sac.envs.registry import action_dim as env_action_dim
from distributed_sac.remote.telemetry import EvalTelemetry
from distributed_sac.run.evaluation import evaluate


class Evaluator:
    """Deterministic evaluation in its own process, so training never waits for it."""

    def __init__(self, cfg: TrainConfig) -> None:
        torch.set_num_threads(1)
        self.cfg = cfg
        self.telemetry = EvalTelemetry()
        self.policy = Policy(
            cfg.wrappers.obs_shape, env_action_dim(cfg.env), cfg.agent, cfg.seed,
            cfg.wrappers.channels,
        )  # fmt: skip

    def ready(self) -> bool:
        """Answers once the actor is placed and constructed."""
        return True

    def evaluate(
        self, weights: PolicyWeights, agent_steps: int, video_path: str | None
    ) -> EvalRecord:
        self.policy.load(weights)
        result = evaluate(
            self.policy,
            self.cfg.env,
            self.cfg.wrappers,
            episodes=self.cfg.eval.episodes,
            seed=training_eval_seed(self.cfg.seed),
            max_steps=self.cfg.eval.max_episode_steps,
            video_path=Path(video_path) if video_path else None,
        )
        self.telemetry.record(result.mean)
        return EvalRecord(
            agent_steps,
            weights.weights_version,
            result.mean,
            result.std,
            float(sum(result.lengths) / len(result.lengths)),
            result.video,
        )
