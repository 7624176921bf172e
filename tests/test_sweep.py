"""A tiny two-seed sweep on a local Ray: its trials side by side, the sweep's process killed,
`--resume` finishing it without redoing what was done, and aggregates that match the numbers
computed here by hand from the runs' metrics files."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import launch
from distributed_sac.run.checkpoint import list_checkpoints

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
EVERY = 50
TRAIN = [
    "--preset", "tiny", "--num-seeds", "2", "--num-workers", "1", "--learner-cpus", "0",
    "--total-steps", "200", "--eval.every", str(EVERY), "--checkpoint-every", str(EVERY),
    "--eval.no-video", "--wandb", "disabled", "--final-eval-episodes", "2",
]  # fmt: skip
CPUS_PER_TRIAL = 4
"""The trial's process 1, learner 0 + replay 1 + evaluator 1, one env worker 1."""


@pytest.fixture(scope="module")
def cluster():
    """Room for the two trials side by side; always shut down."""
    import ray

    context = ray.init(
        address="local",
        num_cpus=2 * CPUS_PER_TRIAL,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
    )
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


def wait_for(condition, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the sweep exited ({proc.returncode}) early:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {timeout} s:\n{log.read_text()}")
        time.sleep(0.05)


def hand_evaluations(run: Path) -> dict[int, float]:
    """Evaluation point -> return, as README says: the multiple of --eval.every at or below
    the evaluation's agent steps, a point evaluated again (after the resume) the later one."""
    points = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("eval_return_mean") is not None:
            points[record["eval_agent_steps"] // EVERY * EVERY] = record["eval_return_mean"]
    return points


def test_sweep_killed_then_resumed_and_its_aggregates(cluster, tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    runs = [sweep_dir / "tiny" / f"seed{s}" for s in (0, 1)]
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "launch.py"), "sweep", *TRAIN]
            + ["--run-dir", str(sweep_dir), "--address", cluster],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "SDL_VIDEODRIVER": "dummy"},
            start_new_session=True,
        )
    try:
        # Kill the sweep's process once both trials, running side by side, have checkpoints.
        wait_for(lambda: all(list_checkpoints(r / "checkpoints") for r in runs), 300, proc, log)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = log.read_text()
    for name in ("tiny-seed0", "tiny-seed1"):
        assert f"trial {name} (config tiny, seed {name[-1]}): started -> " in first, first
    # Almost always both are mid-run; one far behind the other may have finished training.
    killed = [json.loads((r / "trial.json").read_text())["status"] for r in runs]
    assert "running" in killed, killed
    capsys.readouterr()

    assert launch.main(["sweep", "--resume", str(sweep_dir)]) == 0
    resumed = capsys.readouterr().out
    for run, status in zip(runs, killed, strict=True):
        trial = json.loads((run / "trial.json").read_text())
        assert trial["status"] == "finished", trial
        assert trial["attempts"] == (1 if status == "finished" else 2), (status, trial)
        meta = json.loads((run / "config.json").read_text())["meta"]
        # Continued from its checkpoint, not started over (training was done if "evaluating").
        assert len(meta.get("resumes", [])) == (status == "running")
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["agent_steps"] == 200
        final_eval = json.loads((run / "final_eval.json").read_text())
        assert final_eval["episodes"] == 2 and final_eval["seed"] == 2**33
    unfinished = sum(status != "finished" for status in killed)
    assert resumed.count("resuming its run from its checkpoint at") == unfinished, resumed
    assert "finished; 200 agent steps" in resumed
    # Tune got every metrics record of each trial.
    for name in ("tiny-seed0", "tiny-seed1"):
        results = (sweep_dir / "tune" / name / "result.json").read_text().splitlines()
        assert any(json.loads(r).get("agent_steps") == 200 for r in results)

    # Once finished, a sweep resumed again runs nothing.
    before = [(r / "metrics.jsonl").read_bytes() for r in runs]
    assert launch.main(["sweep", "--resume", str(sweep_dir)]) == 0
    again = capsys.readouterr().out
    assert "started" not in again and "resuming" not in again
    assert [(r / "metrics.jsonl").read_bytes() for r in runs] == before

    # The aggregates against the metrics files, by hand.
    summary = json.loads((sweep_dir / "aggregates" / "tiny.json").read_text())
    points = [hand_evaluations(r) for r in runs]
    finals = [p[max(p)] for p in points]
    assert summary["env"] == "VisualPendulum" and summary["config"] == "tiny"
    assert summary["num_seeds"] == 2 and summary["agent_steps"] == max(max(p) for p in points)
    assert summary["final_mean"] == pytest.approx(np.mean(finals))
    assert summary["final_iqm"] == pytest.approx(stats.trim_mean(finals, 0.25))
    assert summary["final_ci95"] == pytest.approx([min(finals), max(finals)])  # two seeds
    assert [s["final_return"] for s in summary["per_seed"]] == pytest.approx(finals)
    held_out = [json.loads((r / "final_eval.json").read_text())["mean"] for r in runs]
    assert [s["final_eval"]["mean"] for s in summary["per_seed"]] == pytest.approx(held_out)
    with open(sweep_dir / "aggregates" / "tiny.csv") as f:
        rows = {int(r["agent_steps"]): r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(set(points[0]) | set(points[1]))
    for step, row in rows.items():
        values = [p[step] for p in points if step in p]
        assert int(row["num_seeds"]) == len(values)
        assert float(row["mean"]) == pytest.approx(np.mean(values))
