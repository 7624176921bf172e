"""The pixel environments against stock gymnasium envs stepped in lockstep (docs/design.md)."""

from __future__ import annotations

import dataclasses
import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.box2d.car_racing import CarRacing
from gymnasium.utils.env_checker import check_env

from distributed_sac.config.fields import ACTION_DIMS, ENV_NAMES, EnvConfig
from distributed_sac.envs.registry import ENV_IDS, action_dim, make_env
from distributed_sac.envs.wrappers import (
    SLIGHT_GAS,
    EarlyTermination,
    area_resize,
    wrap_carracing,
    wrap_pendulum,
)

LUMA = np.array([0.2125, 0.7154, 0.0721])  # gymnasium GrayscaleObservation, ITU-R BT.709
CFG = EnvConfig()


def gray(rgb: np.ndarray) -> np.ndarray:
    return np.sum(np.multiply(rgb, LUMA), axis=-1).astype(np.uint8)


def agent_view(state: np.ndarray) -> np.ndarray:
    return gray(state[0:84, 6:90])


def to_env_action(a: np.ndarray) -> np.ndarray:
    return np.array([a[0], (a[1] + 1) / 2, (a[2] + 1) / 2], dtype=np.float32)


def stock_carracing(seed: int, **kwargs) -> gym.Env:
    env = gym.make("CarRacing-v3", continuous=True, **kwargs)
    env.reset(seed=seed)
    return env


def stock_step(env: gym.Env, action: np.ndarray, repeat: int = 3) -> tuple:
    total = 0.0
    for _ in range(repeat):
        state, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if terminated or truncated:
            break
    return state, total, terminated, truncated


