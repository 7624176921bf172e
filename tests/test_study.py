"""Aggregates over seeds without Ray (distributed_sac/run/study.py, benchmarks/aggregate.py): IQM
and bootstrap intervals against hand and scipy values, evaluation points, the JSON and CSV."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from distributed_sac.config.presets import carracing_cpu_preset, dmc_cpu_preset, tiny_preset
from distributed_sac.run import seed_stats, study, study_files

REQUIRED_KEYS = {
    "env",
    "config",
    "num_seeds",
    "agent_steps",
    "final_mean",
    "final_iqm",
    "final_ci95",
    "per_seed",
}


def fake_run(
    path: Path,
    seed: int,
    evals: list[tuple[int, float]],
    cfg=None,
    config: str | None = "demos",
    final_eval: dict | None = None,
) -> Path:
    """A run directory as a sweep trial leaves it: config.json, metrics.jsonl with one record
    per evaluation (and one without), trial.json, optionally final_eval.json."""
    cfg = dataclasses.replace(cfg or tiny_preset(), seed=seed, run_dir=str(path))
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({**dataclasses.asdict(cfg), "meta": {}}))
    lines = [{"agent_steps": 10, "eval_return_mean": None}]
    lines += [
        {"agent_steps": steps + 3, "eval_agent_steps": steps, "eval_return_mean": value}
        for steps, value in evals
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if config is not None:
        trial = {"config": config, "overrides": {"agent.alpha_lr": "1e-3"}, "labels": {}}
        (path / "trial.json").write_text(json.dumps(trial))
    if final_eval is not None:
        (path / "final_eval.json").write_text(json.dumps(final_eval))
    return path


def test_iqm_is_the_mean_of_the_middle_half():
    values = [100.0, 1.0, 7.0, 3.0, 2.0, 6.0, -50.0, 5.0]  # sorted: -50 1 2 3 5 6 7 100
    assert seed_stats.iqm(values) == pytest.approx((2 + 3 + 5 + 6) / 4)
    assert seed_stats.iqm(values) == pytest.approx(stats.trim_mean(values, 0.25))
    assert seed_stats.iqm([4.0, 8.0]) == 6.0  # too few to trim: the mean


def test_bootstrap_interval_matches_scipy_and_hand_values():
    x = np.array([3.0, 9.0, 4.0, 12.0, 7.0])
    expected = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=seed_stats.BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed_stats.BOOTSTRAP_SEED),
    ).confidence_interval
    assert seed_stats.stratified_bootstrap_ci([x]) == pytest.approx([expected.low, expected.high])
    # Two seeds: a quarter of the resamples repeat the lower one, a quarter the upper one, so
    # the 2.5 % and 97.5 % percentiles are the two values themselves.
    assert seed_stats.stratified_bootstrap_ci([[-480.0, -848.0]]) == [-848.0, -480.0]
    assert seed_stats.stratified_bootstrap_ci([[5.0, 5.0, 5.0]]) == [5.0, 5.0]
    assert seed_stats.stratified_bootstrap_ci([[5.0]]) is None  # one seed: no interval


def test_stratified_bootstrap_resamples_each_stratum_on_its_own():
    a, b = np.array([1.0, 2.0, 5.0]), np.array([10.0, 12.0, 11.0, 15.0])

    def pooled_iqm(*samples, axis=-1):
        return stats.trim_mean(np.concatenate(samples, axis=axis), 0.25, axis=axis)

    expected = stats.bootstrap(
        (a, b),
        pooled_iqm,
        n_resamples=seed_stats.BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed_stats.BOOTSTRAP_SEED),
    ).confidence_interval
    got = seed_stats.stratified_bootstrap_ci([a, b], "iqm")
    assert got == pytest.approx([expected.low, expected.high])


def test_aggregate_by_evaluation_point_keys_and_files(tmp_path):
    # eval.every 200 in the tiny preset: evaluations bin to the multiple at or below them.
    runs = [
        fake_run(tmp_path / "s0", 0, [(203, -900.0), (410, -600.0), (600, -300.0)]),
        fake_run(tmp_path / "s1", 1, [(215, -800.0), (401, -700.0), (640, -200.0)]),
        # seed 2 evaluated 400 twice (resumed before its checkpoint): the later one counts.
        fake_run(tmp_path / "s2", 2, [(230, -1000.0), (400, -950.0), (420, -500.0)]),
    ]
    summary = study.aggregate([study.read_run(p) for p in runs], "demos")
    assert REQUIRED_KEYS <= set(summary)
    assert summary["env"] == "VisualPendulum" and summary["config"] == "demos"
    assert summary["num_seeds"] == 3 and summary["seeds"] == [0, 1, 2]
    points = {p["agent_steps"]: p for p in summary["points"]}
    assert sorted(points) == [200, 400, 600]
    at_400 = [-600.0, -700.0, -500.0]
    assert points[400]["mean"] == pytest.approx(np.mean(at_400))
    assert points[400]["std"] == pytest.approx(np.std(at_400, ddof=1))
    assert points[400]["iqm"] == pytest.approx(stats.trim_mean(at_400, 0.25))
    assert points[600]["num_seeds"] == 2 and points[600]["ci95"] == [-300.0, -200.0]
    # Final point: each seed's last; seed 2 stopped at 400.
    finals = [-300.0, -200.0, -500.0]
    assert summary["agent_steps"] == 600
    assert summary["final_mean"] == pytest.approx(np.mean(finals))
    assert summary["final_iqm"] == pytest.approx(stats.trim_mean(finals, 0.25))
    assert summary["final_ci95"] == pytest.approx(seed_stats.stratified_bootstrap_ci([finals]))
    assert [s["final_return"] for s in summary["per_seed"]] == finals
    assert [s["agent_steps"] for s in summary["per_seed"]] == [600, 600, 400]
    # VisualPendulum: this project's -250 target (it has no solved threshold).
    assert summary["threshold"] == -250.0
    assert [s["steps_to_threshold"] for s in summary["per_seed"]] == [None, 640, None]
    assert summary["steps_to_threshold_median"] is None  # two of three never reached it
    assert summary["overrides"] == {"agent.alpha_lr": "1e-3"}

    out = study_files.write([summary], tmp_path / "out")
    written = json.loads((out / "demos.json").read_text())
    assert written["final_ci95"] == pytest.approx(summary["final_ci95"])
    with open(out / "demos.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == study_files.CSV_FIELDS
    assert [int(r["agent_steps"]) for r in rows] == [200, 400, 600]
    assert float(rows[1]["mean"]) == pytest.approx(np.mean(at_400))
    assert rows[0]["std"] != "" and float(rows[2]["ci95_low"]) == -300.0
    assert json.loads((out / "summary.json").read_text())[0]["config"] == "demos"
    if importlib.util.find_spec("matplotlib"):
        assert (out / "curves.png").stat().st_size > 0


def final_eval(mean: float, solved: bool | None) -> dict:
    return {
        "episodes": 100,
        "seed": 2**33,
        "mean": mean,
        "std": 5.0,
        "stderr": 0.5,
        "agent_steps": 50_000,
        "threshold": 900.0,
        "at_or_above_threshold": bool(solved),
        "solved": solved,
    }


def test_carracing_threshold_steps_median_and_held_out_evaluations(tmp_path):
    car = carracing_cpu_preset()  # eval.every 5000
    runs = [
        fake_run(tmp_path / "a", 0, [(5000, 700.0), (10_100, 905.0)], car, final_eval=None),
        fake_run(tmp_path / "b", 1, [(5000, 910.0), (10_000, 915.0)], car, final_eval=None),
        fake_run(tmp_path / "c", 2, [(5000, 300.0), (10_000, 600.0)], car, final_eval=None),
    ]
    for path, mean in zip(runs[:2], (913.0, 895.0), strict=True):
        (path / "final_eval.json").write_text(json.dumps(final_eval(mean, mean >= 900)))
    summary = study.aggregate([study.read_run(p) for p in runs], "demos")
    assert summary["threshold"] == 900.0 and "solved" in summary["threshold_source"]
    assert [s["steps_to_threshold"] for s in summary["per_seed"]] == [10_100, 5000, None]
    assert summary["steps_to_threshold_median"] == 10_100  # median of 5000, 10100, never
    assert summary["seeds_reaching_threshold"] == 2
    held_out = summary["final_eval"]
    assert held_out["num_seeds"] == 2 and held_out["mean"] == pytest.approx(904.0)
    assert held_out["seeds_solved"] == 1 and held_out["threshold"] == 900.0
    assert summary["per_seed"][0]["final_eval"]["solved"] is True
    assert summary["per_seed"][2]["final_eval"] is None
    assert summary["per_seed"][0]["eval_100"] == summary["per_seed"][0]["final_eval"]  # 100 eps
    assert summary["eval_100"]["mean"] == pytest.approx(904.0)
    pendulum = fake_run(tmp_path / "p", 5, [])
    with pytest.raises(ValueError, match="mixes envs"):
        study.aggregate([study.read_run(runs[0]), study.read_run(pendulum)], "x")


def test_a_100_episode_evaluation_beside_a_10_episode_one_is_per_seeds_eval_100(tmp_path):
    ten = {**final_eval(500.0, None), "episodes": 10, "threshold": None}
    runs = [
        fake_run(tmp_path / f"s{s}", s, [(2500, 100.0)], dmc_cpu_preset(), final_eval=ten)
        for s in range(3)
    ]
    for path, mean in zip(runs[:2], (443.0, 369.0), strict=True):
        hundred = {**ten, "episodes": 100, "mean": mean}
        (path / "final_eval_100.json").write_text(json.dumps(hundred))
    summary = study.aggregate([study.read_run(p) for p in runs], "dmc-cpu")
    assert [s["final_eval"]["episodes"] for s in summary["per_seed"]] == [10, 10, 10]
    assert [s["eval_100"] and s["eval_100"]["mean"] for s in summary["per_seed"]] == [
        443.0,
        369.0,
        None,
    ]
    assert summary["eval_100"]["num_seeds"] == 2 and summary["eval_100"]["episodes"] == [100, 100]
    assert summary["eval_100"]["mean"] == pytest.approx(406.0)
    assert summary["final_eval"]["mean"] == pytest.approx(500.0)
    (runs[2] / "final_eval_100.json").write_text(json.dumps(ten))
    with pytest.raises(ValueError, match="final_eval_100.json: 10 episodes, not 100"):
        study.read_run(runs[2])


def test_aggregate_command_rebuilds_from_run_directories(tmp_path, capsys):
    from benchmarks import aggregate

    runs = [
        fake_run(tmp_path / "r0", 0, [(200, -900.0), (400, -400.0)], config=None),
        fake_run(tmp_path / "r1", 1, [(200, -700.0), (400, -300.0)], config=None),
    ]
    assert aggregate.main([*map(str, runs), "--out", str(tmp_path / "x")]) == 2
    assert "no trial.json naming its configuration; pass --name" in capsys.readouterr().err
    out = tmp_path / "agg"
    assert aggregate.main([*map(str, runs), "--name", "scratch", "--out", str(out)]) == 0
    summary = json.loads((out / "scratch.json").read_text())
    assert summary["final_mean"] == pytest.approx(-350.0)
    assert summary["final_ci95"] == [-400.0, -300.0]
    assert "scratch" in capsys.readouterr().out


def test_a_dmc_configuration_counts_env_steps(tmp_path):
    from distributed_sac.config.presets import dmc_cpu_preset
    from distributed_sac.envs.registry import with_env_defaults

    cfg = with_env_defaults(dmc_cpu_preset())
    assert cfg.wrappers.action_repeat == 8
    runs = [
        study.read_run(fake_run(tmp_path / f"s{s}", s, [(2500, 100.0 + s), (5000, 300.0 + s)], cfg))
        for s in range(3)
    ]
    summary = study.aggregate(runs, "dmc-cpu")
    assert summary["env"] == "dmc:cartpole-swingup"
    assert summary["agent_steps"] == 5000 and summary["env_steps"] == 40_000
    assert summary["action_repeat"] == 8
    assert [p["env_steps"] for p in summary["points"]] == [20_000, 40_000]
    assert summary["final_mean"] == pytest.approx(301.0)
    assert summary["threshold"] is None
    other = dataclasses.replace(cfg, wrappers=dataclasses.replace(cfg.wrappers, action_repeat=4))
    mixed = runs + [study.read_run(fake_run(tmp_path / "s9", 9, [(2500, 1.0)], other))]
    with pytest.raises(ValueError, match="mixes action repeats"):
        study.aggregate(mixed, "dmc-cpu")
    out = study_files.write([summary], tmp_path / "agg")
    rows = list(csv.DictReader(open(out / "dmc-cpu.csv")))
    assert [int(r["env_steps"]) for r in rows] == [20_000, 40_000]
