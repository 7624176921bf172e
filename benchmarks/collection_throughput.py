"""Collection throughput: env-worker actors against single-process stepping of the same env.

Four measurements per (env, preset):

* single: agent steps/s of one ``Rollout`` acting with a ``Policy`` of the preset's networks
  in this process (one torch thread), per wall second and per CPU second.
* workers: aggregate agent steps/s reaching the ``ReplayServer`` from N ``EnvWorker`` actors
  (1..--max-workers) built as the driver builds them, the learner idle so the rate limiter
  never throttles them; efficiency = aggregate / (N * single) and, since a worker cannot run
  faster than its core, per-core efficiency = aggregate / (min(N, cores) * single).
* broadcast: with the learner updating at a small replay ratio and publishing every update,
  the latency from ``Learner.publish`` (``publish_times``) to a worker loading those weights
  (``first_use``); it includes the wait for the worker's next add reply, which names them.
  Both clocks are ``time.time()`` of one machine.
* idle: a real ``Driver`` run at replay ratio 1 with --max-workers workers for
  --idle-seconds; the learner's mean ``learner_idle_frac`` from metrics.jsonl once it
  updates, and whether the workers keep up (their unthrottled aggregate against the
  learner's own update rate, 1 / mean update time).

Examples:

    python -m benchmarks.collection_throughput --env VisualPendulum CarRacing --preset tiny \
        --max-workers 2 --seconds 20 --json bench_out/collection_throughput.json
    python -m benchmarks.collection_throughput --preset full --idle-seconds 90
"""

# ruff: noqa: E402 (thread caps must precede the numpy import)
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import dataclasses
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import ray
import torch

from benchmarks.report import write_json
from distributed_sac.agent.policy import Policy
from distributed_sac.config.fields import TrainConfig
from distributed_sac.config.presets import PRESETS
from distributed_sac.envs.registry import action_dim as env_action_dim
from distributed_sac.envs.rollout import Rollout
from distributed_sac.remote.driver import Driver
from distributed_sac.remote.env_worker import EnvWorker
from distributed_sac.remote.learner import Learner
from distributed_sac.remote.lifecycle import stop_run
from distributed_sac.remote.placement import learner_device, learner_options, start_local_ray
from distributed_sac.remote.replay_server import remote_replay
from distributed_sac.replay.buffer import ReplaySpec
from distributed_sac.run.run_dir import RunDir

NEVER = 10**12
"""A total_steps / max_updates the phases never reach; they stop the actors themselves."""


def preset_config(preset: str, env: str) -> TrainConfig:
    """The preset's networks and images on ``env``; acting with the policy from the first step."""
    cfg = PRESETS[preset]()
    return dataclasses.replace(
        cfg, env=env, rollout=dataclasses.replace(cfg.rollout, exploration_steps=0)
    )


def single_process(cfg: TrainConfig, seconds: float) -> dict[str, float]:
    """Agent steps/s of one Rollout + Policy in this process, per wall and per CPU second."""
    torch.set_num_threads(1)
    rollout = Rollout(cfg.env, cfg.wrappers, cfg.rollout, 1, cfg.seed)
    policy = Policy(
        cfg.wrappers.obs_shape, env_action_dim(cfg.env), cfg.agent, cfg.seed, cfg.wrappers.channels
    )
    policy.weights_version = 0
    for _ in range(10):
        rollout.step(policy, explore=False)
    steps, cpu, wall = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - wall < seconds:
        rollout.step(policy, explore=False)
        steps += 1
    rollout.close()
    return {
        "steps_per_s": steps / (time.perf_counter() - wall),
        "steps_per_cpu_s": steps / (time.process_time() - cpu),
    }


def start_actors(cfg: TrainConfig, n: int, replay_ratio: float) -> tuple:
    """Learner, replay and ``n`` env workers wired as the driver wires them (no names)."""
    obs_shape, action_dim = cfg.wrappers.obs_shape, env_action_dim(cfg.env)
    rcfg = dataclasses.replace(cfg.replay, replay_ratio=replay_ratio, min_size=cfg.agent.batch_size)
    device = learner_device(cfg)
    learner = (
        ray.remote(Learner)
        .options(**{k: v for k, v in learner_options(device, 0).items() if k != "name"})
        .remote(cfg, obs_shape, action_dim, device)
    )
    spec = dataclasses.replace(ReplaySpec.from_config(cfg, action_dim), cfg=rcfg, total_steps=NEVER)
    replay = remote_replay(n).options(num_cpus=0).remote(spec)
    ray.get(learner.attach.remote(replay))
    workers = [
        ray.remote(EnvWorker).options(num_cpus=1, max_concurrency=2).remote(i, cfg, replay)
        for i in range(n)
    ]
    ray.get([w.ready.remote() for w in workers])
    return learner, replay, workers


