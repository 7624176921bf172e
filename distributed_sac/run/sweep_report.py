"""A sweep's trial table and closing report, from its directory alone (no Ray): what
`launch.py sweep` prints at the end and what `--resume` would continue.
"""

from __future__ import annotations

from pathlib import Path

from distributed_sac.run import study, study_files
from distributed_sac.run.run_dir import RunDir
from distributed_sac.run.sweep_plan import (
    FINAL_EVAL_FILE,
    SweepPlan,
    TrialSpec,
    read_json,
    trial_status,
)


def outcome(spec: TrialSpec) -> str:
    """Agent steps, last evaluation and the final evaluation of a trial's run, in words."""
    path = Path(spec.run_dir)
    records = RunDir(path).read_metrics() if path.exists() else []
    if not records:
        return "no metrics yet"
    evals = [r for r in records if r.get("eval_return_mean") is not None]
    text = f"{records[-1]['agent_steps']} agent steps"
    if evals:
        last = evals[-1]
        text += f", last eval {last['eval_return_mean']:.1f} at {last['eval_agent_steps']}"
    final = read_json(path / FINAL_EVAL_FILE)
    if final is not None:
        se = final.get("stderr")
        text += f"; final eval {final['mean']:.1f}"
        text += f" ± {se:.1f} (s.e.)" if se is not None else ""
        text += f" over {final['episodes']} episodes"
        if final.get("solved") is not None:
            text += f", solved: {'yes' if final['solved'] else 'no'}"
    return text


def report(plan: SweepPlan) -> int:
    """The trial table, the aggregates of finished trials (written to aggregates/) and the
    exit code: 0 when every trial finished, 1 otherwise (with how to resume)."""
    print(trial_table(plan))
    statuses = [trial_status(Path(t.run_dir)).get("status") for t in plan.trials]
    finished = [t for t, s in zip(plan.trials, statuses, strict=True) if s == "finished"]
    if finished:
        runs = study.group_runs([Path(t.run_dir) for t in finished])
        summaries = [study.aggregate(r, name, plan.threshold) for name, r in runs.items()]
        study_files.write(summaries, plan.aggregates_dir)
        print(study_files.table(summaries))
        print(f"aggregates over finished trials: {plan.aggregates_dir}")
    left = len(plan.trials) - len(finished)
    if not left:
        return 0
    failed = statuses.count("failed")
    print(
        f"{left} of {len(plan.trials)} trials did not finish ({failed} failed); continue with: "
        f"launch.py sweep --resume {plan.path}"
    )
    return 1


def trial_table(plan: SweepPlan) -> str:
    lines = [f"{'trial':<32}{'status':>11}{'attempts':>9}  outcome"]
    for spec in plan.trials:
        status = trial_status(Path(spec.run_dir))
        state = status.get("status") or "not run"
        if state in ("running", "evaluating", "interrupted"):
            state = "unfinished"
        detail = outcome(spec)
        if status.get("error") and state != "finished":
            detail += f"; error: {status['error']}"
        lines.append(f"{spec.name[:31]:<32}{state:>11}{status.get('attempts', 0):>9}  {detail}")
    return "\n".join(lines)
