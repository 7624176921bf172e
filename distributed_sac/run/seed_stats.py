"""Statistics over seeds: the mean, the sample standard deviation, the interquartile mean and
95 % stratified bootstrap intervals (scipy.stats), as run/study.py's aggregates report them.

The IQM is the mean of the middle 50 % (`scipy.stats.trim_mean(x, 0.25)`, as rliable computes
it; Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice"); the intervals are
`scipy.stats.bootstrap`'s percentile intervals, 10,000 resamples, seeded, each stratum (an env)
resampled on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
BOOTSTRAP_METHOD = "percentile"


def iqm(values: Iterable[float]) -> float:
    """Interquartile mean: the mean of the middle 50 % (25 % trimmed from each end)."""
    return float(stats.trim_mean(np.asarray(list(values), dtype=float), 0.25))


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.trim_mean(x, 0.25, axis=axis)


STATISTICS: dict[str, Callable[..., np.ndarray]] = {"mean": _mean, "iqm": _iqm}


def stratified_bootstrap_ci(
    strata: Sequence[Sequence[float]],
    statistic: str = "mean",
    confidence: float = CONFIDENCE,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> list[float] | None:
    """[low, high] of the `statistic` ("mean" or "iqm") of all values pooled, each stratum
    resampled on its own (scipy.stats.bootstrap with one sample per stratum); None when a
    stratum has fewer than 2 values (nothing to resample)."""
    samples = tuple(np.asarray(s, dtype=float) for s in strata)
    if not samples or any(len(s) < 2 for s in samples):
        return None
    pooled = STATISTICS[statistic]

    def of_resamples(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        return pooled(np.concatenate(resampled, axis=axis), axis=axis)

    result = stats.bootstrap(
        samples,
        of_resamples,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method=BOOTSTRAP_METHOD,
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return [float(interval.low), float(interval.high)]


def describe(values: Sequence[float]) -> dict[str, Any]:
    """num_seeds, mean, std (ddof 1; None for one value), iqm, ci95 and iqm_ci95."""
    x = np.asarray(values, dtype=float)
    return {
        "num_seeds": len(x),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if len(x) > 1 else None,
        "iqm": iqm(x),
        "ci95": stratified_bootstrap_ci([x]),
        "iqm_ci95": stratified_bootstrap_ci([x], "iqm"),
    }