def stop_actors(learner, replay, workers, runs: list) -> None:
    stop_run(workers, replay, learner, runs)
    for actor in (learner, replay, *workers):
        ray.kill(actor)


def collect(cfg: TrainConfig, n: int, seconds: float, warmup: float) -> dict:
    """Aggregate and per-worker agent steps/s into replay, learner not updating."""
    learner, replay, workers = start_actors(cfg, n, replay_ratio=1e-9)
    runs = [w.run.remote() for w in workers]
    time.sleep(warmup)
    s0, t0 = ray.get(replay.stats.remote()), time.monotonic()
    time.sleep(seconds)
    s1, t1 = ray.get(replay.stats.remote()), time.monotonic()
    stop_actors(learner, replay, workers, runs)
    dt = t1 - t0
    per_worker = [(s1.worker_steps.get(i, 0) - s0.worker_steps.get(i, 0)) / dt for i in range(n)]
    return {"aggregate": (s1.agent_steps - s0.agent_steps) / dt, "per_worker": per_worker}


def broadcast(cfg: TrainConfig, n: int, seconds: float, warmup: float, ratio: float) -> dict:
    """Publish-to-first-use latency of weight versions, learner publishing every update."""
    cfg = dataclasses.replace(cfg, weights_publish_every=1)
    learner, replay, workers = start_actors(cfg, n, replay_ratio=ratio)
    runs = [w.run.remote() for w in workers] + [learner.run.remote(replay)]
    time.sleep(warmup)
    published: dict[int, float] = {}
    used: list[dict[int, float]] = [{} for _ in workers]
    end = time.monotonic() + seconds
    # stats() keeps only the last 8 versions on each side, so poll faster than that many land.
    while time.monotonic() < end:
        lstats, *wstats = ray.get([learner.stats.remote()] + [w.stats.remote() for w in workers])
        published.update(lstats.publish_times)
        for seen, s in zip(used, wstats, strict=True):
            seen.update(s.first_use)
        time.sleep(0.25)
    stop_actors(learner, replay, workers, runs)
    lat = [seen[v] - published[v] for seen in used for v in seen if v in published and v > 0]
    lat_ms = np.array(lat) * 1e3
    return {
        "versions_published": len([v for v in published if v > 0]),
        "latencies": len(lat_ms),
        "median_ms": float(np.median(lat_ms)) if len(lat_ms) else None,
        "p90_ms": float(np.percentile(lat_ms, 90)) if len(lat_ms) else None,
        "max_ms": float(lat_ms.max()) if len(lat_ms) else None,
    }


def learner_idle(cfg: TrainConfig, n: int, seconds: float, out: Path) -> dict:
    """A Driver run at replay ratio 1 for ``seconds``; the learner's idle fraction meanwhile.

    Collection never ends by itself (a finished collection closes replay, after which the
    learner drains without waiting and would look busy), so the run is stopped by time.
    """
    cfg = dataclasses.replace(
        cfg,
        num_workers=n,
        learner_cpus=1.0,
        total_steps=NEVER,
        checkpoint_every=NEVER,
        log_every_s=5.0,
        wandb="disabled",
        replay=dataclasses.replace(cfg.replay, replay_ratio=1.0, min_size=cfg.agent.batch_size),
        eval=dataclasses.replace(cfg.eval, every=0),
    )
    out.mkdir(parents=True, exist_ok=True)
    run = RunDir.create(Path(tempfile.mkdtemp(prefix="idle-", dir=out)) / "run", cfg)
    driver = Driver(cfg, run)
    thread = threading.Thread(target=driver.train, daemon=True)
    thread.start()
    time.sleep(seconds)
    stopped = time.time()
    lstats = ray.get(driver.learner.stats.remote())
    stop_run(driver.workers, driver.replay, driver.learner, [])
    thread.join(timeout=120)
    for actor in (driver.learner, driver.replay, driver.evaluator, *driver.workers):
        ray.kill(actor)
    # The first updating record includes the wait for min_size.
    records = [r for r in run.read_metrics() if r["learner_updates"] > 0 and r["time"] <= stopped]
    records = records[1:]
    update_s = lstats.update_s / max(1, lstats.updates)
    return {
        "idle_frac": _mean([r["learner_idle_frac"] for r in records]),
        "agent_steps_per_s": _mean([r["agent_steps_per_s"] for r in records]),
        "updates_per_s": _mean([r["updates_per_s"] for r in records]),
        "learner_max_updates_per_s": 1.0 / update_s if update_s > 0 else None,
        "learner_updates": lstats.updates,
        "records": len(records),
        "run": str(run.path),
    }


