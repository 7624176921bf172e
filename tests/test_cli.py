"""Bad input on the command line: a one-line error, a non-zero exit, no traceback, no run dir."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "SDL_VIDEODRIVER": "dummy", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}


def launch_process(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        cwd=REPO,
    )


@pytest.fixture
def launch(capsys):
    """`launch.main` in this process (fast); returns what a subprocess run would."""
    import launch as cli

    def run(*args: str) -> subprocess.CompletedProcess:
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--env", "Atari"], ["'Atari'", "--env"]),
        (["--num-workers", "0"], ["--num-workers 0: must be an integer >= 1"]),
        (["--total-steps", "-5"], ["--total-steps -5: must be an integer >= 1"]),
        (
            ["--agent.batch-size", "512", "--replay.capacity", "100"],
            ["--agent.batch-size 512", "100 (--replay.capacity)"],
        ),
        (["--wrappers.pendulum-crop", "600"], ["--wrappers.pendulum-crop 600", "[32 ", "500]"]),
        (["--wrappers.image-size", "100"], ["--wrappers.image-size 100", "[16, 84]"]),
        (["--wrappers.action-repeat", "0"], ["--wrappers.action-repeat 0", ">= 1"]),
        (["--wrappers.frame-stack", "0"], ["--wrappers.frame-stack 0"]),
        (["--replay.demo-fraction", "1.5"], ["--replay.demo-fraction 1.5", "[0, 1)"]),
        (["--run-dir", "/proc/x/run"], ["--run-dir /proc/x/run", "not writable"]),
        (["--device", "cuda"], ["--device cuda"]),
        (["--address", "127.0.0.1:1"], ["cannot reach Ray at 127.0.0.1:1"]),
        (["--pretrain-updates", "5"], ["--pretrain-updates needs --demos"]),
        (["--demos", "/nonexistent/demo.npz"], ["/nonexistent/demo.npz"]),
    ],
)
def test_bad_train_input(launch, tmp_path, args, needles):
    run_dir = tmp_path / "run"
    proc = launch("train", "--preset", "tiny", "--run-dir", str(run_dir), *args)
    assert_one_line_error(proc, *needles)
    assert not run_dir.exists()


def test_existing_run_dir_needs_resume(launch, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"env": "VisualPendulum"}))
    proc = launch("train", "--preset", "tiny", "--run-dir", str(run_dir))
    assert_one_line_error(proc, "already holds a run", "--resume")


def test_resume_of_a_missing_run(launch, tmp_path):
    proc = launch("train", "--resume", str(tmp_path / "nothing"))
    assert_one_line_error(proc, "not a run directory")


def test_resume_with_demos_is_refused(launch, tmp_path):
    # The run's replay keeps its own demonstrations; new ones would pretrain again.
    proc = launch("train", "--resume", str(tmp_path / "run"), "--demos", str(tmp_path))
    assert_one_line_error(proc, "--demos: a resumed run keeps the demonstrations")
    assert proc.returncode == 2


def test_eval_of_a_missing_path(launch, tmp_path):
    proc = launch("eval", str(tmp_path / "nothing"))
    assert_one_line_error(proc)


def test_unknown_command(launch):
    proc = launch("fly")
    assert proc.returncode == 2 and "usage: launch.py" in proc.stderr


LIGHT = (
    "import sys, launch; code = launch.main(sys.argv[1:]); "
    "heavy = sorted({'ray', 'torch', 'gymnasium'} & set(sys.modules)); "
    "print('heavy imports:', heavy, file=sys.stderr); sys.exit(code)"
)


@pytest.mark.parametrize(
    "args",
    [
        ["--wrappers.image-size", "100"],
        ["--wrappers.action-repeat", "0"],
        ["--wrappers.frame-stack", "0"],
        ["--replay.demo-fraction", "1.5"],
        ["--agent.actor-lr", "-1"],
        ["--nonsense"],
    ],
)
def test_usage_errors_exit_2_before_ray_or_torch_is_imported(tmp_path, args):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            LIGHT,
            "train",
            "--preset",
            "tiny",
            "--run-dir",
            str(run_dir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
        cwd=REPO,
    )
    assert_one_line_error(proc, args[0])
    assert proc.returncode == 2
    assert "heavy imports: []" in proc.stderr
    assert not run_dir.exists()


def test_a_real_process_exits_2_with_one_line(tmp_path):
    proc = launch_process("train", "--preset", "tiny", "--num-workers", "0")
    assert_one_line_error(proc, "--num-workers 0: must be an integer >= 1")
    assert proc.returncode == 2


def test_help_lists_config_fields_with_their_docstrings():
    proc = launch_process("train", "--help")
    assert proc.returncode == 0
    for flag in (
        "--env",
        "--num-workers",
        "--envs-per-worker",
        "--address",
        "--total-steps",
        "--run-dir",
        "--seed",
        "--device",
        "--preset",
        "--agent.batch-size",
        "--replay.capacity",
        "--resume",
        "--demos",
        "--pretrain-updates",
    ):
        assert flag in proc.stdout, flag
    assert "Transitions per learner update." in proc.stdout


def test_top_level_help_lists_and_describes_the_commands():
    proc = launch_process("--help")
    assert proc.returncode == 0
    for name, text in (
        ("train", "Train SAC-AE with distributed env workers"),
        ("sweep", "Run seeds crossed with configurations as Ray Tune trials"),
        ("eval", "Run a trained policy deterministically"),
        ("record", "Drive CarRacing in a window"),
    ):
        assert re.search(rf"^  {name} +{re.escape(text)}", proc.stdout, re.M), proc.stdout


def test_help_prints_each_default_once_and_cites_no_missing_file():
    text = re.sub(r"[│\s]+", " ", launch_process("train", "--help").stdout)
    cited = set(re.findall(r"[\w./-]+\.(?:md|py|yaml)\b", text))
    assert "docs/design.md" in cited
    missing = [path for path in cited if not (REPO / path).exists()]
    assert not missing, missing
    assert "the seed" not in text
    # tyro appends "(default: X)"; a docstring that also states the default says it twice.
    for entry in re.split(r" (?=--[a-z])", text):
        assert entry.count("(default:") <= 1, entry
    assert "default" not in re.sub(r"\(default: [^)]*\)", "", text)


@pytest.mark.parametrize("preset", ["full", "tiny", "pendulum-cpu", "carracing-cpu"])
def test_every_preset_parses_and_flags_override_it(preset):
    import dataclasses

    import launch as cli
    from distributed_sac.config.presets import PRESETS

    cmd = cli.parse_train(["--preset", preset, "--total-steps", "123", "--agent.tau", "0.02"])
    expected = PRESETS[preset]()
    assert cmd.preset == preset
    assert cmd.config.total_steps == 123
    assert cmd.config.agent.tau == 0.02
    assert cmd.config.wrappers == expected.wrappers
    assert dataclasses.replace(cmd.config.agent, tau=expected.agent.tau) == expected.agent


def test_preset_choices_match_the_presets():
    import typing

    import launch as cli
    from distributed_sac.config.presets import PRESETS

    hint = typing.get_type_hints(cli.TrainCommand, include_extras=True)["preset"]
    choices, arg = typing.get_args(hint)
    assert typing.get_args(choices) == tuple(PRESETS)  # read from the registry, in its order
    for name, make in PRESETS.items():  # each preset's help is its docstring's first paragraph
        first = " ".join(make.__doc__.split("\n\n")[0].split())
        assert f"{name}: {first.rstrip('.')}" in arg.help


def test_an_unknown_preset_names_the_registrys_presets():
    import launch as cli
    from distributed_sac.config.presets import PRESETS

    expected = f"--preset fast: must be one of {', '.join(PRESETS)}$"
    with pytest.raises(cli.UsageError, match=expected):
        cli.parse_train(["--preset", "fast"])


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["sweep", "--help"]])
def test_a_reader_that_goes_away_gets_no_traceback(args):
    """`launch.py train --help | head -1` with the reader gone before the first write: exit 141
    (SIGPIPE's 128 + 13) and nothing on stderr, not an error line or a traceback."""
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "launch.py"), *args],
        stdout=write,
        stderr=subprocess.PIPE,
        env=ENV,
        cwd=REPO,
    )
    os.close(write)
    os.close(read)  # every write the child makes now fails with EPIPE
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    assert err.decode() == ""
