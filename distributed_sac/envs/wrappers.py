"""The wrappers that turn an env into the agent's view of it (the registry, envs/registry.py,
picks them per --env kind; docs/design.md).

All give channels-first uint8 stacks, Box(0, 255, (S * C, H, W)) with C = 1 (grayscale) or 3
(RGB) channels per frame, frame 0's channels first, and take actions in Box(-1, 1, (A,)).
Grayscale is gymnasium's `GrayscaleObservation`: ITU-R BT.709 luma, 0.2125 R + 0.7154 G +
0.0721 B, truncated to uint8. Resizing is area averaging as OpenCV's INTER_AREA does it (OpenCV
is not installed here): each output pixel is the mean of the source pixels it covers, each
weighted by the fraction covered, rounded to nearest. PIL's BOX filter is not a substitute: it
weights whole source pixels by whether their centre falls inside, which differs by up to 15 grey
levels on the 500 -> 84 Pendulum frame.

Gymnasium's own wrappers do the frame stacking, grayscale, action rescaling and time limits; the
classes here do what it lacks.
"""

from __future__ import annotations

from collections import deque
from functools import cache, partial
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import (
    AddRenderObservation,
    FrameStackObservation,
    GrayscaleObservation,
    RepeatAction,
    RescaleAction,
    TransformObservation,
)

from distributed_sac.config.fields import PENDULUM_RENDER_SIZE, EnvConfig

CARRACING_CROP = (slice(0, 84), slice(6, 90))
"""Rows and columns of the 96x96 state image kept: the square above the status bar, centred."""

SLIGHT_GAS = np.array([0.0, 0.1, 0.0], dtype=np.float32)
"""Steer, gas, brake stepped after a CarRacing reset to fill the frame stack (docs/design.md)."""


def centre_crop(frame: np.ndarray, side: int) -> np.ndarray:
    """The centred side x side square of an HxW(xC) frame."""
    top, left = (frame.shape[0] - side) // 2, (frame.shape[1] - side) // 2
    return frame[top : top + side, left : left + side]


def crop_carracing(frame: np.ndarray) -> np.ndarray:
    """The 84x84 part of a 96x96 CarRacing state image the agent sees."""
    return frame[CARRACING_CROP]


@cache
def _area_weights(n: int, size: int) -> np.ndarray:
    """(size, n) matrix: the fraction of output pixel i that source pixel j covers."""
    edges = np.arange(size + 1) * n / size
    src = np.arange(n)
    overlap = np.minimum(edges[1:, None], src + 1) - np.maximum(edges[:-1, None], src)
    weights = (np.clip(overlap, 0, None) * size / n).astype(np.float32)
    weights.setflags(write=False)
    return weights


def area_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Shrink a uint8 HxW or HxWxC image to size x size by area averaging (OpenCV INTER_AREA)."""
    h, w = image.shape[:2]
    rows = _area_weights(h, size) @ image.reshape(h, -1).astype(np.float32)
    out = _area_weights(w, size) @ rows.reshape(size, w, -1)
    return np.rint(out.reshape(size, size, *image.shape[2:])).astype(np.uint8)


def _image_space(size: int, channels: int | None = None) -> spaces.Box:
    shape = (size, size) if channels is None else (size, size, channels)
    return spaces.Box(0, 255, shape, np.uint8)


class RenderLastRepeatAction(RepeatAction):
    """RepeatAction that lets a `skip_render` env (FastCarRacing) draw only the last repeated frame.

    With action repeat 3, stock CarRacing draws two state images per agent step that nobody sees,
    and drawing is about 97% of a frame's cost (docs/design.md, Costs). When the unwrapped env has a
    boolean `skip_render` (and `render_state()` to draw on demand), it is set for every frame but
    the last; an env without it is stepped exactly as `RepeatAction` does.
    """

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Repeat `action`, summing rewards, until the repeat is done or the episode ends."""
        unwrapped = self.env.unwrapped
        if not hasattr(unwrapped, "skip_render"):
            return super().step(action)
        total_reward = 0.0
        try:
            for i in range(self.num_repeats):
                unwrapped.skip_render = i < self.num_repeats - 1
                obs, reward, terminated, truncated, info = self.env.step(action)
                total_reward += float(reward)
                if terminated or truncated:
                    break
        finally:
            skipped, unwrapped.skip_render = unwrapped.skip_render, False
        if skipped:
            # The episode ended on a skipped frame, so `obs` is the previous frame's image; draw
            # the final one, which a truncation bootstraps from. Only the score text in the
            # status bar can differ from stock, and the observation crop drops it.
            obs = unwrapped.render_state()
        return obs, total_reward, terminated, truncated, info


class FillStackOnReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """After each reset, step a fixed action `steps` times so a frame stack below holds real frames.

    CarRacing zooms in during its first second; stepping "slight gas" once per stacked frame lets
    the agent's first observation show that motion instead of one frame repeated (docs/design.md,
    Observations). The rewards of these steps (the start tiles' included) belong to no agent step
    and are dropped.
    """

    def __init__(self, env: gym.Env, action: np.ndarray, steps: int):
        gym.utils.RecordConstructorArgs.__init__(self, action=action, steps=steps)
        gym.Wrapper.__init__(self, env)
        self._action = np.asarray(action, dtype=env.action_space.dtype)
        self._steps = steps

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the env, then step the fill action; returns the last observation and reset info."""
        obs, info = self.env.reset(seed=seed, options=options)
        for _ in range(self._steps):
            obs, _, _, _, _ = self.env.step(self._action)
        return obs, info


class EarlyTermination(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Terminate when the last `window` agent-step rewards sum below `threshold` (docs/design.md).

    On that step `penalty` is added to the reward, `terminated` is set (no bootstrap: giving up on
    a car that makes no progress is a failure, not a time limit) and `info["early_stop"]` is True.
    Before `window` steps exist, the sum covers the steps so far. A step on which the env ends
    the episode itself keeps the env's outcome.
    """

    def __init__(self, env: gym.Env, window: int, threshold: float, penalty: float):
        if window < 1:
            raise ValueError(f"early_stop_window must be at least 1, got {window}")
        gym.utils.RecordConstructorArgs.__init__(
            self, window=window, threshold=threshold, penalty=penalty
        )
        gym.Wrapper.__init__(self, env)
        self._threshold = threshold
        self._penalty = penalty
        self._rewards: deque[float] = deque(maxlen=window)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the env and empty the reward window."""
        self._rewards.clear()
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the env and apply the early-termination rule to the reward window."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._rewards.append(float(reward))
        if not (terminated or truncated) and sum(self._rewards) < self._threshold:
            reward = float(reward) + self._penalty
            terminated = True
            info = {**info, "early_stop": True}
        return obs, reward, terminated, truncated, info


def _channels_first(env: gym.Env, cfg: EnvConfig) -> gym.Env:
    """Grayscale (H, W) frames as they are; RGB (H, W, 3) frames as (3, H, W)."""
    if cfg.grayscale:
        return env
    space = spaces.Box(0, 255, cfg.frame_shape, np.uint8)
    return TransformObservation(env, lambda f: np.ascontiguousarray(f.transpose(2, 0, 1)), space)


def _stack(env: gym.Env, cfg: EnvConfig) -> gym.Env:
    """Stack `frame_stack` frames channels-first: (S * C, H, W), frame 0's channels first."""
    env = FrameStackObservation(env, cfg.frame_stack)
    if cfg.grayscale:
        return env
    space = spaces.Box(0, 255, cfg.obs_shape, np.uint8)
    return TransformObservation(env, lambda obs: obs.reshape(cfg.obs_shape), space)


def wrap_carracing(env: gym.Env, cfg: EnvConfig) -> gym.Env:
    """Turn a raw continuous CarRacing env into the agent's view of it (docs/design.md)."""
    env = RenderLastRepeatAction(env, cfg.action_repeat)
    crop = CARRACING_CROP[0].stop - CARRACING_CROP[0].start
    env = TransformObservation(env, crop_carracing, _image_space(crop, 3))
    channels = None
    if cfg.grayscale:
        env = GrayscaleObservation(env)
    else:
        channels = 3
    if cfg.image_size != crop:
        size = cfg.image_size
        env = TransformObservation(
            env, partial(area_resize, size=size), _image_space(size, channels)
        )
    env = _stack(_channels_first(env, cfg), cfg)
    # Above the action repeat, each fill step is one agent step, so the stacked frames are
    # action_repeat frames apart as in every later observation (12 of the episode's 1000 frames).
    env = FillStackOnReset(env, SLIGHT_GAS, steps=cfg.frame_stack)
    env = EarlyTermination(
        env, cfg.early_stop_window, cfg.early_stop_threshold, cfg.early_stop_penalty
    )
    # Steer stays in [-1, 1]; gas and brake map linearly from [-1, 1] onto [0, 1].
    return RescaleAction(env, np.float32(-1.0), np.float32(1.0))


def wrap_rendered(env: gym.Env, cfg: EnvConfig, crop: int | None = None) -> gym.Env:
    """Observe an rgb_array env through its renders: repeat, render, crop, resize, grayscale,
    stack, actions rescaled to [-1, 1] (VisualPendulum, dmc and gym envs; docs/design.md)."""
    # Repeat below the renderer so only the frame the agent sees is drawn.
    env = RepeatAction(env, cfg.action_repeat)
    env = AddRenderObservation(env, render_only=True)
    if crop is not None:
        env = TransformObservation(env, partial(centre_crop, side=crop), _image_space(crop, 3))
    size = cfg.image_size
    if env.observation_space.shape[:2] != (size, size):
        env = TransformObservation(env, partial(area_resize, size=size), _image_space(size, 3))
    if cfg.grayscale:
        env = GrayscaleObservation(env)
    # The default "reset" padding fills the stack with the first rendered frame (docs/design.md).
    env = _stack(_channels_first(env, cfg), cfg)
    return RescaleAction(env, np.float32(-1.0), np.float32(1.0))


def wrap_pendulum(env: gym.Env, cfg: EnvConfig) -> gym.Env:
    """Turn an rgb_array Pendulum-v1 into VisualPendulum (docs/design.md); torque in [-2, 2]."""
    crop = cfg.pendulum_crop if cfg.pendulum_crop != PENDULUM_RENDER_SIZE else None
    return wrap_rendered(env, cfg, crop)
