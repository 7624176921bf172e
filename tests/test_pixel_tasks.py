"""Any pixel task: dmc:DOMAIN-TASK and gym:ID through the env registry, RGB and grayscale
stacks, the dmc protocol's defaults, and the one-line errors for what cannot be trained."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from distributed_sac.config.fields import EnvConfig
from distributed_sac.envs import dmc
from distributed_sac.envs.registry import EnvError, action_dim, check_env, env_defaults, make_env
from distributed_sac.envs.wrappers import area_resize

REPO = Path(__file__).resolve().parents[1]
CARTPOLE = "dmc:cartpole-swingup"
LUMA = np.array([0.2125, 0.7154, 0.0721])


@pytest.fixture(autouse=True)
def _close_envs(monkeypatch):
    """Every env a test here makes is closed after it, so a DMC env's GL context is freed then,
    not by a later garbage collection in another test (which warns of EGL_BAD_DISPLAY)."""
    original, made = make_env, []

    def tracked(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setitem(globals(), "make_env", tracked)
    yield
    for env in made:
        env.close()


def dmc_cfg(name: str = CARTPOLE, **kw) -> EnvConfig:
    return EnvConfig(**{"image_size": 16, **env_defaults(name), **kw})


def test_dmc_defaults_follow_the_planet_protocol():
    assert env_defaults("dmc:cartpole-swingup") == {
        "frame_stack": 3,
        "action_repeat": 8,
        "grayscale": False,
    }
    assert env_defaults("dmc:walker-walk")["action_repeat"] == 2
    assert env_defaults("dmc:finger-spin")["action_repeat"] == 2
    assert env_defaults("dmc:cheetah-run")["action_repeat"] == 4
    assert env_defaults("dmc:ball_in_cup-catch")["action_repeat"] == 4
    assert env_defaults("gym:MountainCarContinuous-v0") == {"action_repeat": 1}
    assert env_defaults("CarRacing") == env_defaults("VisualPendulum") == {}
    assert dmc.camera("quadruped") == 2 and dmc.camera("walker") == 0


def test_dmc_rgb_stack_holds_the_rendered_frames_oldest_first():
    cfg = dmc_cfg()
    env = make_env(CARTPOLE, cfg, seed=3)
    obs, _ = env.reset()
    assert obs.shape == (9, 16, 16) == cfg.obs_shape and obs.dtype == np.uint8
    # the reset pads the stack with the first frame
    assert np.array_equal(obs[0:3], obs[6:9]) and np.array_equal(obs[3:6], obs[6:9])
    for _ in range(2):
        obs, reward, terminated, truncated, _ = env.step(np.array([0.5], np.float32))
        newest = env.unwrapped.render().transpose(2, 0, 1)
        assert np.array_equal(obs[6:9], newest)
        assert 0.0 <= reward <= 8.0 and not terminated and not truncated
    assert env.action_space.shape == (1,) and env.action_space.low[0] == -1.0
    assert action_dim(CARTPOLE) == 1 and action_dim("dmc:walker-walk") == 6


def test_dmc_episode_is_1000_env_steps_truncated_never_terminated():
    env = make_env(CARTPOLE, dmc_cfg(), seed=0)
    env.reset()
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        assert not terminated
        done = truncated
    assert steps == 1000 // 8


def test_dmc_seeds_reproduce_and_differ():
    def first_frames(seed: int) -> np.ndarray:
        env = make_env(CARTPOLE, dmc_cfg(), seed=seed)
        obs, _ = env.reset()
        out = [obs]
        for _ in range(3):
            out.append(env.step(np.array([1.0], np.float32))[0])
        return np.stack(out)

    assert np.array_equal(first_frames(5), first_frames(5))
    assert not np.array_equal(first_frames(5), first_frames(6))


def test_dmc_grayscale_is_the_luma_of_the_render():
    cfg = dmc_cfg(grayscale=True)
    env = make_env(CARTPOLE, cfg, seed=1)
    obs, _ = env.reset()
    assert obs.shape == (3, 16, 16)
    rgb = env.unwrapped.render()
    assert np.array_equal(obs[-1], np.sum(rgb * LUMA, axis=-1).astype(np.uint8))


def test_gym_env_renders_resizes_and_stacks():
    name = "gym:MountainCarContinuous-v0"
    cfg = EnvConfig(image_size=16, frame_stack=2, **env_defaults(name))
    env = make_env(name, cfg, seed=0)
    obs, _ = env.reset()
    assert obs.shape == (2, 16, 16)
    obs, *_ = env.step(np.array([1.0], np.float32))
    frame = area_resize(env.unwrapped.render(), 16)
    assert np.array_equal(obs[-1], np.sum(frame * LUMA, axis=-1).astype(np.uint8))
    rgb = make_env(name, dataclasses.replace(cfg, grayscale=False), seed=0)
    assert rgb.reset()[0].shape == (6, 16, 16)
    assert action_dim(name) == 1 and action_dim("gym:LunarLanderContinuous-v3") == 2
    check_env(name, cfg)


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("gym:CartPole-v1", "--env gym:CartPole-v1: needs a continuous (Box) action space"),
        ("gym:NoSuchEnv-v0", "--env gym:NoSuchEnv-v0: Environment `NoSuchEnv` doesn't exist"),
        ("dmc:nosuch-walk", "no domain 'nosuch' in the DeepMind Control Suite"),
        ("dmc:cartpole-run", "no task 'run' in domain 'cartpole' (tasks: balance,"),
        ("dmc:cartpole", "expected dmc:DOMAIN-TASK"),
        ("Atari", "--env Atari: unknown env"),
    ],
)
def test_what_cannot_be_trained_is_one_line(name, needle):
    with pytest.raises(EnvError) as err:
        check_env(name, dmc_cfg() if name.startswith("dmc:cartpole-") else EnvConfig())
    assert needle in str(err.value) and "\n" not in str(err.value)


class _BrokenRender(gym.Env):
    """A continuous env with rgb_array rendering whose render fails in its own code."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode=None):
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.render_mode = render_mode

    def reset(self, seed=None, options=None):
        return np.zeros(3, np.float32), {}

    def render(self):
        raise RuntimeError("the simulator fell over\nits second line")

    def close(self):
        pass


