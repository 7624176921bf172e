"""The learner's mirror holds what replay holds; feeds, resyncs, demos and snapshots (no Ray)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from distributed_sac.agent.sac_ae import SacAeAgent
from distributed_sac.agent.tensors import batch_tensors
from distributed_sac.config.data import Batch, Chunk
from distributed_sac.config.fields import ReplayConfig
from distributed_sac.config.presets import tiny_preset
from distributed_sac.remote.replay_server import ReplayServer
from distributed_sac.replay.buffer import ReplayBuffer, ReplaySpec, mix_indices
from distributed_sac.replay.feed import ReplayMirror
from distributed_sac.replay.mirror import DeviceMirror
from distributed_sac.replay.snapshot import MANIFEST, SnapshotError, restore_snapshot
from tests.test_replay import ACTION_DIM, RGB, SHAPE, STACK, Reference, decode

CFG = tiny_preset()


def assert_same(mirrored, batch: Batch) -> None:
    """A mirror gather equals ``ReplayBuffer.gather`` bit for bit."""
    want = batch_tensors(batch, batch.obs.shape[1:], batch.action.shape[1], torch.device("cpu"))
    for name, a, b in zip(want._fields, mirrored, want, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name


@pytest.mark.parametrize(
    "frame_shape,torch_branch",
    [(SHAPE, False), (RGB, False), (RGB, True)],
    ids=["gray", "rgb", "rgb-torch-branch"],
)
@pytest.mark.parametrize("max_episode,max_chunk", [(3, 2), (40, 8)])
def test_mirror_follows_inserts_and_evictions_exactly(
    max_episode, max_chunk, frame_shape, torch_branch
):
    rb = ReplayBuffer(50, frame_shape, STACK, ACTION_DIM, chunk_length_hint=8)
    mirror = DeviceMirror(rb.geometry, torch_rings=torch_branch)  # torch: the CUDA code path
    ref = Reference(np.random.default_rng(max_episode), max_episode, max_chunk, frame_shape)
    rng = np.random.default_rng(0)
    sent = 0
    while len(ref.transitions) < 20 * rb.capacity:
        for chunk in ref.episode_chunks():
            rb.add(chunk)
        if rng.uniform() < 0.5:  # the learner hears of several episodes' chunks at once
            if sent < rb.layout.first_seq:  # fell a whole buffer behind: start over
                sent = rb.layout.first_seq
                mirror.restart(sent)
            mirror.add_run(rb.run_since(sent))
            sent = rb.layout.chunks_added
            idx = np.arange(len(rb))
            assert len(mirror) == len(rb)
            assert_same(mirror.gather(idx), rb.gather(idx))
    obs = mirror.gather(np.arange(len(rb))).obs.numpy()
    assert obs.shape == (len(rb), *rb.obs_shape)
    if frame_shape == SHAPE:
        stacks = decode(obs)
        assert np.all(stacks // 10_000 == stacks[:, :1] // 10_000)  # never mixes episodes


def small_spec(frame_shape: tuple[int, ...] = SHAPE, **replay) -> ReplaySpec:
    # A huge tolerance: neither side is ever throttled, so one thread can drive both.
    replay = {"capacity": 60, "min_size": 20, "replay_ratio": 1.0, "ratio_tolerance": 1e6, **replay}
    cfg = ReplayConfig(**replay)
    return ReplaySpec(
        cfg, frame_shape, STACK, ACTION_DIM, 8, 10_000, 0, chunk_length=8, max_insert=8
    )


def follow(learner: ReplayMirror, server: ReplayServer, feed, pretrain: bool = False) -> list:
    """The learner's ``ReplayMirror.follow`` and ``batches`` (the production code its update
    loop runs), each batch checked against the replay's own data."""
    if not learner.follow(feed, pretrain):
        return []
    batches, d = list(learner.batches(feed)), feed.demo_idx.shape[1]
    for j, batch in enumerate(batches):
        if d:
            assert_same(_rows(batch, 0, d), server.demos.gather(feed.demo_idx[j]))
        if feed.replay_idx.shape[1]:
            assert_same(_rows(batch, d, None), server.buffer.gather(feed.replay_idx[j]))
    return batches


def take(learner: ReplayMirror, server: ReplayServer, updates: int, pretrain: bool = False):
    """One round trip as the learner makes it: its request, the replay's feed, followed."""
    feed = server.feed(learner.request(updates, 0, pretrain))
    return follow(learner, server, feed, pretrain), feed


