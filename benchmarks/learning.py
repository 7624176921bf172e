"""Prove it learns: full distributed runs, evaluated on a schedule, as curves and a summary.

The runs are a sweep (``launch.py sweep``'s code: ``distributed_sac/remote/sweep.py``): each arm
and worker count is one configuration (``scratch-w2``, ``demos-w2``, ...) run once per
``--seeds`` seed, one trial at a time on one local Ray (so each run's minutes are its own).
Each trains with ``Driver`` (env workers -> replay -> learner), evaluates the deterministic
policy every ``--eval-every`` agent steps in the evaluator actor, then its final checkpoint over
``--final-eval-episodes`` held-out episodes (``launch.py eval --json``: final_eval.json). From
each run's metrics.jsonl it writes ``curve.csv`` (agent_steps, minutes, eval_return_mean,
eval_return_std), one PNG with eval return against agent steps and against wall-clock minutes
(every run overlaid), ``summary.json`` (agent steps and minutes to reach ``--threshold``, final
eval return, replay ratio held) and, per configuration over its seeds, the sweep's aggregates
in ``aggregates/`` (``distributed_sac/run/study.py``: mean, IQM, 95 % bootstrap interval). Minutes
of an evaluation are the wall clock when its weights were taken, from the run's start.

The ``pendulum-cpu`` preset (``distributed_sac.config.presets.pendulum_cpu_preset``, also
``launch.py train --preset pendulum-cpu``) fits 20k agent steps of VisualPendulum at replay
ratio 1 into about 19 minutes on 2 CPU cores with 2 workers; the target there is -250, which
two seeds reached (docs/benchmarks.md). Examples:

    python -m benchmarks.learning --preset pendulum-cpu --workers 2 \
        --out bench_out/learning_pendulum_cpu
    python -m benchmarks.learning --preset pendulum-cpu --workers 1 2 --out bench_out/overlay
    python -m benchmarks.learning --preset carracing-cpu --arms scratch demos --seeds 0 1 2 \
        --out bench_out/car
    python -m benchmarks.learning --replot bench_out/overlay/w1 bench_out/overlay/w2 --out DIR
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from benchmarks.overrides import override
from benchmarks.report import write_json
from distributed_sac.config.fields import TrainConfig
from distributed_sac.config.presets import PRESETS
from distributed_sac.envs.registry import with_env_defaults
from distributed_sac.run import study
from distributed_sac.run.run_dir import RunDir
from distributed_sac.run.sweep_plan import SWEEP_FILE, Configuration, build_plan, trial_status

ARMS = ("scratch", "demos")
"""Learning-benchmark arms: online training from scratch, or demonstrations first."""


def read_curve(path: Path) -> list[dict]:
    """Evaluation points of one run: agent steps, minutes since start, mean and std return."""
    records = RunDir(path).read_metrics()
    if not records:
        raise ValueError(f"{path} has no metrics.jsonl records")
    # config.json is written when the run starts; a copied run dir (docs/results/) has a newer
    # mtime, and then the first record (one log interval in) is the nearest start there is.
    start = min((path / "config.json").stat().st_mtime, records[0]["time"])
    curve = []
    for r in records:
        if r.get("eval_return_mean") is None:
            continue
        steps = r["eval_agent_steps"]
        taken = next((q["time"] for q in records if q["agent_steps"] >= steps), r["time"])
        curve.append(
            {
                "agent_steps": steps,
                "minutes": (taken - start) / 60,
                "eval_return_mean": r["eval_return_mean"],
                "eval_return_std": r["eval_return_std"],
            }
        )
    final = path / "final_eval.json"
    if final.exists():
        f = json.loads(final.read_text())
        # `launch.py eval --json` (a sweep's final evaluation), or the evaluator's record.
        mean, std = (
            (f["mean"], f["std"]) if "mean" in f else (f["eval_return_mean"], f["eval_return_std"])
        )
        curve.append(
            {
                "agent_steps": f["agent_steps"],
                "minutes": (records[-1]["time"] - start) / 60,
                "eval_return_mean": mean,
                "eval_return_std": std,
            }
        )
    return curve


def summarize(path: Path, curve: list[dict], threshold: float) -> dict:
    """Steps and minutes to the threshold, final eval return, replay ratio and speed held."""
    records = RunDir(path).read_metrics()
    cfg = json.loads((path / "config.json").read_text())
    arm = _arm_record(path)
    hit = next((p for p in curve if p["eval_return_mean"] >= threshold), None)
    last = records[-1]
    return {
        "run": str(path),
        "arm": arm["arm"],
        "demo_transitions": arm.get("demo_transitions", 0),
        "pretrain_updates": arm.get("pretrain_updates", 0),
        "seed": cfg["seed"],
        "env": cfg["env"],
        "num_workers": cfg["num_workers"],
        "threshold": threshold,
        "agent_steps_to_threshold": hit["agent_steps"] if hit else None,
        "minutes_to_threshold": hit["minutes"] if hit else None,
        "final_eval_return": curve[-1]["eval_return_mean"] if curve else None,
        "final_eval_std": curve[-1]["eval_return_std"] if curve else None,
        "best_eval_return": max((p["eval_return_mean"] for p in curve), default=None),
        "agent_steps": last["agent_steps"],
        "action_repeat": cfg["wrappers"]["action_repeat"],
        "env_steps": last["agent_steps"] * cfg["wrappers"]["action_repeat"],
        "learner_updates": last["learner_updates"],
        "minutes": curve[-1]["minutes"] if curve else None,
        "replay_ratio_target": cfg["replay"]["replay_ratio"],
        "alpha_lr": cfg["agent"]["alpha_lr"],
        "replay_ratio_held": last.get("replay_ratio_held"),
        "learner_idle_frac_mean": _mean(r.get("learner_idle_frac") for r in records),
        "agent_steps_per_s_mean": _mean(r.get("agent_steps_per_s") for r in records),
    }


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def plot(curves: dict[str, list[dict]], thresholds: list[float], path: Path) -> None:
    """Eval return (mean +- std) against agent steps and against minutes, runs overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, x, label in zip(
        axes, ("agent_steps", "minutes"), ("agent steps", "wall-clock minutes"), strict=True
    ):
        for name, curve in curves.items():
            xs = [p[x] for p in curve]
            mean = [p["eval_return_mean"] for p in curve]
            std = [p["eval_return_std"] for p in curve]
            ax.plot(xs, mean, marker="o", label=name)
            ax.fill_between(
                xs,
                [m - s for m, s in zip(mean, std, strict=True)],
                [m + s for m, s in zip(mean, std, strict=True)],
                alpha=0.2,
            )
        for threshold in thresholds:
            ax.axhline(threshold, color="grey", linestyle="--", label=f"threshold {threshold:g}")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("eval return (deterministic policy)")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _arm_record(path: Path) -> dict:
    """arm, demo_transitions, pretrain_updates: from a sweep trial's trial.json, or the
    arm.json of runs from before the sweep (scratch when neither says)."""
    arm_file = path / "arm.json"
    if arm_file.exists():
        return json.loads(arm_file.read_text())
    trial = trial_status(path)
    return {
        "arm": trial.get("labels", {}).get("arm", "scratch"),
        "demo_transitions": trial.get("demo_transitions", 0),
        "pretrain_updates": trial.get("pretrain_updates", 0),
    }