def _mean(values: list) -> float | None:
    return statistics.fmean(values) if values else None


def _f(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[dict], cores: int) -> None:
    print(f"\ncollection throughput, agent steps/s ({cores} cores; N > {cores} oversubscribes)")
    print(
        f"{'env':<15}{'preset':<13}{'N':>3}{'single':>9}{'single/cpu':>11}{'aggregate':>11}"
        f"{'per worker':>11}{'eff':>6}{'eff/core':>9}"
    )
    for r in results:
        for w in r["workers"]:
            print(
                f"{r['env']:<15}{r['preset']:<13}{w['n']:>3}{r['single']['steps_per_s']:>9.1f}"
                f"{r['single']['steps_per_cpu_s']:>11.1f}{w['aggregate']:>11.1f}"
                f"{w['aggregate'] / w['n']:>11.1f}{w['efficiency']:>6.2f}"
                f"{w['efficiency_per_core']:>9.2f}"
            )
    print(
        f"\n{'env':<15}{'preset':<13}{'bcast med ms':>13}{'p90 ms':>8}{'n':>5}"
        f"{'idle frac':>10}{'steps/s':>9}{'learner max ups':>16}{'keep up':>8}"
    )
    for r in results:
        b, d = r["broadcast"], r["idle"]
        print(
            f"{r['env']:<15}{r['preset']:<13}{_f(b['median_ms']):>13}{_f(b['p90_ms']):>8}"
            f"{b['latencies']:>5}{_f(d['idle_frac'], '.3f'):>10}{_f(d['agent_steps_per_s']):>9}"
            f"{_f(d['learner_max_updates_per_s']):>16}{str(d['workers_keep_up']):>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--env", nargs="+", default=["VisualPendulum"], choices=["VisualPendulum", "CarRacing"]
    )
    parser.add_argument("--preset", nargs="+", default=["tiny"], choices=sorted(PRESETS))
    parser.add_argument("--max-workers", type=int, default=2, help="time 1..N env workers")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed window per phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="untimed seconds first")
    parser.add_argument(
        "--broadcast-ratio",
        type=float,
        default=None,
        help="replay ratio of the broadcast phase (default full 0.005, other presets 0.05)",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=60.0,
        help="length of the replay-ratio-1 run (full networks on CPU: 1-3 s per update)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench_out/collection"),
        help="run directories of the idle phase",
    )
    parser.add_argument("--json", type=Path, default=None, help="write results to this path")
    args = parser.parse_args()
    if args.max_workers < 1 or args.seconds <= 0:
        raise ValueError(
            f"need --max-workers >= 1, --seconds > 0; got {args.max_workers}, {args.seconds}"
        )

    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    start_local_ray(
        preset_config(args.preset[0], args.env[0]),
        args.max_workers,
        logging_level="ERROR",
        log_to_driver=False,
    )
    results = []
    try:
        for preset in args.preset:
            for env in args.env:
                cfg = preset_config(preset, env)
                single = single_process(cfg, args.seconds)
                workers = []
                for n in range(1, args.max_workers + 1):
                    w = collect(cfg, n, args.seconds, args.warmup)
                    w |= {"n": n, "efficiency": w["aggregate"] / (n * single["steps_per_s"])}
                    w["efficiency_per_core"] = w["aggregate"] / (
                        min(n, cores) * single["steps_per_s"]
                    )
                    workers.append(w)
                ratio = args.broadcast_ratio or (0.005 if preset == "full" else 0.05)
                bcast = broadcast(cfg, args.max_workers, args.seconds, args.warmup, ratio)
                idle = learner_idle(cfg, args.max_workers, args.idle_seconds, args.out)
                # At ratio 1 workers keep up when, unthrottled, they out-collect the learner.
                fastest = idle["learner_max_updates_per_s"] or 0.0
                idle["workers_keep_up"] = workers[-1]["aggregate"] >= fastest
                results.append(
                    {
                        "env": env,
                        "preset": preset,
                        "single": single,
                        "workers": workers,
                        "broadcast": bcast | {"replay_ratio": ratio},
                        "idle": idle,
                    }
                )
                print_table(results[-1:], cores)
    finally:
        ray.shutdown()
    print_table(results, cores)
    meta = {
        "cores": cores,
        "device": "cpu",
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg()[0],
        "seconds": args.seconds,
        "warmup": args.warmup,
    }
    print(
        f"1-min load {load_before:.2f} -> {meta['loadavg_after']:.2f} "
        "(other processes share the CPU); GPU: none (learner on cpu)"
    )
    write_json(args.json, {"results": results, "meta": meta})


if __name__ == "__main__":
    main()
