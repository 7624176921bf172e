"""The run's outer records: the checkpoint payload, the driver's counters, the metrics record.

Typed inside the code; plain dicts only where they leave it: a checkpoint file (``torch.save``,
read back with ``weights_only=True``: ``CheckpointPayload.to_state`` / ``from_state``) and a
line of metrics.jsonl (and W&B: ``MetricsRecord.to_json`` / ``from_json``). Both layouts are the
ones earlier versions wrote, so their checkpoints resume and their metrics files read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from distributed_sac.config.data import EvalRecord

LOSSES = "losses"
"""The one field of a metrics record that is not one key: each loss is ``loss/NAME``."""
LOSS_PREFIX, EVAL_PREFIX = "loss/", "eval_"
"""The prefixes of a metrics record's loss keys and evaluation keys."""


@dataclass
class RunCounters:
    """The driver's counts over a run, checkpointed with it (``Driver.counters``)."""

    episodes: int = 0
    """Episodes finished, as the replay counted them at the last metrics record."""
    worker_restarts: int = 0
    """Env workers that died and were restarted by Ray."""
    learner_restarts: int = 0
    """Learner processes that died and were restarted by Ray."""
    pretrain_updates: int = 0
    """Learner updates on the demonstrations before collection (no rate limiter granted them)."""

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunCounters:
        """From ``to_dict``'s layout; counts an older checkpoint lacks start at 0."""
        return cls(**{k: int(v) for k, v in data.items()})


class LimiterCounts(NamedTuple):
    """The replay's rate-limiter counters (``RateLimiter.state_dict``'s layout)."""

    inserts: int
    """Transitions inserted: the run's agent steps."""
    samples: int
    """Learner updates the limiter granted."""
    closed: bool
    """Whether collection had ended."""


