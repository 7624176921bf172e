"""How a run stops: the stop sequence, Ctrl-C and SIGTERM (a checkpoint's granted updates, for
coming back: ``records.CheckpointPayload.granted_updates``).

Used by the driver and by the benchmarks that run its actors themselves.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import ray

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Ctrl-C, and what `ray job stop`, Kubernetes, schedulers and `timeout` send."""


def stop_run(workers: list, replay, learner, pending: list, timeout: float = 30.0) -> None:
    """Stop a run in order, the way a user's Ctrl-C does: workers stop stepping, the replay
    closes (parked adds answer done), the learner stops; then wait for their ``run`` calls."""
    for w in workers:
        w.stop.remote()
    ray.get(replay.close.remote())
    learner.stop.remote()
    pending = [ref for ref in pending if ref is not None]
    ray.wait(pending, num_returns=len(pending), timeout=timeout)


class Stopped(KeyboardInterrupt):
    """A stop signal ended the process's work: `signum` (exit status 128 + signum) and one line
    for the user as the message. A KeyboardInterrupt, so that no ``except Exception`` on the way
    up swallows it."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = int(signum)


def stopped_at_once(signum: int) -> Stopped:
    """What a stop signal raises where there is no clean stop to make (a second signal)."""
    if signum == signal.SIGINT:
        return Stopped(signum, "interrupted")
    name = signal.Signals(signum).name
    return Stopped(signum, f"stopped by {name} at once (the checkpoints written so far are kept)")


def _restore(signum: int, handler) -> None:
    # None: a handler not installed from Python, which signal.signal cannot put back.
    if handler is not None:
        signal.signal(signum, handler)


class InterruptFlag:
    """First Ctrl-C or SIGTERM asks the loop to stop cleanly; a second one (either) stops at
    once (raises Stopped).

    ``InterruptFlag.stopped_by`` keeps, for the code above the loop, the signal that set the
    newest flag (None while none has). Off the main thread no handler is installed.
    """

    stopped_by: int | None = None

    def __init__(self) -> None:
        self._set = False
        self._previous: dict[int, object] = {}
        InterruptFlag.stopped_by = None
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        if self._set:
            raise stopped_at_once(signum)
        self._set = True
        InterruptFlag.stopped_by = signum

    def is_set(self) -> bool:
        return self._set

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            _restore(signum, handler)
        self._previous = {}


@contextlib.contextmanager
def sigterm_interrupts(restore_to=signal.SIG_DFL) -> Iterator[None]:
    """Within: SIGTERM raises Stopped at once, as Ctrl-C raises KeyboardInterrupt (an
    InterruptFlag turns either into a clean stop while it is up). Afterwards: `restore_to`.

    Enter it after ``ray.init``: ray.init sets a Python handler (``sys.exit(15)``) and its core
    worker then a C++ one that prints a stack dump and kills the process; this replaces both.
    `restore_to` is the handler from before ``ray.init`` (``ray.shutdown`` drops the C++ one).
    """
    on_main = threading.current_thread() is threading.main_thread()
    if on_main:
        signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        yield
    finally:
        if on_main:
            _restore(signal.SIGTERM, restore_to)


def _raise_stopped(signum, frame) -> None:
    raise stopped_at_once(signum)
