"""Weights board: how long the replay's adds wait for its lock while publishes wake parked
weights waiters, with the board on the replay's lock (as before) against a lock of its own.

In one process, without Ray, as inside the replay actor: ``--adders`` threads add 64-transition
84x84 chunks to a real ``ReplayBuffer`` under the replay's lock at ``--adds-per-s`` in all, and
time each wait for that lock (*steady*); ``N`` threads each keep one ``WeightsBoard.wait``
parked, as the replay's 'weights' threads do for N env workers, and re-park at once with what
they got; one publisher posts new weights ``--publish-rate`` times a second (the learner
publishes every 100 updates: 3-13/s from CPU to GPU), and at each publish one more add arrives
(*at publish*: the time from the publish until that add holds the replay's lock, GIL included).
Each round runs both boards, in alternating order, so a load change on a shared machine hits
both alike. Also reported: the delivery latency from a publish to a waiter's answer.

    python -m benchmarks.weights_board --waiters 8 64 --seconds 5 --rounds 4 \
        --json bench_out/weights_board.json
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.report import write_json
from distributed_sac.config.data import Chunk
from distributed_sac.replay.buffer import ReplayBuffer
from distributed_sac.weights.board import WeightsBoard

FRAME_SHAPE = (84, 84)
STACK = 4
CHUNK = 64
CAPACITY = 20_000
BOARDS = ("shared", "own")
"""The board on the replay's lock (as before), and on its own lock."""
RATIOS = (("add_wait", "mean_ms"), ("publish_add_wait", "p50_ms"), ("publish_add_wait", "p90_ms"))
"""The shared/own ratios reported: (figure, statistic)."""


def _chunk(rng: np.random.Generator) -> Chunk:
    return Chunk(
        frames=rng.integers(0, 256, (CHUNK + STACK, *FRAME_SHAPE), dtype=np.uint8),
        action=rng.uniform(-1, 1, (CHUNK, 3)).astype(np.float32),
        reward=np.zeros(CHUNK, np.float32),
        terminated=np.zeros(CHUNK, bool),
        truncated=np.zeros(CHUNK, bool),
    )


def measure(
    board_lock: str, waiters: int, seconds: float, rate: float, adders: int, adds_per_s: float
) -> dict[str, np.ndarray]:
    """One window: the adds' lock waits (steady, and at each publish) and the waiters'
    delivery latencies, in seconds."""
    replay_lock = threading.Lock()
    board = WeightsBoard(lock=replay_lock if board_lock == "shared" else None)
    buffer = ReplayBuffer(CAPACITY, FRAME_SHAPE, STACK, 3, chunk_length_hint=CHUNK)
    chunk = _chunk(np.random.default_rng(0))
    stop, published = threading.Event(), threading.Event()
    waits: dict[str, list[float]] = {"add_wait": [], "publish_add_wait": [], "delivery": []}
    published_at = [0.0]  # perf_counter of the last publish, for the add that arrives with it

    def add_under_lock(since: float, into: str) -> None:
        with replay_lock:
            waits[into].append(time.perf_counter() - since)
            buffer.add(chunk)

    def add() -> None:
        period = adders / adds_per_s
        next_at = time.perf_counter()
        while not stop.is_set():
            add_under_lock(time.perf_counter(), "add_wait")
            next_at += period
            time.sleep(max(0.0, next_at - time.perf_counter()))

    def add_at_publish() -> None:
        while published.wait() and not stop.is_set():
            published.clear()
            add_under_lock(published_at[0], "publish_add_wait")

    def wait() -> None:
        have = -1
        while not stop.is_set():
            reply = board.wait(have, since=time.time() - 1.0, timeout=5.0)
            if reply.weights is not None:
                have = reply.weights_version
                waits["delivery"].append(time.time() - reply.publishes[-1][1])

    threads = [threading.Thread(target=wait) for _ in range(waiters)]
    threads += [threading.Thread(target=add) for _ in range(adders)]
    threads.append(threading.Thread(target=add_at_publish))
    for t in threads:
        t.start()
    end, version = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        board.publish(version, [object()], time.time())
        published_at[0] = time.perf_counter()
        published.set()
        version += 1
        time.sleep(1.0 / rate)
    stop.set()
    published.set()
    board.close()
    for t in threads:
        t.join()
    return {key: np.asarray(values) for key, values in waits.items()}