@dataclass(frozen=True)
class ReplayCounters:
    """The replay actor's counters as its snapshot holds them (taken with its chunks).

    The replay actor's ``snapshot`` and ``restore`` calls speak ``to_dict``'s layout, the one
    its snapshot manifest stores as JSON (worker indices as strings).
    """

    limiter: LimiterCounts
    episodes_total: int
    """Episodes finished over the run."""
    rng: dict[str, Any]
    """State of the generator that draws batch indices (numpy ``bit_generator.state``)."""
    worker_steps: dict[int, int] = field(default_factory=dict)
    """Agent steps inserted by each env worker, by worker index."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "limiter": self.limiter._asdict(),
            "episodes_total": self.episodes_total,
            "rng": self.rng,
            "worker_steps": {str(k): v for k, v in self.worker_steps.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReplayCounters:
        """From ``to_dict``'s layout; older layouts' extra limiter keys are ignored, and one
        without ``worker_steps`` has none."""
        limiter = data["limiter"]
        return cls(
            limiter=LimiterCounts(
                int(limiter["inserts"]), int(limiter["samples"]), bool(limiter["closed"])
            ),
            episodes_total=int(data["episodes_total"]),
            rng=data["rng"],
            worker_steps={int(k): int(v) for k, v in data.get("worker_steps", {}).items()},
        )


@dataclass(frozen=True)
class CheckpointPayload:
    """What a run's checkpoint holds besides its format and config fingerprint."""

    agent: dict[str, Any]
    """``SacAeAgent.state_dict()``: networks, optimisers, temperature, ``num_updates``, RNG."""
    replay: ReplayCounters
    counters: RunCounters

    @property
    def granted_updates(self) -> int:
        """The learner's updates that the replay's rate limiter granted (all but the
        pretraining on demonstrations)."""
        return int(self.agent["num_updates"]) - self.counters.pretrain_updates

    def to_state(self) -> dict[str, Any]:
        """The plain dicts and tensors ``save_checkpoint`` writes."""
        return {
            "agent": self.agent,
            "replay": self.replay.to_dict(),
            "counters": self.counters.to_dict(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CheckpointPayload:
        """From ``to_state``'s layout (``load_checkpoint``'s payload); KeyError, TypeError or
        ValueError if it is not one."""
        replay = ReplayCounters.from_dict(state["replay"])
        counters = dict(state["counters"])
        if "pretrain_updates" not in counters:
            # From before the count was kept: the updates beyond the limiter's grants (updates
            # granted but still in flight when the checkpoint was taken were never made).
            made = int(state["agent"]["num_updates"])
            counters["pretrain_updates"] = max(0, made - replay.limiter.samples)
        return cls(dict(state["agent"]), replay, RunCounters.from_dict(counters))


@dataclass(frozen=True)
class MetricsRecord:
    """One line of metrics.jsonl, written by the driver every ``--log-every-s`` seconds and at
    the end; also what W&B and the progress line get. Each field is the JSON key of its name,
    except ``losses``; the ``eval_*`` keys are there only in a record with an evaluation."""

    time: float
    """``time.time()`` when the record was made."""
    agent_steps: int
    """Agent steps in replay: the run's count of collected transitions."""
    env_steps: int
    """Env frames: ``agent_steps`` times ``--wrappers.action-repeat``."""
    learner_updates: int
    """Learner updates made, pretraining on demonstrations included."""
    weights_version: int
    """Version of the learner's newest published weights."""
    acting_lag: float | None
    """Per agent step since the previous record, the updates the acting weights were behind the
    newest published at that step (their delivery included), median over the workers; None
    before any step was measured."""
    acting_lag_p90: float | None
    """90th percentile of the same."""
    sample_age: float | None
    """The learner's update count minus the weights version that collected the sampled data
    (both counting pretraining), median over recent feeds, never negative; None before any."""
    demo_fraction_held: float
    """Share of batch rows drawn from demonstrations over the last 64 feeds (0 without demos)."""
    replay_size: int
    """Transitions replay holds now."""
    agent_steps_per_s: float
    """Agent steps per wall second since the previous record."""
    updates_per_s: float
    """Learner updates per wall second since the previous record."""
    learner_idle_frac: float
    """Share of wall time since the previous record the learner waited for a batch."""
    replay_ratio_held: float
    """Updates granted per transition inserted beyond ``--replay.min-size`` so far."""
    episodes: int
    """Episodes finished over the run."""
    episode_return_mean: float | None
    """Mean return of the last 20 finished episodes; None before the first."""
    worker_restarts: int
    """Env workers restarted by Ray over the run."""
    learner_restarts: int
    """Learner processes restarted by Ray over the run."""
    losses: dict[str, float] = field(default_factory=dict)
    """Means of the learner's recent update metrics by name (critic_loss, alpha, ...), each
    under the key ``loss/NAME``, in name order."""
    eval_return_mean: float | None = None
    """Mean return of the evaluation that finished since the previous record."""
    eval_return_std: float | None = None
    """Standard deviation of its returns over the episodes."""
    eval_length_mean: float | None = None
    """Its mean episode length in agent steps."""
    eval_video: str | None = None
    """Path of its first episode's video, if one was written."""
    eval_agent_steps: int | None = None
    """Agent steps collected when its weights were taken; None: no evaluation in this record."""
    eval_max_episode_steps: int | None = None
    """The agent-step cap of its episodes (``--eval.max-episode-steps``)."""

    def with_eval(self, result: EvalRecord, max_episode_steps: int) -> MetricsRecord:
        """This record with the entries of evaluation ``result``."""
        return dataclasses.replace(
            self,
            eval_return_mean=result.return_mean,
            eval_return_std=result.return_std,
            eval_length_mean=result.length_mean,
            eval_video=result.video,
            eval_agent_steps=result.agent_steps,
            eval_max_episode_steps=max_episode_steps,
        )

    def to_json(self) -> dict[str, Any]:
        """The record as metrics.jsonl holds it (JSON types; ``RunDir.log_metrics`` writes
        NaN and infinity as null)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == LOSSES:
                out.update({f"{LOSS_PREFIX}{k}": v for k, v in sorted(self.losses.items())})
            elif not f.name.startswith(EVAL_PREFIX) or self.eval_agent_steps is not None:
                out[f.name] = getattr(self, f.name)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MetricsRecord:
        """From a metrics.jsonl line of ``to_json``'s layout; TypeError if a key is missing."""
        names = {f.name for f in dataclasses.fields(cls)} - {LOSSES}
        prefix = LOSS_PREFIX
        losses = {k.removeprefix(prefix): v for k, v in data.items() if k.startswith(prefix)}
        return cls(**{k: v for k, v in data.items() if k in names}, losses=losses)
