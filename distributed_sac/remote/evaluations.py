"""When the driver evaluates: every --eval.every agent steps, at most one evaluation at a time,
on the learner's newest weights, in the evaluator actor (training never waits for it)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import ray
from ray.exceptions import ObjectLostError, RayActorError

from distributed_sac.config.data import EvalRecord
from distributed_sac.run.schedule import Every

log = logging.getLogger("distributed_sac")


class Evaluations:
    """The evaluation in flight, if any, and the schedule of the next one."""

    def __init__(
        self,
        evaluator: ray.actor.ActorHandle,
        learner: ray.actor.ActorHandle,
        every: int,
        start_steps: int,
        videos: Path | None,
    ) -> None:
        """`start_steps`: where this session starts (a resumed run's evaluated points are not
        due again); `videos`: the folder for each evaluation's first episode, or None."""
        self.evaluator = evaluator
        self.learner = learner
        self.due = Every(every, start_steps)
        self.videos = videos
        self.running: ray.ObjectRef | None = None
        self.last: EvalRecord | None = None
        """The newest evaluation's record."""

    def maybe_start(self, steps: int) -> None:
        """Start one if none is running and a multiple of --eval.every has been passed."""
        if self.running is None and self.due(steps):
            self.start(steps)

    def start(self, steps: int) -> None:
        """Evaluate the learner's newest weights, labelled with `steps`."""
        _, weights = ray.get(self.learner.latest_weights.remote())
        video = str(self.videos / f"eval_{steps:09d}.mp4") if self.videos else None
        self.running = self.evaluator.evaluate.remote(weights[0], steps, video)

    def result(self) -> EvalRecord | None:
        """The running evaluation's record once it has finished (once), else None."""
        if self.running is None or not ray.wait([self.running], timeout=0)[0]:
            return None
        ref, self.running = self.running, None
        try:
            self.last = ray.get(ref)
        except (ObjectLostError, RayActorError) as exc:
            # Weights of a learner that died since; the next evaluation takes the new ones.
            log.warning("an evaluation could not run: %s", type(exc).__name__)
            return None
        return self.last

    def finish(self, steps: int, log_record: Callable[[], None]) -> None:
        """Before the final record, which then holds an evaluation of the final point `steps`:
        the one still running lands there; when the last multiple of --eval.every was never
        evaluated (a short run can reach it, and drain, within one log interval), one starts
        now on the final weights and is waited for, after `log_record()` has written the
        running one's record."""
        if self.due(steps):
            if self.running is not None:
                ray.wait([self.running])
                log_record()  # its record, before the final one
            self.start(steps)
        if self.running is not None:
            ray.wait([self.running])
