"""Control-plane load: many synthetic workers on one replay, a snapshot in the middle.

``--workers`` synthetic worker actors (``synthetic_worker.py``: prerecorded chunks, numpy only,
``--worker-cpus`` each) push to the real ``ReplayServer`` and a real ``Learner`` (tiny networks
on full-size 84x84 frames, CPU), the replay prefilled with ``--capacity`` transitions. Halfway
through, the replay writes a snapshot of its whole buffer. Measured:

* ``stats_p99_s``: latency of the driver's ``ReplayServer.stats`` (called every 0.5 s);
* ``sample_gap_p99_s`` / ``sample_gap_max_s``: gaps between consecutive learner updates,
  ``sample_gap_max_snapshot_s`` those while the snapshot is written;
* ``rss_growth_mb``: replay + learner resident memory, end minus after warm-up and the
  learner's first update (its mirror then holds the prefilled buffer);
  ``rss_slope_mb_per_min``: their trend (least squares, sampled every 5 s) from the end of the
  snapshot on, the flat-memory check;
* ``acting_lag_median_updates`` / ``_p90_``: per step, how many updates the acting weights were
  behind the newest published at that step (``acting_lag.py``), against ``publish_every``;
* ``deadlock``: whether any control call timed out or updates or inserts stopped.

    python -m benchmarks.control_plane_load --workers 64 --seconds 120 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import ray

# isort: split
import psutil  # Ray ships it (ray/thirdparty_files)

from benchmarks.report import write_json
from benchmarks.synthetic_worker import SyntheticWorker, random_chunks
from distributed_sac.config import ReplayConfig
from distributed_sac.presets import tiny_preset
from distributed_sac.remote.learner import Learner
from distributed_sac.remote.lifecycle import stop_run
from distributed_sac.remote.replay_server import remote_replay
from distributed_sac.replay import ReplaySpec

CHUNK = 64


class GapLearner(Learner):
    """The real learner, recording when each update starts."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._times: list[float] = []

    def _update(self, batch, num_demo: int = 0) -> None:
        self._times.append(time.time())
        super()._update(batch, num_demo)

    def update_times(self) -> list[float]:
        return list(self._times)

    def pid(self) -> int:
        return os.getpid()


def _rss_mb(pids: list[int]) -> float:
    return sum(psutil.Process(p).memory_info().rss for p in pids) / 2**20


