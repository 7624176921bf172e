"""FastCarRacing against stock CarRacing-v3: every observation, reward, flag and info identical."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from distributed_sac.envs.carracing_fast import FastCarRacing, make_car_racing

REPEAT = 3


def _lockstep(stock: gym.Env, fast: gym.Env, seed: int, actions: np.ndarray, skip: bool, **reset):
    """Step both envs; compare every flag and each observation the fast env drew.

    With ``skip`` the fast env skips drawing like the action-repeat wrapper does (all but the
    last frame of each repeat). Returns the stock (reward, terminated, truncated, info) per frame.
    """
    obs_s, info_s = stock.reset(seed=seed, **reset)
    obs_f, info_f = fast.reset(seed=seed, **reset)
    assert obs_f.dtype == np.uint8 and obs_f.shape == (96, 96, 3)
    assert np.array_equal(obs_s, obs_f) and info_s == info_f
    frames = []
    for k, action in enumerate(actions, start=1):
        skipped = skip and k % REPEAT != 0
        fast.unwrapped.skip_render = skipped
        prev = obs_f
        obs_s, *flags_s = stock.step(action)
        obs_f, *flags_f = fast.step(action)
        assert flags_s == flags_f, f"frame {k}"
        if skipped:
            assert obs_f is prev, f"frame {k}"
        else:
            assert np.array_equal(obs_s, obs_f), f"frame {k}"
        frames.append(tuple(flags_s))
        if flags_s[1] or flags_s[2]:
            break
    if skip and obs_f is prev:
        assert np.array_equal(fast.unwrapped.render_state(), obs_s)
        assert fast.unwrapped.state is not prev
    fast.unwrapped.skip_render = False
    return frames


@pytest.fixture(scope="module")
def envs():
    """One stock and one fast env, reused across tests so caches live through many resets."""
    stock, fast = gym.make("CarRacing-v3"), make_car_racing(fast_render=True)
    yield stock, fast
    stock.close()
    fast.close()


def _actions(policy: str, seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    high = [1.0, 1.0, 1.0] if policy == "uniform" else [1.0, 0.6, 0.1]
    return rng.uniform([-1.0, 0.0, 0.0], high, size=(n, 3)).astype(np.float32)


SHORT = 100
"""Frames of the CI episodes: the zoom-in, the first corners, tiles visited, then truncation."""


@pytest.fixture(scope="module")
def short_envs():
    """A stock and a fast env whose time limit ends an episode after SHORT frames."""
    stock = gym.make("CarRacing-v3", max_episode_steps=SHORT)
    fast = make_car_racing(fast_render=True, max_episode_steps=SHORT)
    yield stock, fast
    stock.close()
    fast.close()


@pytest.mark.parametrize(
    ("policy", "seed", "skip"),
    [("uniform", 0, False), ("wander", 2, True), ("uniform", 5, True), ("wander", 6, False)],
)
def test_short_episode_matches_stock_up_to_truncation(short_envs, policy, seed, skip):
    stock, fast = short_envs
    assert isinstance(fast.unwrapped, FastCarRacing)
    frames = _lockstep(stock, fast, seed, _actions(policy, seed, SHORT + 1), skip)
    assert len(frames) == SHORT
    assert frames[-1][1:] == (False, True, {})  # TimeLimit truncation, not termination
    assert max(r for r, *_ in frames) > 0  # tiles were visited, so their colours changed


@pytest.mark.slow
@pytest.mark.parametrize(
    ("policy", "seed", "skip"),
    [("uniform", 0, False), ("wander", 2, True)],
    ids=["creep-on-road-drawn", "wander-on-grass-skipping"],
)
def test_full_episode_matches_stock(envs, policy, seed, skip):
    # The whole 1,000-frame episode (27 s): `python -m pytest -m slow`.
    stock, fast = envs
    assert isinstance(fast.unwrapped, FastCarRacing)
    frames = _lockstep(stock, fast, seed, _actions(policy, seed, 1000), skip)
    assert len(frames) == 1000
    assert frames[-1][1:] == (False, True, {})  # TimeLimit truncation, not termination
    assert max(r for r, *_ in frames) > 0  # tiles were visited, so their colours changed


def test_leaving_the_playfield_terminates_with_minus_100(envs):
    stock, fast = envs
    # Half gas straight ahead: off the curving road, across the grass and past PLAYFIELD; the
    # last ~20 frames show the background square's edge, which the fast path draws as stock.
    actions = np.tile(np.float32([0.0, 0.5, 0.0]), (400, 1))
    frames = _lockstep(stock, fast, 0, actions, skip=False)
    assert len(frames) == 271
    assert frames[-1] == (-100, True, False, {"lap_finished": False})
    assert abs(fast.unwrapped.car.hull.position[1]) > 2000 / 6.0


def test_hard_turn_onto_grass(envs):
    stock, fast = envs
    actions = np.tile(np.float32([1.0, 0.3, 0.0]), (150, 1))
    _lockstep(stock, fast, 4, actions, skip=False)
    assert all(not wheel.tiles for wheel in fast.unwrapped.car.wheels)


def test_render_state_draws_a_skipped_frame_as_stock(envs):
    stock, fast = envs
    _lockstep(stock, fast, 10, _actions("wander", 10, 3), skip=False)
    score_changes = 0
    for action in _actions("wander", 11, 40):
        fast.unwrapped.skip_render = True
        prev = fast.unwrapped.state
        obs_s, *_ = stock.step(action)
        obs_f, *_ = fast.step(action)
        assert obs_f is prev
        assert np.array_equal(fast.unwrapped.render_state(), obs_s)
        # Stock draws the score before the frame's -0.1; these frames show the difference.
        score = fast.unwrapped.reward
        score_changes += f"{score + 0.1:04.0f}" != f"{score:04.0f}"
    fast.unwrapped.skip_render = False
    assert score_changes > 0


def test_lap_finished_info():
    stock = gym.make("CarRacing-v3", lap_complete_percent=0.0)
    fast = make_car_racing(fast_render=True, lap_complete_percent=0.0)
    frames = _lockstep(stock, fast, 1, np.zeros((5, 3), np.float32), skip=False)
    # The car starts across tiles 0 and 1; touching tile 0 with any share visited ends the lap.
    assert fast.unwrapped.tile_visited_count == 2
    tile_reward = 1000.0 / len(fast.unwrapped.track)
    assert frames == [(2 * tile_reward - 0.1, True, False, {"lap_finished": True})]


@pytest.mark.filterwarnings("ignore:.*share an object")  # a skipped frame returns the last obs
def test_domain_randomized_colors():
    stock = gym.make("CarRacing-v3", domain_randomize=True)
    fast = make_car_racing(fast_render=True, domain_randomize=True)
    actions = _actions("wander", 3, 90)
    _lockstep(stock, fast, 3, actions, skip=True)
    assert not np.array_equal(fast.unwrapped.bg_color, [102, 204, 102])
    _lockstep(stock, fast, 5, actions[:30], skip=False, options={"randomize": False})


def test_rgb_array_render_matches_stock():
    stock = gym.make("CarRacing-v3", render_mode="rgb_array")
    fast = make_car_racing(fast_render=True, render_mode="rgb_array")
    _lockstep(stock, fast, 6, _actions("wander", 6, 30), skip=False)
    frame = fast.render()
    assert frame.shape == (400, 600, 3)
    assert np.array_equal(stock.render(), frame)


def test_human_window_close_keeps_other_envs_exact(envs, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    stock, fast = envs
    _lockstep(stock, fast, 7, _actions("wander", 7, 6), skip=False)
    human = make_car_racing(fast_render=True, render_mode="human")
    human.reset(seed=7)
    human.step(np.float32([0.0, 1.0, 0.0]))
    human.close()  # pygame.quit(): fonts made before it are dead
    _lockstep(stock, fast, 8, _actions("wander", 8, 12), skip=False)


def test_reset_draws_even_when_skipping():
    env = FastCarRacing()
    assert env.skip_render is False
    env.skip_render = True
    obs, _ = env.reset(seed=9)
    assert env.skip_render is True
    assert np.array_equal(obs, gym.make("CarRacing-v3").reset(seed=9)[0])
