"""Deterministic-policy evaluation (mean action) and mp4 videos of it; no Ray."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np

from distributed_sac.config.atomic import atomic_write
from distributed_sac.config.fields import EnvConfig
from distributed_sac.envs.registry import make_env
from distributed_sac.envs.rollout import ActsOnBatches

VIDEO_FPS = 30


class EvalResult(NamedTuple):
    returns: list[float]
    lengths: list[int]
    video: str | None

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))


def write_video(path: Path, frames: list[np.ndarray], fps: int = VIDEO_FPS) -> None:
    """Encode RGB frames as H.264 mp4 (imageio-ffmpeg), written atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial.mp4")
    with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=2) as writer:
        for frame in frames:
            writer.append_data(frame)
    atomic_write(path, lambda f: f.write(tmp.read_bytes()))
    tmp.unlink(missing_ok=True)


def beside_agent_view(render: np.ndarray, obs: np.ndarray, channels: int = 1) -> np.ndarray:
    """The full RGB render with the agent's newest frame (grayscale, or RGB for ``channels``
    3) to its right.

    The frame (``obs[-channels:]``, what the encoder sees last) is scaled up by whole pixels
    (nearest neighbour, so the agent's resolution stays visible) to at most the render's height
    and centred vertically on a black strip.
    """
    height = render.shape[0]
    view = obs[-channels:].transpose(1, 2, 0)  # (H, W, C)
    scale = max(1, height // view.shape[0])
    big = np.repeat(np.repeat(view, scale, axis=0), scale, axis=1)[:height]
    strip = np.zeros((height, big.shape[1], 3), dtype=np.uint8)
    top = (height - big.shape[0]) // 2
    strip[top : top + big.shape[0]] = big  # one grey channel broadcasts to all three
    return np.concatenate([render, strip], axis=1)


def run_episode(
    env: gym.Env,
    policy: ActsOnBatches,
    seed: int,
    max_steps: int,
    frames: list[np.ndarray] | None = None,
    channels: int = 1,
) -> tuple[float, int]:
    """(return, agent steps) of one deterministic episode reset with `seed`; with `frames`, the
    full render beside the agent's view (its `channels` per frame) of every step goes there."""
    obs, _ = env.reset(seed=seed)
    total, steps, done = 0.0, 0, False
    while not done and steps < max_steps:
        if frames is not None:
            frames.append(beside_agent_view(env.render(), obs, channels))
        action = policy.act(obs[None], deterministic=True)[0]
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        steps += 1
        done = terminated or truncated
    return total, steps


def evaluate(
    policy: ActsOnBatches,
    env_name: str,
    env_cfg: EnvConfig,
    episodes: int,
    seed: int,
    max_steps: int,
    video_path: Path | None = None,
    render_mode: str | None = None,
    on_episode: Callable[[int, float, int], None] | None = None,
) -> EvalResult:
    """Run `episodes` deterministic episodes, episode k reset with seed + k; film the first
    into `video_path` if given; `on_episode(k, return, length)` after each.

    The video shows the full render beside the agent's own view (`beside_agent_view`).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if video_path is not None and render_mode is None:
        render_mode = "rgb_array"
    env = make_env(env_name, env_cfg, seed=seed, render_mode=render_mode)
    returns, lengths, frames = [], [], []
    try:
        for episode in range(episodes):
            film = video_path is not None and episode == 0 and render_mode == "rgb_array"
            total, steps = run_episode(
                env, policy, seed + episode, max_steps, frames if film else None, env_cfg.channels
            )
            returns.append(total)
            lengths.append(steps)
            if on_episode is not None:
                on_episode(episode, total, steps)
    finally:
        env.close()
    if video_path is not None and frames:
        write_video(Path(video_path), frames)
    return EvalResult(returns, lengths, str(video_path) if frames else None)
