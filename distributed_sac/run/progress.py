"""What the user watches in the terminal: a live progress bar on a TTY, plain lines elsewhere."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from typing import Any, TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("distributed_sac")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


class Progress:
    """tqdm bar over agent steps when stderr is a terminal; one log line per record otherwise.

    While the bar is up, log lines go through `tqdm.write`, above the bar instead of into it.
    `summary` ends the run with the final bar at its last count (100 % when done) and one line.
    """

    KEYS = ("agent_steps_per_s", "updates_per_s", "episode_return_mean", "eval_return_mean")

    def __init__(
        self,
        total_steps: int,
        initial: int = 0,
        interactive: bool | None = None,
        file: TextIO | None = None,
    ) -> None:
        self.file = file or sys.stderr
        self.interactive = self.file.isatty() if interactive is None else interactive
        self.total = total_steps
        self.initial = initial
        self._t0 = time.monotonic()
        self._redirect = None
        self._bar = None
        if self.interactive:
            self._bar = tqdm(
                total=total_steps,
                initial=min(initial, total_steps),
                unit="step",
                dynamic_ncols=True,
                smoothing=0.1,
                leave=False,  # summary() prints the final bar itself, once the last record is in
                file=self.file,
            )
            self._redirect = logging_redirect_tqdm(loggers=[logging.root, log])
            self._redirect.__enter__()
        self._eval: float | None = None

    def _short(self, record: dict[str, Any]) -> dict[str, Any]:
        # An evaluation lands in one record; keep showing it until the next one.
        if record.get("eval_return_mean") is not None:
            self._eval = record["eval_return_mean"]
        return {
            "sps": record.get("agent_steps_per_s"),
            "ups": record.get("updates_per_s"),
            "ret": record.get("episode_return_mean"),
            "eval": self._eval,
        }

    def update(self, record: dict[str, Any]) -> None:
        steps = int(record["agent_steps"])
        short = self._short(record)
        if self._bar is not None:
            # The count stops at the total: a run may overshoot it by the chunks in flight, and
            # tqdm past its total drops the percentage and the ETA.
            self._bar.update(max(0, min(steps, self.total) - self._bar.n))
            self._bar.set_postfix({k: _fmt(v) for k, v in short.items()}, refresh=True)
        else:
            pct = 100.0 * steps / max(1, self.total)
            parts = " ".join(f"{k}={_fmt(v)}" for k, v in short.items())
            log.info(
                "steps %d/%d (%.0f%%) updates %s %s",
                steps,
                self.total,
                pct,
                record.get("learner_updates"),
                parts,
            )

    def write(self, message: str) -> None:
        """A message that does not break the bar."""
        if self._bar is not None:
            self._bar.write(message, file=self.file)
        else:
            log.info(message)

    def close(self) -> None:
        """Take the live bar down (safe to call twice)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None

    def summary(self, record: dict[str, Any]) -> str:
        """After the last record: the final bar (on a terminal) and one closing line."""
        self.close()
        steps, elapsed = int(record["agent_steps"]), time.monotonic() - self._t0
        short = self._short(record)
        done = steps - self.initial
        rate = done / max(elapsed, 1e-9)
        line = (
            f"finished: {steps} agent steps ({done} in this session, {rate:.1f}/s), "
            f"{record.get('learner_updates')} learner updates in {elapsed:.0f} s; "
            f"last return {_fmt(short['ret'])}, last eval {_fmt(short['eval'])}"
        )
        if self.interactive:
            columns = shutil.get_terminal_size((80, 24)).columns
            n, total = min(steps, self.total), self.total
            bar = tqdm.format_meter(n, total, elapsed, columns, unit="step", initial=self.initial)
            print(bar, file=self.file)
        log.info(line)
        return line
