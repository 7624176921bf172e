"""What the user watches in the terminal: a live progress bar on a TTY, plain lines elsewhere."""

from __future__ import annotations

import logging
import sys
from typing import Any

from tqdm import tqdm

log = logging.getLogger("distributed_sac")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


class Progress:
    """tqdm bar over agent steps when stderr is a terminal; one log line per record otherwise."""

    KEYS = ("agent_steps_per_s", "updates_per_s", "episode_return_mean", "eval_return_mean")

    def __init__(self, total_steps: int, initial: int = 0, interactive: bool | None = None) -> None:
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.total = total_steps
        self._bar = (
            tqdm(total=total_steps, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1)
            if self.interactive
            else None
        )
        self._last = initial
        self._eval: float | None = None

    def update(self, record: dict[str, Any]) -> None:
        steps = int(record["agent_steps"])
        # An evaluation lands in one record; keep showing it until the next one.
        if record.get("eval_return_mean") is not None:
            self._eval = record["eval_return_mean"]
        short = {
            "sps": record.get("agent_steps_per_s"),
            "ups": record.get("updates_per_s"),
            "ret": record.get("episode_return_mean"),
            "eval": self._eval,
        }
        if self._bar is not None:
            self._bar.update(max(0, steps - self._last))
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
        self._last = steps

    def write(self, message: str) -> None:
        """A message that does not break the bar."""
        if self._bar is not None:
            self._bar.write(message)
        else:
            log.info(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