class ActionSpy(gym.Wrapper):
    """Records every action and reward that reaches the raw env."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []

    def step(self, action):
        self.actions.append(np.array(action, copy=True))
        out = self.env.step(action)
        self.rewards.append(float(out[1]))
        return out


class SkipRenderCarRacing(CarRacing):
    """Stock CarRacing with the FastCarRacing `skip_render` contract and a count of state draws."""

    skip_render = False
    state_draws = 0

    def _render(self, mode):
        if mode == "state_pixels" and self.skip_render:
            return self.state
        self.state_draws += mode == "state_pixels"
        return super()._render(mode)

    def render_state(self):
        self.state = self._render("state_pixels")
        return self.state


class ScriptedRewards(gym.Env):
    """A one-pixel env that pays scripted rewards and ends where the script says."""

    observation_space = gym.spaces.Box(0, 255, (1,), np.uint8)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, steps: list[tuple[float, bool, bool]]):
        self.steps = steps

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.uint8), {}

    def step(self, action):
        reward, terminated, truncated = self.steps[self.t]
        self.t += 1
        return np.zeros(1, np.uint8), reward, terminated, truncated, {}


def test_every_env_table_covers_exactly_the_env_names():
    assert ENV_NAMES == ("CarRacing", "VisualPendulum")
    assert set(ENV_IDS) == set(ACTION_DIMS) == set(ENV_NAMES)
    with pytest.raises(ValueError, match="choose CarRacing, VisualPendulum, dmc:DOMAIN-TASK"):
        make_env("Pendulum", CFG)


@pytest.mark.parametrize("name,dim", [("CarRacing", 3), ("VisualPendulum", 1)])
def test_spaces_shapes_and_env_checker(name, dim):
    env = make_env(name, CFG, seed=0)
    assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert env.action_space == gym.spaces.Box(-1, 1, (dim,), np.float32)
    assert action_dim(name) == dim and CFG.obs_shape == (4, 84, 84)
    obs, _ = env.reset()
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert isinstance(reward, float) and not terminated and not truncated
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*different from the unwrapped.*")
        check_env(env, skip_render_check=True)


@pytest.mark.parametrize("fast_render", [True, False])
def test_carracing_matches_stock_in_lockstep(fast_render):
    cfg = dataclasses.replace(CFG, fast_render=fast_render)
    env, stock = make_env("CarRacing", cfg, seed=3), stock_carracing(seed=3)
    obs, _ = env.reset()
    # Each stacked frame is one slight-gas agent step: action repeat 3 frames apart.
    fill = [agent_view(stock_step(stock, SLIGHT_GAS)[0]) for _ in range(4)]
    np.testing.assert_array_equal(obs, np.stack(fill))
    assert all(not np.array_equal(fill[i], fill[i + 1]) for i in range(3))
    rng = np.random.default_rng(0)
    for _ in range(30):
        action = rng.uniform(-1, 1, 3).astype(np.float32)
        prev = obs
        obs, reward, terminated, truncated, _ = env.step(action)
        state, stock_reward, stock_terminated, stock_truncated = stock_step(
            stock, to_env_action(action)
        )
        np.testing.assert_array_equal(obs[-1], agent_view(state))
        np.testing.assert_array_equal(obs[:-1], prev[1:])
        assert reward == pytest.approx(stock_reward, abs=1e-9)
        assert (terminated, truncated) == (stock_terminated, stock_truncated)


def test_carracing_action_mapping_reaches_raw_env():
    spy = ActionSpy(gym.make("CarRacing-v3", continuous=True))
    env = wrap_carracing(spy, CFG)
    env.reset(seed=0)
    assert len(spy.actions) == 4 * 3
    np.testing.assert_array_equal(np.stack(spy.actions), np.tile(SLIGHT_GAS, (12, 1)))
    rng = np.random.default_rng(1)
    actions = [np.array([-1, -1, -1]), np.array([1, 1, 1]), np.array([0, 0, 0])]
    actions += [rng.uniform(-1, 1, 3) for _ in range(5)]
    expected_env = [[-1, 0, 0], [1, 1, 1], [0, 0.5, 0.5]] + [to_env_action(a) for a in actions[3:]]
    for action, expected in zip(actions, expected_env, strict=True):
        spy.actions.clear()
        env.step(action.astype(np.float32))
        assert len(spy.actions) == 3
        np.testing.assert_allclose(np.stack(spy.actions), np.tile(expected, (3, 1)), atol=1e-6)


def test_skip_render_draws_only_observed_frames_and_the_final_one():
    # 20 frames: 12 fill frames, two full agent steps, then truncation on the second frame of
    # the third step, a frame the wrapper asked the env to skip.
    fake = gym.wrappers.TimeLimit(SkipRenderCarRacing(continuous=True), max_episode_steps=20)
    env = wrap_carracing(fake, CFG)
    stock = stock_carracing(seed=5, max_episode_steps=20)
    obs, _ = env.reset(seed=5)
    for _ in range(4):
        stock_step(stock, SLIGHT_GAS)
    assert fake.unwrapped.state_draws == 1 + 4  # reset's own frame, then one per fill step
    action = np.array([0.2, 0.5, -1.0], dtype=np.float32)
    for step in range(3):
        obs, reward, terminated, truncated, _ = env.step(action)
        state, stock_reward, _, stock_truncated = stock_step(stock, to_env_action(action))
        np.testing.assert_array_equal(obs[-1], agent_view(state))
        assert reward == pytest.approx(stock_reward, abs=1e-9)
        assert (terminated, truncated) == (False, step == 2) and stock_truncated == truncated
        assert fake.unwrapped.state_draws == 1 + 4 + step + 1
        assert fake.unwrapped.skip_render is False


def test_early_termination_adds_penalty_and_terminates():
    cfg = dataclasses.replace(CFG, early_stop_window=5, early_stop_threshold=-1.0)
    env, stock = make_env("CarRacing", cfg, seed=2), stock_carracing(seed=2)
    env.reset()
    for _ in range(4):
        stock_step(stock, SLIGHT_GAS)
    brake = np.array([0, -1, 1], dtype=np.float32)
    window: list[float] = []
    for _ in range(20):
        _, reward, terminated, truncated, info = env.step(brake)
        stock_reward = stock_step(stock, to_env_action(brake))[1]
        window = (window + [stock_reward])[-5:]
        fires = sum(window) < -1.0
        assert reward == pytest.approx(stock_reward + (-10.0 if fires else 0.0), abs=1e-9)
        assert (terminated, truncated, info.get("early_stop", False)) == (fires, False, fires)
        if fires:
            break
    # A stopped car loses 0.1 per frame; the start tiles' reward must first leave the window.
    assert fires and len(window) == 5 and window[0] == pytest.approx(-0.3)


def test_early_termination_window_restarts_on_reset():
    env = EarlyTermination(ScriptedRewards([(-1.0, False, False)] * 4), 3, -2.5, -10.0)
    for _ in range(2):
        env.reset()
        outcomes = [env.step(0)[1:4] for _ in range(3)]
        assert outcomes == [(-1.0, False, False), (-1.0, False, False), (-11.0, True, False)]


@pytest.mark.parametrize("terminated,truncated", [(True, False), (False, True)])
def test_early_termination_leaves_an_episode_the_env_ends(terminated, truncated):
    env = EarlyTermination(ScriptedRewards([(-100.0, terminated, truncated)]), 100, -30.0, -10.0)
    env.reset()
    _, reward, *ends, info = env.step(0)
    assert (reward, *ends) == (-100.0, terminated, truncated) and "early_stop" not in info


def test_pendulum_truncates_at_67_agent_steps_with_mapped_torque():
    spy = ActionSpy(gym.make("Pendulum-v1", render_mode="rgb_array"))
    env = wrap_pendulum(spy, CFG)
    env.reset(seed=0)
    rng = np.random.default_rng(2)
    for step in range(1, 68):
        action = rng.uniform(-1, 1, 1).astype(np.float32)
        before = len(spy.actions)
        _, reward, terminated, truncated, _ = env.step(action)
        frames = len(spy.actions) - before
        assert frames == (2 if step == 67 else 3)  # 200 = 66 * 3 + 2: the repeat stops early
        np.testing.assert_allclose(np.stack(spy.actions[before:]), np.tile(2 * action, (frames, 1)))
        assert reward == pytest.approx(sum(spy.rewards[before:]), abs=1e-9)
        assert terminated is False and truncated == (step == 67)
    assert len(spy.actions) == 200


def reference_area(image: np.ndarray, size: int) -> np.ndarray:
    """Area averaging by definition: repeat each pixel up to a common multiple, then block means."""
    for axis in (0, 1):
        n = image.shape[axis]
        g = math.gcd(n, size)
        fine = np.repeat(image, size // g, axis=axis)
        shape = fine.shape[:axis] + (size, n // g) + fine.shape[axis + 1 :]
        image = fine.reshape(shape).mean(axis=axis + 1)
    return np.rint(image).astype(np.uint8)


@pytest.mark.parametrize("shape,size", [((500, 500, 3), 84), ((84, 84), 32), ((84, 84), 42)])
def test_area_resize_is_exact_area_averaging(shape, size):
    image = np.random.default_rng(size).integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(area_resize(image, size), reference_area(image, size))


def test_pendulum_reset_fills_stack_with_area_resized_first_frame():
    env = make_env("VisualPendulum", CFG, seed=4, render_mode="rgb_array")
    obs, _ = env.reset()
    frame = env.render()
    assert frame.shape == (500, 500, 3)
    assert all(np.array_equal(obs[0], obs[i]) for i in range(1, 4))
    np.testing.assert_array_equal(obs[0], gray(reference_area(frame, 84)))
    assert obs[0].min() < 100 and obs[0].max() == 255  # the rod on a white background


def test_pendulum_crop_resizes_the_centred_square_of_the_render():
    cfg = dataclasses.replace(CFG, image_size=32, pendulum_crop=260)
    env = make_env("VisualPendulum", cfg, seed=4, render_mode="rgb_array")
    obs, _ = env.reset()
    frame = env.render()
    assert obs.shape == (4, 32, 32)
    np.testing.assert_array_equal(obs[-1], gray(reference_area(frame[120:380, 120:380], 32)))
    # The rod (darker than 100 grey levels) covers more of the cropped view than the full one.
    full = make_env("VisualPendulum", dataclasses.replace(cfg, pendulum_crop=500), seed=4)
    assert (obs[-1] < 100).sum() > 2 * (full.reset()[0][-1] < 100).sum()


def test_carracing_area_resize_matches_block_mean():
    cfg = dataclasses.replace(CFG, image_size=42)
    env, stock = make_env("CarRacing", cfg, seed=1), stock_carracing(seed=1)
    obs, _ = env.reset()
    for _ in range(4):
        state = stock_step(stock, SLIGHT_GAS)[0]
    block_mean = agent_view(state).reshape(42, 2, 42, 2).mean(axis=(1, 3))
    assert obs.shape == (4, 42, 42)
    np.testing.assert_array_equal(obs[-1], np.rint(block_mean))


@pytest.mark.parametrize("name", ["CarRacing", "VisualPendulum"])
def test_small_image_size(name):
    cfg = dataclasses.replace(CFG, image_size=32)
    env = make_env(name, cfg, seed=0)
    assert env.observation_space.shape == cfg.obs_shape == (4, 32, 32)
    assert env.reset()[0].shape == (4, 32, 32)
    assert env.step(env.action_space.sample())[0].shape == (4, 32, 32)


@pytest.mark.parametrize("name", ["CarRacing", "VisualPendulum"])
def test_seed_makes_first_reset_and_steps_deterministic(name):
    actions = np.random.default_rng(3).uniform(-1, 1, (8, action_dim(name))).astype(np.float32)

    def rollout(env, **reset_kwargs):
        obs = [env.reset(**reset_kwargs)[0]]
        return obs + [env.step(a)[0] for a in actions]

    first, second = rollout(make_env(name, CFG, seed=7)), rollout(make_env(name, CFG, seed=7))
    explicit = rollout(make_env(name, CFG), seed=7)
    for a, b, c in zip(first, second, explicit, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert not np.array_equal(first[0], make_env(name, CFG, seed=8).reset()[0])


@pytest.mark.parametrize(
    "name,shape", [("CarRacing", (400, 600, 3)), ("VisualPendulum", (500, 500, 3))]
)
def test_rgb_array_render_returns_full_frame(name, shape):
    env = make_env(name, CFG, seed=0, render_mode="rgb_array")
    env.reset()
    env.step(env.action_space.sample())
    frame = env.render()
    assert frame.shape == shape and frame.dtype == np.uint8


@pytest.mark.parametrize("name", ["CarRacing", "VisualPendulum"])
def test_human_render_mode_steps(name):
    env = make_env(name, CFG, seed=0, render_mode="human")
    assert env.render_mode == "human"
    assert env.reset()[0].shape == (4, 84, 84)
    assert env.step(env.action_space.sample())[0].shape == (4, 84, 84)
    env.close()


def test_bad_arguments_raise_value_error():
    message = "--env Atari: unknown env; choose CarRacing, VisualPendulum, dmc:DOMAIN-TASK"
    with pytest.raises(ValueError, match=message):
        make_env("Atari", CFG)
    with pytest.raises(ValueError, match=message):
        action_dim("Atari")
    with pytest.raises(ValueError, match="render_mode"):
        make_env("VisualPendulum", CFG, render_mode="rgb")
    for size in (0, 15, 85):
        with pytest.raises(ValueError, match="--wrappers.image-size .*16, 84"):
            make_env("VisualPendulum", dataclasses.replace(CFG, image_size=size))
    for crop in (83, 501):
        with pytest.raises(ValueError, match="--wrappers.pendulum-crop .*84 .*500"):
            make_env("VisualPendulum", dataclasses.replace(CFG, pendulum_crop=crop))
