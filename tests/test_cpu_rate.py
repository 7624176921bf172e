"""A CPU learner's measured update rate, and the one warning when it is too slow for the run."""

from __future__ import annotations

import dataclasses
import logging
import math

import pytest
import torch

from distributed_sac.config.fields import TrainConfig
from distributed_sac.config.presets import tiny_preset
from distributed_sac.remote import session
from distributed_sac.run import cpu_rate


def test_a_tiny_learner_measures_a_positive_finite_rate_and_keeps_the_thread_count():
    threads = torch.get_num_threads()
    cfg = dataclasses.replace(tiny_preset(), learner_cpus=0)
    rate = cpu_rate.cpu_update_rate(cfg)
    assert 0 < rate < math.inf
    assert torch.get_num_threads() == threads
    probe = cpu_rate.UpdateProbe(cfg, threads=1)
    assert probe.agent.num_updates == 1  # the warm-up
    assert 0 < probe.rate(updates=3, budget_s=60) < math.inf
    assert probe.agent.num_updates == 4


def test_the_budget_cuts_the_timed_updates_but_keeps_one():
    probe = cpu_rate.UpdateProbe(tiny_preset(), threads=1)
    probe.rate(updates=5, budget_s=0)
    assert probe.agent.num_updates == 2


def test_the_learner_threads_follow_its_cpus():
    cfgs = [dataclasses.replace(TrainConfig(), learner_cpus=c) for c in (0, 0.5, 1, 3.5)]
    assert [cpu_rate.learner_threads(c) for c in cfgs] == [1, 1, 1, 3]


@pytest.mark.parametrize(("rate", "warned"), [(0.4, True), (1.99, True), (2.0, False), (15, False)])
def test_a_slow_cpu_learner_gets_one_warning(caplog, rate, warned):
    cfg = TrainConfig()  # 1M agent steps at replay ratio 1
    with caplog.at_level(logging.INFO, logger="distributed_sac"):
        session.warn_if_slow(cfg, rate)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == int(warned)
    if warned:
        updates = cfg.total_steps - cfg.replay.min_size
        message = warnings[0].getMessage()
        assert message.startswith(f"the learner runs on the CPU at {rate:.2g} updates/s")
        assert f"about {updates / rate / 3600:,.0f} hours for 1,000,000 agent steps" in message
        assert message.endswith("at replay ratio 1); --preset carracing-cpu is sized for CPUs")


def test_short_runs_are_told_in_minutes():
    cfg = dataclasses.replace(TrainConfig(), total_steps=2_000)
    cfg = dataclasses.replace(cfg, replay=dataclasses.replace(cfg.replay, min_size=1_000))
    assert "(about 42 minutes for 2,000 agent steps" in cpu_rate.slow_cpu_warning(cfg, 0.4)
