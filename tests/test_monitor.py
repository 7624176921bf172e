"""The terminal progress display: plain log lines off a TTY, a tqdm bar on one."""

from __future__ import annotations

import logging

from distributed_sac.monitor import Progress


def record(steps: int, eval_return: float | None = None) -> dict:
    return {
        "agent_steps": steps,
        "learner_updates": steps // 2,
        "agent_steps_per_s": 12.5,
        "updates_per_s": 6.25,
        "episode_return_mean": -1234.5,
        "eval_return_mean": eval_return,
    }


def test_plain_lines_show_progress_and_keep_the_last_evaluation(caplog):
    progress = Progress(total_steps=400, interactive=False)
    with caplog.at_level(logging.INFO, logger="distributed_sac"):
        progress.update(record(100))
        progress.update(record(200, eval_return=-321.25))
        progress.update(record(300))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "steps 100/400 (25%) updates 50 sps=12.5 ups=6.25 ret=-1234.5 eval=-"
    assert lines[1].endswith("eval=-321.2")
    assert lines[2].startswith("steps 300/400 (75%) updates 150")
    assert lines[2].endswith("eval=-321.2")


def test_bar_counts_agent_steps_from_a_resumed_start(capsys):
    progress = Progress(total_steps=400, initial=100, interactive=True)
    progress.update(record(250, eval_return=-99.0))
    progress.update(record(300))
    assert progress._bar.n == 300
    progress.close()
    err = capsys.readouterr().err
    assert "300/400" in err
    assert "eval=-99" in err