def _arm_of(path: Path) -> str:
    return _arm_record(path)["arm"]


def aggregates(runs: list[Path], thresholds: dict[str, float], out: Path) -> list[dict]:
    """The sweep's aggregates per configuration over its seeds, into `out`/aggregates: a
    trial's configuration, or `<arm>-w<workers>` for runs from before the sweep."""
    groups: dict[str, list] = {}
    for path in runs:
        run = study.read_run(path)
        workers = json.loads((path / "config.json").read_text())["num_workers"]
        groups.setdefault(run.config_name or f"{_arm_of(path)}-w{workers}", []).append(run)
    summaries = []
    for name, group in groups.items():
        threshold = thresholds.get(_arm_of(group[0].path), thresholds["scratch"])
        try:
            summaries.append(study.aggregate(group, name, threshold))
        except ValueError as exc:  # mixed envs or a repeated seed: nothing to aggregate over
            print(f"no aggregate for {name}: {exc}")
    if summaries:
        study.write(summaries, out / "aggregates")
        print(study.table(summaries))
    return summaries


def report(runs: list[Path], thresholds: dict[str, float], out: Path) -> list[dict]:
    """Write curve.csv per run, the overlay PNG and summary.json; print a table.

    ``thresholds`` maps each arm to the eval return it is judged against.
    """
    out.mkdir(parents=True, exist_ok=True)
    curves, summaries = {}, []
    for path in runs:
        curve = read_curve(path)
        with open(path / "curve.csv", "w", newline="") as f:
            writer = csv.DictWriter(
                f, ["agent_steps", "minutes", "eval_return_mean", "eval_return_std"]
            )
            writer.writeheader()
            writer.writerows(curve)
        summary = summarize(path, curve, thresholds.get(_arm_of(path), thresholds["scratch"]))
        curves[
            f"{summary['arm']}: {summary['env']} {summary['num_workers']} workers, replay ratio "
            f"{summary['replay_ratio_target']:g}, alpha lr {summary['alpha_lr']:g} "
            f"({path.parent.name}/{path.name})"
        ] = curve
        summaries.append(summary)
    plot(curves, sorted(set(thresholds[_arm_of(p)] for p in runs)), out / "learning_curve.png")
    (out / "summary.json").write_text(json.dumps(summaries, indent=2))
    print(
        f"{'run':<28}{'arm':>8}{'workers':>8}{'steps':>8}{'min':>7}{'final':>9}{'best':>9}"
        f"{'steps@thr':>11}{'min@thr':>9}{'ratio':>7}{'idle':>6}"
    )
    for s in summaries:
        print(
            f"{_short(Path(s['run'])):<28}{s['arm']:>8}{s['num_workers']:>8}{s['agent_steps']:>8}"
            f"{_fmt(s['minutes'], '.1f'):>7}{_fmt(s['final_eval_return'], '.1f'):>9}"
            f"{_fmt(s['best_eval_return'], '.1f'):>9}{_fmt(s['agent_steps_to_threshold'], 'd'):>11}"
            f"{_fmt(s['minutes_to_threshold'], '.1f'):>9}{_fmt(s['replay_ratio_held'], '.2f'):>7}"
            f"{_fmt(s['learner_idle_frac_mean'], '.2f'):>6}"
        )
    print(
        f"thresholds {thresholds}; {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}; "
        f"plot {out / 'learning_curve.png'}"
    )
    aggregates(runs, thresholds, out)
    return summaries


