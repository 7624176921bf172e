"""Soak: a long tiny-preset run, sampling every actor's resident memory and the object store.

Runs ``Driver.train`` on a local Ray in a background thread (tiny preset, 2 env workers,
evaluations and checkpoints on, so every code path repeats), and every ``--interval-s``
samples the RSS of each live actor process (``ray.util.state.list_actors`` for the pids,
psutil for the memory), of this driver process, and the object store's usage (Ray's memory
summary). After ``--minutes`` it closes collection, lets the run finish, and fits a line to
each series after the warm-up: growth in MB/hour, target no trend. A series is flagged when
its fitted rise over the measured window exceeds ``--flag-pct`` of its starting value.

    python -m benchmarks.soak --minutes 30 --interval-s 60 --json bench_out/soak.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import ray
from ray._private.internal_api import memory_summary
from ray.util.state import list_actors

from benchmarks.report import write_json
from distributed_sac.config.presets import tiny_preset
from distributed_sac.remote.driver import Driver
from distributed_sac.remote.lifecycle import stop_run
from distributed_sac.remote.placement import start_local_ray
from distributed_sac.run.run_dir import RunDir

MB = 1e6


def sample(dashboard: str, gcs: str) -> dict[str, float]:
    """RSS in MB of every live actor (keyed by name) and this process; object store MB."""
    import psutil  # Ray vendors psutil and puts it on sys.path only once ray is imported

    values = {"driver": psutil.Process().memory_info().rss / MB}
    for actor in list_actors(address=dashboard, filters=[("state", "=", "ALIVE")]):
        try:
            rss = psutil.Process(actor.pid).memory_info().rss / MB
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        values[actor.name or f"{actor.class_name}-{actor.pid}"] = rss
    found = re.search(r"Plasma memory usage (\d+) MiB", memory_summary(gcs, stats_only=True))
    values["object_store"] = float(found.group(1)) * 2**20 / MB if found else float("nan")
    return values


def trends(samples: list[dict], warmup_s: float, flag_pct: float) -> list[dict]:
    """Per series: first and last MB after warm-up, least-squares slope in MB/hour, flag."""
    kept = [s for s in samples if s["t"] >= warmup_s]
    names = sorted({k for s in kept for k in s["mb"]})
    rows = []
    for name in names:
        points = [(s["t"], s["mb"][name]) for s in kept if np.isfinite(s["mb"].get(name, np.nan))]
        if len(points) < 2:
            continue
        t, mb = np.array(points).T
        slope = np.polyfit(t / 3600.0, mb, 1)[0]
        rise = slope * (t[-1] - t[0]) / 3600.0
        rows.append(
            {
                "series": name,
                "samples": len(points),
                "first_mb": float(mb[0]),
                "last_mb": float(mb[-1]),
                "max_mb": float(mb.max()),
                "slope_mb_per_h": float(slope),
                "fitted_rise_mb": float(rise),
                "growth": bool(rise > flag_pct / 100.0 * max(mb[0], 1.0)),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak")
    parser.add_argument("--interval-s", type=float, default=60.0, help="seconds between samples")
    parser.add_argument(
        "--warmup-minutes",
        type=float,
        default=None,
        help="samples before this are not fitted (default min(5, minutes / 4))",
    )
    parser.add_argument("--workers", type=int, default=2, help="env-worker actors")
    parser.add_argument(
        "--flag-pct",
        type=float,
        default=5.0,
        help="flag a series whose fitted rise exceeds this %% of its start",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench_out/soak"), help="run directory root"
    )
    parser.add_argument("--json", type=Path, default=None, help="write results to this path")
    args = parser.parse_args()
    if args.minutes <= 0 or args.interval_s <= 0 or args.workers < 1:
        raise ValueError("need --minutes > 0, --interval-s > 0 and --workers >= 1")
    warmup_s = 60.0 * (
        min(5.0, args.minutes / 4) if args.warmup_minutes is None else args.warmup_minutes
    )

    base = tiny_preset()
    # Tiny's every-200-step checkpoints would make the soak mostly disk writes; these still
    # repeat evaluation (with video) and checkpointing many times in 30 minutes.
    cfg = dataclasses.replace(
        base,
        num_workers=args.workers,
        total_steps=10**9,
        checkpoint_every=5_000,
        log_every_s=10.0,
        wandb="disabled",
        eval=dataclasses.replace(base.eval, every=1_000),
    )
    run = RunDir.create(args.out / time.strftime("soak-%Y%m%d-%H%M%S"), cfg)
    cores = os.cpu_count() or 1
    context = start_local_ray(
        cfg, cfg.num_workers, include_dashboard=True, logging_level="ERROR", log_to_driver=False
    )
    dashboard, gcs = f"http://{context.dashboard_url}", ray.get_runtime_context().gcs_address
    samples: list[dict] = []
    try:
        driver = Driver(cfg, run)
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(driver.train()), daemon=True)
        start = time.monotonic()
        thread.start()
        while time.monotonic() - start < 60.0 * args.minutes and thread.is_alive():
            t = time.monotonic() - start
            samples.append({"t": t, "mb": sample(dashboard, gcs)})
            line = "  ".join(f"{k}={v:.0f}" for k, v in sorted(samples[-1]["mb"].items()))
            print(f"[{t / 60:5.1f} min] MB: {line}", flush=True)
            time.sleep(max(0.0, args.interval_s - (time.monotonic() - start - t)))
        samples.append({"t": time.monotonic() - start, "mb": sample(dashboard, gcs)})
        stop_run(driver.workers, driver.replay, driver.learner, [])
        thread.join(timeout=120)
    finally:
        ray.shutdown()

    rows = trends(samples, warmup_s, args.flag_pct)
    print(
        f"\nsoak {args.minutes:g} min, {args.workers} workers, {cores} cores; fit after "
        f"{warmup_s / 60:.1f} min warm-up; agent steps {result.get('agent_steps')}, "
        f"learner updates {result.get('learner_updates')}, restarts "
        f"{result.get('worker_restarts')}"
    )
    print(
        f"{'series':<14}{'n':>4}{'first MB':>10}{'last MB':>10}{'max MB':>9}"
        f"{'MB/hour':>10}{'rise MB':>9}  trend"
    )
    for r in rows:
        print(
            f"{r['series']:<14}{r['samples']:>4}{r['first_mb']:>10.1f}{r['last_mb']:>10.1f}"
            f"{r['max_mb']:>9.1f}{r['slope_mb_per_h']:>10.1f}{r['fitted_rise_mb']:>9.1f}  "
            f"{'GROWTH' if r['growth'] else 'none'}"
        )
    print(f"1-min load {os.getloadavg()[0]:.2f} (other processes share the CPU)")
    write_json(
        args.json,
        {
            "trends": rows,
            "samples": samples,
            "final_record": result,
            "run": str(run.path),
            "minutes": args.minutes,
            "interval_s": args.interval_s,
            "warmup_s": warmup_s,
            "workers": args.workers,
            "cores": cores,
        },
    )


if __name__ == "__main__":
    main()
