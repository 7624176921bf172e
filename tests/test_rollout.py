"""Rollout.step without Ray or a renderer: chunk cuts, version stamps, resets, episode stats."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from distributed_sac.config.fields import EnvConfig, RolloutConfig
from distributed_sac.envs.rollout import Rollout

STACK, SIDE = 4, 6
ENDS = [("terminated", 7), ("truncated", 5), ("terminated", 100)]
"""How each successive episode of the fake env ends, and after how many steps."""


class CountingEnv(gym.Env):
    """Frames are constant images of value 10 * episode + t, stacked like the real wrappers."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (STACK, SIDE, SIDE), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.episode, self.t = -1, 0

    def _frame(self) -> np.ndarray:
        return np.full((SIDE, SIDE), 10 * self.episode + self.t, np.uint8)

    def _obs(self) -> np.ndarray:
        return np.stack(self.stack)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        self.stack = [self._frame()] * STACK
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        self.stack = self.stack[1:] + [self._frame()]
        kind, length = ENDS[self.episode]
        end = self.t == length
        return (
            self._obs(),
            float(self.t),
            end and kind == "terminated",
            end and kind == "truncated",
            {"early_stop": False},
        )


class RgbCountingEnv(CountingEnv):
    """CountingEnv with 3-channel frames (channel c: 10 * episode + t + 60 * c), observed as the
    RGB wrappers stack them: (3 S, H, W), frame 0's channels first. Keeps every observation."""

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = gym.spaces.Box(0, 255, (3 * STACK, SIDE, SIDE), np.uint8)
        self.seen: list[np.ndarray] = []

    def _frame(self) -> np.ndarray:
        return super()._frame()[None] + np.arange(0, 180, 60, dtype=np.uint8)[:, None, None]

    def _obs(self) -> np.ndarray:
        self.seen.append(np.concatenate(self.stack))
        return self.seen[-1].copy()


class VersionedPolicy:
    def __init__(self) -> None:
        self.weights_version = 5

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        assert obs.dtype == np.uint8 and obs.shape[1:] == (STACK, SIDE, SIDE)
        return np.full((len(obs), 2), 0.5, np.float32)


def make_fake(env_name, env_cfg, seed):
    return CountingEnv()


@pytest.fixture
def rollout() -> Rollout:
    cfg = EnvConfig(image_size=SIDE)
    return Rollout("CarRacing", cfg, RolloutConfig(chunk_length=3), 1, 0, make=make_fake)


def frame_values(chunk) -> list[int]:
    return [int(f[0, 0]) for f in chunk.frames]


def test_chunks_are_cut_at_the_chunk_length_and_at_episode_ends(rollout):
    chunks, episodes = [], []
    for _ in range(7 + 5):
        new_chunks, new_episodes = rollout.step(None, explore=True)
        chunks += new_chunks
        episodes += new_episodes
    assert [c.num_transitions for c in chunks] == [3, 3, 1, 3, 2]
    # Episode 0 (7 steps, terminated): frames 0,0,0,0 then 1..7, split with S frames of overlap.
    assert frame_values(chunks[0]) == [0, 0, 0, 0, 1, 2, 3]
    assert frame_values(chunks[1]) == [0, 1, 2, 3, 4, 5, 6]
    assert frame_values(chunks[2]) == [3, 4, 5, 6, 7]
    # Episode 1 starts from its reset frames, never from episode 0's.
    assert frame_values(chunks[3]) == [10, 10, 10, 10, 11, 12, 13]
    assert frame_values(chunks[4]) == [10, 11, 12, 13, 14, 15]
    ends = [(c.terminated.tolist(), c.truncated.tolist()) for c in chunks]
    assert ends[2] == ([True], [False]) and ends[4] == ([False, False], [False, True])
    assert not any(any(t) or any(u) for t, u in ends[:2] + ends[3:4])
    np.testing.assert_array_equal(chunks[0].reward, [1.0, 2.0, 3.0])
    assert [(e.episode_return, e.length, e.terminated) for e in episodes] == [
        (28.0, 7, True),
        (15.0, 5, False),
    ]
    assert rollout.steps == 12


def test_chunks_carry_the_oldest_acting_version_and_none_when_random(rollout):
    policy = VersionedPolicy()

    def step(version: int | None) -> list:
        if version is not None:
            policy.weights_version = version
        return rollout.step(policy, explore=version is None)[0]

    assert step(None) == [] and step(None) == []
    (random_only,) = step(None)
    assert random_only.weights_version == -1  # no policy acted in it
    assert step(7) == [] and step(4) == []
    (acted,) = step(6)
    assert acted.weights_version == 4  # the oldest weights that acted in the chunk
    (last,) = step(9)  # the episode's 7th step ends it: a 1-step chunk
    assert last.num_transitions == 1 and last.weights_version == 9
    assert step(None) == [] and step(2) == []
    (mixed,) = step(None)  # random steps do not count: only version 2 acted
    assert mixed.weights_version == 2


def test_rgb_frames_are_stored_once_and_stack_back_into_the_observations():
    env = RgbCountingEnv()
    cfg = EnvConfig(image_size=SIDE, grayscale=False)
    rollout = Rollout(
        "CarRacing", cfg, RolloutConfig(chunk_length=3), 1, 0, make=lambda *a, **k: env
    )
    chunks = []
    for _ in range(7):  # episode 0: 7 steps, terminated
        chunks += rollout.step(None, explore=True)[0]
    assert [c.frames.shape for c in chunks] == [(3 + STACK, 3, SIDE, SIDE)] * 2 + [
        (1 + STACK, 3, SIDE, SIDE)
    ]
    assert [int(f[1, 0, 0]) for f in chunks[2].frames] == [63, 64, 65, 66, 67]  # 60 + t
    # The observations the env produced, rebuilt by hand from each chunk's frames.
    transitions = [(c, t) for c in chunks for t in range(c.num_transitions)]
    for k, (c, t) in enumerate(transitions):
        np.testing.assert_array_equal(np.concatenate(c.frames[t : t + STACK]), env.seen[k])
        np.testing.assert_array_equal(
            np.concatenate(c.frames[t + 1 : t + 1 + STACK]), env.seen[k + 1]
        )
