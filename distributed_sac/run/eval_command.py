"""The `launch.py eval` command: load a run's policy, run it deterministically, print returns.

`load` checks the arguments and loads the checkpoint (its errors are usage errors); `run_loaded`
runs the episodes, optionally in a window or on video. The episodes themselves are
`evaluation.evaluate`, shared with training-time evaluation.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from distributed_sac.agent.policy import Policy
from distributed_sac.agent.sac_ae import SacAeAgent
from distributed_sac.config.atomic import atomic_write
from distributed_sac.config.fields import (
    HELD_OUT_EVAL_SEED,
    SOLVED_EPISODES,
    TrainConfig,
)
from distributed_sac.envs.registry import action_dim as env_action_dim
from distributed_sac.envs.registry import make_env, solved_threshold
from distributed_sac.run.evaluation import EvalResult, evaluate, run_episode
from distributed_sac.run.records import CheckpointPayload
from distributed_sac.run.run_dir import (
    RunDir,
    RunDirError,
    latest_run_checkpoint,
    load_run_checkpoint,
)

RENDER_MODES = ("none", "human")


def resolve(path: str) -> tuple[Path, TrainConfig]:
    """(checkpoint file, its run's config) for a run directory or a checkpoint file."""
    ckpt, cfg, _ = _resolve(path)
    return ckpt, cfg


def _resolve(path: str) -> tuple[Path, TrainConfig, CheckpointPayload | None]:
    target = Path(path)
    if target.is_dir():
        run, cfg = RunDir.reopen(target)
        found = latest_run_checkpoint(run.checkpoints, cfg)
        if found is None:
            raise ValueError(f"{target} has no checkpoint yet (nothing in {run.checkpoints})")
        return found[0], cfg, found[1]
    if target.is_file():
        # save_checkpoint writes into <run_dir>/checkpoints/.
        try:
            _, cfg = RunDir.reopen(target.parent.parent)
        except RunDirError as exc:
            raise RunDirError(f"{target}: cannot find its run's config ({exc})") from None
        return target, cfg, None
    raise ValueError(f"{target}: no such run directory or checkpoint file")


def load_policy(ckpt: Path, cfg: TrainConfig, payload: CheckpointPayload | None = None) -> Policy:
    """The checkpoint's actor on CPU, loaded through the agent's own state dict."""
    payload = payload or load_run_checkpoint(ckpt, cfg)
    obs_shape, action_dim = cfg.wrappers.obs_shape, env_action_dim(cfg.env)
    channels = cfg.wrappers.channels
    agent = SacAeAgent(obs_shape, action_dim, cfg.agent, "cpu", cfg.seed, channels)
    agent.load_state_dict(payload.agent)
    policy = Policy(obs_shape, action_dim, cfg.agent, cfg.seed, channels)
    policy.load(agent.policy_weights())
    return policy


def episode_line(k: int, total: float, steps: int) -> str:
    """Episode k's line, printed (flushed) as soon as it ends."""
    return f"episode {k + 1}: return {total:.1f} ({steps} steps)"


def mean_line(result: EvalResult) -> str:
    return f"return over {len(result.returns)} episodes: {result.mean:.1f} ± {result.std:.1f}"


def returns_report(returns: list[float], env: str) -> dict[str, Any]:
    """Mean, standard deviation, standard error and the solved criterion of a set of returns.

    `std` is over the episodes (ddof 0, as training-time evaluation logs `eval_return_std`);
    `stderr` is the standard error of the mean (ddof 1 over sqrt(episodes); None for one
    episode). For an env with a solved threshold (CarRacing: 900), `at_or_above_threshold`
    says whether the mean reaches it and `solved` whether it does over at least 100 episodes
    (None with fewer); an env without one (VisualPendulum) has None for all three.
    """
    values = np.asarray(returns, dtype=float)
    stderr = float(stats.sem(values)) if len(values) > 1 else None
    threshold = solved_threshold(env)
    mean = float(values.mean())
    above = None if threshold is None else bool(mean >= threshold)
    enough = len(values) >= SOLVED_EPISODES
    return {
        "episodes": len(values),
        "mean": mean,
        "std": float(values.std()),
        "stderr": stderr,
        "threshold": threshold,
        "at_or_above_threshold": above,
        "solved": above if above is not None and enough else None,
    }


def verdict(report: dict[str, Any], env: str) -> str:
    """One line on the solved criterion (envs.registry.solved_threshold: which envs have one)."""
    threshold = report["threshold"]
    if threshold is None:
        return f"solved: not applicable to {env} (it has no registered solved threshold)"
    mean, n = report["mean"], report["episodes"]
    relation = ">=" if report["at_or_above_threshold"] else "<"
    line = f"mean {mean:.1f} {relation} {threshold:g} ({env}'s solved threshold)"
    if report["solved"] is None:
        return f"solved: not judged, {line} over {n} episodes; it takes {SOLVED_EPISODES}"
    return f"solved: {'yes' if report['solved'] else 'no'}, {line} over {n} episodes"


def _agent_steps(ckpt: Path) -> int | None:
    match = re.fullmatch(r"ckpt_(\d+)\.pt", ckpt.name)
    return int(match.group(1)) if match else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as indented JSON, atomically (NaN and inf as null)."""
    clean = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in data.items()
    }
    text = json.dumps(clean, indent=2) + "\n"
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def load(
    path: str,
    episodes: int = 1,
    video: str | None = None,
    render: str = "none",
    max_steps: int | None = None,
    jobs: int = 1,
) -> tuple[Policy, Path, TrainConfig]:
    """Check the arguments and load the policy; ValueError (a usage error) if they are bad."""
    if render not in RENDER_MODES:
        raise ValueError(f"--render {render}: must be one of {', '.join(RENDER_MODES)}")
    if jobs < 0:
        raise ValueError(f"--jobs {jobs}: must be an integer >= 0 (0: one per core)")
    if render == "human" and resolve_jobs(jobs, episodes) > 1:
        raise ValueError("--render human shows one window; run it with --jobs 1")
    if render == "human" and video:
        raise ValueError("--video films off-screen; run it without --render human")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"--max-steps {max_steps}: must be an integer >= 1")
    if episodes < 1:
        raise ValueError(f"--episodes {episodes}: must be an integer >= 1")
    ckpt, cfg, payload = _resolve(path)
    return load_policy(ckpt, cfg, payload), ckpt, cfg


def run_loaded(
    policy: Policy,
    ckpt: Path,
    cfg: TrainConfig,
    episodes: int,
    video: str | None,
    render: str,
    seed: int | None,
    max_steps: int | None = None,
    json_path: str | None = None,
    jobs: int = 1,
) -> int:
    """Evaluate a loaded policy deterministically; print the returns, their standard error and
    the solved verdict; write them to `json_path` if given; exit code."""
    result = evaluate_loaded(
        policy, ckpt, cfg, episodes, video, render, seed, max_steps, json_path, jobs=jobs
    )
    print(summary_lines(result))
    return 0


def evaluate_loaded(
    policy: Policy,
    ckpt: Path,
    cfg: TrainConfig,
    episodes: int,
    video: str | None = None,
    render: str = "none",
    seed: int | None = None,
    max_steps: int | None = None,
    json_path: str | Path | None = None,
    echo: bool = True,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run the episodes; the `--json` record (also written to `json_path` if given).

    `seed` None takes HELD_OUT_EVAL_SEED: episode k resets with seed + k. With `jobs` > 1 the
    episodes run in that many processes (`evaluate_in_processes`): the same returns, sooner.
    """
    seed = HELD_OUT_EVAL_SEED if seed is None else seed
    if render != "human":
        # Off-screen rendering needs no display; without this SDL looks for one and complains.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    cap = cfg.eval.max_episode_steps if max_steps is None else max_steps
    source = "the run's --eval.max-episode-steps" if max_steps is None else "--max-steps"
    if echo:
        print(f"checkpoint {ckpt} ({cfg.env}, {policy.weights_version} learner updates)")
        print(
            f"episodes capped at {cap} agent steps ({source}), as training-time evaluation is",
            flush=True,
        )
    video_path = Path(video) if video else None
    if video_path is not None:
        video_path.parent.mkdir(parents=True, exist_ok=True)
    on_episode = _print_episode if echo else None
    jobs = resolve_jobs(jobs, episodes)
    if jobs > 1:
        result = evaluate_in_processes(
            policy, ckpt, cfg, episodes, seed, cap, jobs, video_path, on_episode
        )
    else:
        result = evaluate(
            policy,
            cfg.env,
            cfg.wrappers,
            episodes=episodes,
            seed=seed,
            max_steps=cap,
            video_path=video_path,
            render_mode="human" if render == "human" else None,
            on_episode=on_episode,
        )
    record = {
        "run": str(ckpt.parent.parent),
        "checkpoint": str(ckpt),
        "env": cfg.env,
        "agent_steps": _agent_steps(ckpt),
        "learner_updates": policy.weights_version,
        "seed": seed,
        "max_episode_steps": cap,
        **returns_report(result.returns, cfg.env),
        "returns": [float(r) for r in result.returns],
        "lengths": [int(n) for n in result.lengths],
        "video": result.video,
    }
    record["verdict"] = verdict(record, cfg.env)
    if json_path is not None:
        write_json(Path(json_path), record)
    return record


def resolve_jobs(jobs: int, episodes: int) -> int:
    """Processes `--jobs` runs: 0 takes one per core this process may use; never more than the
    episodes."""
    if jobs == 0:
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(jobs or 1, episodes))


