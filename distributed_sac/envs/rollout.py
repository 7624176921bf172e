"""Env + policy loop: K environments stepped with one batched policy forward per step.

Each environment accumulates its own `Chunk` (frames stored once); a chunk is emitted when it
reaches `chunk_length` transitions or its episode ends, so chunks never span episodes. A frame is
`EnvConfig.frame_shape` ((H, W) grayscale, (3, H, W) RGB): the first observation gives the
chunk its S frames, each later one its newest frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from distributed_sac.config.data import Chunk, EpisodeStats, split_frames
from distributed_sac.config.fields import EnvConfig, RolloutConfig
from distributed_sac.envs.registry import make_env


class ActsOnBatches(Protocol):
    weights_version: int

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray: ...


@dataclass
class _Pending:
    """Transitions of the current chunk of one environment."""

    frames: list[np.ndarray]
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    oldest_weights_version: int | None = None

    def to_chunk(self, terminated: bool, truncated: bool) -> Chunk:
        t = len(self.actions)
        term = np.zeros(t, dtype=bool)
        trunc = np.zeros(t, dtype=bool)
        term[-1], trunc[-1] = terminated, truncated
        return Chunk(
            frames=np.stack(self.frames).astype(np.uint8, copy=False),
            action=np.stack(self.actions).astype(np.float32, copy=False),
            reward=np.asarray(self.rewards, dtype=np.float32),
            terminated=term,
            truncated=trunc,
            weights_version=-1
            if self.oldest_weights_version is None
            else self.oldest_weights_version,
        )


def worker_seed(root: int, index: int, restarts: int = 0) -> int:
    """The seed of env worker ``index`` after ``restarts`` restarts: distinct streams for every
    (root seed, worker, restart), so a restarted worker does not replay its tracks."""
    return int(np.random.SeedSequence([root, index, restarts]).generate_state(1)[0])


class Rollout:
    """Steps `num_envs` environments and returns finished chunks and episode stats."""

    def __init__(
        self,
        env_name: str,
        env_cfg: EnvConfig,
        cfg: RolloutConfig,
        num_envs: int,
        seed: int,
        make=make_env,
    ) -> None:
        """``make(env_name, env_cfg, seed=...)`` builds each env (tests pass a fake pixel env)."""
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.cfg = cfg
        self.frame_shape = env_cfg.frame_shape
        self.envs = [make(env_name, env_cfg, seed=seed + i) for i in range(num_envs)]
        space = self.envs[0].action_space
        space.seed(seed)
        self.action_space = space
        self.rng = np.random.default_rng(seed)
        self.steps = 0
        self._obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)])
        self._pending = [self._fresh(o) for o in self._obs]
        self._returns = np.zeros(num_envs)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self._smoothed = np.full(num_envs, np.nan)

    def _fresh(self, obs: np.ndarray) -> _Pending:
        """A new chunk starting from ``obs``'s S frames."""
        # A copy: `obs` may be a row of `self._obs`, which the next step overwrites in place.
        return _Pending(frames=list(split_frames(np.array(obs), self.frame_shape)))

    def _smooth(self, i: int, reward: float) -> float:
        """Reward EMA within the episode (optional; it slowed VisualPendulum, docs/design.md)."""
        if not self.cfg.reward_smoothing:
            return reward
        a = self.cfg.reward_smoothing_alpha
        prev = self._smoothed[i]
        self._smoothed[i] = reward if np.isnan(prev) else a * reward + (1.0 - a) * prev
        return float(self._smoothed[i])

    def step(
        self, policy: ActsOnBatches | None, explore: bool
    ) -> tuple[list[Chunk], list[EpisodeStats]]:
        """One agent step in every env: random actions when exploring or without a policy."""
        if explore or policy is None:
            actions = self.rng.uniform(-1.0, 1.0, size=(len(self.envs), *self.action_space.shape))
            weights_version = None
        else:
            actions = policy.act(self._obs, deterministic=False)
            weights_version = policy.weights_version
        actions = actions.astype(np.float32)
        chunks: list[Chunk] = []
        episodes: list[EpisodeStats] = []
        for i, env in enumerate(self.envs):
            next_obs, reward, terminated, truncated, info = env.step(actions[i])
            pending = self._pending[i]
            pending.frames.append(split_frames(next_obs, self.frame_shape)[-1])
            pending.actions.append(actions[i])
            pending.rewards.append(self._smooth(i, float(reward)))
            if weights_version is not None:
                pending.oldest_weights_version = (
                    weights_version
                    if pending.oldest_weights_version is None
                    else min(pending.oldest_weights_version, weights_version)
                )
            self._returns[i] += reward
            self._lengths[i] += 1
            done = terminated or truncated
            if done or len(pending.actions) >= self.cfg.chunk_length:
                chunks.append(pending.to_chunk(bool(terminated), bool(truncated)))
            if done:
                episodes.append(
                    EpisodeStats(
                        float(self._returns[i]),
                        int(self._lengths[i]),
                        bool(terminated),
                        bool(info.get("early_stop", False)),
                    )
                )
                self._returns[i], self._lengths[i], self._smoothed[i] = 0.0, 0, np.nan
                next_obs, _ = env.reset()
            if done or len(pending.actions) >= self.cfg.chunk_length:
                self._pending[i] = self._fresh(next_obs)
            self._obs[i] = next_obs
        self.steps += len(self.envs)
        return chunks, episodes

    def close(self) -> None:
        for env in self.envs:
            env.close()
