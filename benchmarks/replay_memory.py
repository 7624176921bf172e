"""Replay memory and speed: bytes per transition, sample and add times at 84x84x4, and for RGB.

Compares the frame-deduplicated ring against the layout of the original single-process
project, which stored the ``obs`` and ``next_obs`` stacks of every transition
(2 * 4 * 84 * 84 = 56,448 B of pixels per transition). The RGB columns measure the same at
3x84x84 frames stacked 3 (the dmc protocol): one 21,168 B frame per transition against
2 * 3 * 21,168 = 127,008 B for two stacks.

    python -m benchmarks.replay_memory --capacity 100000 --json bench_out/replay_memory.json
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from benchmarks.report import write_json
from distributed_sac.config.data import Chunk
from distributed_sac.replay.buffer import ReplayBuffer, replay_nbytes

FRAME_SHAPE = (84, 84)
STACK = 4
RGB_FRAME_SHAPE = (3, 84, 84)
RGB_STACK = 3
ACTION_DIM = 3
CHUNK = 64
SEED_BYTES = 2 * STACK * math.prod(FRAME_SHAPE)
RGB_SEED_BYTES = 2 * RGB_STACK * math.prod(RGB_FRAME_SHAPE)


def make_chunks(
    rng: np.random.Generator, count: int, frame_shape: tuple[int, ...], stack: int
) -> list[Chunk]:
    """Random full-length chunks (random pixels, so every page of the ring is really written)."""
    return [
        Chunk(
            frames=rng.integers(0, 256, (CHUNK + stack, *frame_shape), dtype=np.uint8),
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


def measure(
    frame_shape: tuple[int, ...],
    stack: int,
    capacity: int,
    batch_size: int,
    repeats: int,
    seed: int,
) -> dict[str, float]:
    """Memory, fill, add and sample figures of one frame layout, the buffer filled to capacity."""
    rng = np.random.default_rng(seed)
    chunks = make_chunks(rng, 16, frame_shape, stack)
    rb = ReplayBuffer(capacity, frame_shape, stack, ACTION_DIM, chunk_length_hint=CHUNK)
    start = time.perf_counter()
    k = 0
    while rb.total_added < capacity:
        rb.add(chunks[k % len(chunks)])
        k += 1
    fill_s = time.perf_counter() - start
    # Steady state: the buffer is full, so every add also evicts.
    add_ms = median_ms(lambda: rb.add(chunks[int(rng.integers(len(chunks)))]), repeats)
    sample_ms = median_ms(lambda: rb.sample(batch_size, rng), repeats)
    seed_bytes = 2 * stack * math.prod(frame_shape)
    one_million = replay_nbytes(1_000_000, frame_shape, stack, ACTION_DIM)
    return {
        "capacity": capacity,
        "stored": len(rb),
        "bytes_per_transition": rb.nbytes / capacity,
        "total_gb": rb.nbytes / 1e9,
        "bytes_per_transition_1m": one_million / 1e6,
        "total_gb_1m": one_million / 1e9,
        "seed_bytes_per_transition": seed_bytes,
        "seed_total_gb": seed_bytes * capacity / 1e9,
        "seed_total_gb_1m": seed_bytes * 1e6 / 1e9,
        "fill_s": fill_s,
        "add_chunk_ms": add_ms,
        "sample_ms": sample_ms,
        "batch_size": batch_size,
    }


def run(capacity: int, batch_size: int, repeats: int, seed: int) -> dict:
    """The grayscale figures, then the RGB ones under ``rgb_`` keys."""
    result: dict = measure(FRAME_SHAPE, STACK, capacity, batch_size, repeats, seed)
    rgb = measure(RGB_FRAME_SHAPE, RGB_STACK, capacity, batch_size, repeats, seed)
    result["rgb_frame_shape"], result["rgb_stack"] = list(RGB_FRAME_SHAPE), RGB_STACK
    result.update({f"rgb_{k}": v for k, v in rgb.items() if k not in ("capacity", "batch_size")})
    return result


def print_table(r: dict) -> None:
    cap = int(r["capacity"])
    rows = []
    for name, key, seed_key, fmt in (
        (
            f"bytes/transition ({cap:,})",
            "bytes_per_transition",
            "seed_bytes_per_transition",
            ",.0f",
        ),
        (f"total GB ({cap:,})", "total_gb", "seed_total_gb", ".2f"),
        ("bytes/transition (1M)", "bytes_per_transition_1m", "seed_bytes_per_transition", ",.0f"),
        ("total GB (1M)", "total_gb_1m", "seed_total_gb_1m", ".2f"),
    ):
        cells = [r[key], r[seed_key], r[f"rgb_{key}"], r[f"rgb_{seed_key}"]]
        rows.append((name, *(format(v, fmt) for v in cells)))
    for name, key, fmt in (
        (f"sample batch {int(r['batch_size'])} (ms)", "sample_ms", ".2f"),
        (f"add {CHUNK}-transition chunk (ms)", "add_chunk_ms", ".3f"),
        ("fill to capacity (s)", "fill_s", ".1f"),
    ):
        rows.append((name, format(r[key], fmt), "-", format(r[f"rgb_{key}"], fmt), "-"))
    heads = ("frame ring", "seed layout", "RGB ring", "RGB seed")
    print(f"{'metric':<30}" + "".join(f" {h:>12}" for h in heads))
    for name, *cells in rows:
        print(f"{name:<30}" + "".join(f" {c:>12}" for c in cells))


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
