"""What a run records and refuses, checked without Ray: config.json's provenance, --config,
resume's changed flags, the corrupt-checkpoint fallback, the driver's final records."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
from pathlib import Path

import pytest

import launch
from distributed_sac import __version__
from distributed_sac.config.fields import RETIRED_FIELDS, ConfigError, validate
from distributed_sac.config.presets import tiny_preset
from distributed_sac.remote import session
from distributed_sac.run.checkpoint import CheckpointError
from distributed_sac.run.run_dir import RunDir, read_config, save_run_checkpoint
from tests.conftest import run_payload

CFG = dataclasses.replace(tiny_preset(), num_workers=1, wandb="disabled")


def test_config_json_records_preset_command_version_commit_and_wandb_defaults(tmp_path):
    cfg = dataclasses.replace(CFG, run_dir=str(tmp_path / "r1"))
    plan = session.prepare(cfg, None, meta={"preset": "tiny", "command": "launch.py train x"})
    run = RunDir.create(plan.run.path, plan.cfg, plan.meta)
    saved, meta = read_config(run.path / "config.json")
    assert saved == plan.cfg
    assert (meta["preset"], meta["command"], meta["version"]) == (
        "tiny",
        "launch.py train x",
        __version__,
    )
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    if head.returncode == 0:
        assert meta["git_commit"] == head.stdout.strip()
    assert (saved.wandb_name, saved.wandb_group, saved.wandb_tags) == (
        "r1",
        "VisualPendulum",
        ("VisualPendulum", "tiny"),
    )


def test_config_json_says_which_wandb_mode_ran(tmp_path):
    cfg = dataclasses.replace(CFG, run_dir=str(tmp_path / "r"), wandb="online")
    plan = session.prepare(cfg, None, meta={})
    run = RunDir.create(plan.run.path, plan.cfg, plan.meta)
    session.record_wandb_mode(run, plan, "offline")
    saved, meta = run.read_config()
    assert (saved.wandb, meta["wandb_requested"]) == ("offline", "online")


def test_a_run_starts_again_from_its_config_json(tmp_path):
    cfg = dataclasses.replace(CFG, run_dir=str(tmp_path / "old"), seed=7)
    plan = session.prepare(cfg, None, meta={"preset": "tiny"})
    run = RunDir.create(plan.run.path, plan.cfg, plan.meta)
    cmd = launch.parse_train(["--config", str(run.path / "config.json"), "--total-steps", "9"])
    assert cmd.preset == "tiny"
    assert cmd.config.run_dir == "" and cmd.config.wandb_name is None  # a new run
    expected = dataclasses.replace(plan.cfg, run_dir="", wandb_name=None, total_steps=9)
    assert cmd.config == expected


def _with_retired_field(run: RunDir, section: str, name: str) -> Path:
    """The run's config.json as an older version wrote it, with ``section.name`` in it."""
    path = run.path / "config.json"
    data = json.loads(path.read_text())
    data[section][name] = 16
    path.write_text(json.dumps(data))
    return path


def test_an_older_config_json_with_a_retired_field_loads(tmp_path, resumable_run):
    assert "rollout.weights_poll_every" in RETIRED_FIELDS
    path = _with_retired_field(resumable_run, "rollout", "weights_poll_every")
    saved, _ = resumable_run.read_config()
    cmd = launch.parse_train(["--config", str(path), "--run-dir", str(tmp_path / "new")])
    assert cmd.config.rollout == saved.rollout == CFG.rollout  # validated on the way
    plan = session.prepare(CFG, str(resumable_run.path), given=set())  # --resume reads it too
    assert plan.cfg == saved
    # A run directory of an earlier version (docs/results), read as --config reads it.
    old = Path(launch.__file__).parent / "docs/results/dmc_reacher_easy_seed0/config.json"
    assert "weights_poll_every" in old.read_text()
    validate(launch.parse_train(["--config", str(old)], build_env=False).config)


