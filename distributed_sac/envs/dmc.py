"""The DeepMind Control Suite as a gymnasium env that renders pixels (`--env dmc:DOMAIN-TASK`).

`DMCEnv` adapts one `dm_control.suite` task: actions are the task's bounded vector, each
`step` is one control step of the task, the episode ends where the suite's time limit ends it
(1,000 control steps for the benchmark tasks; `truncated`, as the final discount is 1) and a
`terminated` episode is one whose final discount is 0. Observations are the suite's flattened
state; the agent's pixels come from `render()`, drawn at the requested side directly (no
resize), from the camera the papers use (PlaNet's protocol: camera 0, quadruped 2).

Rendering is headless. Unless `MUJOCO_GL` is set, `egl` is used: on a machine without a GPU,
Mesa's EGL renders in software (llvmpipe), and so do the 2-core development machines.
`osmesa` needs Mesa's off-screen library (libOSMesa), `glfw` a display.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ACTION_REPEATS = {"cartpole": 8, "finger": 2, "walker": 2}
"""Agent-step action repeat per domain in the PlaNet benchmark (Hafner et al. 2019), which
SAC+AE, CURL and DrQ report on; every other domain repeats 4."""
DEFAULT_ACTION_REPEAT = 4
CAMERAS = {"quadruped": 2}
"""Camera per domain as the papers render them; every other domain uses camera 0."""
FRAME_STACK = 3
"""Frames per observation in the PlaNet benchmark protocol."""
GL_BACKENDS = ("egl", "osmesa", "glfw")


class DMCError(ValueError):
    """A dmc: name that is not a task of the suite, or a suite that cannot load or render."""


def split_name(spec: str) -> tuple[str, str]:
    """("cartpole", "swingup") from "cartpole-swingup"; the domain and task keep their `_`."""
    domain, sep, task = spec.partition("-")
    if not sep or not domain or not task:
        raise DMCError(f"dmc:{spec}: expected dmc:DOMAIN-TASK, e.g. dmc:cartpole-swingup")
    return domain, task


def headless_gl() -> None:
    """MuJoCo renders headless unless told otherwise: `MUJOCO_GL` defaults to `egl`, for dmc
    tasks and gymnasium's MuJoCo envs alike (gymnasium would try `glfw` first, which needs a
    display). Call it before `dm_control` or a MuJoCo env is imported."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    # GLFW warns of a missing display, then fails: the failure is reported as one line.
    warnings.filterwarnings("ignore", module="glfw")
    for name in ("absl", "OpenGL"):  # their INFO lines: MuJoCo's version, no OpenGL_accelerate
        logging.getLogger(name).setLevel(logging.WARNING)
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _SuiteModelDeprecations) for f in absl.filters):
        absl.addFilter(_SuiteModelDeprecations())


class _SuiteModelDeprecations(logging.Filter):
    """Drops the warning MuJoCo's compiler logs through absl each time a suite model that uses
    the deprecated `settotalmass` attribute (cheetah, walker, ...) is compiled: it is about the
    suite's own model files, which a user cannot change, and it came once per env built."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "'settotalmass' is deprecated" not in record.getMessage()


def render_failure(exc: BaseException) -> str:
    """MuJoCo's failure to render in one line, with what to try: another `MUJOCO_GL` backend."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{render_hint()} ({type(exc).__name__}: {first})"


def render_hint() -> str:
    """What to try when MuJoCo could not render: another `MUJOCO_GL` backend."""
    backend = os.environ.get("MUJOCO_GL", "")
    others = ", ".join(b for b in GL_BACKENDS if b != backend)
    return (
        f"MuJoCo cannot render with MUJOCO_GL={backend}; "
        f"set MUJOCO_GL to one that works here ({others})"
    )


def _suite():
    headless_gl()
    try:
        from dm_control import suite
    except ImportError as exc:
        raise DMCError(
            f"the DeepMind Control Suite needs dm_control and mujoco ({exc}); "
            "pip install -r requirements.txt installs the pinned pair"
        ) from None
    return suite


def check_task(domain: str, task: str) -> None:
    """DMCError unless (domain, task) is a task of the installed suite."""
    by_domain = _suite().TASKS_BY_DOMAIN
    if domain not in by_domain:
        raise DMCError(
            f"dmc:{domain}-{task}: no domain {domain!r} in the DeepMind Control Suite "
            f"(domains: {', '.join(sorted(by_domain))})"
        )
    if task not in by_domain[domain]:
        raise DMCError(
            f"dmc:{domain}-{task}: no task {task!r} in domain {domain!r} "
            f"(tasks: {', '.join(by_domain[domain])})"
        )


def action_repeat(domain: str) -> int:
    return ACTION_REPEATS.get(domain, DEFAULT_ACTION_REPEAT)


def camera(domain: str) -> int:
    return CAMERAS.get(domain, 0)


class DMCEnv(gym.Env):
    """One suite task; `render()` draws size x size RGB from `camera_id` (see the module doc)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, domain: str, task: str, size: int, camera_id: int | None = None):
        self._closed = False
        check_task(domain, task)
        self._env = _suite().load(domain, task, environment_kwargs={"flat_observation": True})
        self.domain, self.task, self.size = domain, task, size
        self.camera_id = camera(domain) if camera_id is None else camera_id
        self.render_mode = "rgb_array"
        spec = self._env.action_spec()
        self.action_space = spaces.Box(
            spec.minimum.astype(np.float32), spec.maximum.astype(np.float32), dtype=np.float32
        )
        (state_spec,) = self._env.observation_spec().values()
        self.observation_space = spaces.Box(-np.inf, np.inf, state_spec.shape, np.float64)

    def _state(self, time_step) -> np.ndarray:
        (state,) = time_step.observation.values()
        return np.asarray(state, np.float64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; the task's initial state is drawn from this env's `np_random`."""
        super().reset(seed=seed)
        self._env.task.random.seed(int(self.np_random.integers(2**32)))
        return self._state(self._env.reset()), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One control step of the task."""
        time_step = self._env.step(np.asarray(action, np.float64))
        last = time_step.last()
        terminated = bool(last and time_step.discount == 0)
        truncated = last and not terminated
        return self._state(time_step), float(time_step.reward or 0.0), terminated, truncated, {}

    def render(self) -> np.ndarray:
        """The size x size RGB frame of the current state."""
        return self._env.physics.render(self.size, self.size, camera_id=self.camera_id)

    @property
    def physics(self):
        """The task's `dm_control` physics, for inspection (geom names, segmentation renders)."""
        return self._env.physics

    def close(self) -> None:
        """Frees the GL context now (dm_control's own close leaves it to garbage collection,
        which may run after EGL's display is gone and then warns of EGL_BAD_DISPLAY)."""
        if not self._closed:
            self._closed = True
            self._env.close()
            self._env.physics.free()


def make_dmc(spec: str, size: int, camera_id: int | None = None) -> DMCEnv:
    """DMCEnv for "DOMAIN-TASK", with one frame drawn to check the renderer (DMCError if not)."""
    domain, task = split_name(spec)
    env = DMCEnv(domain, task, size, camera_id)
    # A GL context that fails half-way complains when it is freed: kept quiet here.
    hook, sys.unraisablehook = sys.unraisablehook, lambda _: None
    try:
        env.render()
        return env
    except Exception as exc:  # the GL backends fail with assorted types
        message = f"dmc:{spec}: {render_failure(exc)}"
    finally:
        sys.unraisablehook = hook
    del env
    hook, sys.unraisablehook = sys.unraisablehook, lambda _: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook
    raise DMCError(message)
