"""The registry of env makers: what `--env` names and how each kind is built (docs/design.md).

`--env` names one of: `CarRacing` (CarRacing-v3, with the fast renderer), `VisualPendulum`
(Pendulum-v1 from its render), `dmc:DOMAIN-TASK` (the DeepMind Control Suite, envs/dmc.py) or
`gym:ID` (any registered gymnasium env with a Box action space and rgb_array rendering).
`make_env` builds one as the agent sees it (envs/wrappers.py); `check_env` builds one before Ray
starts and turns whatever cannot be trained into one line (`EnvError`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from functools import cache

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.wrappers import HumanRendering

from distributed_sac.config.fields import (
    ACTION_DIMS,
    ENV_NAMES,
    SOLVED_THRESHOLDS,
    EnvConfig,
    TrainConfig,
    validate_env,
)
from distributed_sac.envs import dmc
from distributed_sac.envs.carracing_fast import make_car_racing
from distributed_sac.envs.wrappers import wrap_carracing, wrap_pendulum, wrap_rendered

ENV_IDS = {"CarRacing": "CarRacing-v3", "VisualPendulum": "Pendulum-v1"}
"""Gymnasium id under each of our environment names."""

_RENDER_MODES = (None, "rgb_array", "human")


class EnvError(ValueError):
    """An --env that cannot be trained on; the message is one line that starts with it."""


def split_env(name: str) -> tuple[str, str]:
    """(kind, argument): ("CarRacing", ""), ("dmc", "cartpole-swingup"), ("gym", "Ant-v5")."""
    if name in ENV_NAMES:
        return name, ""
    kind, sep, arg = name.partition(":")
    if sep and arg and kind in ("dmc", "gym"):
        return kind, arg
    raise EnvError(
        f"--env {name}: unknown env; choose CarRacing, VisualPendulum, dmc:DOMAIN-TASK "
        "(e.g. dmc:cartpole-swingup) or gym:ID (e.g. gym:MountainCarContinuous-v0)"
    )


def solved_threshold(name: str) -> float | None:
    """The mean return over 100 consecutive episodes that solves `name`: gymnasium's registered
    `reward_threshold` (CarRacing-v3: 900; a `gym:ID` its own spec's, when it registers one).
    VisualPendulum (Pendulum-v1 registers none) and the DMC tasks have none."""
    if name in SOLVED_THRESHOLDS:
        return SOLVED_THRESHOLDS[name]
    if not name.startswith("gym:"):
        return None
    try:
        threshold = gym.spec(name.removeprefix("gym:")).reward_threshold
    except gym.error.Error:  # not registered: make_env says so in its own words
        return None
    return None if threshold is None else float(threshold)


def env_defaults(name: str) -> dict[str, object]:
    """The `wrappers.*` values env `name` takes unless given: the PlaNet-benchmark protocol for
    dmc (stack 3, the domain's action repeat, RGB), no action repeat for gym; none for the
    project's own envs (the spec's defaults are CarRacing's)."""
    kind, arg = split_env(name)
    if kind == "dmc":
        try:
            domain, _ = dmc.split_name(arg)
        except dmc.DMCError as exc:
            raise EnvError(f"--env {exc}") from None
        return {
            "frame_stack": dmc.FRAME_STACK,
            "action_repeat": dmc.action_repeat(domain),
            "grayscale": False,
        }
    if kind == "gym":
        return {"action_repeat": 1}
    return {}


def with_env_defaults(cfg: TrainConfig, given: Collection[str] = ()) -> TrainConfig:
    """`cfg` with its env's own wrapper defaults (`env_defaults`) in the `wrappers.*` fields
    not named in `given` (the dotted paths a command line set)."""
    values = {k: v for k, v in env_defaults(cfg.env).items() if f"wrappers.{k}" not in given}
    return dataclasses.replace(cfg, wrappers=dataclasses.replace(cfg.wrappers, **values))


@cache
def _action_dim(name: str) -> int:
    env = _make_base(name, EnvConfig(image_size=16), None)
    try:
        return int(np.prod(env.action_space.shape))
    finally:
        env.close()


def action_dim(name: str) -> int:
    """Size of the agent's action vector in environment `name` (a dmc or gym env is built once
    per process to read it)."""
    kind, _ = split_env(name)
    return ACTION_DIMS[name] if kind in ACTION_DIMS else _action_dim(name)


def check_env(name: str, cfg: EnvConfig) -> None:
    """EnvError (one line) unless env `name` builds, resets and observes `cfg.obs_shape`: for
    launch.py, before Ray starts (a discrete or pixel-less gym env, an unknown dmc task, a
    missing dependency, a renderer that does not work, an env that fails in its own code)."""
    try:
        env = make_env(name, cfg, seed=0)
        try:
            obs, _ = env.reset()
        finally:
            env.close()
    except (EnvError, ValueError):  # ours, and the config's bounds: already one line
        raise
    except Exception as exc:  # the env's own code: gymnasium, Box2D, MuJoCo, a plugin
        raise EnvError(f"--env {name}: {_failure(exc)}") from None
    if obs.shape != cfg.obs_shape or obs.dtype != np.uint8:
        raise EnvError(f"--env {name}: observes {obs.dtype} {obs.shape}, not uint8 {cfg.obs_shape}")


def _make_carracing(cfg: EnvConfig, render_mode: str | None) -> gym.Env:
    """Raw continuous CarRacing-v3 as `gym.make` builds it, drawn by FastCarRacing if enabled."""
    # The passive checker would flag the skipped frames' reused arrays, which stay inside the
    # action repeat; `check_env` on the wrapped env covers what it checks.
    return make_car_racing(
        cfg.fast_render, continuous=True, render_mode=render_mode, disable_env_checker=True
    )


def _failure(exc: BaseException) -> str:
    """An env's failure in one line; a MuJoCo one says which `MUJOCO_GL` to try instead."""
    if type(exc).__module__.split(".")[0] in ("mujoco", "OpenGL", "glfw"):
        return dmc.render_failure(exc)
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"cannot be made or rendered here ({type(exc).__name__}: {first})"


def _make_gym(env_id: str) -> gym.Env:
    """`gym.make(env_id)` rendering to arrays; EnvError unless it can be a pixel task here."""
    name = f"--env gym:{env_id}"
    dmc.headless_gl()  # gymnasium's MuJoCo envs (HalfCheetah-v5, ...) render through MuJoCo
    try:
        env = gym.make(env_id, render_mode="rgb_array")
    except gym.error.Error as exc:  # unknown id or version, a missing extra
        raise EnvError(f"{name}: {str(exc).splitlines()[0]}") from None
    except (ImportError, TypeError) as exc:  # an env that renders no rgb_array, a broken entry
        raise EnvError(f"{name}: cannot be made ({type(exc).__name__}: {exc})") from None
    space = env.action_space
    problem = None
    if not isinstance(space, spaces.Box):
        problem = f"needs a continuous (Box) action space, has {type(space).__name__}"
    elif not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        problem = "needs a bounded action space (its Box has infinite bounds)"
    elif "rgb_array" not in env.metadata.get("render_modes", ()):
        problem = "needs pixels: it does not render rgb_array frames"
    if problem:
        env.close()
        raise EnvError(f"{name}: {problem}")
    return env


def _make_base(name: str, cfg: EnvConfig, render_mode: str | None) -> gym.Env:
    """The unwrapped-but-for-gymnasium's-own env under our `name`, drawing rgb_array frames."""
    kind, arg = split_env(name)
    if kind == "CarRacing":
        return _make_carracing(cfg, render_mode)
    if kind == "VisualPendulum":
        # Observations are rendered, so Pendulum itself always renders to an array.
        return gym.make(ENV_IDS[name], render_mode="rgb_array")
    if kind == "dmc":
        try:
            return dmc.make_dmc(arg, cfg.image_size, cfg.camera)
        except dmc.DMCError as exc:
            raise EnvError(f"--env {exc}") from None
    return _make_gym(arg)


WRAPPERS: dict[str, Callable[[gym.Env, EnvConfig], gym.Env]] = {
    "CarRacing": wrap_carracing,
    "VisualPendulum": wrap_pendulum,
    "dmc": wrap_rendered,
    "gym": wrap_rendered,
}
"""The registry: how each kind of --env becomes the agent's view of it."""


def make_env(
    name: str, cfg: EnvConfig, seed: int | None = None, render_mode: str | None = None
) -> gym.Env:
    """Build environment `name` as the agent sees it; `seed` seeds its first reset.

    `render_mode` "rgb_array" makes `env.render()` return the underlying env's full frame (eval
    videos); "human" opens a window (the demo recorder).
    """
    kind, _ = split_env(name)
    validate_env(cfg)  # the command line's own bounds (the config fields' rules), one source
    if render_mode not in _RENDER_MODES:
        raise ValueError(f"render_mode must be one of {_RENDER_MODES}, got {render_mode!r}")
    env = WRAPPERS[kind](_make_base(name, cfg, render_mode), cfg)
    if render_mode == "human" and kind != "CarRacing":
        env = HumanRendering(env)
    if seed is not None:
        # The generator reset(seed=seed) would build, so the first plain reset() matches it.
        env.unwrapped.np_random, _ = seeding.np_random(seed)
        env.action_space.seed(seed)
    return env