_POOL_STATE: dict[str, Any] = {}
"""A pool process's env, policy, seed and episode cap (`_pool_start`)."""


def _pool_start(ckpt: Path, cfg: TrainConfig, seed: int, max_steps: int) -> None:
    """Build one env and load the policy once per pool process; one torch thread each; Ctrl-C
    is the parent's to handle."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    _POOL_STATE.update(
        env=make_env(cfg.env, cfg.wrappers, seed=seed),
        policy=load_policy(ckpt, cfg),
        seed=seed,
        max_steps=max_steps,
    )


def _pool_episode(k: int) -> tuple[float, int]:
    st = _POOL_STATE
    return run_episode(st["env"], st["policy"], st["seed"] + k, st["max_steps"])


def evaluate_in_processes(
    policy: Policy,
    ckpt: Path,
    cfg: TrainConfig,
    episodes: int,
    seed: int,
    max_steps: int,
    jobs: int,
    video_path: Path | None = None,
    on_episode: Callable[[int, float, int], None] | None = None,
) -> EvalResult:
    """`evaluate`'s episodes over `jobs` processes, each loading `ckpt` once: episode k still
    resets with seed + k and the policy is deterministic, so the returns are the ones one
    process gives, in episode order. With `video_path`, episode 0 runs (filmed) here, beside
    the pool."""
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    pool = ProcessPoolExecutor(jobs, context, _pool_start, (ckpt, cfg, seed, max_steps))
    try:
        first = 1 if video_path is not None else 0
        rest = pool.map(_pool_episode, range(first, episodes))
        filmed = EvalResult([], [], None)
        if video_path is not None:
            filmed = evaluate(policy, cfg.env, cfg.wrappers, 1, seed, max_steps, video_path)
            if on_episode is not None:
                on_episode(0, filmed.returns[0], filmed.lengths[0])
        returns, lengths = list(filmed.returns), list(filmed.lengths)
        for k, (total, steps) in enumerate(rest, start=first):
            returns.append(total)
            lengths.append(steps)
            if on_episode is not None:
                on_episode(k, total, steps)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return EvalResult(returns, lengths, filmed.video)


def _print_episode(k: int, total: float, steps: int) -> None:
    print(episode_line(k, total, steps), flush=True)  # a log file shows progress as it goes


def summary_lines(record: dict[str, Any]) -> str:
    """What `launch.py eval` prints after the episodes' own lines."""
    stderr = record["stderr"]
    result = EvalResult(record["returns"], record["lengths"], record["video"])
    lines = [
        mean_line(result),
        "standard error of the mean: " + ("- (one episode)" if stderr is None else f"{stderr:.1f}"),
        record["verdict"],
    ]
    if record["video"]:
        lines.append(f"video: {record['video']}")
    return "\n".join(lines)


def evaluate_run(
    path: str | Path, episodes: int, seed: int | None = None, json_path: Path | None = None
) -> dict[str, Any]:
    """`launch.py eval PATH --episodes N [--json]` without printing: a sweep's final evaluation."""
    policy, ckpt, cfg = load(str(path), episodes)
    return evaluate_loaded(policy, ckpt, cfg, episodes, seed=seed, json_path=json_path, echo=False)
