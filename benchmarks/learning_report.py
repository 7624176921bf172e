"""benchmarks/learning.py's report on finished runs: each run's evaluation curve (curve.csv),
its summary (steps and minutes to a threshold, final and best eval return, replay ratio and
speed held; summary.json), the runs overlaid in one PNG, and per configuration the sweep's
aggregates over its seeds (``distributed_sac/run/study.py``) in ``aggregates/``."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from distributed_sac.run import study, study_files
from distributed_sac.run.run_dir import RunDir
from distributed_sac.run.sweep_plan import trial_status


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
        study_files.write(summaries, out / "aggregates")
        print(study_files.table(summaries))
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
