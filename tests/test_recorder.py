"""The demo recorder driven headless by posted key events, replayed against a fresh env."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["SDL_VIDEODRIVER"] = "dummy"

import numpy as np
import pygame
import pytest

from distributed_sac.config.fields import EnvConfig
from distributed_sac.envs.registry import make_env
from distributed_sac.replay.demos import load_demo, load_demos
from distributed_sac.run.recorder import RecordArgs, Recorder, keys_to_action, main

CFG = EnvConfig(image_size=32)
NONE, LEFT, RIGHT, UP, SPACE = (
    [],
    [pygame.K_LEFT],
    [pygame.K_RIGHT],
    [pygame.K_UP],
    [pygame.K_SPACE],
)


@pytest.mark.parametrize(
    "keys, agent, raw",
    [
        (NONE, [0, -1, -1], [0, 0, 0]),
        (LEFT, [-1, -1, -1], [-1, 0, 0]),
        (RIGHT + UP, [1, 1, -1], [1, 1, 0]),
        (LEFT + RIGHT + UP, [0, 1, -1], [0, 1, 0]),
        # Space brakes at 0.8 (below the wheel lock at 0.9): 0.8 on [0, 1] is 0.6 on [-1, 1].
        (SPACE, [0, -1, 0.6], [0, 0, 0.8]),
        (LEFT + UP + SPACE, [-1, 1, 0.6], [-1, 1, 0.8]),
    ],
)
def test_keys_map_to_agent_actions_the_env_maps_back(keys, agent, raw) -> None:
    held = (pygame.K_LEFT, pygame.K_RIGHT, pygame.K_UP, pygame.K_SPACE)
    action = keys_to_action(*(k in keys for k in held))
    assert action.dtype == np.float32
    np.testing.assert_allclose(action, agent, atol=1e-6)
    # The env's outermost wrapper rescales agent actions onto CarRacing's steer, gas, brake.
    env = make_env("CarRacing", CFG)
    np.testing.assert_allclose(env.action(action), raw, atol=1e-6)
    env.close()


def key(kind: int, k: int) -> pygame.event.Event:
    return pygame.event.Event(kind, key=k, mod=0, unicode="", scancode=0)


# Events posted before agent step t, and the action every step must then carry.
SCRIPT = {
    3: [key(pygame.KEYDOWN, pygame.K_UP)],
    6: [key(pygame.KEYDOWN, pygame.K_LEFT), key(pygame.KEYDOWN, pygame.K_a)],
    9: [key(pygame.KEYUP, pygame.K_UP), key(pygame.KEYDOWN, pygame.K_SPACE)],
    11: [key(pygame.KEYUP, pygame.K_LEFT), key(pygame.KEYDOWN, pygame.K_RIGHT)],
    13: [key(pygame.KEYUP, pygame.K_SPACE), key(pygame.KEYUP, pygame.K_a)],
    15: [key(pygame.KEYDOWN, pygame.K_UP), pygame.event.Event(pygame.WINDOWFOCUSLOST)],
    17: [key(pygame.KEYDOWN, pygame.K_UP), key(pygame.KEYDOWN, pygame.K_LEFT)],
}
EXPECTED = (
    [[0, -1, -1]] * 3
    + [[0, 1, -1]] * 3
    + [[-1, 1, -1]] * 3
    + [[-1, -1, 0.6]] * 2
    + [[1, -1, 0.6]] * 2
    + [[1, -1, -1]] * 2
    + [[0, -1, -1]] * 2  # losing focus forgets held keys
    + [[-1, 1, -1]] * 3
)


def test_recorded_episode_matches_keys_and_replays_byte_identical(tmp_path: Path) -> None:
    args = RecordArgs(out=str(tmp_path), episodes=1, max_steps=20, seed=7, speed=0, wrappers=CFG)
    rec = Recorder(args)
    try:
        rec.reset()
        for t in range(20):
            for event in SCRIPT.get(t, []):
                pygame.event.post(event)
            assert rec.handle_events()
            assert rec.step() == (t == 19)
        path = rec.save()
    finally:
        rec.close()
    assert path.parent == tmp_path and path.name.endswith("_ep0.npz")
    demo = load_demo(path, "CarRacing", CFG)
    np.testing.assert_allclose(demo.action, EXPECTED, atol=1e-6)
    # --max-steps cuts the episode as a time limit, which training bootstraps through.
    assert not demo.terminated.any() and demo.truncated.tolist() == [False] * 19 + [True]

    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(npz["meta"].item())
    assert meta["seed"] == 7 and meta["episode_return"] == pytest.approx(demo.reward.sum())
    env = make_env("CarRacing", CFG, seed=meta["seed"])
    obs, _ = env.reset()
    assert np.array_equal(obs, demo.frames[:4])
    for t, action in enumerate(demo.action):
        obs, reward, terminated, truncated, _ = env.step(action)
        assert np.array_equal(obs, demo.frames[t + 1 : t + 5]), t
        assert np.float32(reward) == demo.reward[t] and not (terminated or truncated)
    env.close()


def test_main_records_episodes_at_full_size(tmp_path: Path, capsys) -> None:
    argv = ["--out", str(tmp_path / "demos"), "--episodes", "2", "--max-steps", "3"]
    assert main([*argv, "--seed", "5", "--speed", "0"]) == 0
    files = sorted((tmp_path / "demos").iterdir())
    assert [f.name[-8:] for f in files] == ["_ep0.npz", "_ep1.npz"]
    demos = load_demos([tmp_path / "demos"], "CarRacing", EnvConfig())
    assert [d.frames.shape for d in demos] == [(3 + 4, 84, 84)] * 2
    for d, f, seed in zip(demos, files, (5, 6), strict=True):
        np.testing.assert_array_equal(d.action, np.tile([0, -1, -1], (3, 1)))
        with np.load(f, allow_pickle=False) as npz:
            assert json.loads(npz["meta"].item())["seed"] == seed
    # Episode k's seed gives a different track, so the first frames differ.
    assert not np.array_equal(demos[0].frames[0], demos[1].frames[0])
    out = capsys.readouterr().out
    assert f"return {demos[0].reward.sum():.1f} in 3 steps -> {files[0]}" in out


@pytest.mark.parametrize("stop", ["escape", "close window"])
def test_stopping_discards_the_unfinished_episode(tmp_path: Path, monkeypatch, stop: str) -> None:
    event = {
        "escape": key(pygame.KEYDOWN, pygame.K_ESCAPE),
        "close window": pygame.event.Event(pygame.QUIT),
    }[stop]
    step = Recorder.step

    def step_then_stop(self: Recorder) -> bool:
        done = step(self)
        if self.episode == 1 and len(self.actions) == 2:
            pygame.event.post(event)
        return done

    monkeypatch.setattr(Recorder, "step", step_then_stop)
    args = RecordArgs(out=str(tmp_path), episodes=3, max_steps=4, seed=1, speed=0, wrappers=CFG)
    rec = Recorder(args)
    try:
        assert rec.run() == 1
    finally:
        rec.close()
    assert [p.name[-8:] for p in tmp_path.iterdir()] == ["_ep0.npz"]


@pytest.mark.parametrize(
    "flag, message",
    [("--episodes=0", "--episodes must be >= 1"), ("--max-steps=0", "--max-steps must be >= 1")],
)
def test_bad_flags_raise_value_error(tmp_path: Path, flag: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        main(["--out", str(tmp_path), flag])


def test_missing_video_driver_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "no-such-driver")
    with pytest.raises(RuntimeError, match="cannot open the recorder window"):
        Recorder(RecordArgs(out=str(tmp_path), seed=0, wrappers=CFG))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env", "dmc:cartpole-swingup"], "invalid choice 'dmc:cartpole-swingup' for argument"),
        (["--preset", "nope"], "--preset nope: must be one of"),
        (["--episodes", "many"], "--episodes"),
    ],
)
def test_bad_command_lines_are_one_line_usage_errors(tmp_path: Path, argv, message) -> None:
    from distributed_sac.run.command_line import UsageError

    with pytest.raises(UsageError) as err:
        main(["--out", str(tmp_path), *argv])
    assert message in str(err.value) and "\n" not in str(err.value) and "│" not in str(err.value)


def test_keyboard_driving_without_a_display_is_refused(tmp_path: Path, monkeypatch) -> None:
    """Without a display SDL falls back to a driver that draws nowhere: no one could drive."""
    for name in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="no display.*--autopilot"):
        Recorder(RecordArgs(out=str(tmp_path), seed=0, wrappers=CFG))
    monkeypatch.setenv("DISPLAY", ":99")  # set, but nothing there: SDL falls back to offscreen
    with pytest.raises(RuntimeError, match="cannot open the recorder window"):
        Recorder(RecordArgs(out=str(tmp_path), seed=0, wrappers=CFG))
