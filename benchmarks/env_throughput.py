"""Env throughput per core: agent steps/s of CarRacing stock vs fast path, VisualPendulum, and
DeepMind Control Suite tasks rendered at the observation size vs rendered at 84 then resized.

Each env is built by ``distributed_sac.envs.registry.make_env`` (action repeat 3, crop, grayscale,
frame stack, early termination) with ``EnvConfig(fast_render=False/True)``, and driven by
seeded uniform random actions in [-1, 1], resets included. ``--raw`` adds the bare envs under
a plain action-repeat loop (FastCarRacing drawing only each repeat's last frame). ``--dmc
TASK ...`` adds each task with the dmc defaults (stack 3 RGB, the domain's action repeat) at
``--dmc-size``: ``render`` draws that size directly (what make_env does), ``render+resize``
draws 84x84 and area-resizes. The configs' steps are interleaved in rounds so that load from
other processes falls on all of them alike; rates are per CPU-second of this process (MuJoCo's
software renderer may use threads of its own: they count) and per wall-clock second. Example:

    python -m benchmarks.env_throughput --steps 300 --dmc cartpole-swingup walker-walk \
        --json bench_out/env_throughput.json
"""

# ruff: noqa: E402 (thread caps must precede the numpy import)
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: the resize matmuls must not spread out

import argparse
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from benchmarks.report import write_json
from distributed_sac.config.fields import EnvConfig
from distributed_sac.envs.carracing_fast import make_car_racing
from distributed_sac.envs.dmc import make_dmc
from distributed_sac.envs.registry import env_defaults, make_env
from distributed_sac.envs.wrappers import wrap_rendered

REPEAT = EnvConfig().action_repeat
ROUND = 10


class RawCarRacing:
    """Bare CarRacing-v3 under a plain action-repeat loop, as a wrapper-free reference."""

    def __init__(self, fast_render: bool, seed: int):
        self.env = make_car_racing(fast_render, disable_env_checker=True)
        self.fast_render = fast_render
        self.action_space = self.env.action_space
        self.action_space.seed(seed)
        self.seed = seed

    def reset(self) -> None:
        """Reset the env (seeded once)."""
        self.env.reset(seed=self.seed)
        self.seed = None

    def step(self, action: np.ndarray) -> tuple:
        """Repeat ``action``; with FastCarRacing only the last frame of the repeat is drawn."""
        for i in range(REPEAT):
            if self.fast_render:
                self.env.unwrapped.skip_render = i < REPEAT - 1
            out = self.env.step(action)
            if out[2] or out[3]:
                break
        return out


def wrapped(name: str, fast_render: bool, seed: int) -> gym.Env:
    """The env as the agent sees it."""
    env = make_env(name, EnvConfig(fast_render=fast_render), seed)
    env.action_space.seed(seed)
    return env


def dmc_env(task: str, size: int, render_size: int, seed: int) -> gym.Env:
    """dmc:TASK as make_env builds it at ``size``, its frames drawn at ``render_size``."""
    cfg = EnvConfig(image_size=size, **env_defaults(f"dmc:{task}"))
    if render_size == size:
        env = make_env(f"dmc:{task}", cfg, seed)
    else:
        env = wrap_rendered(make_dmc(task, render_size), cfg)
        env.unwrapped.np_random = np.random.default_rng(seed)
    env.action_space.seed(seed)
    return env


def measure(makers: dict[str, Callable[[], object]], steps: int) -> dict[str, dict[str, float]]:
    """CPU and wall seconds of ``steps`` agent steps per config, in interleaved rounds."""
    envs = {key: make() for key, make in makers.items()}
    for env in envs.values():
        env.reset()
        env.step(env.action_space.sample())
    spent = {key: {"cpu_s": 0.0, "wall_s": 0.0, "resets": 0} for key in envs}
    for done in range(0, steps, ROUND):
        for key, env in envs.items():
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(min(ROUND, steps - done)):
                _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                if terminated or truncated:
                    env.reset()
                    spent[key]["resets"] += 1
            spent[key]["cpu_s"] += time.process_time() - cpu
            spent[key]["wall_s"] += time.perf_counter() - wall
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed agent steps per config")
    parser.add_argument("--raw", action="store_true", help="also time the bare CarRacing envs")
    parser.add_argument("--dmc", nargs="*", default=[], help="DMC tasks, e.g. cartpole-swingup")
    parser.add_argument("--dmc-size", type=int, default=32, help="DMC observation side")
    parser.add_argument("--seed", type=int, default=0, help="env and action seed")
    parser.add_argument("--json", default="", help="write results to this path")
    args = parser.parse_args()
    if args.steps < 1:
        raise ValueError(f"--steps must be positive, got {args.steps}")

    makers = {
        ("CarRacing", "stock"): lambda: wrapped("CarRacing", False, args.seed),
        ("CarRacing", "fast"): lambda: wrapped("CarRacing", True, args.seed),
        ("VisualPendulum", "make_env"): lambda: wrapped("VisualPendulum", True, args.seed),
    }
    if args.raw:
        makers[("CarRacing raw", "stock")] = lambda: RawCarRacing(False, args.seed)
        makers[("CarRacing raw", "fast")] = lambda: RawCarRacing(True, args.seed)
    repeats = dict.fromkeys(makers, REPEAT)
    for task in args.dmc:
        name, size = f"dmc:{task}", args.dmc_size
        for path, render in (("render+resize", 84), ("render", size)):
            makers[(name, path)] = lambda t=task, r=render, s=size: dmc_env(t, s, r, args.seed)
            repeats[(name, path)] = env_defaults(name)["action_repeat"]
    spent = measure(makers, args.steps)

    rows = []
    for (env, path), s in spent.items():
        baseline = "render+resize" if env.startswith("dmc:") else "stock"
        stock = spent.get((env, baseline), s)
        rows.append(
            {
                "env": env,
                "path": path,
                "image_size": args.dmc_size if env.startswith("dmc:") else EnvConfig().image_size,
                "action_repeat": repeats[(env, path)],
                "agent_steps_per_cpu_s": args.steps / s["cpu_s"],
                "agent_steps_per_wall_s": args.steps / s["wall_s"],
                "frames_per_cpu_s": args.steps * repeats[(env, path)] / s["cpu_s"],
                "env_steps_per_cpu_s": args.steps * repeats[(env, path)] / s["cpu_s"],
                "speedup": stock["cpu_s"] / s["cpu_s"],
                "resets": s["resets"],
                "steps": args.steps,
            }
        )
    header = f"{'env':<24}{'path':<15}{'steps/s cpu':>12}{'steps/s wall':>14}"
    print(header + f"{'frames/s cpu':>14}{'speedup':>9}{'resets':>8}")
    for r in rows:
        print(
            f"{r['env']:<24}{r['path']:<15}{r['agent_steps_per_cpu_s']:>12.1f}"
            f"{r['agent_steps_per_wall_s']:>14.1f}{r['frames_per_cpu_s']:>14.1f}"
            f"{r['speedup']:>8.2f}x{r['resets']:>8d}"
        )
    print(f"load average while measuring: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    gl = {k: os.environ.get(k) for k in ("MUJOCO_GL", "LP_NUM_THREADS")}
    write_json(args.json, {"rows": rows, "loadavg": os.getloadavg()[0], "gl": gl})


if __name__ == "__main__":
    main()
