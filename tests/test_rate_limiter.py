"""Rate limiter: exact gating, no deadlock over random runs, and the ratio it holds."""

from __future__ import annotations

import numpy as np
import pytest

from distributed_sac.replay.rate_limiter import RateLimiter


def test_before_min_size_only_inserts_are_allowed():
    rl = RateLimiter(replay_ratio=1.0, min_size=10, max_insert=4)
    assert rl.can_insert(1000) and not rl.can_sample()
    rl.insert(9)
    assert not rl.can_sample() and rl.grant(5) == 0
    assert rl.ratio_held() == 0.0
    rl.insert(1)
    assert rl.can_sample()


def test_gates_at_exact_slack():
    # ratio 2, max insert 4: min_slack = 2 * 4 + 1 = 9 updates either side of the target.
    rl = RateLimiter(replay_ratio=2.0, min_size=10, tolerance=0.1, max_insert=4)
    rl.insert(10)
    assert rl.slack == 9.0 and rl.error == 0.0
    assert rl.can_sample(9) and not rl.can_sample(10) and rl.grant(100) == 9
    rl.sample(9)
    assert not rl.can_sample() and rl.grant(3) == 0
    rl.insert(4)  # error 9 - 8 = 1
    assert rl.error == 1.0
    assert rl.can_insert(5) and not rl.can_insert(6)  # 1 - 2 * 6 = -11 < -9
    rl.insert(5)
    assert rl.error == -9.0
    assert not rl.can_insert(1) and rl.can_sample(18) and not rl.can_sample(19)
    rl.insert(200)  # slack grows with the run: 0.1 * 2 * 209 = 41.8
    assert rl.slack == pytest.approx(41.8)
    assert rl.ratio_held() == pytest.approx(9 / 209)


def test_workers_are_never_refused_while_the_learner_waits():
    rl = RateLimiter(replay_ratio=1.0, min_size=0, max_insert=4)
    rl.sample(5)  # learner at +slack exactly
    assert not rl.can_sample()
    assert rl.can_insert(1000)


def test_finish_lets_the_learner_drain_to_the_ratio_exactly():
    rl = RateLimiter(replay_ratio=2.0, min_size=10, max_insert=4)
    rl.insert(3)
    rl.finish()
    assert rl.closed and not rl.can_sample(1) and rl.grant(5) == 0 and rl.can_insert(1)
    rl = RateLimiter(replay_ratio=2.0, min_size=10, max_insert=4)
    rl.insert(30)
    rl.sample(25)  # learner behind: 40 updates are due
    rl.finish()
    assert rl.grant(100) == 15 and rl.can_sample(15) and not rl.can_sample(16)
    rl.sample(15)
    assert rl.grant(1) == 0


def test_budget_caps_updates_at_the_runs_ratio_and_inserts_go_on():
    rl = RateLimiter(replay_ratio=1.0, min_size=10, max_insert=4, max_inserts=30)
    rl.insert(28)
    assert rl.grant(100) == 20  # the budget r * (30 - 10), not the slack (18 + 5)
    rl.sample(20)
    assert not rl.can_sample() and rl.can_insert(4)
    rl.insert(2)
    rl.finish()
    assert rl.grant(1) == 0 and rl.samples == 20


def test_state_dict_round_trip_and_bad_input():
    rl = RateLimiter(replay_ratio=0.5, min_size=5, max_insert=8)
    rl.insert(20)
    rl.sample(3)
    state = rl.state_dict()
    assert state == {"inserts": 20, "samples": 3, "closed": False}
    other = RateLimiter(0.5, 5, max_insert=8)
    other.load_state_dict({**state, "insert_refusals": 0, "sample_refusals": 0})  # older files
    assert other.state_dict() == state and other.error == rl.error == 3 - 0.5 * 15
    with pytest.raises(ValueError, match="lacks"):
        other.load_state_dict({"inserts": 1})
    with pytest.raises(ValueError, match="count"):
        rl.insert(0)
    with pytest.raises(ValueError, match="replay_ratio"):
        RateLimiter(0.0, 10)


def test_random_runs_never_deadlock_and_stay_within_slack():
    rng = np.random.default_rng(0)
    for _ in range(300):
        ratio = float(rng.uniform(0.25, 4.0))
        chunk = int(rng.integers(1, 65))
        budget = int(rng.integers(0, 10_000)) if rng.uniform() < 0.5 else None
        rl = RateLimiter(
            ratio, int(rng.integers(0, 200)), float(rng.uniform(0, 0.3)), chunk, budget
        )
        learner_bias = rng.uniform()  # how often the learner gets the turn when both may go
        for _ in range(300):
            n = int(rng.integers(1, chunk + 1))
            if budget is not None and rl.inserts + n > budget:
                n = budget - rl.inserts  # the replay cuts the last chunk at total_steps
                if n < 1:
                    break
            can_insert, can_sample = rl.can_insert(n), rl.can_sample()
            assert can_insert or can_sample, rl.state_dict()
            if can_sample and (not can_insert or rng.uniform() < learner_bias):
                rl.sample(int(rng.integers(1, 4)) if rl.can_sample(3) else 1)
            else:
                rl.insert(n)
            if rl.inserts >= rl.min_size:
                assert -rl.slack <= rl.error <= rl.slack, rl.state_dict()


@pytest.mark.parametrize("ratio", [0.25, 1.0, 4.0])
@pytest.mark.parametrize("learner_speed", [0.1, 10.0])
def test_long_run_holds_ratio_within_tolerance(ratio, learner_speed):
    # Learner `learner_speed` times as fast as the target needs: it is throttled at the upper
    # bound, or the workers run ahead and are throttled at the lower one.
    rl = RateLimiter(ratio, min_size=1000, tolerance=0.1, max_insert=64)
    rng = np.random.default_rng(1)
    worker_clock = learner_clock = 0.0
    refusals = {"insert": 0, "sample": 0}
    while rl.inserts < 40_000:
        # A refused side waits until just after the other side's next step.
        if worker_clock <= learner_clock:
            n = int(rng.integers(1, 65))
            if rl.can_insert(n):
                rl.insert(n)
                worker_clock += n
            else:
                refusals["insert"] += 1
                worker_clock = np.nextafter(learner_clock, np.inf)
        elif rl.can_sample():
            rl.sample()
            learner_clock += 1 / (ratio * learner_speed)
        else:
            refusals["sample"] += 1
            learner_clock = np.nextafter(worker_clock, np.inf)
    bound = 1.1 if learner_speed > 1 else 0.9
    assert rl.ratio_held() == pytest.approx(ratio * bound, rel=0.01)
    assert refusals["insert" if learner_speed < 1 else "sample"] > 0