def _ms(values: np.ndarray) -> dict[str, float | None]:
    """Mean, percentiles and maximum in ms, and the count (None for no values: no waiters)."""
    if values.size == 0:
        return {
            "mean_ms": None,
            "p50_ms": None,
            "p90_ms": None,
            "p99_ms": None,
            "max_ms": None,
            "count": 0,
        }
    return {
        "mean_ms": 1e3 * float(values.mean()),
        **{f"p{q}_ms": 1e3 * float(np.percentile(values, q)) for q in (50, 90, 99)},
        "max_ms": 1e3 * float(values.max()),
        "count": int(values.size),
    }


def run(
    waiters: list[int], seconds: float, rounds: int, rate: float, adders: int, adds_per_s: float
) -> dict:
    """Per waiter count and board: add-wait and delivery figures, and the shared/own ratios."""
    rows = []
    for n in waiters:
        samples: dict = {b: {} for b in BOARDS}
        for k in range(rounds):
            for b in BOARDS if k % 2 == 0 else BOARDS[::-1]:
                for key, values in measure(b, n, seconds, rate, adders, adds_per_s).items():
                    samples[b].setdefault(key, []).append(values)
        row: dict = {"waiters": n}
        for b in BOARDS:
            for key, parts in samples[b].items():
                row[f"{b}_{key}"] = _ms(np.concatenate(parts))
        for key, stat in RATIOS:
            shared, own = row[f"shared_{key}"][stat], row[f"own_{key}"][stat]
            row[f"{key}_{stat[:-3]}_ratio"] = shared / own if own else None
        rows.append(row)
    return {
        "rows": rows,
        "seconds": seconds,
        "rounds": rounds,
        "publish_rate": rate,
        "adders": adders,
        "adds_per_s": adds_per_s,
        "cpu_count": os.cpu_count(),
        "loadavg_1min_after": os.getloadavg()[0],
    }


def _cell(value: float | None, fmt: str, unit: str = "") -> str:
    return f"{'-' if value is None else format(value, fmt) + unit:>14}"


def print_table(result: dict) -> None:
    heads = ("waiters", "board", "steady mean", "p99", "at publish p50", "p90", "p99")
    print(" ".join(f"{h:>14}" for h in (*heads, "delivery p50", "p99")) + "   (ms)")
    for row in result["rows"]:
        for b in BOARDS:
            cells = [row[f"{b}_add_wait"][s] for s in ("mean_ms", "p99_ms")]
            cells += [row[f"{b}_publish_add_wait"][f"p{q}_ms"] for q in (50, 90, 99)]
            cells += [row[f"{b}_delivery"][f"p{q}_ms"] for q in (50, 99)]
            print(f"{row['waiters']:>14} {b:>14} " + " ".join(_cell(c, ".3f") for c in cells))
        r = [row[f"{key}_{stat[:-3]}_ratio"] for key, stat in RATIOS]
        ratios = (r[0], None, r[1], r[2])
        print(f"{'':>14} {'shared/own':>14} " + " ".join(_cell(c, ".1f", "x") for c in ratios))
    print(
        f"{result['publish_rate']:g} publishes/s, {result['adds_per_s']:g} adds/s over "
        f"{result['adders']} threads, {result['rounds']} x {result['seconds']:g} s per board; "
        f"{result['cpu_count']} cores, load {result['loadavg_1min_after']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiters", type=int, nargs="+", default=[8, 64], help="parked waits")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one window")
    parser.add_argument("--rounds", type=int, default=2, help="windows per board (alternating)")
    parser.add_argument("--publish-rate", type=float, default=20.0, help="publishes per second")
    parser.add_argument("--adders", type=int, default=2, help="threads adding chunks")
    parser.add_argument("--adds-per-s", type=float, default=200.0, help="chunk adds per second")
    parser.add_argument("--json", type=Path, default=None, help="write results to this path")
    args = parser.parse_args()
    result = run(
        args.waiters, args.seconds, args.rounds, args.publish_rate, args.adders, args.adds_per_s
    )
    print_table(result)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
