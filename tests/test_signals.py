"""Stopped from outside: SIGTERM stops a run as Ctrl-C does, then exits 143 with one line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distributed_sac.remote.lifecycle import InterruptFlag, Stopped, sigterm_interrupts

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def safe_handlers():
    """Handlers that only record, so a signal a test sends never ends pytest; put back after."""
    received = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in saved:
        signal.signal(s, lambda signum, frame: received.append(signum))
    yield received
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_a_first_signal_sets_the_flag_and_a_second_stops_at_once(safe_handlers):
    before = signal.getsignal(signal.SIGTERM)
    flag = InterruptFlag()
    signal.raise_signal(signal.SIGTERM)
    assert flag.is_set() and InterruptFlag.stopped_by == signal.SIGTERM
    with pytest.raises(Stopped) as second:
        signal.raise_signal(signal.SIGINT)
    assert (second.value.signum, str(second.value)) == (signal.SIGINT, "interrupted")
    with pytest.raises(
        Stopped, match=r"^stopped by SIGTERM at once \(the checkpoints written so far are kept\)$"
    ):
        signal.raise_signal(signal.SIGTERM)
    flag.restore()
    assert signal.getsignal(signal.SIGTERM) is before and not safe_handlers
    InterruptFlag().restore()
    assert InterruptFlag.stopped_by is None  # a new flag forgets the last run's signal


def test_ctrl_c_sets_the_flag_too(safe_handlers):
    flag = InterruptFlag()
    signal.raise_signal(signal.SIGINT)
    flag.restore()
    assert flag.is_set() and InterruptFlag.stopped_by == signal.SIGINT and not safe_handlers


def test_outside_the_loop_sigterm_raises_at_once_then_the_old_handler_is_back(safe_handlers):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as stopped, sigterm_interrupts(restore_to=before):
        signal.raise_signal(signal.SIGTERM)
    assert stopped.value.signum == signal.SIGTERM and not safe_handlers
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_launcher_exits_with_128_plus_the_signal_and_its_line(monkeypatch, capsys):
    import launch

    def stopped(argv):
        raise Stopped(
            signal.SIGTERM, "stopped by SIGTERM: final checkpoint written at 7 agent steps"
        )

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(launch, "_train", stopped)
    assert launch.main(["train"]) == 143
    monkeypatch.setattr(launch, "_train", interrupted)
    assert launch.main(["train"]) == 130
    assert capsys.readouterr().err.splitlines() == [
        "stopped by SIGTERM: final checkpoint written at 7 agent steps",
        "interrupted",
    ]


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.ray
def test_sigterm_stops_a_training_run_with_a_final_checkpoint_and_exit_143(tmp_path):
    """The `launch.py train` process, as `ray job stop`, Kubernetes or `timeout` stops it."""
    run_dir = tmp_path / "run"
    log = tmp_path / "output.txt"
    argv = [sys.executable, str(REPO / "launch.py"), "train", "--preset", "tiny"]
    argv += ["--run-dir", str(run_dir), "--total-steps", "100000", "--wandb", "disabled"]
    argv += ["--num-workers", "1", "--eval.every", "0", "--log-every-s", "0.5"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 120
            while not _records(run_dir / "metrics.jsonl"):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "no metrics record in 120 s"
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log.read_text()
    assert code == 143, output
    assert "*** SIGTERM received" not in output and "Traceback" not in output, output
    lines = re.findall(r"^stopped by SIGTERM: final checkpoint written at (\d+) agent steps$",
                       output, re.MULTILINE)  # fmt: skip
    assert len(lines) == 1, output
    steps = int(lines[0])
    assert (run_dir / "checkpoints" / f"ckpt_{steps:012d}.pt").exists(), output
    assert _records(run_dir / "metrics.jsonl")[-1]["agent_steps"] == steps
