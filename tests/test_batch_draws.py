"""The replay's batch draws (no Ray): the demonstration share they hold, their sample age,
pretraining batches, and the demonstrations' own buffer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distributed_sac.replay.buffer import ReplayBuffer
from distributed_sac.replay.draws import BatchDraws, demo_buffer
from tests.test_replay import ACTION_DIM, SHAPE, STACK, Reference


def filled(n: int, seed: int = 0, version: int | None = None) -> tuple[ReplayBuffer, list]:
    rb = ReplayBuffer(1_000, SHAPE, STACK, ACTION_DIM, chunk_length_hint=8)
    ref, chunks = Reference(np.random.default_rng(seed), 25, 8), []
    while len(ref.transitions) < n:
        for chunk in ref.episode_chunks():
            chunk = chunk if version is None else chunk._replace(weights_version=version)
            rb.add(chunk)
            chunks.append(chunk)
    return rb, chunks


def test_the_held_demo_share_is_what_the_granted_batches_took():
    draws = BatchDraws(batch_size=16, demo_fraction=0.25, seed=0)
    # Before any feed: the share the next batch will draw (all demos while replay holds less
    # than the batch's 12 replay rows).
    assert draws.demo_fraction_held(5, demo_size=None) == 0.0
    assert draws.demo_fraction_held(11, demo_size=40) == 1.0
    assert draws.demo_fraction_held(12, demo_size=40) == 4 / 16
    rb, _ = filled(200)
    assert draws.demo_fraction_held(len(rb), demo_size=40) == 4 / 16
    demo_idx, replay_idx, _ = draws.granted(3, rb, demo_size=40, weights_version=0)
    assert demo_idx.shape == (3, 4) and replay_idx.shape == (3, 12)
    assert demo_idx.max() < 40 and replay_idx.max() < len(rb)
    assert draws.demo_fraction_held(len(rb), demo_size=40) == 4 / 16
    draws.granted(1, rb, demo_size=0, weights_version=0)  # demos gone: 12 of 64 rows
    assert draws.demo_fraction_held(len(rb), demo_size=None) == 12 / 64


def test_no_grant_draws_nothing_and_the_age_waits_for_acted_rows():
    draws = BatchDraws(batch_size=8, demo_fraction=0.0, seed=1)
    random_rows, _ = filled(100, version=-1)  # collected before any weights
    demo_idx, replay_idx, age = draws.granted(0, random_rows, 0, weights_version=5)
    assert demo_idx.size == replay_idx.size == 0 and age is None
    assert draws.granted(2, random_rows, 0, weights_version=5)[2] is None
    assert math.isnan(draws.sample_age())
    acted, _ = filled(100, version=30)
    assert draws.granted(2, acted, 0, weights_version=42)[2] == 12.0
    assert draws.granted(2, acted, 0, weights_version=10)[2] == 0.0  # an older learner
    assert draws.sample_age() == 6.0


def test_pretraining_batches_are_demonstrations_only_and_follow_the_seed():
    a, b = BatchDraws(8, 0.25, seed=3), BatchDraws(8, 0.25, seed=3)
    demo_idx, replay_idx = a.pretraining(5, demo_size=30)
    assert demo_idx.shape == (5, 8) and replay_idx.shape == (5, 0) and demo_idx.max() < 30
    np.testing.assert_array_equal(b.pretraining(5, demo_size=30)[0], demo_idx)
    assert a.demo_fraction_held(0, demo_size=30) == 1.0  # pretraining is not a granted feed


def test_the_demo_buffer_holds_exactly_the_demonstrations():
    rb, chunks = filled(30, seed=4)
    from_chunks = demo_buffer(rb, batch_size=64, chunks=chunks)
    assert len(from_chunks) == sum(c.num_transitions for c in chunks) < 64
    assert from_chunks.capacity >= 64
    saved = from_chunks.run_since(0)
    from_run = demo_buffer(rb, batch_size=64, run=saved)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(from_chunks), 32)
    np.testing.assert_array_equal(from_run.gather(idx).obs, from_chunks.gather(idx).obs)
    with pytest.raises(ValueError, match="chunks or as one run"):
        demo_buffer(rb, 64)