def test_an_env_that_fails_in_its_own_code_is_one_line():
    gym.register("BrokenRender-v0", entry_point=lambda **kw: _BrokenRender(**kw))
    try:
        with pytest.raises(EnvError) as err:
            check_env("gym:BrokenRender-v0", EnvConfig(image_size=16))
    finally:
        gym.registry.pop("BrokenRender-v0")
    assert str(err.value) == (
        "--env gym:BrokenRender-v0: cannot be made or rendered here "
        "(RuntimeError: the simulator fell over)"
    )


def test_gymnasium_mujoco_envs_render_headless_without_mujoco_gl():
    """gymnasium alone would try glfw first (no display here); the registry defaults to egl."""
    code = (
        "from distributed_sac.config.fields import EnvConfig\n"
        "from distributed_sac.envs.registry import check_env\n"
        "check_env('gym:InvertedPendulum-v5', EnvConfig(image_size=16))\n"
        "print('built')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY")}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "built", proc.stderr


def _launch(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), "train", "--preset", "tiny", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO), **env},
        cwd=REPO,
    )


def test_cli_refuses_a_discrete_env_with_one_line_and_exit_2(tmp_path):
    proc = _launch("--env", "gym:CartPole-v1", "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: --env gym:CartPole-v1: needs a continuous (Box) action space, has Discrete"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", [CARTPOLE, "gym:InvertedPendulum-v5"])
def test_a_renderer_that_does_not_work_names_mujoco_gl(tmp_path, name):
    env = {"MUJOCO_GL": "glfw", "DISPLAY": "", "WAYLAND_DISPLAY": ""}
    proc = _launch("--env", name, "--run-dir", str(tmp_path / "run"), **env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "MUJOCO_GL=glfw" in errors[0], proc.stderr
    assert "egl" in errors[0]


def test_dmc_flags_beat_the_env_defaults():
    import launch

    cmd = launch.parse_train(["--env", "dmc:walker-walk", "--preset", "tiny"])
    w = cmd.config.wrappers
    assert (w.frame_stack, w.action_repeat, w.grayscale) == (3, 2, False)
    assert w.obs_shape == (9, 32, 32)
    cmd = launch.parse_train(
        ["--env", "dmc:walker-walk", "--preset", "tiny", "--wrappers.action-repeat", "4"]
        + ["--wrappers.grayscale", "--wrappers.frame-stack", "2"]
    )
    w = cmd.config.wrappers
    assert (w.frame_stack, w.action_repeat, w.grayscale) == (2, 4, True)
    cmd = launch.parse_train(["--preset", "dmc-cpu"])
    assert cmd.config.env == CARTPOLE and cmd.config.wrappers.action_repeat == 8
    assert cmd.config.wrappers.obs_shape == (9, 32, 32)
    a = cmd.config.agent  # the papers' rates and heads (the ablation in the preset's docstring)
    assert (a.actor_lr, a.critic_lr, a.encoder_lr, a.hidden_dim, a.num_filters) == (
        1e-3,
        1e-3,
        1e-3,
        1024,
        16,
    )
    cmd = launch.parse_train(["--preset", "dmc-cpu", "--agent.hidden-dim", "256"])
    assert cmd.config.agent.hidden_dim == 256 and cmd.config.agent.actor_lr == 1e-3


def test_dmc_cpu_runs_100k_env_steps_at_any_action_repeat_unless_told():
    import launch

    def length(*argv: str) -> tuple[int, int]:
        cfg = launch.parse_train(["--preset", "dmc-cpu", *argv], build_env=False).config
        return cfg.total_steps, cfg.eval.every

    assert length() == (12_500, 2_500)  # cartpole, repeat 8
    assert length("--env", "dmc:reacher-easy") == (25_000, 5_000)
    assert length("--env", "dmc:walker-walk") == (50_000, 10_000)
    assert length("--wrappers.action-repeat", "3") == (33_334, 6_667)  # whole agent steps
    assert length("--env", "dmc:walker-walk", "--total-steps", "100") == (100, 10_000)
    assert length("--env", "dmc:walker-walk", "--eval.every=7") == (50_000, 7)
    # Other presets count agent steps whatever the repeat.
    tiny = launch.parse_train(["--preset", "tiny", "--env", "dmc:walker-walk"], build_env=False)
    assert tiny.config.total_steps == 400


def test_the_suites_own_deprecation_warning_is_dropped_and_others_are_kept(caplog):
    """Cheetah's model uses MuJoCo's deprecated `settotalmass`: its compiler warned once per env
    built (10 lines in a cheetah run's log); other absl warnings still reach the log."""
    import logging

    with caplog.at_level(logging.WARNING):
        make_env("dmc:cheetah-run", dmc_cfg("dmc:cheetah-run"), seed=0)
        logging.getLogger("absl").warning("a warning of someone else's")
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "settotalmass" in m], messages
    assert "a warning of someone else's" in messages


def test_object_pixels_counts_the_named_geoms_and_names_the_model_when_one_is_missing():
    from benchmarks.object_pixels import count_pixels, parse_task

    task, geoms = parse_task("ball_in_cup-catch:ball")
    assert (task, geoms) == ("ball_in_cup-catch", ["ball"])
    counts = count_pixels(task, geoms, [16, 64], episodes=1, frames=20, every=10, seed=0)
    assert [len(c) for c in counts.values()] == [2, 2]
    # 16x the pixels on the frame: a ball the 64x64 draw covers with more than 4x the 16x16's.
    assert all(big > 4 * small for small, big in zip(counts[16], counts[64], strict=True))
    assert count_pixels(task, geoms, [16, 64], 1, 20, 10, 0) == counts
    with pytest.raises(ValueError, match="no geom cup_x in its model .geoms: .*ball"):
        count_pixels(task, ["cup_x"], [16], 1, 1, 1, 0)
    with pytest.raises(ValueError, match="expected TASK:GEOM"):
        parse_task("ball_in_cup-catch")
