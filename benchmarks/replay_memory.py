"""Replay memory and speed: bytes per transition, sample and add times at 84x84x4.

Compares the frame-deduplicated ring against the layout of the original single-process
project, which stored the ``obs`` and ``next_obs`` stacks of every transition
(2 * 4 * 84 * 84 = 56,448 B of pixels per transition).

    python -m benchmarks.replay_memory --capacity 100000 --json bench_out/replay_memory.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.report import write_json
from distributed_sac.data import Chunk
from distributed_sac.replay import ReplayBuffer, replay_nbytes

FRAME_SHAPE = (84, 84)
STACK = 4
ACTION_DIM = 3
CHUNK = 64
SEED_BYTES = 2 * STACK * FRAME_SHAPE[0] * FRAME_SHAPE[1]


def make_chunks(rng: np.random.Generator, count: int) -> list[Chunk]:
    """Random full-length chunks (random pixels, so every page of the ring is really written)."""
    return [
        Chunk(
            frames=rng.integers(0, 256, (CHUNK + STACK, *FRAME_SHAPE), dtype=np.uint8),
            action=rng.uniform(-1, 1, (CHUNK, ACTION_DIM)).astype(np.float32),
            reward=rng.normal(size=CHUNK).astype(np.float32),
            terminated=np.zeros(CHUNK, bool),
            truncated=np.zeros(CHUNK, bool),
            weights_version=k,
        )
        for k in range(count)
    ]


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def run(capacity: int, batch_size: int, repeats: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    chunks = make_chunks(rng, 16)
    rb = ReplayBuffer(capacity, FRAME_SHAPE, STACK, ACTION_DIM, chunk_length_hint=CHUNK)
    start = time.perf_counter()
    k = 0
    while rb.total_added < capacity:
        rb.add(chunks[k % len(chunks)])
        k += 1
    fill_s = time.perf_counter() - start
    # Steady state: the buffer is full, so every add also evicts.
    add_ms = median_ms(lambda: rb.add(chunks[int(rng.integers(len(chunks)))]), repeats)
    sample_ms = median_ms(lambda: rb.sample(batch_size, rng), repeats)
    return {
        "capacity": capacity,
        "stored": len(rb),
        "bytes_per_transition": rb.nbytes / capacity,
        "total_gb": rb.nbytes / 1e9,
        "bytes_per_transition_1m": replay_nbytes(1_000_000, FRAME_SHAPE, STACK, ACTION_DIM) / 1e6,
        "total_gb_1m": replay_nbytes(1_000_000, FRAME_SHAPE, STACK, ACTION_DIM) / 1e9,
        "seed_bytes_per_transition": SEED_BYTES,
        "seed_total_gb": SEED_BYTES * capacity / 1e9,
        "seed_total_gb_1m": SEED_BYTES * 1e6 / 1e9,
        "fill_s": fill_s,
        "add_chunk_ms": add_ms,
        "sample_ms": sample_ms,
        "batch_size": batch_size,
    }


def print_table(r: dict[str, float]) -> None:
    cap = int(r["capacity"])
    rows = [
        (f"bytes/transition ({cap:,})", f"{r['bytes_per_transition']:,.0f}", f"{SEED_BYTES:,}"),
        (f"total GB ({cap:,})", f"{r['total_gb']:.2f}", f"{r['seed_total_gb']:.2f}"),
        ("bytes/transition (1M)", f"{r['bytes_per_transition_1m']:,.0f}", f"{SEED_BYTES:,}"),
        ("total GB (1M)", f"{r['total_gb_1m']:.2f}", f"{r['seed_total_gb_1m']:.2f}"),
        (f"sample batch {int(r['batch_size'])} (ms)", f"{r['sample_ms']:.2f}", "-"),
        (f"add {CHUNK}-transition chunk (ms)", f"{r['add_chunk_ms']:.3f}", "-"),
        ("fill to capacity (s)", f"{r['fill_s']:.1f}", "-"),
    ]
    print(f"{'metric':<30} {'frame ring':>12} {'seed layout':>12}")
    for name, ours, seed in rows:
        print(f"{name:<30} {ours:>12} {seed:>12}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=100_000, help="replay capacity")
    parser.add_argument("--batch-size", type=int, default=128, help="transitions per sample")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per figure")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--json", type=Path, default=None, help="write results to this path")
    args = parser.parse_args()
    result = run(args.capacity, args.batch_size, args.repeats, args.seed)
    print_table(result)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
