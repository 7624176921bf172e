"""The terminal progress display: plain log lines off a TTY, a tqdm bar on one."""

from __future__ import annotations

import io
import logging
import re
import sys

from distributed_sac.run.progress import Progress


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
        progress.summary(record(404))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "steps 100/400 (25%) updates 50 sps=12.5 ups=6.25 ret=-1234.5 eval=-"
    assert lines[1].endswith("eval=-321.2")
    assert lines[2].startswith("steps 300/400 (75%) updates 150")
    assert lines[2].endswith("eval=-321.2")
    assert lines[3].startswith("finished: 404 agent steps (404 in this session")
    assert "202 learner updates" in lines[3] and lines[3].endswith("last eval -321.2")


def test_bar_counts_agent_steps_from_a_resumed_start():
    out = io.StringIO()
    progress = Progress(total_steps=400, initial=100, interactive=True, file=out)
    progress.update(record(250, eval_return=-99.0))
    progress.update(record(300))
    progress.close()
    # The bar started at the resumed 100 and shows the record's 300 of 400, not 100 + 300.
    last = [part for part in re.split(r"[\r\n]", out.getvalue()) if part.strip()][-1]
    assert "75%" in last and "300/400" in last and "eval=-99" in out.getvalue()


def test_overshoot_ends_at_100_percent_with_a_closing_line(caplog):
    out = io.StringIO()
    progress = Progress(total_steps=800, interactive=True, file=out)
    progress.update(record(402))
    progress.update(record(804))
    with caplog.at_level(logging.INFO, logger="distributed_sac"):
        progress.summary(record(804))
    text = out.getvalue()
    # Past its total tqdm drops to a bare count ("804step"), no percentage and no ETA.
    assert "804step" not in text and "804/800" not in text
    final = re.split(r"[\r\n]", text.rstrip("\n"))[-1]
    assert final.startswith("100%") and "800/800" in final
    assert caplog.records[-1].getMessage().startswith("finished: 804 agent steps")


def test_log_lines_print_above_the_bar_not_into_it(capsys):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.root.addHandler(handler)
    try:
        progress = Progress(total_steps=400, interactive=True)
        progress.update(record(100))
        logging.getLogger("distributed_sac").warning("checkpoint written")
        progress.update(record(200))
        progress.close()
    finally:
        logging.root.removeHandler(handler)
    err = capsys.readouterr().err
    # tqdm.write clears the bar's line first; a plain handler would append to the bar.
    assert re.search(r"[\r\n]WARNING checkpoint written\n", err), repr(err)
