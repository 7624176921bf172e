"""`launch.py sweep` without Ray: configurations from --grid and --sample parsed by `train`'s
own parsing, seeds, run directories, one-line errors before Ray or torch, the trial bundles."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import launch
from distributed_sac.config.presets import tiny_preset
from distributed_sac.run.sweep_plan import SweepPlan

REPO = Path(__file__).resolve().parents[1]
LIGHT = (
    "import sys, launch; code = launch.main(sys.argv[1:]); "
    "heavy = sorted({'ray', 'torch', 'gymnasium'} & set(sys.modules)); "
    "print('heavy imports:', heavy, file=sys.stderr); sys.exit(code)"
)


def plan(tmp_path, *args: str):
    return launch.plan_sweep(["--preset", "tiny", "--run-dir", str(tmp_path / "sw"), *args])[0]


def test_grid_crossed_with_seeds_through_trains_parsing(tmp_path):
    sweep = plan(
        tmp_path,
        "--grid",
        "agent.alpha_lr=1e-3,1e-4",
        "agent.fast-path=false",
        "--num-seeds",
        "2",
        "--total-steps",
        "150",
        "--wandb",
        "disabled",
    )
    names = [t.name for t in sweep.trials]
    first = "agent.alpha_lr=1e-3,agent.fast_path=false"
    assert names == [
        f"{first}-seed0",
        f"{first}-seed1",
        "agent.alpha_lr=1e-4,agent.fast_path=false-seed0",
        "agent.alpha_lr=1e-4,agent.fast_path=false-seed1",
    ]
    t = sweep.trials[1]
    assert t.config["agent"]["alpha_lr"] == 1e-3 and t.config["agent"]["fast_path"] is False
    assert t.config["seed"] == 1 and t.config["total_steps"] == 150
    assert t.config["agent"]["hidden_dim"] == tiny_preset().agent.hidden_dim  # the preset's
    assert t.run_dir == str((tmp_path / "sw" / first / "seed1").resolve())
    assert t.config["run_dir"] == t.run_dir and t.config["num_workers"] == 2
    assert t.config["wandb_group"] == "sw" and t.config["wandb_name"] == t.name
    assert tuple(t.config["wandb_tags"]) == ("VisualPendulum", "tiny", first)
    assert t.meta["overrides"] == {"agent.alpha_lr": "1e-3", "agent.fast_path": "false"}
    assert t.meta["preset"] == "tiny" and "--grid" in t.meta["command"]
    assert [c["name"] for c in sweep.configurations] == [
        first,
        "agent.alpha_lr=1e-4,agent.fast_path=false",
    ]


def test_seeds_samples_names_and_the_saved_plan(tmp_path):
    args = ["--seeds", "3", "7", "--sample", "agent.alpha_lr=loguniform:1e-4:1e-2"]
    args += ["replay.min_size=randint:32:64", "--num-samples", "3", "--name", "lr"]
    sweep = plan(tmp_path, *args, "--final-eval-episodes", "5", "--max-failures", "2")
    again = plan(tmp_path, *args)
    assert [t.name for t in sweep.trials] == [t.name for t in again.trials]  # seeded draws
    assert [t.seed for t in sweep.trials] == [3, 7] * 3
    assert len(sweep.configurations) == 3
    for conf in sweep.configurations:
        lr = float(conf["overrides"]["agent.alpha_lr"])
        assert 1e-4 <= lr <= 1e-2 and 32 <= int(conf["overrides"]["replay.min_size"]) <= 64
        assert conf["name"].startswith("lr,agent.alpha_lr=")
    t = sweep.trials[0]
    assert t.final_eval_episodes == 5 and sweep.max_failures == 2
    drawn = sweep.configurations[0]["overrides"]["agent.alpha_lr"]
    assert t.config["agent"]["alpha_lr"] == float(drawn)
    sweep.path.mkdir(parents=True)
    sweep.save()
    loaded = SweepPlan.load(sweep.path)
    assert loaded.trials == sweep.trials and loaded.max_failures == 2
    single = plan(tmp_path / "b")
    assert [t.name for t in single.trials] == ["tiny-seed0"]  # the preset names it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "agent.nope=1"], "--grid agent.nope=1: no config field 'agent.nope'"),
        (["--grid", "agent.alpha_lr=-1"], "--agent.alpha-lr -1.0: must be a number > 0"),
        (["--grid", "agent.batch_size=1.5"], "configuration agent.batch_size=1.5"),
        (["--grid", "seed=1,2"], "--seed is set by --seeds or --num-seeds"),
        (["--grid", "agent.alpha_lr"], "expected FIELD=VALUES"),
        (["--grid", "agent.alpha_lr=1,1"], "a value is empty or repeated"),
        (["--grid", "agent.fast_path=maybe"], "--agent.fast-path maybe: must be true or false"),
        (["--agent.tau", "0.1", "--grid", "agent.tau=0.2"], "also given as a flag"),
        (["--num-seeds", "0"], "--num-seeds 0: must be an integer >= 1"),
        (["--seeds", "1", "1"], "a seed is repeated"),
        (["--seeds", "1", "--num-seeds", "2"], "give one of them"),
        (["--seeds", "1", "--seed", "2"], "--seeds names every root seed; drop --seed"),
        (["--sample", "agent.tau=uniform:1:0", "--num-samples", "2"], "expected loguniform"),
        (["--num-samples", "2"], "--sample and --num-samples go together"),
        (["--max-failures", "-1"], "--max-failures -1: must be an integer >= 0"),
        (["--total-steps", "0"], "--total-steps 0: must be an integer >= 1"),
    ],
)
def test_bad_input_is_one_usage_error(tmp_path, args, message):
    # ValueError: launch.main prints `error: ...` and exits 2 for each (a usage error).
    with pytest.raises(ValueError, match=re.escape(message)):
        plan(tmp_path, *args)
    assert not (tmp_path / "sw").exists()


def test_resume_takes_only_the_sweep_and_an_address(tmp_path):
    sweep = plan(tmp_path)
    sweep.path.mkdir(parents=True)
    sweep.save()
    loaded, resume, address = launch.plan_sweep(["--resume", str(sweep.path)])
    assert resume and address is None and loaded.trials == sweep.trials
    _, _, address = launch.plan_sweep(["--resume", str(sweep.path), "--address", "auto"])
    assert address == "auto"
    with pytest.raises(launch.UsageError, match="drop --grid"):
        launch.plan_sweep(["--resume", str(sweep.path), "--grid", "agent.tau=0.1"])
    with pytest.raises(launch.UsageError, match="already holds a sweep; pass --resume"):
        plan(tmp_path)
    with pytest.raises(ValueError, match="not a sweep directory"):
        launch.plan_sweep(["--resume", str(tmp_path)])


def test_a_real_sweep_process_refuses_bad_input_before_ray_or_torch(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", LIGHT, "sweep", "--preset", "tiny", "--run-dir", str(tmp_path / "s")]
        + ["--grid", "agent.alpha_lr=1e-3,oops"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "configuration agent.alpha_lr=oops" in errors[0], proc.stderr
    assert "heavy imports: []" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s").exists()


def test_trial_bundles_reserve_every_actor_of_the_run():
    import dataclasses

    from distributed_sac.remote import placement

    cfg = dataclasses.replace(tiny_preset(), num_workers=3, learner_cpus=0.5)
    bundles = placement.trial_bundles(cfg, "cuda")
    assert bundles[0] == {"CPU": placement.DRIVER_CPUS}
    assert bundles[placement.LEARNER_BUNDLE] == {"CPU": 0.5 + 1 + 1, "GPU": 1.0}  # + replay, eval
    assert bundles[placement.FIRST_WORKER_BUNDLE :] == [{"CPU": 1.0}] * 3
    no_eval = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, every=0))
    assert placement.trial_bundles(no_eval, "cpu")[1] == {"CPU": 1.5}
    assert placement.actor_name("replay") == "replay"  # outside a trial: the names as ever


def test_tune_gets_each_records_numbers_and_the_newest_evaluation():
    from distributed_sac.remote.sweep import tune_metrics

    last: dict = {}
    first = tune_metrics({"time": 5.0, "agent_steps": 50, "episode_return_mean": None}, last)
    assert first == {"agent_steps": 50}
    record = {"agent_steps": 100, "eval_return_mean": -480.5, "eval_agent_steps": 98}
    record |= {"eval_video": "v.mp4", "loss/critic": float("nan"), "replay_ratio_held": 1.0}
    assert tune_metrics(record, last) == {
        "agent_steps": 100,
        "eval_return_mean": -480.5,
        "eval_agent_steps": 98,
        "replay_ratio_held": 1.0,
        "eval_return_last": -480.5,
        "eval_agent_steps_last": 98,
    }
    assert tune_metrics({"agent_steps": 150}, last)["eval_return_last"] == -480.5


def test_a_finished_trial_run_again_only_reports(tmp_path, monkeypatch):
    """Tune's state lags its trials by up to a checkpoint period: a trial it starts again after
    it finished reports its last record and leaves its run as it was."""
    import json

    from distributed_sac.remote import sweep

    t = plan(tmp_path).trials[0]
    run = Path(t.run_dir)
    run.mkdir(parents=True)
    (run / "trial.json").write_text(json.dumps({"status": "finished", "attempts": 1}))
    (run / "metrics.jsonl").write_text(
        json.dumps({"agent_steps": 400, "eval_return_mean": -300.0, "eval_agent_steps": 400})
        + "\n"
        + json.dumps({"agent_steps": 400, "learner_updates": 336})
        + "\n"
    )
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    reported = []
    monkeypatch.setattr(sweep.tune, "report", reported.append)
    sweep.run_trial({"trial": t.to_dict()})
    assert reported == [
        {
            "agent_steps": 400,
            "learner_updates": 336,
            "eval_return_last": -300.0,
            "eval_agent_steps_last": 400,
        }
    ]
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.name != "log.txt"}
    assert after == before
