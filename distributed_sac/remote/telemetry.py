"""System metrics for Ray's Prometheus export: one small recorder per actor role.

Each actor builds its role's recorder once and calls it from its loop; the values travel to
the node's metrics agent and appear at ``ray_<name>`` on the Prometheus endpoint (counters
gain a ``_total`` suffix there), next to Ray's own metrics, in the Grafana panels.
Listed with their meanings in docs/monitoring.md. A thin mapping: no logic, no state beyond
the metric handles.

``ray.util.metrics`` refuses zero or negative counter increments and numpy scalars, so every
value is converted to a Python number and zero increments are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping

from ray.util.metrics import Counter, Gauge, Histogram

UPDATE_SECONDS_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
"""Learner update time buckets: a GPU update takes milliseconds, a CPU one about a second."""


def _inc(counter: Counter, value: float, tags: dict[str, str] | None = None) -> None:
    if value > 0:
        counter.inc(float(value), tags=tags)


class WorkerTelemetry:
    """Env-worker metrics, tagged with the worker's index."""

    def __init__(self, index: int, action_repeat: int) -> None:
        tags = {"worker": str(index)}
        self.action_repeat = action_repeat
        self._agent_steps = Counter(
            "sac_agent_steps", "Agent steps (policy decisions) taken.", ("worker",)
        ).set_default_tags(tags)
        self._env_steps = Counter(
            "sac_env_steps", "Env frames stepped (agent steps x action repeat).", ("worker",)
        ).set_default_tags(tags)
        self._episodes = Counter(
            "sac_episodes", "Training episodes finished.", ("worker",)
        ).set_default_tags(tags)
        self._episode_return = Gauge(
            "sac_episode_return", "Return of the last finished training episode.", ("worker",)
        ).set_default_tags(tags)
        self._episode_length = Gauge(
            "sac_episode_length", "Agent steps of the last finished training episode.", ("worker",)
        ).set_default_tags(tags)
        self._steps_per_s = Gauge(
            "sac_worker_steps_per_s", "Agent steps per second of this worker.", ("worker",)
        ).set_default_tags(tags)
        self._weights_version = Gauge(
            "sac_worker_weights_version", "Weights version the worker acts with.", ("worker",)
        ).set_default_tags(tags)
        self._acting_lag = Gauge(
            "sac_acting_lag_updates",
            "Updates the acting weights are behind the newest published, over the worker's "
            "steps of the last 2 s, by quantile (0.5, 0.9).",
            ("worker", "quantile"),
        ).set_default_tags(tags)

    def record_steps(self, n: int) -> None:
        """Count `n` agent steps (and `n * action_repeat` env frames)."""
        _inc(self._agent_steps, int(n))
        _inc(self._env_steps, int(n) * self.action_repeat)

    def record_episode(self, ret: float, length: int) -> None:
        """One finished episode: its raw return and length in agent steps."""
        self._episodes.inc(1.0)
        self._episode_return.set(float(ret))
        self._episode_length.set(int(length))

    def steps_per_s(self, value: float) -> None:
        self._steps_per_s.set(float(value))

    def weights_version(self, weights_version: int) -> None:
        self._weights_version.set(int(weights_version))

    def acting_lag(self, median: float, p90: float) -> None:
        self._acting_lag.set(float(median), tags={"quantile": "0.5"})
        self._acting_lag.set(float(p90), tags={"quantile": "0.9"})


class ReplayTelemetry:
    """Replay-actor and rate-limiter metrics."""

    def __init__(self) -> None:
        self._sample_age = Gauge(
            "sac_sample_age_updates",
            "Median over recent sampled batches of learner updates since the weights that "
            "collected the data.",
        )
        self._size = Gauge("sac_replay_size", "Transitions held in replay.")
        self._inserts = Counter("sac_replay_inserts", "Transitions inserted into replay.")
        self._samples = Counter("sac_replay_samples", "Batches sampled from replay.")
        self._wait = Counter(
            "sac_rate_limiter_wait_seconds",
            "Seconds callers waited on the rate limiter, by side (insert or sample).",
            ("side",),
        )

    def sample_age(self, updates: float) -> None:
        self._sample_age.set(float(updates))

    def size(self, n: int) -> None:
        self._size.set(int(n))

    def inserted(self, n: int) -> None:
        _inc(self._inserts, int(n))

    def sampled(self, batches: int = 1) -> None:
        _inc(self._samples, int(batches))

    def insert_waited(self, seconds: float) -> None:
        """Time an `add` spent blocked because the learner was behind the ratio."""
        _inc(self._wait, float(seconds), {"side": "insert"})

    def sample_waited(self, seconds: float) -> None:
        """Time a `sample` spent blocked because the workers were behind the ratio."""
        _inc(self._wait, float(seconds), {"side": "sample"})


class LearnerTelemetry:
    """Learner-actor metrics: updates, their duration, losses, temperature, weights."""

    def __init__(self) -> None:
        self._updates = Counter("sac_learner_updates", "SAC-AE learner updates done.")
        self._update_seconds = Histogram(
            "sac_learner_update_seconds",
            "Wall time of one learner update.",
            boundaries=UPDATE_SECONDS_BOUNDARIES,
        )
        self._loss = Gauge(
            "sac_learner_loss", "Latest value of each update metric, by name.", ("name",)
        )
        self._alpha = Gauge("sac_alpha", "Entropy temperature alpha.")
        self._weights_version = Gauge(
            "sac_weights_version", "Version of the newest published policy weights."
        )

    def update(self, seconds: float) -> None:
        """One learner update that took `seconds`."""
        self._updates.inc(1.0)
        self._update_seconds.observe(float(seconds))

    def losses(self, metrics: Mapping[str, float]) -> None:
        """Every entry of `SacAeAgent.update`'s metrics dict, tagged with its key."""
        for name, value in metrics.items():
            self._loss.set(float(value), tags={"name": name})

    def temperature(self, alpha: float) -> None:
        self._alpha.set(float(alpha))

    def weights_version(self, weights_version: int) -> None:
        self._weights_version.set(int(weights_version))


class EvalTelemetry:
    """Evaluator metrics: the deterministic policy's mean return."""

    def __init__(self) -> None:
        self._return = Gauge("sac_eval_return", "Mean return of the last evaluation.")
        self._evaluations = Counter("sac_evaluations", "Evaluations finished.")

    def record(self, mean_return: float) -> None:
        self._return.set(float(mean_return))
        self._evaluations.inc(1.0)
