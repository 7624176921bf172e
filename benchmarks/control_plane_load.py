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
  behind the newest published at that step (``weights/acting_lag.py``), against ``publish_every``;
* ``deadlock``: whether any control call timed out or updates or inserts stopped;
* ``gap_causes_top10`` / ``gap_cause_counts_above_p99``: where the learner was during its
  longest gaps (``_gap_causes``): waiting for the feed, its update thread computing, other
  threads of its process holding the interpreter, or the process not run by the OS; from
  per-update clocks in the learner and 0.1-s samples of ``/proc`` in the driver.

    python -m benchmarks.control_plane_load --workers 64 --seconds 120 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
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
from distributed_sac.config.fields import ReplayConfig
from distributed_sac.config.presets import tiny_preset
from distributed_sac.remote.learner import Learner
from distributed_sac.remote.lifecycle import stop_run
from distributed_sac.remote.replay_server import remote_replay
from distributed_sac.replay.buffer import ReplaySpec

CHUNK = 64


# Columns of ``GapLearner.update_records``, taken as each update starts (``END``: as it ends).
WALL, START, THREAD_CPU, PROCESS_CPU, FEED_WAIT, RUNQUEUE, END = range(7)


def _runqueue_s() -> float:
    """The calling thread's time runnable but not run (``/proc/thread-self/schedstat``,
    field 2, ns), in s; nan where the kernel does not keep it."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return math.nan


class GapLearner(Learner):
    """The real learner, recording per update (``update_records``, columns above) the clocks
    that place each gap between updates: wall time (``time.time`` for the window,
    ``time.monotonic`` for the gaps, the driver's samples on the same clock), the update
    thread's CPU time and run-queue wait, the process's CPU time (all its threads), and the
    learner's ``_wait_s``, which grows while ``_loop`` waits in ``ray.wait`` for a feed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._records: list[list[float]] = []

    def _update(self, *args, **kwargs) -> None:
        record = [
            time.time(),
            time.monotonic(),
            time.thread_time(),
            time.process_time(),
            float(getattr(self, "_wait_s", math.nan)),
            _runqueue_s(),
            math.nan,
        ]
        self._records.append(record)
        super()._update(*args, **kwargs)
        record[END] = time.monotonic()

    def update_times(self) -> list[float]:
        return [r[WALL] for r in self._records]

    def update_records(self) -> list[list[float]]:
        return [list(r) for r in self._records]

    def pid(self) -> int:
        return os.getpid()


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads) from ``/proc/<pid>/stat``, in s."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # fields 14 and 15
    except (OSError, ValueError, IndexError):
        return math.nan


def _procs_running() -> float:
    """Runnable tasks on the machine now (``/proc/stat`` ``procs_running``, counting the
    reader itself)."""
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"procs_running"):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return math.nan


