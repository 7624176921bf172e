"""benchmarks/learning.py's report (arms, per-arm targets, aggregates) and gpu_check.sh's guard."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from distributed_sac.config.presets import carracing_cpu_preset
from distributed_sac.run.run_dir import RunDir

ROOT = Path(__file__).resolve().parent.parent


def fake_run(path: Path, arm: str | None, evals: list[tuple[int, float]]) -> Path:
    """A finished run directory: config.json, one metrics record per evaluation, arm.json."""
    cfg = dataclasses.replace(carracing_cpu_preset(), run_dir=str(path))
    run = RunDir.create(path, cfg)
    lines = [
        {
            "time": 1_000.0 + 60.0 * i,
            "agent_steps": steps,
            "learner_updates": steps // 2,
            "eval_agent_steps": steps,
            "eval_return_mean": ret,
            "eval_return_std": 10.0,
            "replay_ratio_held": 0.5,
        }
        for i, (steps, ret) in enumerate(evals)
    ]
    (run.path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if arm is not None:
        (run.path / "arm.json").write_text(json.dumps({"arm": arm, "demo_transitions": 6_000}))
    return run.path


def test_report_judges_each_arm_against_its_own_target(tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks.learning import TARGETS
    from benchmarks.learning_report import report

    scratch = fake_run(tmp_path / "scratch-w2", None, [(5_000, 100.0), (10_000, 450.0)])
    demos = fake_run(tmp_path / "demos-w2", "demos", [(5_000, 500.0), (10_000, 700.0)])
    thresholds = {arm: TARGETS["CarRacing", arm][0] for arm in ("scratch", "demos")}
    summaries = report([scratch, demos], thresholds, tmp_path / "out")
    by_arm = {s["arm"]: s for s in summaries}
    assert by_arm["scratch"]["threshold"] == 400 and by_arm["demos"]["threshold"] == 650
    assert by_arm["scratch"]["agent_steps_to_threshold"] == 10_000
    assert by_arm["demos"]["agent_steps_to_threshold"] == 10_000
    assert by_arm["demos"]["best_eval_return"] == 700.0
    assert by_arm["demos"]["demo_transitions"] == 6_000
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["arm"] for s in written] == ["scratch", "demos"]
    assert (tmp_path / "out" / "learning_curve.png").stat().st_size > 0
    # The sweep's aggregates, one configuration per arm and worker count (runs from before
    # the sweep have no trial.json naming theirs).
    aggregate = json.loads((tmp_path / "out" / "aggregates" / "demos-w2.json").read_text())
    assert aggregate["config"] == "demos-w2" and aggregate["final_mean"] == 700.0
    assert (
        aggregate["threshold"] == 650 and aggregate["per_seed"][0]["steps_to_threshold"] == 10_000
    )


def test_report_reads_a_sweeps_final_evaluation(tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks.learning_report import read_curve

    run = fake_run(tmp_path / "scratch-w2", None, [(5_000, 100.0), (10_000, 450.0)])
    final = {"agent_steps": 10_000, "episodes": 100, "mean": 470.0, "std": 30.0, "stderr": 3.0}
    (run / "final_eval.json").write_text(json.dumps(final))  # launch.py eval --json
    assert read_curve(run)[-1]["eval_return_mean"] == 470.0
    assert read_curve(run)[-1]["eval_return_std"] == 30.0


def test_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    script = ROOT / "benchmarks" / "gpu_check.sh"
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    proc = subprocess.run(
        ["bash", str(script), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "gpu_check: no CUDA device visible to torch; run this on a GPU machine"
    )
    assert not (tmp_path / "out").exists()


def test_set_overrides_nested_fields_with_their_types():
    from benchmarks.overrides import override

    cfg = override(
        carracing_cpu_preset(),
        ["agent.alpha_lr=1e-3", "replay.capacity=5e4", "agent.fast_path=false", "seed=3"],
    )
    assert cfg.agent.alpha_lr == 1e-3 and cfg.replay.capacity == 50_000
    assert cfg.agent.fast_path is False and cfg.seed == 3
    assert cfg.agent.hidden_dim == carracing_cpu_preset().agent.hidden_dim
    for bad, message in [
        ("agent.nope=1", "no config field 'agent.nope'"),
        ("agent=1", "'agent' is a group of fields, not one"),
        ("replay.capacity=1.5", "replay.capacity takes an integer, got '1.5'"),
        ("agent.fast_path=yes", "agent.fast_path takes true or false, got 'yes'"),
        ("seed", "expected FIELD=VALUE, got 'seed'"),
    ]:
        with pytest.raises(ValueError) as info:
            override(cfg, [bad])
        assert str(info.value) == message


def test_dmc_tasks_run_100k_env_steps_against_sac_ae_published_score():
    from benchmarks.learning import PUBLISHED_100K, targets

    assert targets("dmc:cartpole-swingup", "scratch", 8, 100_000) == (311.0, 12_500)
    assert targets("dmc:walker-walk", "scratch", 2, 100_000) == (394.0, 50_000)
    assert targets("dmc:reacher-easy", "scratch", 4, 100_000) == (274.0, 25_000)
    assert targets("dmc:acrobot-swingup", "scratch", 4, 100_001) == (0.0, 25_001)
    assert PUBLISHED_100K["dmc:ball_in_cup-catch"] == {"SAC+AE": 391, "CURL": 769, "DrQ": 913}
    assert targets("CarRacing", "demos", 3, 100_000) == (650.0, 50_000)