def test_an_unknown_config_json_field_that_was_never_retired_is_refused(resumable_run, capsys):
    path = _with_retired_field(resumable_run, "rollout", "weights_poll_often")
    assert launch.main(["train", "--config", str(path)]) == 2
    assert "weights_poll_often" in capsys.readouterr().err


def test_config_from_a_file_that_is_not_one_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    assert launch.main(["train", "--config", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.fixture
def resumable_run(tmp_path):
    cfg = dataclasses.replace(CFG, run_dir=str(tmp_path / "run"))
    plan = session.prepare(cfg, None, meta={"preset": "tiny"})
    return RunDir.create(plan.run.path, plan.cfg, plan.meta)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--agent.actor-lr", "0.1"), ("--replay.replay-ratio", "4.0"), ("--seed", "3")],
)
def test_resume_refuses_a_changed_learning_flag(resumable_run, capsys, flag, value):
    code = launch.main(["train", "--resume", str(resumable_run.path), flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"error: {flag} {value}: a resumed run keeps"), err


def test_resume_takes_where_and_how_fast_and_keeps_the_rest(resumable_run):
    argv = ["--resume", str(resumable_run.path), "--total-steps", "999", "--agent.tau", "0.0075"]
    cmd = launch.parse_train(argv)
    given = launch.given_fields(argv)
    assert given == {"total_steps", "agent.tau"}
    plan = session.prepare(cmd.config, cmd.resume, given=given)
    saved, _ = resumable_run.read_config()
    assert plan.cfg == dataclasses.replace(saved, total_steps=999)  # tau given at its saved value
    assert plan.meta["resumes"][-1]["version"] == __version__


def test_negated_bool_flags_count_as_given():
    assert launch.given_fields(["--agent.no-fast-path", "--eval.every=5"]) == {
        "agent.fast_path",
        "eval.every",
    }


def _checkpoint(run: RunDir, steps: int, cfg=CFG) -> Path:
    return save_run_checkpoint(run.checkpoints, steps, run_payload({}), cfg)


def test_corrupt_newest_checkpoint_falls_back_to_the_newest_intact_one(resumable_run, caplog):
    older, old, newest = (_checkpoint(resumable_run, s) for s in (100, 200, 300))
    newest.write_bytes(newest.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="distributed_sac"):
        plan = session.prepare(CFG, str(resumable_run.path), given=set())
    assert plan.checkpoint[0] == old
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert newest.name in warning and old.name in warning


def test_no_intact_checkpoint_fails_before_ray(resumable_run, capsys):
    path = _checkpoint(resumable_run, 100)
    path.write_bytes(b"garbage")
    assert launch.main(["train", "--resume", str(resumable_run.path)]) == 2
    err = capsys.readouterr().err
    assert "no intact checkpoint" in err and path.name in err


def test_checkpoint_of_another_config_is_refused_not_skipped(resumable_run):
    _checkpoint(resumable_run, 100)
    other = dataclasses.replace(CFG, agent=dataclasses.replace(CFG.agent, hidden_dim=64))
    _checkpoint(resumable_run, 200, other)
    with pytest.raises(CheckpointError, match="different config"):
        session.prepare(CFG, str(resumable_run.path), given=set())


def test_resume_with_changed_preset_is_refused(resumable_run):
    with pytest.raises(ConfigError, match="--preset full: a resumed run keeps its preset tiny"):
        session.prepare(CFG, str(resumable_run.path), given=set(), meta={"preset": "full"})


def test_wandb_run_has_name_group_and_tags(tmp_path):
    from distributed_sac.run.wandb_logger import WandbLogger
    from tests.wandb_records import read_wandb_log

    logger = WandbLogger(
        "offline", "p", None, tmp_path, {}, name="run-7", group="VisualPendulum", tags=("a", "b")
    )
    logger.finish()
    (log_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    run = next(r.run for r in read_wandb_log(log_file) if r.WhichOneof("record_type") == "run")
    assert (run.display_name, run.run_group, list(run.tags)) == (
        "run-7",
        "VisualPendulum",
        ["a", "b"],
    )