class ProcSampler(threading.Thread):
    """Every ``every`` s: (monotonic, procs_running, CPU s of each of ``pids``)."""

    def __init__(self, pids: list[int], every: float = 0.1) -> None:
        super().__init__(name="proc-sampler", daemon=True)
        self.pids, self.every = pids, every
        self.rows: list[tuple[float, ...]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._halt.is_set():
            self.rows.append((time.monotonic(), _procs_running(), *(_cpu_s(p) for p in self.pids)))
            next_at += self.every
            self._halt.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> np.ndarray:
        self._halt.set()
        self.join(timeout=5)
        return np.asarray(self.rows, dtype=float).reshape(-1, 2 + len(self.pids))


GAP_CAUSES = ("feed_wait", "compute", "gil", "descheduled")


def _attribute(dt: float, feed: float, thread: float, process: float, runqueue: float):
    """Split a gap of ``dt`` s between updates into the four causes; the largest is its cause.

    ``feed_wait``: the update thread waited in ``ray.wait`` for the feed (``_wait_s``);
    ``compute``: it ran (its CPU time: the update, gathering the batch, following the feed);
    the rest it neither ran nor waited for the feed. Of that rest, ``descheduled`` takes the
    thread's run-queue wait (runnable, not run by the OS) first, then ``gil`` as much as the
    other threads of the process ran (process minus thread CPU time: with one torch thread,
    the publisher, Ray's threads, ``stats`` calls: the thread was kept off the interpreter),
    and ``descheduled`` what is still left (nothing of the process ran).
    """
    other = max(0.0, process - thread)
    rest = max(0.0, dt - feed - thread)
    queued = min(rest, runqueue) if math.isfinite(runqueue) else 0.0
    gil = min(rest - queued, other)
    parts = {"feed_wait": feed, "compute": thread, "gil": gil, "descheduled": rest - gil}
    return max(parts, key=parts.get), parts


def _gap_causes(records: np.ndarray, samples: np.ndarray, t0: float, snapshot: dict):
    """Per gap between consecutive ``records`` (rows as ``update_records``): its cause and
    the clocks behind it, with the driver's ``samples`` (``ProcSampler`` rows: monotonic,
    procs_running, replay CPU s, learner CPU s) over it."""
    gaps = []
    for a, b in zip(records[:-1].tolist(), records[1:].tolist(), strict=True):
        dt = b[START] - a[START]
        feed, thread = b[FEED_WAIT] - a[FEED_WAIT], b[THREAD_CPU] - a[THREAD_CPU]
        process, queued = b[PROCESS_CPU] - a[PROCESS_CPU], b[RUNQUEUE] - a[RUNQUEUE]
        cause, parts = _attribute(dt, feed, thread, process, queued)
        gap = {
            "gap_s": dt,
            "cause": cause,
            "cause_share": parts[cause] / dt if dt > 0 else None,
            "feed_wait_s": feed,
            "thread_cpu_s": thread,
            "process_cpu_s": process,
            "thread_runqueue_s": queued if math.isfinite(queued) else None,
            "gil_s": parts["gil"],
            "descheduled_s": parts["descheduled"],
            "update_s": a[END] - a[START],
            "procs_running": None,
            "replay_cpu_s": None,
            "at_s": a[WALL] - t0,
            "snapshot": bool(
                b[WALL] >= snapshot.get("start", np.inf) and a[WALL] <= snapshot.get("end", 0)
            ),
        }
        if len(samples):
            t = samples[:, 0]
            inside = (t >= a[START]) & (t <= b[START])
            if not inside.any():  # a gap shorter than the sampling period: the nearest sample
                inside = np.arange(len(t)) == np.argmin(np.abs(t - (a[START] + b[START]) / 2))
            running = samples[inside, 1]
            if np.isfinite(running).any():
                gap["procs_running"] = float(np.nanmax(running))
            ok = np.isfinite(samples[:, 2])
            if ok.sum() >= 2:
                cpu = np.interp([a[START], b[START]], t[ok], samples[ok, 2])
                gap["replay_cpu_s"] = float(cpu[1] - cpu[0])
        gaps.append(gap)
    return gaps


def _rounded(gap: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in gap.items()}


def _fmt(value: float | None, width: int, digits: int = 3) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


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
        frame_shape, stack = cfg.wrappers.frame_shape, cfg.wrappers.frame_stack
        fill = random_chunks(rng, 16, frame_shape, stack, CHUNK)
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
            .remote(i, frame_shape, stack, CHUNK, args.steps_per_s)
            for i in range(args.workers)
        ]
        pids = [ray.get(replay.pid.remote()), ray.get(learner.pid.remote())]
        sampler = ProcSampler(pids)
        sampler.start()
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
        records = np.asarray(ray.get(learner.update_records.remote(), timeout=60), dtype=float)
        samples = sampler.stop()
        stop_run(workers, replay, learner, runs, timeout=60)
    finally:
        ray.shutdown()
    records = records.reshape(-1, END + 1)
    records = records[records[:, WALL] >= t_start]
    times = records[:, WALL]
    gaps = np.diff(times) if len(times) > 1 else np.array([np.inf])
    during = (times[1:] >= snapshot.get("start", np.inf)) & (times[:-1] <= snapshot.get("end", 0))
    causes = _gap_causes(records, samples, t_start, snapshot)
    causes.sort(key=lambda g: -g["gap_s"])
    p99 = np.percentile([g["gap_s"] for g in causes], 99) if causes else np.inf
    above = [g["cause"] for g in causes if g["gap_s"] > p99]
    running = samples[:, 1][np.isfinite(samples[:, 1])] if len(samples) else np.array([])
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
        "gap_causes_top10": [_rounded(g) for g in causes[:10]],
        "gap_cause_counts_above_p99": {c: above.count(c) for c in GAP_CAUSES},
        "procs_running_median": float(np.median(running)) if running.size else None,
        "procs_running_p90": float(np.percentile(running, 90)) if running.size else None,
    }
    for key, value in result.items():
        if key not in ("rss_mb_samples", "gap_causes_top10"):
            print(f"{key:<28}{value}")
    print(
        f"{'gap_causes_top10':<28}{'gap_s':>7}  {'cause':<12}{'share':>6}{'feed':>7}"
        f"{'thread':>7}{'proc':>7}{'runq':>7}{'update':>7}{'replay':>7}{'procs_r':>8}"
        f"{'at_s':>7}  snap"
    )
    for g in result["gap_causes_top10"]:
        print(
            f"{'':<28}{g['gap_s']:>7.3f}  {g['cause']:<12}{_fmt(g['cause_share'], 6, 2)}"
            f"{_fmt(g['feed_wait_s'], 7)}{_fmt(g['thread_cpu_s'], 7)}"
            f"{_fmt(g['process_cpu_s'], 7)}{_fmt(g['thread_runqueue_s'], 7)}"
            f"{_fmt(g['update_s'], 7)}{_fmt(g['replay_cpu_s'], 7)}"
            f"{_fmt(g['procs_running'], 8, 0)}{_fmt(g['at_s'], 7, 1)}  {g['snapshot']}"
        )
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
