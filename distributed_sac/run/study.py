"""Aggregates over seeds, from run directories alone: curves, final returns, intervals.

Pure numpy and scipy (no Ray, no torch), so a summary can be rebuilt from committed per-run
files (`python -m benchmarks.aggregate RUN_DIR... --name NAME --out DIR`); `launch.py sweep`
and `benchmarks/learning.py` write theirs with the same functions (`study_files`).

For one configuration (its runs differ only in their root seed), at each evaluation point:
the mean, the sample standard deviation (ddof 1), the interquartile mean (IQM: the mean of the
middle 50 %, `scipy.stats.trim_mean(x, 0.25)`, as rliable computes it; Agarwal et al. 2021,
"Deep RL at the Edge of the Statistical Precipice") and 95 % stratified bootstrap intervals of
the mean and of the IQM (`scipy.stats.bootstrap`, percentile method, 10,000 resamples, seeded;
strata are envs, so within one env's configuration it resamples the seeds). An evaluation
belongs to the point it was due at: the largest multiple of `--eval.every` at or below the agent
steps it was taken at (the driver starts one at the first log interval past each multiple); a
point evaluated again after a resume keeps the later evaluation. A seed's final return is its
last point's; a configuration's `agent_steps` is the last point any seed reached.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distributed_sac.config.fields import SOLVED_EPISODES
from distributed_sac.envs.registry import solved_threshold
from distributed_sac.run.seed_stats import (
    BOOTSTRAP_METHOD,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    describe,
)
from distributed_sac.run.sweep_plan import (
    FINAL_EVAL_FILE,
    SWEEP_FILE,
    TRIAL_FILE,
    read_json,
)

EVAL_100_FILE = "final_eval_100.json"
"""A run's held-out evaluation over 100 episodes or more (`launch.py eval RUN --episodes 100
--json RUN/final_eval_100.json`) beside a shorter final_eval.json: per_seed's `eval_100`."""

TARGETS = {"VisualPendulum": -250.0}
"""Steps-to-threshold targets of envs without a solved threshold: this project's learning
target for VisualPendulum (benchmarks/learning.py), not a solved criterion."""


def default_threshold(env: str) -> tuple[float | None, str]:
    """(threshold, where it comes from) for steps-to-threshold of `env`."""
    solved = solved_threshold(env)
    if solved is not None:
        return solved, f"{env}'s solved threshold (gymnasium's reward_threshold)"
    if env in TARGETS:
        return TARGETS[env], f"this project's target for {env} (it has no solved threshold)"
    return None, f"none for {env}"


@dataclasses.dataclass
class SeedRun:
    """What the aggregates read from one run directory."""

    path: Path
    env: str
    seed: int
    eval_every: int
    evals: list[tuple[int, float]]
    """(agent steps the evaluation was taken at, its mean return), in the order logged."""
    config_name: str | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    labels: dict[str, Any] = dataclasses.field(default_factory=dict)
    final_eval: dict[str, Any] | None = None
    eval_100: dict[str, Any] | None = None
    """The held-out evaluation of SOLVED_EPISODES (100) episodes or more: final_eval.json when
    it has that many, else final_eval_100.json."""
    action_repeat: int = 1
    """Env steps per agent step: a DMC task's x axis is env steps (agent steps x this)."""

    def points(self) -> dict[int, tuple[int, float]]:
        """Evaluation point -> (agent steps taken at, return); a later evaluation of a point
        (after a resume) replaces the earlier one."""
        out: dict[int, tuple[int, float]] = {}
        for steps, value in self.evals:
            point = (steps // self.eval_every) * self.eval_every if self.eval_every else steps
            out[point] = (steps, value)
        return dict(sorted(out.items()))


def read_run(path: Path) -> SeedRun:
    """A run directory's config.json, metrics.jsonl evaluations, trial.json and final_eval.json;
    ValueError if it is not a run directory."""
    path = Path(path)
    config = read_json(path / "config.json")
    if config is None:
        raise ValueError(f"{path}: not a run directory (no readable config.json)")
    evals = []
    metrics = path / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        value = record.get("eval_return_mean")
        if value is None or not math.isfinite(value):
            continue
        evals.append((int(record.get("eval_agent_steps", record["agent_steps"])), float(value)))
    trial = read_json(path / TRIAL_FILE) or {}
    final_eval = _held_out(path / FINAL_EVAL_FILE)
    eval_100 = final_eval
    if final_eval is None or int(final_eval.get("episodes") or 0) < SOLVED_EPISODES:
        eval_100 = _held_out(path / EVAL_100_FILE)
        if eval_100 is not None and int(eval_100.get("episodes") or 0) < SOLVED_EPISODES:
            raise ValueError(
                f"{path / EVAL_100_FILE}: {eval_100.get('episodes')} episodes, not 100"
            )
    return SeedRun(
        path=path,
        env=config["env"],
        seed=int(config["seed"]),
        eval_every=int(config.get("eval", {}).get("every", 0)),
        evals=evals,
        config_name=trial.get("config"),
        overrides=trial.get("overrides") or {},
        labels=trial.get("labels") or {},
        final_eval=final_eval,
        eval_100=eval_100,
        action_repeat=int(config.get("wrappers", {}).get("action_repeat", 1)),
    )


def _held_out(path: Path) -> dict[str, Any] | None:
    """A `launch.py eval --json` record; None if absent or not one (benchmarks/learning.py's
    final_eval.json before the sweep held no held-out episodes)."""
    record = read_json(path)
    return record if record is not None and "mean" in record else None


def steps_to_threshold(run: SeedRun, threshold: float | None) -> int | None:
    """Agent steps of the run's first evaluation at or above `threshold` (None if none)."""
    if threshold is None:
        return None
    return next((steps for steps, value in run.evals if value >= threshold), None)


def aggregate(
    runs: Sequence[SeedRun], config: str, threshold: float | None = None
) -> dict[str, Any]:
    """One configuration's summary over its seeds (module docstring); `threshold` None takes
    the env's (`default_threshold`)."""
    if not runs:
        raise ValueError(f"configuration {config!r}: no runs")
    envs = sorted({r.env for r in runs})
    if len(envs) > 1:
        raise ValueError(f"configuration {config!r} mixes envs {envs}: aggregate each apart")
    env = envs[0]
    seeds = [r.seed for r in runs]
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"configuration {config!r}: seed repeated among {seeds}")
    if threshold is None:
        threshold, source = default_threshold(env)
    else:
        source = "given"
    by_point: dict[int, list[float]] = {}
    for run in runs:
        for point, (_, value) in run.points().items():
            by_point.setdefault(point, []).append(value)
    repeats = sorted({r.action_repeat for r in runs})
    if len(repeats) > 1:
        raise ValueError(f"configuration {config!r} mixes action repeats {repeats}")
    repeat = repeats[0]
    points = [
        {"agent_steps": p, "env_steps": p * repeat, **describe(v)}
        for p, v in sorted(by_point.items())
    ]
    per_seed, finals = [], []
    for run in runs:
        pts = run.points()
        last = max(pts) if pts else None
        final = pts[last][1] if last is not None else None
        if final is not None:
            finals.append(final)
        per_seed.append(
            {
                "seed": run.seed,
                "run": str(run.path),
                "agent_steps": last,
                "eval_agent_steps": pts[last][0] if last is not None else None,
                "final_return": final,
                "steps_to_threshold": steps_to_threshold(run, threshold),
                "final_eval": _final_eval_entry(run.final_eval),
                "eval_100": _final_eval_entry(run.eval_100),
            }
        )
    final_stats = describe(finals) if finals else {}
    reached = [s["steps_to_threshold"] for s in per_seed]
    median = float(np.median([math.inf if s is None else s for s in reached])) if runs else None
    first = runs[0]
    return {
        "config": config,
        "env": env,
        "num_seeds": len(runs),
        "seeds": seeds,
        "overrides": first.overrides,
        "labels": first.labels,
        "agent_steps": max(by_point) if by_point else None,
        "action_repeat": repeat,
        "env_steps": max(by_point) * repeat if by_point else None,
        "final_num_seeds": len(finals),
        "final_mean": final_stats.get("mean"),
        "final_std": final_stats.get("std"),
        "final_iqm": final_stats.get("iqm"),
        "final_ci95": final_stats.get("ci95"),
        "final_iqm_ci95": final_stats.get("iqm_ci95"),
        "threshold": threshold,
        "threshold_source": source,
        "seeds_reaching_threshold": sum(s is not None for s in reached),
        "steps_to_threshold_median": None if median is None or math.isinf(median) else median,
        "final_eval": _final_eval_summary([r.final_eval for r in runs], env),
        "eval_100": _final_eval_summary([r.eval_100 for r in runs], env),
        "per_seed": per_seed,
        "points": points,
        "bootstrap": {
            "method": BOOTSTRAP_METHOD,
            "resamples": BOOTSTRAP_RESAMPLES,
            "confidence": CONFIDENCE,
            "seed": BOOTSTRAP_SEED,
            "strata": "env",
        },
    }


FINAL_EVAL_KEYS = ("episodes", "seed", "mean", "std", "stderr", "agent_steps")
SOLVED_KEYS = ("threshold", "at_or_above_threshold", "solved")


def _final_eval_entry(final_eval: dict[str, Any] | None) -> dict[str, Any] | None:
    if final_eval is None:
        return None
    return {k: final_eval.get(k) for k in (*FINAL_EVAL_KEYS, *SOLVED_KEYS)}


def _final_eval_summary(
    evaluations: Sequence[dict[str, Any] | None], env: str
) -> dict[str, Any] | None:
    """Held-out evaluations (`launch.py eval --json`, one per seed or None) over the seeds that
    ran one: their means' mean, IQM and interval, and (for an env with a solved threshold) how
    many seeds solved it."""
    done = [e for e in evaluations if e is not None]
    if not done:
        return None
    means = [float(e["mean"]) for e in done]
    summary = describe(means)
    threshold = solved_threshold(env)
    return {
        "num_seeds": summary["num_seeds"],
        "episodes": [int(e["episodes"]) for e in done],
        "mean": summary["mean"],
        "std": summary["std"],
        "iqm": summary["iqm"],
        "ci95": summary["ci95"],
        "threshold": threshold,
        "seeds_solved": None if threshold is None else sum(bool(e.get("solved")) for e in done),
    }


def group_runs(paths: Iterable[Path], name: str | None = None) -> dict[str, list[SeedRun]]:
    """Run directories by configuration: `name` for all of them, else each one's trial.json
    configuration (ValueError for a run without one). A sweep directory stands for its runs."""
    groups: dict[str, list[SeedRun]] = {}
    for path in expand_runs(paths):
        run = read_run(path)
        key = name or run.config_name
        if key is None:
            raise ValueError(f"{path}: no trial.json naming its configuration; pass --name")
        groups.setdefault(key, []).append(run)
    return groups


def expand_runs(paths: Iterable[Path]) -> list[Path]:
    """Run directories, each sweep directory (one with sweep.json) replaced by its trials'."""
    out = []
    for path in map(Path, paths):
        plan = read_json(path / SWEEP_FILE)
        if plan is not None and not (path / "config.json").exists():
            out.extend(Path(t["run_dir"]) for t in plan.get("trials", []))
        else:
            out.append(path)
    return out
