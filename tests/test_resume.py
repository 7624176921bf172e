"""Exact resume: a resumed learner makes the same next update; checkpoints refused or pruned.

A resumed session on Ray (counts and replay restored): tests/test_placement.py."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from distributed_sac.agent.sac_ae import SacAeAgent
from distributed_sac.config.data import Chunk
from distributed_sac.config.fields import TrainConfig
from distributed_sac.config.presets import tiny_preset
from distributed_sac.replay.buffer import ReplayBuffer
from distributed_sac.run.checkpoint import (
    CheckpointError,
    CorruptCheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from distributed_sac.run.records import LimiterCounts, ReplayCounters, RunCounters
from distributed_sac.run.run_dir import fingerprint, load_run_checkpoint, save_run_checkpoint
from tests.conftest import run_payload

CFG = tiny_preset()
SHAPE = CFG.wrappers.obs_shape


def _filled_replay(seed: int) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    replay = ReplayBuffer(500, SHAPE[1:], SHAPE[0], 1, chunk_length_hint=16)
    for _ in range(12):
        t = 16
        replay.add(
            Chunk(
                frames=rng.integers(0, 256, (t + SHAPE[0], *SHAPE[1:]), dtype=np.uint8),
                action=rng.uniform(-1, 1, (t, 1)).astype(np.float32),
                reward=rng.normal(size=t).astype(np.float32),
                terminated=np.zeros(t, bool),
                truncated=np.eye(1, t, t - 1, dtype=bool)[0],
            )
        )
    return replay


def test_resumed_learner_makes_the_same_next_update(tmp_path):
    torch.set_num_threads(1)
    agent = SacAeAgent(SHAPE, 1, CFG.agent, seed=3)
    replay, rng = _filled_replay(0), np.random.default_rng(7)
    for _ in range(5):
        agent.update(replay.sample(CFG.agent.batch_size, rng))
    save_checkpoint(
        tmp_path,
        5,
        {"agent": agent.state_dict(), "rng": rng.bit_generator.state},
        fingerprint(CFG),
        keep=2,
    )
    replay.save(tmp_path / "replay.npz")
    uninterrupted = [agent.update(replay.sample(CFG.agent.batch_size, rng)) for _ in range(3)]

    payload = load_checkpoint(tmp_path / "ckpt_000000000005.pt", fingerprint(CFG))
    resumed = SacAeAgent(SHAPE, 1, CFG.agent, seed=999)  # a different seed: state must win
    resumed.load_state_dict(payload["agent"])
    replay2, rng2 = ReplayBuffer.load(tmp_path / "replay.npz"), np.random.default_rng()
    rng2.bit_generator.state = payload["rng"]
    after = [resumed.update(replay2.sample(CFG.agent.batch_size, rng2)) for _ in range(3)]
    assert after == uninterrupted


def test_checkpoint_from_another_config_or_corrupt_is_refused(tmp_path):
    agent = SacAeAgent(SHAPE, 1, CFG.agent, seed=0)
    state = run_payload(agent.state_dict()).to_state()
    path = save_checkpoint(tmp_path, 1, state, fingerprint(CFG), keep=1)
    other = dataclasses.replace(CFG, agent=dataclasses.replace(CFG.agent, hidden_dim=64))
    with pytest.raises(CheckpointError, match="different config.*agent"):
        load_checkpoint(path, fingerprint(other))
    # A checkpoint from before a config field existed loads when the field is at its default.
    saved = torch.load(path, weights_only=True)
    old = json.loads(saved["fingerprint"])
    del old["agent"]["forward_loss_weight"], old["wrappers"]["pendulum_crop"]
    saved["fingerprint"] = json.dumps(old)
    torch.save(saved, path)
    defaults = fingerprint(TrainConfig())
    with pytest.raises(CheckpointError, match="different config.*agent"):
        load_checkpoint(path, fingerprint(CFG))
    assert load_checkpoint(path, fingerprint(CFG), defaults)["agent"].keys()
    assert load_run_checkpoint(path, CFG).agent.keys()
    added = dataclasses.replace(CFG.agent, forward_loss_weight=1.0)
    with pytest.raises(CheckpointError, match="different config.*agent"):
        load_checkpoint(path, fingerprint(dataclasses.replace(CFG, agent=added)), defaults)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path, fingerprint(CFG))


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    for steps in (10, 20, 30, 40):
        save_checkpoint(tmp_path, steps, {"x": torch.zeros(1)}, {}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt_000000000030.pt",
        "ckpt_000000000040.pt",
    ]


def _used_rng_state() -> dict:
    rng = np.random.default_rng(5)
    rng.integers(0, 100, 37)
    return rng.bit_generator.state


def test_a_run_payload_round_trips_through_a_weights_only_file(tmp_path):
    agent = SacAeAgent(SHAPE, 1, CFG.agent, seed=2)
    agent.num_updates = 336
    replay = ReplayCounters(LimiterCounts(400, 336, True), 6, _used_rng_state(), {0: 150, 1: 250})
    counters = RunCounters(episodes=6, worker_restarts=1, learner_restarts=2, pretrain_updates=0)
    payload = dataclasses.replace(run_payload(agent.state_dict()), replay=replay, counters=counters)
    path = save_run_checkpoint(tmp_path, 400, payload, CFG)
    raw = torch.load(path, weights_only=True)  # plain dicts and tensors only
    assert raw["replay"]["limiter"] == {"inserts": 400, "samples": 336, "closed": True}
    assert raw["replay"]["worker_steps"] == {"0": 150, "1": 250}  # the replay's JSON layout
    assert raw["counters"] == dataclasses.asdict(counters)
    loaded = load_run_checkpoint(path, CFG)
    assert (loaded.replay, loaded.counters, loaded.granted_updates) == (replay, counters, 336)
    resumed = SacAeAgent(SHAPE, 1, CFG.agent, seed=9)
    resumed.load_state_dict(loaded.agent)
    assert resumed.num_updates == 336


def test_a_checkpoint_in_the_dict_layout_of_earlier_versions_loads(tmp_path):
    agent = SacAeAgent(SHAPE, 1, CFG.agent, seed=2)
    agent.num_updates = 1_300
    rng = _used_rng_state()
    # Spelled out as the driver wrote it before the payload was typed.
    state = {
        "agent": agent.state_dict(),
        "replay": {
            "limiter": {"inserts": 400, "samples": 300, "closed": False},
            "episodes_total": 6,
            "rng": rng,
            "worker_steps": {"0": 200, "1": 200},
        },
        "counters": {
            "worker_restarts": 1,
            "learner_restarts": 0,
            "episodes": 6,
            "pretrain_updates": 1_000,
        },
    }
    path = save_checkpoint(tmp_path, 400, state, fingerprint(CFG), keep=2)
    payload = load_run_checkpoint(path, CFG)
    limiter = LimiterCounts(inserts=400, samples=300, closed=False)
    assert payload.replay == ReplayCounters(limiter, 6, rng, {0: 200, 1: 200})
    assert payload.counters == RunCounters(6, 1, 0, 1_000)
    assert payload.granted_updates == 300
    assert payload.to_state()["replay"] == state["replay"]
    # Older still: no worker_steps and no pretrain_updates (the updates beyond the limiter's).
    del state["replay"]["worker_steps"], state["counters"]["pretrain_updates"]
    payload = load_run_checkpoint(save_checkpoint(tmp_path, 500, state, fingerprint(CFG), 2), CFG)
    assert (payload.replay.worker_steps, payload.counters.pretrain_updates) == ({}, 1_000)
    assert payload.granted_updates == 300


def test_a_file_without_a_runs_payload_is_not_a_run_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path, 1, {"agent": {}}, fingerprint(CFG), keep=1)
    with pytest.raises(CorruptCheckpointError, match="not a run's checkpoint.*replay"):
        load_run_checkpoint(path, CFG)


@pytest.mark.parametrize(
    ("inserts", "short", "closed", "finished"),
    [(200, 0, True, True), (200, 1, True, False), (150, 0, True, False), (200, 0, False, False)],
)
def test_a_finished_run_resumes_to_one_line_without_ray(
    tmp_path, capsys, inserts, short, closed, finished
):
    """Collection at --total-steps, closed, every update the ratio allows drained: finished."""
    import ray

    import launch
    from distributed_sac.remote import session
    from distributed_sac.replay.rate_limiter import update_budget
    from distributed_sac.run.records import CheckpointPayload
    from distributed_sac.run.run_dir import RunDir

    cfg = dataclasses.replace(CFG, total_steps=200, run_dir=str(tmp_path / "run"))
    run = RunDir.create(tmp_path / "run", cfg)
    agent = SacAeAgent(SHAPE, 1, cfg.agent, seed=0)
    budget = update_budget(cfg.replay.replay_ratio, cfg.replay.min_size, inserts)
    payload = run_payload(agent.state_dict())
    limiter = LimiterCounts(inserts, budget - short, closed)
    payload = CheckpointPayload(
        payload.agent, dataclasses.replace(payload.replay, limiter=limiter), payload.counters
    )
    save_run_checkpoint(run.checkpoints, inserts, payload, cfg)
    plan = session.prepare(cfg, str(run.path), given=set())
    assert plan.finished is finished
    if finished:
        assert launch.main(["train", "--resume", str(run.path)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{run.path}: already finished (200 agent steps of --total-steps 200")
        assert not ray.is_initialized()