def _rows(batch, start, stop):
    return type(batch)(*(f[start:stop] for f in batch))


def add_episodes(server: ReplayServer, ref: Reference, episodes: int) -> int:
    """Insert ``episodes`` episodes chunk by chunk; returns the number of chunks."""
    n = 0
    for _ in range(episodes):
        for chunk in ref.episode_chunks():
            reply = server.add(0, [chunk], [])
            assert not reply.throttled
            n += 1
    return n


def test_feeds_ship_each_chunk_once_and_resync_new_or_lagging_learners(tmp_path):
    server = ReplayServer(small_spec(replay_ratio=4.0), snapshot=str(tmp_path / "replay"))
    ref = Reference(np.random.default_rng(1), max_episode=30, max_chunk=8)
    learner = ReplayMirror()
    add_episodes(server, ref, 3)
    batches, feed = take(learner, server, 5)
    assert feed.reset and len(batches) == 5 and len(learner.replay) == len(server.buffer)
    new = add_episodes(server, ref, 1)
    _, feed = take(learner, server, 3)
    assert not feed.reset and len(feed.chunks.lengths) == new  # only the new episode's chunks
    # A learner restarted by Ray is a new client: it gets everything.
    restarted = ReplayMirror()
    _, feed = take(restarted, server, 2)
    assert feed.reset and feed.chunks.num_transitions == len(server.buffer)
    # The replay keeps no per-client state: the first learner still gets just what it lacks.
    new = add_episodes(server, ref, 1)
    _, feed = take(learner, server, 2)
    assert not feed.reset and len(feed.chunks.lengths) == new
    assert len(learner.replay) == len(server.buffer)
    # Falling more than a whole buffer behind also means a full resync.
    add_episodes(server, ref, 12)
    _, feed = take(learner, server, 2)
    assert feed.reset
    # A replay restarted from its snapshot resyncs the learner that knew the old one.
    server.snapshot()
    back = ReplayServer(small_spec(replay_ratio=4.0), snapshot=str(tmp_path / "replay"))
    assert back.state() == server.state() and len(back.buffer) == len(server.buffer)
    assert back.lineage != server.lineage
    _, feed = take(learner, back, 2)
    assert feed.reset and len(learner.replay) == len(back.buffer)


def test_a_dropped_a_repeated_and_a_retried_request_lose_nothing():
    spec = small_spec(replay_ratio=4.0)
    spec = dataclasses.replace(spec, cfg=dataclasses.replace(spec.cfg, demo_fraction=0.25))
    server = ReplayServer(spec)
    ref = Reference(np.random.default_rng(6), max_episode=30, max_chunk=8)
    server.load_demos([c for _ in range(2) for c in ref.episode_chunks()])
    learner = ReplayMirror()
    # Dropped: the answer to the first request (demos and the whole buffer) is never followed,
    # as when pretraining ended with a feed in flight. Nothing counts it as delivered.
    add_episodes(server, ref, 3)
    server.feed(learner.request(4, 0, pretrain=True))
    batches, feed = take(learner, server, 3)
    assert feed.reset and feed.demos is not None and len(batches) == 3
    assert feed.demo_idx.shape == (3, 2)
    # Repeated: the same request answered twice; the second answer does not follow the mirror
    # once the first is followed, and is skipped; the next request gets what is missing.
    add_episodes(server, ref, 1)
    request = learner.request(2, 0)
    first, second = server.feed(request), server.feed(request)
    assert len(follow(learner, server, first)) == 2
    assert follow(learner, server, second) == []  # its chunks are the mirror's already
    add_episodes(server, ref, 1)
    _, feed = take(learner, server, 2)
    assert len(learner.replay) == len(server.buffer) and feed.demos is None
    assert server.limiter.samples == learner.granted == 3 + 2 + 2  # the skipped one is not
    # Retried (the replay restarted with the call in flight): answered anew from the request.
    assert server.feed(learner.request(1, 0)).first_seq == server.buffer.layout.chunks_added


def test_demo_fraction_and_pretraining_draw_from_the_mirrored_demos():
    spec = small_spec()
    spec = dataclasses.replace(spec, cfg=dataclasses.replace(spec.cfg, demo_fraction=0.25))
    server = ReplayServer(spec)
    ref = Reference(np.random.default_rng(2), max_episode=30, max_chunk=30)
    demos = [c for _ in range(3) for c in ref.episode_chunks()]
    assert server.load_demos(demos) == sum(c.num_transitions for c in demos)
    learner = ReplayMirror()
    batches, feed = take(learner, server, 4, pretrain=True)
    assert feed.demo_idx.shape == (4, 8) and feed.replay_idx.shape == (4, 0) and len(batches) == 4
    add_episodes(server, ref, 4)
    batches, feed = take(learner, server, 3)
    assert feed.demo_idx.shape == (3, 2) and feed.replay_idx.shape == (3, 6)  # round(0.25 * 8)
    assert all(b.obs.shape == (8, STACK, *SHAPE) for b in batches)