def _slope_per_min(samples: list[tuple[float, float]], after: float) -> float | None:
    """Least-squares MB per minute of the (time, MB) samples taken after ``after``."""
    points = np.asarray([p for p in samples if p[0] >= after])
    if len(points) < 3:
        return None
    return float(np.polyfit(points[:, 0] / 60.0, points[:, 1], 1)[0])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--capacity", type=int, default=100_000, help="transitions prefilled")
    parser.add_argument("--steps-per-s", type=float, default=8.0, help="per worker")
    parser.add_argument("--worker-cpus", type=float, default=0.05)
    parser.add_argument("--publish-every", type=int, default=10)
    parser.add_argument("--replay-ratio", type=float, default=0.5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    base = tiny_preset()
    cfg = dataclasses.replace(
        base,
        total_steps=10**12,
        weights_publish_every=args.publish_every,
        wrappers=dataclasses.replace(base.wrappers, image_size=84),
        replay=ReplayConfig(
            capacity=args.capacity, min_size=args.capacity, replay_ratio=args.replay_ratio
        ),
        rollout=dataclasses.replace(base.rollout, chunk_length=CHUNK),
    )
    obs = cfg.wrappers.obs_shape
    ray.init(num_cpus=4 + int(args.workers * args.worker_cpus) + 1, logging_level=logging.ERROR)
    folder = tempfile.mkdtemp(prefix="control-plane-")
    try:
        spec = ReplaySpec.from_config(cfg, 1)
        snapshot = str(Path(folder) / "replay")
        replay = remote_replay(args.workers).options(num_cpus=1).remote(spec, snapshot)
        rng = np.random.default_rng(0)
        fill = random_chunks(rng, 16, obs[1:], obs[0], CHUNK)
        for _ in range(0, args.capacity // CHUNK, 16):
            ray.get(replay.add.remote(0, fill, []))
        learner = (
            ray.remote(GapLearner)
            .options(max_concurrency=4, num_cpus=1)
            .remote(cfg, obs, 1, "cpu", replay)
        )
        workers = [
            ray.remote(SyntheticWorker)
            .options(num_cpus=args.worker_cpus, max_concurrency=2)
            .remote(i, obs[1:], obs[0], CHUNK, args.steps_per_s)
            for i in range(args.workers)
        ]
        pids = [ray.get(replay.pid.remote()), ray.get(learner.pid.remote())]
        runs = [w.run.remote(replay) for w in workers] + [learner.run.remote(replay)]
        warmup = min(20.0, args.seconds / 5)
        time.sleep(warmup)
        # Memory counts from the first update on: before it the learner's mirror receives the
        # whole prefilled buffer (0.75 GB at 100k), which is a one-off copy, not growth.
        deadline = time.monotonic() + 600
        while not ray.get(learner.update_times.remote()) and time.monotonic() < deadline:
            time.sleep(1.0)
        rss0, t_start = _rss_mb(pids), time.time()
        stats_s: list[float] = []
        timeouts = 0
        snapshot: dict = {}

        def take_snapshot() -> None:
            snapshot["start"] = time.time()
            ray.get(replay.snapshot.remote())
            snapshot["size"] = ray.get(replay.stats.remote()).replay_size
            snapshot["end"] = time.time()

        snap_thread = None
        s0 = ray.get(replay.stats.remote())
        end = time.monotonic() + args.seconds
        rss: list[tuple[float, float]] = []
        while time.monotonic() < end:
            if not rss or time.time() - rss[-1][0] >= 5.0:
                rss.append((time.time(), _rss_mb(pids)))
            if snap_thread is None and time.monotonic() > end - args.seconds / 2:
                snap_thread = threading.Thread(target=take_snapshot, daemon=True)
                snap_thread.start()
            t0 = time.monotonic()
            try:
                s1 = ray.get(replay.stats.remote(), timeout=30)
                stats_s.append(time.monotonic() - t0)
            except ray.exceptions.GetTimeoutError:
                timeouts += 1
            time.sleep(max(0.0, 0.5 - (time.monotonic() - t0)))
        if snap_thread is not None:
            snap_thread.join(timeout=300)
        rss1 = _rss_mb(pids)
        lags = np.concatenate(ray.get([w.lag.remote() for w in workers], timeout=60))
        times = np.asarray(ray.get(learner.update_times.remote(), timeout=60))
        stop_run(workers, replay, learner, runs, timeout=60)
    finally:
        ray.shutdown()
    times = times[times >= t_start]
    gaps = np.diff(times) if len(times) > 1 else np.array([np.inf])
    during = (times[1:] >= snapshot.get("start", np.inf)) & (times[:-1] <= snapshot.get("end", 0))
    result = {
        "workers": args.workers,
        "seconds": args.seconds,
        "capacity": args.capacity,
        "deadlock": bool(timeouts or len(times) < 2 or s1.agent_steps <= s0.agent_steps),
        "stats_p99_s": float(np.percentile(stats_s, 99)) if stats_s else None,
        "sample_gap_p99_s": float(np.percentile(gaps, 99)),
        "sample_gap_max_s": float(gaps.max()),
        "sample_gap_max_snapshot_s": float(gaps[during].max()) if during.any() else None,
        "snapshot_s": snapshot.get("end", np.nan) - snapshot.get("start", np.nan),
        "snapshot_transitions": snapshot.get("size"),
        "rss_growth_mb": rss1 - rss0,
        "rss_slope_mb_per_min": _slope_per_min(rss, snapshot.get("end", t_start)),
        "rss_mb_samples": [[round(t - t_start, 1), round(mb, 1)] for t, mb in rss],
        "snapshot_start_s": snapshot.get("start", np.nan) - t_start,
        "acting_lag_median_updates": float(np.median(lags)) if lags.size else None,
        "acting_lag_p90_updates": float(np.percentile(lags, 90)) if lags.size else None,
        "publish_every": args.publish_every,
        "updates": int(len(times)),
        "agent_steps_per_s": (s1.agent_steps - s0.agent_steps) / args.seconds,
    }
    for key, value in result.items():
        if key != "rss_mb_samples":
            print(f"{key:<28}{value}")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
