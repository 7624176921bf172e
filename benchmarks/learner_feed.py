"""Learner feed: batches/s reaching the update loop, pixels shipped per batch vs mirrored once.

Both paths run in one Ray session against the same real ``ReplayServer`` (full-size frames,
84x84, 4 stacked, batch 128, 20k transitions stored, the rate limiter not binding) while
synthetic inserter actors (numpy only) add 64-step chunks at ``--insert-rate`` agent steps/s:

* old: a consumer actor asks the replay for whole ``Batch`` es (obs and next_obs stacks, 7.2 MB
  each, gathered on the replay's event loop and shipped through the object store), three in
  flight, moves each to torch and does nothing with it: the data path before the mirror,
  rebuilt here as a ``ReplayServer`` subclass with the old ``sample`` method;
* new: the real ``Learner`` with a no-op update: feeds carry new chunks once and index batches,
  stacks are gathered from its ``DeviceMirror`` on its device;
* update_per_s: the real learner with the real SAC-AE update (the default full-size networks)
  fed the new way, beside ``standalone_update_per_s``, the same update in this process on a
  pre-gathered batch.

    python -m benchmarks.learner_feed --seconds 20 --json bench_out/learner_feed.json
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import ray
import torch

from benchmarks.report import write_json
from benchmarks.synthetic_worker import random_chunks
from distributed_sac.agent.sac_ae import SacAeAgent
from distributed_sac.agent.tensors import batch_tensors
from distributed_sac.config.data import Batch
from distributed_sac.config.fields import AgentConfig, ReplayConfig, TrainConfig
from distributed_sac.remote.learner import Learner
from distributed_sac.remote.replay_server import CONCURRENCY_GROUPS, ReplayServer
from distributed_sac.replay.buffer import ReplaySpec

FRAME_SHAPE = (84, 84)
STACK = 4
OBS = (STACK, *FRAME_SHAPE)
BATCH = 128
STORED = 20_000
CHUNK = 64
NEVER = 10**12


class OldReplay(ReplayServer):
    """The replay with the pre-mirror ``sample``: one whole batch of pixels per call."""

    @ray.method(concurrency_group="feed")
    def sample_batch(self) -> Batch:
        with self._lock:
            self.limiter.sample(1)
            return self.buffer.sample(self.spec.batch_size, self.rng)


class OldConsumer:
    """Pulls whole batches, three in flight, and moves them to torch: the old learner loop."""

    def run(self, replay, seconds: float) -> int:
        pending = [replay.sample_batch.remote() for _ in range(3)]
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            batch = ray.get(pending.pop(0))
            pending.append(replay.sample_batch.remote())
            batch_tensors(batch, OBS, 1, torch.device("cpu"))
            n += 1
        ray.get(pending)
        return n


class NoopLearner(Learner):
    """The real learner loop (feeds, mirror, gathers) with an update that does nothing."""

    def _update(self, batch, num_demo: int = 0) -> None:
        self.agent.num_updates += 1


class Inserter:
    """Adds prerecorded 64-step chunks at a steady rate (numpy only)."""

    def __init__(self, seed: int) -> None:
        self._stop = False
        rng = np.random.default_rng(seed)
        self.chunks = random_chunks(rng, 8, FRAME_SHAPE, STACK, CHUNK)

    def fill(self, replay, n: int) -> None:
        ray.get([replay.add.remote(0, [self.chunks[i % 8]], []) for i in range(n // CHUNK)])

    def stop(self) -> None:
        self._stop = True

    def run(self, replay, rate: float) -> tuple[int, float]:
        start, added = time.monotonic(), 0
        while not self._stop:
            ray.get(replay.add.remote(1, [self.chunks[added // CHUNK % 8]], []))
            added += CHUNK
            time.sleep(max(0.0, start + added / rate - time.monotonic()))
        return added, time.monotonic() - start


def _cfg(agent: AgentConfig) -> TrainConfig:
    replay = ReplayConfig(capacity=STORED + 10 * CHUNK, min_size=BATCH, ratio_tolerance=1e9)
    return TrainConfig(
        env="VisualPendulum",
        agent=dataclasses.replace(agent, batch_size=BATCH),
        replay=replay,
        weights_publish_every=100,
        total_steps=NEVER,
    )


def _learner_rate(learner_cls, cfg, replay, seconds: float) -> tuple[float, str]:
    learner = (
        ray.remote(learner_cls)
        .options(max_concurrency=4, num_cpus=1)
        .remote(cfg, OBS, 1, "cuda" if torch.cuda.is_available() else "cpu", replay)
    )
    device = ray.get(learner.describe_device.remote())
    run = learner.run.remote(replay)
    time.sleep(min(5.0, seconds / 4))  # the first feed brings the whole buffer
    u0, t0 = ray.get(learner.stats.remote()).updates, time.monotonic()
    time.sleep(seconds)
    u1, t1 = ray.get(learner.stats.remote()).updates, time.monotonic()
    learner.stop.remote()
    ray.get(run)
    ray.kill(learner)
    return (u1 - u0) / (t1 - t0), device


def _standalone(agent_cfg: AgentConfig, seconds: float) -> float:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(1)  # as the learner actor, which reserves one CPU
    agent = SacAeAgent(OBS, 1, dataclasses.replace(agent_cfg, batch_size=BATCH), device=device)
    rng = np.random.default_rng(0)
    batch = Batch(
        rng.integers(0, 256, (BATCH, *OBS), dtype=np.uint8),
        rng.uniform(-1, 1, (BATCH, 1)).astype(np.float32),
        rng.normal(size=BATCH).astype(np.float32),
        rng.integers(0, 256, (BATCH, *OBS), dtype=np.uint8),
        np.zeros(BATCH, bool),
        np.zeros(BATCH, bool),
    )
    data = batch_tensors(batch, OBS, 1, agent.device)
    agent.update(data)
    n, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        agent.update_on_device(data)
        n += 1
    agent.update(data)  # syncs the device
    return (n + 1) / (time.monotonic() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per path")
    parser.add_argument("--insert-rate", type=float, default=1000.0, help="agent steps/s added")
    parser.add_argument("--update-seconds", type=float, default=20.0, help="full-update phase")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    ray.init(num_cpus=6, include_dashboard=False, logging_level=logging.ERROR)
    try:
        cfg = _cfg(AgentConfig())
        spec = ReplaySpec.from_config(cfg, 1)
        replay = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(OldReplay).remote(spec)
        inserters = [
            ray.remote(Inserter).options(num_cpus=0.5, max_concurrency=2).remote(i)
            for i in range(2)
        ]
        ray.get([ins.fill.remote(replay, STORED // 2) for ins in inserters])
        feeding = [ins.run.remote(replay, args.insert_rate / 2) for ins in inserters]

        consumer = ray.remote(OldConsumer).options(num_cpus=1).remote()
        old_n = ray.get(consumer.run.remote(replay, args.seconds))
        old = {"batches_per_s": old_n / args.seconds}
        rate, device = _learner_rate(NoopLearner, cfg, replay, args.seconds)
        new = {"batches_per_s": rate}
        update_per_s, _ = _learner_rate(Learner, cfg, replay, args.update_seconds)
        for ins in inserters:
            ins.stop.remote()
        insert_rate = sum(n / t for n, t in ray.get(feeding))
    finally:
        ray.shutdown()
    standalone = _standalone(AgentConfig(), min(args.update_seconds, 10.0))
    result = {
        "old": old,
        "new": new,
        "ratio": new["batches_per_s"] / old["batches_per_s"],
        "device": device,
        "update_per_s": update_per_s,
        "standalone_update_per_s": standalone,
        "insert_steps_per_s": insert_rate,
        "seconds": args.seconds,
    }
    print(f"{'path':<8}{'batches/s':>12}")
    print(f"{'old':<8}{old['batches_per_s']:>12.1f}")
    print(f"{'new':<8}{new['batches_per_s']:>12.1f}   ratio {result['ratio']:.1f}x on {device}")
    print(
        f"full SAC-AE updates/s fed by workers: {update_per_s:.2f} (standalone {standalone:.2f}); "
        f"inserts {insert_rate:.0f} agent steps/s"
    )
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