def test_mix_indices_all_demos_while_replay_is_small():
    rng = np.random.default_rng(0)
    demo, replay = mix_indices(3, 100, 8, 0.25, 2, rng)
    assert demo.shape == (2, 8) and replay.shape == (2, 0)
    demo, replay = mix_indices(50, 0, 8, 0.25, 2, rng)
    assert demo.shape == (2, 0) and replay.shape == (2, 8) and replay.max() < 50
    with pytest.raises(ValueError, match="cannot sample 8"):
        mix_indices(5, 0, 8, 0.25, 1, rng)


@pytest.mark.parametrize("grayscale", [True, False], ids=["gray", "rgb-frame-diff"])
def test_an_update_from_the_mirror_equals_one_from_replay(one_torch_thread, grayscale):
    env = dataclasses.replace(CFG.wrappers, grayscale=grayscale)
    agent_cfg = dataclasses.replace(CFG.agent, frame_diff=not grayscale)
    shape, frame_shape, stack = env.obs_shape, env.frame_shape, env.frame_stack
    rng = np.random.default_rng(3)
    rb = ReplayBuffer(300, frame_shape, stack, 1, chunk_length_hint=16)
    for _ in range(25):  # wraps around: evictions
        rb.add(
            Chunk(
                rng.integers(0, 256, (16 + stack, *frame_shape), dtype=np.uint8),
                rng.uniform(-1, 1, (16, 1)).astype(np.float32),
                rng.normal(size=16).astype(np.float32),
                np.zeros(16, bool),
                np.eye(1, 16, 15, dtype=bool)[0],
            )
        )
    mirror = DeviceMirror(rb.geometry)
    mirror.add_run(rb.run_since(rb.layout.first_seq))
    a, b = (SacAeAgent(shape, 1, agent_cfg, seed=3, channels=env.channels) for _ in range(2))
    for _ in range(3):
        idx = rb.sample_indices(CFG.agent.batch_size, rng)
        assert a.update(rb.gather(idx)) == b.update(mirror.gather(idx))


def test_incremental_snapshots_write_only_new_chunks_and_drop_evicted_parts(tmp_path):
    server = ReplayServer(small_spec(), snapshot=str(tmp_path / "replay"))
    ref = Reference(np.random.default_rng(4), max_episode=30, max_chunk=8)
    add_episodes(server, ref, 2)
    server.snapshot()
    first = {p.name for p in (tmp_path / "replay").glob("part_*.npz")}
    add_episodes(server, ref, 1)
    server.snapshot()
    second = {p.name for p in (tmp_path / "replay").glob("part_*.npz")}
    assert first <= second and len(second) == len(first) + 1
    add_episodes(server, ref, 10)  # evicts everything of the first snapshots
    server.snapshot()
    third = {p.name for p in (tmp_path / "replay").glob("part_*.npz")}
    assert not third & first
    manifest = json.loads((tmp_path / "replay" / MANIFEST).read_text())
    assert manifest["counters"]["limiter"]["inserts"] == server.agent_steps
    restored = ReplayBuffer(60, SHAPE, STACK, ACTION_DIM, chunk_length_hint=8)
    restore_snapshot(tmp_path / "replay", restored)
    idx = np.arange(len(server.buffer))
    assert len(restored) == len(server.buffer)
    for x, y in zip(restored.gather(idx), server.buffer.gather(idx), strict=True):
        np.testing.assert_array_equal(x, y)


