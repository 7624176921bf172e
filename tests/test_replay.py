"""Replay buffer checked against a reference built from index-valued chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distributed_sac.config.data import Batch, Chunk
from distributed_sac.replay.buffer import ReplayBuffer, frame_capacity, replay_nbytes

# A 2x2 frame is 4 bytes: each frame carries its id = episode * 10_000 + position in episode.
SHAPE = (2, 2)
RGB = (3, 2, 2)
"""A frame of 3 channels, 4 bytes each: channel c of frame ``id`` holds 3 * id + c."""
STACK = 3
ACTION_DIM = 2


def encode(ids: np.ndarray, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """Frames of ``shape`` for frame ids: channel c holds the 4 bytes of C * id + c."""
    channels = math.prod(shape) // 4
    words = np.asarray(ids, np.int64)[:, None] * channels + np.arange(channels)
    return words.astype("<u4").view(np.uint8).reshape(-1, *shape)


def stack_by_hand(ids: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The observation of frames ``ids``: each frame's channels after the previous frame's."""
    return np.concatenate([encode([i], shape).reshape(-1, *shape[-2:]) for i in ids])


def decode(frames: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(frames).reshape(*frames.shape[:-2], 4)
    return flat.view("<u4")[..., 0].astype(np.int64)


class Reference:
    """Generates episodes split into chunks and remembers what every transition must read."""

    def __init__(
        self,
        rng: np.random.Generator,
        max_episode: int,
        max_chunk: int,
        frame_shape: tuple[int, ...] = SHAPE,
    ) -> None:
        self.rng, self.max_episode, self.max_chunk = rng, max_episode, max_chunk
        self.frame_shape = frame_shape
        self.episode = 0
        self.transitions: list[dict] = []  # global transition id -> expected fields

    def episode_chunks(self) -> list[Chunk]:
        self.episode += 1
        length = int(self.rng.integers(1, self.max_episode + 1))
        frame_ids = self.episode * 10_000 + np.arange(length + STACK)
        terminated = bool(self.rng.integers(2))
        chunks, t0 = [], 0
        while t0 < length:
            t = min(int(self.rng.integers(1, self.max_chunk + 1)), length - t0)
            gid = len(self.transitions) + np.arange(t)
            action = np.stack([gid, -gid], axis=1).astype(np.float32)
            reward = (0.5 * gid).astype(np.float32)
            last = t0 + t == length
            term = np.zeros(t, bool)
            trunc = np.zeros(t, bool)
            term[-1], trunc[-1] = last and terminated, last and not terminated
            version = int(self.rng.integers(-1, 50))
            for k in range(t):
                self.transitions.append(
                    dict(
                        obs=frame_ids[t0 + k : t0 + k + STACK],
                        next_obs=frame_ids[t0 + k + 1 : t0 + k + 1 + STACK],
                        action=action[k],
                        reward=reward[k],
                        terminated=term[k],
                        truncated=trunc[k],
                        version=version,
                    )
                )
            chunks.append(
                Chunk(
                    encode(frame_ids[t0 : t0 + t + STACK], self.frame_shape),
                    action,
                    reward,
                    term,
                    trunc,
                    version,
                )
            )
            t0 += t
        return chunks


def replace(chunk: Chunk, **fields: np.ndarray) -> Chunk:
    return chunk._replace(**fields)


def check_against_reference(rb: ReplayBuffer, ref: Reference, expected_ids: np.ndarray) -> None:
    idx = np.arange(len(rb))
    batch = rb.gather(idx)
    gid = batch.action[:, 0].astype(np.int64)
    np.testing.assert_array_equal(gid, expected_ids)
    want = [ref.transitions[g] for g in gid]
    shape = ref.frame_shape
    np.testing.assert_array_equal(batch.obs, [stack_by_hand(w["obs"], shape) for w in want])
    np.testing.assert_array_equal(
        batch.next_obs, [stack_by_hand(w["next_obs"], shape) for w in want]
    )
    np.testing.assert_array_equal(batch.action, np.stack([w["action"] for w in want]))
    np.testing.assert_array_equal(batch.reward, [w["reward"] for w in want])
    np.testing.assert_array_equal(batch.terminated, [w["terminated"] for w in want])
    np.testing.assert_array_equal(batch.truncated, [w["truncated"] for w in want])
    np.testing.assert_array_equal(rb.weights_versions(idx), [w["version"] for w in want])
    # Every stack holds S + 1 consecutive frames of a single episode.
    stacks = np.stack([np.append(w["obs"], w["next_obs"][-1]) for w in want])
    assert np.all(stacks // 10_000 == stacks[:, :1] // 10_000)
    assert np.all(np.diff(stacks, axis=1) == 1)


@pytest.mark.parametrize("frame_shape", [SHAPE, RGB], ids=["gray", "rgb"])
@pytest.mark.parametrize("max_episode,max_chunk", [(3, 2), (40, 8), (200, 8)])
def test_contents_match_reference_across_wraparound_and_episodes(
    max_episode, max_chunk, frame_shape
):
    capacity, hint = 50, 8
    rb = ReplayBuffer(capacity, frame_shape, STACK, ACTION_DIM, chunk_length_hint=hint)
    ref = Reference(np.random.default_rng(max_episode), max_episode, max_chunk, frame_shape)
    stored: list[int] = []  # lengths of stored chunks, oldest first (the eviction spec)
    f_cap = frame_capacity(capacity, STACK, hint)
    while len(ref.transitions) < 30 * capacity:
        for chunk in ref.episode_chunks():
            t = chunk.num_transitions
            rb.add(chunk)
            stored.append(t)
            while sum(stored) > capacity or sum(stored) + STACK * len(stored) > f_cap:
                stored.pop(0)
            total = int(chunk.action[-1, 0]) + 1
            assert rb.total_added == total
            assert len(rb) == sum(stored) <= capacity
            check_against_reference(rb, ref, np.arange(total - len(rb), total))


def test_full_chunks_fill_capacity_and_evict_oldest_first():
    rb = ReplayBuffer(64, SHAPE, STACK, ACTION_DIM, chunk_length_hint=8)
    ref = Reference(np.random.default_rng(0), max_episode=8, max_chunk=8)
    chunks = []
    while len(chunks) < 20:
        chunks += [c for c in ref.episode_chunks() if c.num_transitions == 8]
    for k, chunk in enumerate(chunks, start=1):
        rb.add(chunk)
        assert len(rb) == min(8 * k, 64)
    newest = chunks[-8:]
    np.testing.assert_array_equal(
        rb.gather(np.arange(64)).action, np.concatenate([c.action for c in newest])
    )


def test_sample_is_uniform_with_expected_layout():
    rb = ReplayBuffer(40, SHAPE, STACK, ACTION_DIM, chunk_length_hint=4)
    ref = Reference(np.random.default_rng(1), max_episode=30, max_chunk=4)
    while len(ref.transitions) < 200:
        for chunk in ref.episode_chunks():
            rb.add(chunk)
    n = len(rb)
    batch, versions = rb.sample_with_info(n, np.random.default_rng(2))
    assert isinstance(batch, Batch)
    assert batch.obs.shape == batch.next_obs.shape == (n, STACK, *SHAPE)
    assert batch.obs.dtype == batch.next_obs.dtype == np.uint8
    assert batch.obs.flags.c_contiguous and not np.shares_memory(batch.obs, batch.next_obs)
    gid = batch.action[:, 0].astype(np.int64)
    np.testing.assert_array_equal(versions, [ref.transitions[g]["version"] for g in gid])
    check_obs = np.stack([ref.transitions[g]["obs"] for g in gid])
    np.testing.assert_array_equal(decode(batch.obs), check_obs)
    same = rb.sample(n, np.random.default_rng(2))
    np.testing.assert_array_equal(same.obs, batch.obs)
    rng = np.random.default_rng(3)
    draws = np.concatenate([rb.sample(n, rng).action[:, 0] for _ in range(1000)])
    counts = np.bincount(draws.astype(np.int64) - (len(ref.transitions) - n), minlength=n)
    assert counts.size == n
    # Uniform over stored transitions: each count is Binomial(1000 n, 1/n); 6 sigma bounds.
    assert np.all(np.abs(counts - 1000) < 6 * np.sqrt(1000))


def test_rgb_frames_are_stored_once_and_gathered_as_channel_stacks():
    rb = ReplayBuffer(40, RGB, STACK, ACTION_DIM, chunk_length_hint=4)
    ref = Reference(np.random.default_rng(1), max_episode=30, max_chunk=4, frame_shape=RGB)
    while len(ref.transitions) < 200:
        for chunk in ref.episode_chunks():
            rb.add(chunk)
    assert rb.store.frames.shape == (rb.frame_capacity, *RGB)  # one frame slot per transition
    assert rb.obs_shape == (3 * STACK, 2, 2)
    n = len(rb)
    batch = rb.sample(n, np.random.default_rng(2))
    assert batch.obs.shape == batch.next_obs.shape == (n, 3 * STACK, 2, 2)
    assert batch.obs.flags.c_contiguous and not np.shares_memory(batch.obs, batch.next_obs)
    want = [ref.transitions[g] for g in batch.action[:, 0].astype(np.int64)]
    # Channel 3k + c of an observation is channel c of its k-th frame, oldest first.
    for w, obs, nxt in zip(want, batch.obs, batch.next_obs, strict=True):
        ids = np.append(w["obs"], w["next_obs"][-1])
        for k in range(STACK):
            np.testing.assert_array_equal(obs[3 * k : 3 * k + 3], encode([ids[k]], RGB)[0])
            np.testing.assert_array_equal(nxt[3 * k : 3 * k + 3], encode([ids[k + 1]], RGB)[0])
    gray = ReplayBuffer(40, SHAPE, STACK, ACTION_DIM, chunk_length_hint=4)
    with pytest.raises(ValueError, match="chunk.frames"):
        gray.add(ref.episode_chunks()[0])
    with pytest.raises(ValueError, match="frame_shape"):
        ReplayBuffer(40, (2,), STACK, ACTION_DIM, chunk_length_hint=4)


def test_bytes_per_transition_of_rgb_84x84_stack_3():
    rb = ReplayBuffer(10_000, (3, 84, 84), 3, 3)  # np.empty: no page is touched
    assert rb.nbytes == replay_nbytes(10_000, (3, 84, 84), 3, 3)
    per_transition = replay_nbytes(100_000, (3, 84, 84), 3, 3) / 100_000
    # One 3x84x84 frame per transition, plus S frames per 64-transition chunk and 34 B of
    # per-transition arrays: against 2 * 3 * 21,168 = 127,008 B for two stacks.
    assert 3 * 84 * 84 < per_transition < 3 * 84 * 84 * (1 + 3 / 64 + 1e-3) + 34


def test_bytes_per_transition_at_84x84():
    rb = ReplayBuffer(10_000, (84, 84), 4, 3)
    assert rb.nbytes == replay_nbytes(10_000, (84, 84), 4, 3)
    assert rb.nbytes / 10_000 <= 8192
    assert replay_nbytes(1_000_000, (84, 84), 4, 3) <= 8e9
    # The frame ring: C + S * ceil(C / 64) + S slots of 7056 bytes.
    assert rb.frame_capacity == 10_000 + 4 * 157 + 4


def test_bad_input_raises_value_error():
    rb = ReplayBuffer(16, SHAPE, STACK, ACTION_DIM, chunk_length_hint=4)
    chunk = Reference(np.random.default_rng(3), 4, 4).episode_chunks()[0]
    t = chunk.num_transitions
    with pytest.raises(ValueError, match="frames"):
        rb.add(replace(chunk, frames=chunk.frames.astype(np.float32)))
    with pytest.raises(ValueError, match="frames"):
        rb.add(replace(chunk, frames=chunk.frames[:-1]))
    with pytest.raises(ValueError, match="action"):
        rb.add(replace(chunk, action=np.zeros((t, 3), np.float32)))
    long = Chunk(
        np.zeros((20, *SHAPE), np.uint8),
        np.zeros((17, ACTION_DIM), np.float32),
        np.zeros(17, np.float32),
        np.zeros(17, bool),
        np.zeros(17, bool),
    )
    spanning = replace(long, terminated=np.eye(1, 17, 5, dtype=bool)[0])
    with pytest.raises(ValueError, match="episode end"):
        rb.add(spanning)
    with pytest.raises(ValueError, match="capacity 16"):
        rb.add(long)
    assert len(rb) == 0 and rb.total_added == 0
    with pytest.raises(ValueError, match="1 transitions from a replay of 0"):
        rb.sample(1, np.random.default_rng())
    rb.add(chunk)
    with pytest.raises(ValueError, match=f"{t + 1} transitions from a replay of {t}"):
        rb.sample(t + 1, np.random.default_rng())
    with pytest.raises(ValueError, match="batch_size"):
        rb.sample(0, np.random.default_rng())
    with pytest.raises(ValueError, match="smaller than one chunk"):
        ReplayBuffer(32, SHAPE, STACK, ACTION_DIM, chunk_length_hint=64)


def fill(rb: ReplayBuffer, seed: int, n: int) -> None:
    ref = Reference(np.random.default_rng(seed), 25, 8, rb.frame_shape)
    while len(ref.transitions) < n:
        for chunk in ref.episode_chunks():
            rb.add(chunk)


def assert_batches_equal(a: Batch, b: Batch) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("frame_shape", [SHAPE, RGB], ids=["gray", "rgb"])
def test_save_load_round_trip_gives_identical_samples(tmp_path, frame_shape):
    rb = ReplayBuffer(60, frame_shape, STACK, ACTION_DIM, chunk_length_hint=8)
    fill(rb, seed=4, n=500)
    assert len(rb.state_dict()["frames_1"]) > 0  # the live frames wrap around the ring's end
    path = tmp_path / "replay.npz"
    rb.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["replay.npz"]
    loaded = ReplayBuffer.load(path)
    assert (len(loaded), loaded.total_added) == (len(rb), rb.total_added)
    for seed in range(3):
        a, va = rb.sample_with_info(32, np.random.default_rng(seed))
        b, vb = loaded.sample_with_info(32, np.random.default_rng(seed))
        assert_batches_equal(a, b)
        np.testing.assert_array_equal(va, vb)
    # Later inserts evict the same chunks in both, so they keep sampling alike.
    ref = Reference(np.random.default_rng(6), 25, 8, frame_shape)
    for chunk in ref.episode_chunks() + ref.episode_chunks():
        rb.add(chunk)
        loaded.add(chunk)
    assert_batches_equal(rb.gather(np.arange(len(rb))), loaded.gather(np.arange(len(loaded))))


def test_state_dict_is_plain_arrays_and_checks_shapes(tmp_path):
    rb = ReplayBuffer(30, SHAPE, STACK, ACTION_DIM, chunk_length_hint=4)
    fill(rb, seed=7, n=100)
    np.savez(tmp_path / "s.npz", **rb.state_dict())
    with np.load(tmp_path / "s.npz", allow_pickle=False) as npz:
        state = dict(npz)
    empty = ReplayBuffer(30, SHAPE, STACK, ACTION_DIM, chunk_length_hint=4)
    empty.load_state_dict(state)
    assert_batches_equal(empty.gather(np.arange(len(rb))), rb.gather(np.arange(len(rb))))
    with pytest.raises(ValueError, match="frame_shape"):
        ReplayBuffer(30, (3, 3), STACK, ACTION_DIM, chunk_length_hint=4).load_state_dict(state)
    with pytest.raises(ValueError, match="frame_shape"):
        ReplayBuffer(30, RGB, STACK, ACTION_DIM, chunk_length_hint=4).load_state_dict(state)
    with pytest.raises(ValueError, match="action_dim"):
        ReplayBuffer(30, SHAPE, STACK, 1, chunk_length_hint=4).load_state_dict(state)
    with pytest.raises(ValueError, match="reward"):
        empty.load_state_dict({**state, "reward": state["reward"][:-1]})
    with pytest.raises(ValueError, match="more than capacity 10"):
        ReplayBuffer(10, SHAPE, STACK, ACTION_DIM, chunk_length_hint=4).load_state_dict(state)


def test_load_of_truncated_or_garbage_file_raises_value_error(tmp_path):
    rb = ReplayBuffer(30, SHAPE, STACK, ACTION_DIM, chunk_length_hint=4)
    fill(rb, seed=8, n=50)
    path = tmp_path / "replay.npz"
    rb.save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.npz"):
        ReplayBuffer.load(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        ReplayBuffer.load(garbage)
