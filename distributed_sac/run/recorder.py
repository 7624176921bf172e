"""`python launch.py record`: drive CarRacing with the keyboard (or the autopilot), save demos.

The driver drives the very env the agent trains in (`make_env`: same wrappers, frame stack and
action repeat), so each saved episode holds the agent's observations and the agent's [-1, 1]
actions (README.md, Human demonstrations). Keys are read once per agent step. The key state is
tracked from KEYDOWN/KEYUP events rather than `pygame.key.get_pressed()`, which does not see
events posted with `pygame.event.post` (how the tests drive the recorder headless).

With `--autopilot` no window opens: `Autopilot` reads the car and the track from the env once
per agent step and its action, held for the repeated frames, is the one stored.
`--preset NAME` takes the wrappers (image size, frame stack, action repeat, ...) of
`presets.PRESETS[NAME]`, so the episodes load into that preset's training run.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pygame
from gymnasium.envs.box2d.car_racing import VIDEO_H, VIDEO_W

from distributed_sac.config.data import split_frames
from distributed_sac.config.fields import EnvConfig
from distributed_sac.config.presets import PRESETS
from distributed_sac.envs.autopilot import RAW_HIGH, RAW_LOW, Autopilot, to_agent
from distributed_sac.envs.registry import make_env
from distributed_sac.replay.demos import demo_meta, save_episode
from distributed_sac.run.command_line import PROG, UsageError, cli

BRAKE = 0.8
"""Brake applied by space, as gymnasium's own play script: 0.9 and above lock the wheels."""


def keys_to_action(left: bool, right: bool, up: bool, space: bool) -> np.ndarray:
    """Agent action in [-1, 1]^3 for the held keys (left and right together cancel)."""
    raw = np.array([float(right) - float(left), float(up), BRAKE * float(space)])
    # Inverse of the env's linear RescaleAction from [-1, 1] onto [RAW_LOW, RAW_HIGH].
    return (2.0 * (raw - RAW_LOW) / (RAW_HIGH - RAW_LOW) - 1.0).astype(np.float32)


@dataclass(frozen=True)
class RecordArgs:
    """Drive CarRacing and record demonstrations: arrow keys steer and accelerate, space brakes.

    Esc or closing the window stops; an episode not yet finished is discarded (never saved in
    part). --autopilot drives headless instead. Use the same --preset (and --wrappers.* values)
    as training, or the files will not load.
    """

    out: str = "demos"
    """Folder the episodes go to, one <timestamp>_ep<k>.npz each."""
    episodes: int = 5
    """Episodes to record."""
    max_steps: int | None = None
    """Agent steps after which an episode is cut as truncated (default: the env's time limit)."""
    seed: int | None = None
    """Track seed of the first episode; episode k uses seed + k (default: random)."""
    speed: float = 1.0
    """Game speed relative to real time (50 frames/s); below 1 is easier, 0 does not wait."""
    env: Literal["CarRacing"] = "CarRacing"
    """Environment to drive (only CarRacing has keyboard controls)."""
    autopilot: bool = False
    """Let the scripted driver (``envs/autopilot.py``) drive, with no window and no wait."""
    preset: str = "full"
    """Training preset (presets.PRESETS) whose wrappers to record with; --wrappers.* override."""
    wrappers: EnvConfig = field(default_factory=EnvConfig)