def test_rgb_feeds_demos_and_snapshots_round_trip(tmp_path):
    spec = small_spec(RGB, replay_ratio=4.0)
    spec = dataclasses.replace(spec, cfg=dataclasses.replace(spec.cfg, demo_fraction=0.25))
    server = ReplayServer(spec, snapshot=str(tmp_path / "replay"))
    ref = Reference(np.random.default_rng(11), max_episode=30, max_chunk=8, frame_shape=RGB)
    server.load_demos([c for _ in range(2) for c in ref.episode_chunks()])
    add_episodes(server, ref, 6)  # wraps the 60-transition ring
    learner = ReplayMirror()
    batches, feed = take(learner, server, 3)  # each batch checked against the replay's own
    assert feed.reset and len(batches) == 3 and feed.demo_idx.shape == (3, 2)
    assert all(b.obs.shape == (8, 3 * STACK, *RGB[1:]) for b in batches)
    add_episodes(server, ref, 1)
    _, feed = take(learner, server, 2)
    assert not feed.reset and len(learner.replay) == len(server.buffer)
    server.snapshot()
    back = ReplayServer(spec, snapshot=str(tmp_path / "replay"))
    for restored, saved in ((back.buffer, server.buffer), (back.demos, server.demos)):
        idx = np.arange(len(saved))
        assert len(restored) == len(saved)
        for x, y in zip(restored.gather(idx), saved.gather(idx), strict=True):
            np.testing.assert_array_equal(x, y)
    _, feed = take(learner, back, 2)
    assert feed.reset and len(learner.replay) == len(back.buffer)
    gray = ReplayBuffer(60, SHAPE, STACK, ACTION_DIM, chunk_length_hint=8)
    with pytest.raises(SnapshotError, match=r"frames of shape \(3, 2, 2\)"):
        restore_snapshot(tmp_path / "replay", gray)


def test_a_snapshot_overtaken_by_eviction_restores_what_it_holds(tmp_path, monkeypatch):
    import distributed_sac.replay.snapshot as snapshot

    monkeypatch.setattr(snapshot, "PART_TRANSITIONS", 8)  # a part per chunk: many lock turns
    server = ReplayServer(small_spec(), snapshot=str(tmp_path / "replay"))
    ref = Reference(np.random.default_rng(8), max_episode=30, max_chunk=8)
    add_episodes(server, ref, 3)

    class EvictingLock:
        """The replay's lock, but inserts arrive (and evict) between the writer's turns."""

        def __init__(self) -> None:
            self.turns = 0

        def __enter__(self):
            self.turns += 1
            if self.turns == 3:  # after the first part is written
                add_episodes(server, ref, 1)  # evicts chunks not written yet
            return self

        def __exit__(self, *exc) -> None:
            return None

    state = server._snapshots.write(EvictingLock(), server.buffer, server._state)
    assert state["limiter"]["inserts"] < server.agent_steps  # taken before the inserts
    back = ReplayBuffer(60, SHAPE, STACK, ACTION_DIM, chunk_length_hint=8)
    manifest = restore_snapshot(tmp_path / "replay", back)  # raised "missing chunks" before
    assert len(back) > 0 and back.layout.chunks_added == manifest["end_seq"]
    # What it holds is what the buffer held under those sequence numbers, transition for
    # transition (the chunks it left out were evicted while it was written).
    live = server.buffer.run_since(back.layout.first_seq)
    n = back.layout.size
    np.testing.assert_array_equal(back.run_since(back.layout.first_seq).action, live.action[:n])
    restarted = ReplayServer(small_spec(), snapshot=str(tmp_path / "replay"))
    assert restarted.restored and len(restarted.buffer) == n


def test_demonstrations_survive_a_replay_restart(tmp_path):
    spec = small_spec()
    spec = dataclasses.replace(spec, cfg=dataclasses.replace(spec.cfg, demo_fraction=0.25))
    server = ReplayServer(spec, snapshot=str(tmp_path / "replay"))
    ref = Reference(np.random.default_rng(9), max_episode=30, max_chunk=30)
    server.load_demos([c for _ in range(3) for c in ref.episode_chunks()])
    add_episodes(server, ref, 4)
    learner = ReplayMirror()
    take(learner, server, 2)
    server.snapshot()
    back = ReplayServer(spec, snapshot=str(tmp_path / "replay"))
    assert back.demos_id == server.demos_id and len(back.demos) == len(server.demos)
    idx = np.arange(len(server.demos))
    for x, y in zip(back.demos.gather(idx), server.demos.gather(idx), strict=True):
        np.testing.assert_array_equal(x, y)
    _, feed = take(learner, back, 3)  # the mirror holds these demos: not sent again
    assert feed.reset and feed.demos is None and feed.demo_idx.shape == (3, 2)
    _, feed = take(ReplayMirror(), back, 3)  # a new learner gets them, and pretraining works
    assert feed.demos is not None
    assert back.feed(ReplayMirror().request(2, 0, pretrain=True)).demo_idx.shape == (2, 8)
    back.stats()
    assert back.stats().demo_fraction_held == 0.25