def _short(path: Path) -> str:
    """A run's name in the table: `<arm>-wN/seed<k>` for a sweep trial's."""
    return f"{path.parent.name}/{path.name}"[-27:] if path.name.startswith("seed") else path.name


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def record_autopilot(out: Path, cfg: TrainConfig, episodes: int, seed: int = 100) -> Path:
    """Record `episodes` autopilot laps (tracks seed, seed + 1, ...) with `cfg`'s wrappers."""
    from distributed_sac.run.recorder import RecordArgs, Recorder

    if out.exists():
        raise SystemExit(f"{out} exists; pass it as --demos or choose another --out")
    recorder = Recorder(
        RecordArgs(
            out=str(out), episodes=episodes, seed=seed, autopilot=True, wrappers=cfg.wrappers
        )
    )
    try:
        recorder.run()
    finally:
        recorder.close()
    print(f"autopilot: {episodes} episodes, mean return {sum(recorder.returns) / episodes:.1f}")
    return out


TARGETS = {
    ("VisualPendulum", "scratch"): (-250.0, None),
    ("VisualPendulum", "demos"): (-250.0, None),
    ("CarRacing", "scratch"): (400.0, 100_000),
    ("CarRacing", "demos"): (650.0, 50_000),
}
"""(eval return to reach, agent steps to run) per env and arm; None keeps the preset's steps.
A dmc: task runs --env-steps (100k, the papers' budget) and is judged against SAC+AE's
published 100k score (PUBLISHED_100K) where there is one."""
PUBLISHED_100K = {
    "dmc:cartpole-swingup": {"SAC+AE": 311, "CURL": 582, "DrQ": 759},
    "dmc:finger-spin": {"SAC+AE": 740, "CURL": 767, "DrQ": 901},
    "dmc:reacher-easy": {"SAC+AE": 274, "CURL": 538, "DrQ": 601},
    "dmc:cheetah-run": {"SAC+AE": 267, "CURL": 299, "DrQ": 344},
    "dmc:walker-walk": {"SAC+AE": 394, "CURL": 403, "DrQ": 612},
    "dmc:ball_in_cup-catch": {"SAC+AE": 391, "CURL": 769, "DrQ": 913},
}
"""Mean eval return (10 seeds, 10 episodes each) at 100k env steps: CURL (ICML 2020) Table 1
for SAC+AE and CURL, DrQ (ICLR 2021) Table 1 for DrQ."""


