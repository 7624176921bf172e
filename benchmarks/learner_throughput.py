"""Full-size SAC-AE learner throughput: plain path vs fast path, on CPU and CUDA.

Batch 128 of 4x84x84 uint8 observations, default AgentConfig, random pixels (the update's
cost does not depend on their content). The two paths' updates alternate, so background load
from other processes falls on both alike, and the table reports medians over actor-update
cycles, which bursts of that load move less than means (the JSON keeps means and every
update's time too). The table and the JSON list the speedups each path uses
(``SacAeAgent.speedups``, described in agent/sac_ae.py): the shared encoder pass, channels-last,
fused Adam, bf16 autocast (only where the device has bf16 hardware) and torch.compile
(``--compile``). Example:

    python -m benchmarks.learner_throughput --updates 10 --json bench_out/learner.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from benchmarks.report import write_json
from distributed_sac.agent.sac_ae import SacAeAgent
from distributed_sac.config.data import Batch
from distributed_sac.config.fields import AgentConfig

OBS_SHAPE = (4, 84, 84)
ACTION_DIM = 3


def random_batches(n: int, batch_size: int, seed: int = 0) -> list[Batch]:
    """``n`` random full-size batches."""
    rng = np.random.default_rng(seed)
    return [
        Batch(
            obs=rng.integers(0, 256, (batch_size, *OBS_SHAPE), dtype=np.uint8),
            action=rng.uniform(-1, 1, (batch_size, ACTION_DIM)).astype(np.float32),
            reward=rng.normal(size=batch_size).astype(np.float32),
            next_obs=rng.integers(0, 256, (batch_size, *OBS_SHAPE), dtype=np.uint8),
            terminated=rng.random(batch_size) < 0.01,
            truncated=np.zeros(batch_size, dtype=bool),
        )
        for _ in range(n)
    ]


def time_paths(
    device: str, updates: int, warmup: int, compile_fast: bool
) -> tuple[dict[str, list[float]], dict[str, dict[str, bool]]]:
    """Seconds of each timed update per path, interleaved so both see the same load; speedups."""
    agents = {
        "plain": SacAeAgent(OBS_SHAPE, ACTION_DIM, AgentConfig(fast_path=False), device=device),
        "fast": SacAeAgent(
            OBS_SHAPE, ACTION_DIM, AgentConfig(fast_path=True, compile=compile_fast), device=device
        ),
    }
    batches = random_batches(4, AgentConfig().batch_size)
    seconds: dict[str, list[float]] = {name: [] for name in agents}
    for i in range(warmup + updates):
        for name, agent in agents.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            agent.update(batches[i % len(batches)])
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return seconds, {name: agent.speedups for name, agent in agents.items()}


def per_update(seconds: list[float]) -> tuple[float, float]:
    """(median over actor-update cycles, mean) of seconds per update.

    Only every ``actor_update_every``-th update steps the actor, so medians are taken over
    whole cycles of updates, each cycle's time divided by its length.
    """
    cycle = AgentConfig().actor_update_every
    starts = range(0, len(seconds) - cycle + 1, cycle)
    cycles = [sum(seconds[i : i + cycle]) / cycle for i in starts]
    return statistics.median(cycles or seconds), statistics.fmean(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto: cpu, and cuda too when available",
    )
    parser.add_argument("--updates", type=int, default=10, help="timed updates per path")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates per path first")
    parser.add_argument("--compile", action="store_true", help="fast path with torch.compile")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--json", default="", help="write results to this path")
    args = parser.parse_args()
    if args.updates < 1 or args.warmup < 0 or args.threads < 0:
        raise ValueError(
            f"need --updates >= 1, --warmup >= 0, --threads >= 0; "
            f"got {args.updates}, {args.warmup}, {args.threads}"
        )
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    load_before = os.getloadavg()[0]
    rows = []
    for device in devices:
        seconds, speedups = time_paths(device, args.updates, args.warmup, args.compile)
        stats = {path: per_update(times) for path, times in seconds.items()}
        for path, (median, mean) in stats.items():
            row = {"path": path, "device": device, "updates_per_s": 1.0 / median}
            row |= {"ms_per_update": 1e3 * median, "speedup": stats["plain"][0] / median}
            row |= {"ms_per_update_mean": 1e3 * mean, "speedup_mean": stats["plain"][1] / mean}
            rows.append(row | {"speedups": speedups[path], "seconds": seconds[path]})

    head = f"{'path':<6} {'device':<6} {'updates/s':>10} {'ms/update':>10} {'speedup':>8}"
    print(f"{head} {'(mean)':>8}  active speedups")
    for r in rows:
        active = ", ".join(name for name, on in r["speedups"].items() if on) or "none"
        print(
            f"{r['path']:<6} {r['device']:<6} {r['updates_per_s']:>10.3f} "
            f"{r['ms_per_update']:>10.1f} {r['speedup']:>7.2f}x "
            f"{r['speedup_mean']:>7.2f}x  {active}"
        )
    meta = {
        "statistic": "median over actor-update cycles (ms_per_update_mean: mean over updates)",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_1min_before": load_before,
        "loadavg_1min_after": os.getloadavg()[0],
        "updates": args.updates,
        "warmup": args.warmup,
        "batch_size": AgentConfig().batch_size,
        "obs_shape": OBS_SHAPE,
        "cuda_device": torch.cuda.get_device_name() if "cuda" in devices else None,
        "cpu_bf16": {k: torch.cpu.get_capabilities().get(k) for k in ("avx512_bf16", "amx_bf16")},
    }
    print(
        f"medians over actor-update cycles, (mean): ratio of means; torch threads "
        f"{meta['torch_threads']}, 1-min load {load_before:.2f} -> "
        f"{meta['loadavg_1min_after']:.2f} (other processes share the CPU)"
    )
    write_json(args.json, {"results": rows, "meta": meta})


if __name__ == "__main__":
    main()