class Recorder:
    """One env, its window and the held keys; `run` records episodes, one agent step at a time."""

    def __init__(self, args: RecordArgs):
        if args.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
        if args.max_steps is not None and args.max_steps < 1:
            raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
        if args.speed < 0:
            raise ValueError(f"--speed must be >= 0, got {args.speed}")
        self.args = args
        self.out = Path(args.out)  # made by `run`: a refused start leaves no empty folder
        self.base_seed = secrets.randbelow(2**31) if args.seed is None else args.seed
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.pilot = Autopilot() if args.autopilot else None
        self.env = make_env(
            args.env, args.wrappers, render_mode=None if self.pilot else "rgb_array"
        )
        self.steps_per_s = (
            args.speed * self.env.metadata["render_fps"] / args.wrappers.action_repeat
        )
        self.held: set[int] = set()
        self.episode = 0
        self.seed = self.base_seed
        self.frames: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.returns: list[float] = []
        """Returns of the episodes saved so far."""
        self.terminated = self.truncated = self.early_stop = False
        if self.pilot:
            return
        try:
            _check_display()
            pygame.display.init()
            self.screen = pygame.display.set_mode((VIDEO_W, VIDEO_H))
            _check_display(pygame.display.get_driver())
        except (pygame.error, RuntimeError) as e:
            self.env.close()
            pygame.display.quit()
            raise RuntimeError(f"cannot open the recorder window ({e})") from e
        pygame.display.set_caption("CarRacing demo: arrows steer/gas, space brakes, Esc quits")
        self.clock = pygame.time.Clock()

    def reset(self) -> None:
        """Start episode `self.episode` on track seed `base_seed + episode`."""
        self.seed = self.base_seed + self.episode
        obs, _ = self.env.reset(seed=self.seed)
        frames = split_frames(obs, self.args.wrappers.frame_shape)
        self.frames, self.actions, self.rewards = list(frames), [], []
        self.terminated = self.truncated = self.early_stop = False
        if self.pilot:
            self.pilot.reset()
        self._show()

    def handle_events(self) -> bool:
        """Update the held keys from pending events; False once Esc or the window's close asks."""
        for event in pygame.event.get():
            if event.type == pygame.QUIT or (
                event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE
            ):
                return False
            if event.type == pygame.KEYDOWN:
                self.held.add(event.key)
            elif event.type == pygame.KEYUP:
                self.held.discard(event.key)
            elif event.type == pygame.WINDOWFOCUSLOST:
                # Key releases outside the window never arrive; forget keys instead of sticking.
                self.held.clear()
        return True

    def step(self) -> bool:
        """Act on the held keys or the autopilot for one agent step; True once the episode ended."""
        if self.pilot:
            # The car as it is now; the action is held for the repeated frames below.
            action = to_agent(self.pilot.act(self.env.unwrapped))
        else:
            held = self.held
            action = keys_to_action(
                pygame.K_LEFT in held,
                pygame.K_RIGHT in held,
                pygame.K_UP in held,
                pygame.K_SPACE in held,
            )
        obs, reward, self.terminated, self.truncated, info = self.env.step(action)
        self.early_stop = bool(info.get("early_stop", False))
        self.frames.append(split_frames(obs, self.args.wrappers.frame_shape)[-1])
        self.actions.append(action)
        self.rewards.append(float(reward))
        if self.args.max_steps is not None and len(self.actions) >= self.args.max_steps:
            # An arbitrary cut, not an MDP end: a time limit that training bootstraps through.
            self.truncated = self.truncated or not self.terminated
        self._show()
        return self.terminated or self.truncated

    def save(self) -> Path:
        """Write the ended episode to out/<timestamp>_ep<k>.npz and move on to the next one."""
        terminated = np.zeros(len(self.actions), dtype=bool)
        truncated = terminated.copy()
        terminated[-1], truncated[-1] = self.terminated, self.truncated
        path = self.out / f"{self.stamp}_ep{self.episode}.npz"
        save_episode(
            path,
            np.stack(self.frames),
            np.stack(self.actions),
            np.asarray(self.rewards, dtype=np.float32),
            terminated,
            truncated,
            demo_meta(self.args.env, self.args.wrappers, seed=self.seed),
        )
        self.episode += 1
        return path

    def run(self) -> int:
        """Record until `episodes` are saved or the user quits; returns the episodes saved."""
        self.out.mkdir(parents=True, exist_ok=True)
        while self.episode < self.args.episodes:
            start = time.perf_counter()
            self.reset()
            while True:
                if not self.pilot and not self.handle_events():
                    print(f"stopped: episode {self.episode} discarded, not finished")
                    return self.episode
                if self.step():
                    break
            ret, n = sum(self.rewards), len(self.actions)
            end = "early end" if self.early_stop else self._outcome()
            seed, secs = self.seed, time.perf_counter() - start
            path = self.save()
            self.returns.append(ret)
            print(
                f"episode {self.episode - 1}: return {ret:.1f} in {n} steps -> {path} "
                f"(seed {seed}, {end}, {secs:.1f}s)",
                flush=True,
            )
        return self.episode

    def _outcome(self) -> str:
        """How the ended episode ended: "lap complete", "time limit" or "terminated"."""
        if self.truncated:
            return "time limit"
        unwrapped = self.env.unwrapped
        lap = getattr(unwrapped, "tile_visited_count", -1) == len(getattr(unwrapped, "track", []))
        return "lap complete" if lap else "terminated"

    def close(self) -> None:
        """Close the env and the window."""
        self.env.close()
        if not self.pilot:
            pygame.display.quit()

    def _show(self) -> None:
        if self.pilot:
            return
        frame = self.env.render()
        pygame.surfarray.blit_array(self.screen, frame.swapaxes(0, 1))
        pygame.display.flip()
        if self.steps_per_s > 0:
            self.clock.tick(self.steps_per_s)


HEADLESS_DRIVERS = ("offscreen", "dummy")
"""SDL video drivers that draw nowhere: SDL falls back to them when there is no display."""


def _check_display(driver: str | None = None) -> None:
    """RuntimeError when keyboard driving could not be seen: no display on Linux, or SDL fell
    back to a driver that draws nowhere. A driver set in SDL_VIDEODRIVER is taken as asked
    (the tests drive the recorder headless with `dummy` and posted key events)."""
    if os.environ.get("SDL_VIDEODRIVER"):
        return
    hint = "record where there is one, or let --autopilot drive"
    if driver is None and sys.platform.startswith("linux"):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise RuntimeError(f"no display: neither DISPLAY nor WAYLAND_DISPLAY is set; {hint}")
    elif driver in HEADLESS_DRIVERS:
        raise RuntimeError(f"no display: SDL fell back to its {driver} driver; {hint}")


def _preset(argv: list[str]) -> str:
    """The --preset value on the command line ("full" if none), checked against PRESETS."""
    name = "full"
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
    if name not in PRESETS:
        raise UsageError(f"--preset {name}: must be one of {', '.join(PRESETS)}")
    return name


def main(argv: list[str]) -> int:
    """Entry point of `python launch.py record`; returns the exit status."""
    preset = _preset(argv)
    default = RecordArgs(preset=preset, wrappers=PRESETS[preset]().wrappers)
    args = cli(RecordArgs, argv, f"{PROG} record", default=default)
    recorder = Recorder(args)
    controls = (
        "the autopilot drives"
        if args.autopilot
        else "arrow keys steer and accelerate, space brakes, Esc quits"
    )
    print(
        f"recording {args.episodes} episode(s) to {recorder.out}/ from seed {recorder.base_seed} "
        f"({args.wrappers.image_size}x{args.wrappers.image_size}, stack "
        f"{args.wrappers.frame_stack}, repeat {args.wrappers.action_repeat}): {controls}",
        flush=True,
    )
    try:
        saved = recorder.run()
    finally:
        recorder.close()
    mean = f", mean return {np.mean(recorder.returns):.1f}" if saved else ""
    print(f"saved {saved} episode(s) in {recorder.out}/{mean}")
    sys.stdout.flush()
    return 0