def targets(env: str, arm: str, repeat: int, env_steps: int) -> tuple[float, int | None]:
    """(eval return to reach, agent steps to run) of `env`'s `arm`."""
    if env.startswith("dmc:"):
        return float(PUBLISHED_100K.get(env, {}).get("SAC+AE", 0.0)), -(-env_steps // repeat)
    return TARGETS[env, arm]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="pendulum-cpu")
    parser.add_argument(
        "--env",
        default=None,
        help="override the preset's env: VisualPendulum, CarRacing or dmc:DOMAIN-TASK",
    )
    parser.add_argument(
        "--env-steps",
        type=int,
        default=100_000,
        help="dmc: env steps to run (agent steps x action repeat; the papers' x axis)",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="one run per count")
    parser.add_argument(
        "--arms",
        choices=ARMS,
        nargs="+",
        default=["scratch"],
        help="scratch: online only; demos: --demos, --pretrain-updates, then online",
    )
    parser.add_argument(
        "--demos",
        nargs="*",
        default=[],
        help="demonstration files or folders (default: record --autopilot-episodes)",
    )
    parser.add_argument(
        "--autopilot-episodes",
        type=int,
        default=20,
        help="without --demos, the demos arm first records this many autopilot episodes",
    )
    parser.add_argument(
        "--pretrain-updates", type=int, default=1_000, help="updates on the demos (demos arm)"
    )
    parser.add_argument("--total-steps", type=int, default=None, help="override agent steps")
    parser.add_argument("--eval-every", type=int, default=None, help="agent steps between evals")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation")
    parser.add_argument(
        "--threshold", type=float, default=None, help="eval return to reach (default: per arm)"
    )
    parser.add_argument("--seed", type=int, default=0, help="root seed of every run")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="root seeds (one run each; not --seed)"
    )
    parser.add_argument(
        "--final-eval-episodes",
        type=int,
        default=None,
        help="held-out episodes on each final checkpoint (default: --eval-episodes)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="override config fields of every run, e.g. agent.alpha_lr=1e-3",
    )
    parser.add_argument("--out", type=Path, default=Path("bench_out/learning"), help="output dir")
    parser.add_argument(
        "--replot",
        type=Path,
        nargs="*",
        default=None,
        help="only summarize and plot these finished run directories",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    base = PRESETS[args.preset]()
    if args.replot and args.env is None:
        # Judge finished runs by their own env (its threshold), not the --preset default's.
        ran = json.loads((args.replot[0] / "config.json").read_text())
        env, repeat = ran["env"], ran["wrappers"]["action_repeat"]
    else:
        env = args.env or base.env
        if env != base.env:
            base = with_env_defaults(dataclasses.replace(base, env=env))
        repeat = base.wrappers.action_repeat
    thresholds = {
        arm: args.threshold
        if args.threshold is not None
        else targets(env, arm, repeat, args.env_steps)[0]
        for arm in ARMS
    }
    if args.replot:
        runs = args.replot
    else:
        if min(args.workers) < 1:
            raise SystemExit(f"--workers must be >= 1, got {args.workers}")
        if "demos" in args.arms and not args.demos:
            if env != "CarRacing" or args.autopilot_episodes < 1:
                raise SystemExit("the demos arm needs --demos (files or folders of .npz episodes)")
            args.demos = [str(record_autopilot(args.out / "demos", base, args.autopilot_episodes))]
        base = dataclasses.replace(
            base,
            env=env,
            eval=dataclasses.replace(
                base.eval,
                every=args.eval_every or base.eval.every,
                episodes=args.eval_episodes,
                video=False,
            ),
            wandb="disabled",
            keep_checkpoints=1_000,  # every checkpoint stays: the best one gets filmed
        )
        try:
            base = override(base, args.set)
        except ValueError as exc:
            raise SystemExit(f"--set: {exc}") from None
        if (args.out / SWEEP_FILE).exists():
            raise SystemExit(f"{args.out} holds a sweep; choose another --out")
        configurations = []
        for arm in args.arms:
            steps = (
                args.total_steps or targets(env, arm, repeat, args.env_steps)[1] or base.total_steps
            )
            demos = arm == "demos"
            for n in args.workers:
                configurations.append(
                    Configuration(
                        name=f"{arm}-w{n}",
                        cfg=dataclasses.replace(base, num_workers=n, total_steps=steps),
                        labels={"arm": arm},
                        demos=tuple(args.demos) if demos else (),
                        pretrain_updates=args.pretrain_updates if demos else 0,
                    )
                )
        final_episodes = args.final_eval_episodes
        plan = build_plan(
            args.out,
            configurations,
            args.seeds or [args.seed],
            preset=args.preset,
            command=shlex.join(["python", "-m", "benchmarks.learning", *sys.argv[1:]]),
            final_eval_episodes=args.eval_episodes if final_episodes is None else final_episodes,
            max_failures=0,
            max_concurrent=1,  # one run at a time: each run's minutes are its own
        )
        from distributed_sac.remote import sweep

        sweep.run(plan)
        runs = [
            Path(t.run_dir)
            for t in plan.trials
            if trial_status(Path(t.run_dir)).get("status") == "finished"
        ]
        if not runs:
            raise SystemExit("no run finished")
    summaries = report(runs, thresholds, args.out)
    write_json(args.json, summaries)


if __name__ == "__main__":
    main()
