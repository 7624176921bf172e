"""`launch.py eval` (`run/eval_command.py`): videos that decode, checkpoints that load into the same
policy, bad paths."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from scipy import stats

import launch
from distributed_sac.agent.policy import Policy
from distributed_sac.agent.sac_ae import SacAeAgent
from distributed_sac.config.fields import HELD_OUT_EVAL_SEED, EnvConfig
from distributed_sac.config.presets import tiny_preset
from distributed_sac.run.eval_command import load, load_policy, resolve, returns_report, verdict
from distributed_sac.run.evaluation import beside_agent_view, evaluate
from distributed_sac.run.run_dir import RunDir, save_run_checkpoint
from tests.conftest import run_payload

torch.set_num_threads(1)
# Pendulum's 500x500 rgb_array frame (docs/design.md) beside the agent's 32x32 view scaled 15x
# (480 wide); the video keeps that size, no rescale to codec blocks.
PENDULUM_FRAME = (500, 500 + 15 * 32, 3)


class ZeroTorque:
    """Acts 0 in [-1, 1], which the env maps onto zero torque."""

    weights_version = 0

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        assert deterministic and obs.dtype == np.uint8
        return np.zeros((len(obs), 1), np.float32)


def stock_pendulum_return(seed: int, agent_steps: int, repeat: int = 3) -> float:
    env = gym.make("Pendulum-v1")
    env.reset(seed=seed)
    total = sum(float(env.step(np.zeros(1, np.float32))[1]) for _ in range(agent_steps * repeat))
    env.close()
    return total


def decode(path: Path) -> list[np.ndarray]:
    with imageio.get_reader(path) as reader:
        return [frame for frame in reader.iter_data()]


def test_video_frames_show_the_render_beside_the_agents_newest_frame():
    render = np.full((100, 150, 3), 7, np.uint8)
    obs = np.zeros((4, 32, 32), np.uint8)
    obs[-1] = np.arange(32 * 32).reshape(32, 32) % 251
    obs[0] = 255  # an older frame: not shown
    frame = beside_agent_view(render, obs)
    assert frame.shape == (100, 150 + 3 * 32, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame[:, :150], render)
    view = frame[2:98, 150:]  # 3x scale: 96 rows centred in 100
    np.testing.assert_array_equal(view[::3, ::3, 0], obs[-1])
    np.testing.assert_array_equal(view[1::3, 2::3, 1], obs[-1])
    assert not frame[:2, 150:].any() and not frame[98:, 150:].any()


def test_video_frames_show_the_newest_rgb_frame_in_colour():
    render = np.zeros((64, 80, 3), np.uint8)
    obs = np.zeros((3 * 3, 32, 32), np.uint8)  # 3 frames of 3 channels
    newest = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    obs[6:], obs[:6] = newest, 255
    view = beside_agent_view(render, obs, channels=3)[:, 80:]  # 2x scale fills the 64 rows
    np.testing.assert_array_equal(view[::2, ::2], newest.transpose(1, 2, 0))


def test_evaluate_returns_match_stock_pendulum_and_video_decodes(tmp_path):
    video = tmp_path / "eval.mp4"
    result = evaluate(
        ZeroTorque(),
        "VisualPendulum",
        EnvConfig(image_size=32),
        episodes=2,
        seed=7,
        max_steps=10,
        video_path=video,
    )
    assert result.lengths == [10, 10]
    expected = [stock_pendulum_return(7 + i, 10) for i in range(2)]
    np.testing.assert_allclose(result.returns, expected, rtol=1e-6)
    frames = decode(video)
    assert len(frames) == 10
    assert {(f.shape, f.dtype.str) for f in frames} == {(PENDULUM_FRAME, "|u1")}
    assert result.video == str(video)


@pytest.fixture
def trained_run(tmp_path):
    """A tiny run directory whose checkpoint holds an agent with non-initial actor weights."""
    cfg = dataclasses.replace(tiny_preset(), run_dir=str(tmp_path / "run"))
    run = RunDir.create(Path(cfg.run_dir), cfg)
    agent = SacAeAgent(cfg.wrappers.obs_shape, 1, cfg.agent, seed=3)
    with torch.no_grad():
        for p in agent.actor.trunk.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    agent.num_updates = 37
    ckpt = save_run_checkpoint(run.checkpoints, 400, run_payload(agent.state_dict()), cfg)
    return cfg, run, agent, ckpt


def test_checkpoint_loads_into_the_agents_policy(trained_run):
    cfg, run, agent, ckpt = trained_run
    assert resolve(str(run.path)) == (ckpt, cfg)
    assert resolve(str(ckpt)) == (ckpt, cfg)
    policy = load_policy(ckpt, cfg)
    assert policy.weights_version == 37
    obs = np.random.default_rng(0).integers(0, 256, (5, *cfg.wrappers.obs_shape), dtype=np.uint8)
    expected = agent.act(obs, deterministic=True)
    np.testing.assert_allclose(policy.act(obs, deterministic=True), expected, atol=1e-5)
    fresh = Policy(cfg.wrappers.obs_shape, 1, cfg.agent, seed=cfg.seed)
    assert not np.allclose(fresh.act(obs, deterministic=True), expected, atol=1e-3)


def eval_args(path, episodes: int, seed: int, max_steps: int, *flags: str) -> list[str]:
    return ["eval", str(path), "--episodes", str(episodes), "--seed", str(seed),
            "--max-steps", str(max_steps), *flags]  # fmt: skip


def test_eval_prints_returns_and_writes_the_video(trained_run, tmp_path, capsys):
    cfg, run, agent, ckpt = trained_run
    video = tmp_path / "videos" / "eval.mp4"
    assert launch.main(eval_args(run.path, 2, 5, 6, "--video", str(video))) == 0
    reference = Policy(cfg.wrappers.obs_shape, 1, cfg.agent)
    reference.load(agent.policy_weights())
    ref = evaluate(reference, cfg.env, cfg.wrappers, episodes=2, seed=5, max_steps=6)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"checkpoint {ckpt} (VisualPendulum, 37 learner updates)"
    assert out[1].startswith("episodes capped at 6 agent steps (--max-steps)")
    assert out[2:4] == [
        f"episode {i + 1}: return {r:.1f} (6 steps)" for i, r in enumerate(ref.returns)
    ]
    assert out[4] == f"return over 2 episodes: {ref.mean:.1f} ± {ref.std:.1f}"
    assert out[5] == f"standard error of the mean: {stats.sem(ref.returns):.1f}"
    assert out[6] == (
        "solved: not applicable to VisualPendulum (it has no registered solved threshold)"
    )
    assert out[7] == f"video: {video}"
    frames = decode(video)
    assert len(frames) == 6 and frames[0].shape == PENDULUM_FRAME


def test_each_episode_is_reported_as_it_ends(trained_run):
    cfg, _, agent, _ = trained_run
    policy = Policy(cfg.wrappers.obs_shape, 1, cfg.agent)
    policy.load(agent.policy_weights())
    seen = []
    result = evaluate(
        policy, cfg.env, cfg.wrappers, 3, seed=5, max_steps=4,
        on_episode=lambda k, total, steps: seen.append((k, total, steps)),
    )  # fmt: skip
    pairs = zip(result.returns, result.lengths, strict=True)
    assert seen == [(k, r, n) for k, (r, n) in enumerate(pairs)] and len(seen) == 3


def test_eval_in_a_human_window(trained_run):
    _, run, _, _ = trained_run
    assert launch.main(eval_args(run.path, 1, 0, 2, "--render", "human")) == 0


def test_bad_paths_and_flags_are_one_line_errors(trained_run, tmp_path, capsys):
    cfg, run, _, ckpt = trained_run
    empty = RunDir.create(tmp_path / "empty", cfg).path
    stray = tmp_path / "stray.pt"
    stray.write_bytes(ckpt.read_bytes())
    cases = [
        ((str(tmp_path / "missing"), 1, None, "none"), "no such run directory or checkpoint file"),
        ((str(empty), 1, None, "none"), "has no checkpoint yet"),
        ((str(tmp_path), 1, None, "none"), "is not a run directory"),
        ((str(stray), 1, None, "none"), "cannot find its run's config"),
        ((str(run.path), 1, None, "window"), "--render window: must be one of none, human"),
        ((str(run.path), 1, "v.mp4", "human"), "run it without --render human"),
        ((str(run.path), 0, None, "none"), "--episodes 0: must be an integer >= 1"),
    ]
    for (path, episodes, video, render), message in cases:
        with pytest.raises(ValueError, match=message):
            load(path, episodes, video, render, max_steps=2)
    with pytest.raises(ValueError, match="--jobs -1: must be an integer >= 0"):
        load(str(run.path), 2, jobs=-1)
    with pytest.raises(ValueError, match="--render human shows one window; run it with --jobs 1"):
        load(str(run.path), 2, render="human", jobs=2)
    load(str(run.path), 1, render="human", jobs=2)  # one episode: one process, one window
    assert launch.main(["eval", str(tmp_path / "missing")]) == 2  # a usage error
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp_path / 'missing'}: no such run directory or checkpoint file"]


def test_eval_json_and_the_held_out_seed(trained_run, tmp_path, capsys):
    cfg, run, agent, ckpt = trained_run
    out = tmp_path / "eval.json"
    assert launch.main(["eval", str(run.path), "--episodes", "3", "--json", str(out)]) == 0
    reference = Policy(cfg.wrappers.obs_shape, 1, cfg.agent)
    reference.load(agent.policy_weights())
    cap = cfg.eval.max_episode_steps
    ref = evaluate(reference, cfg.env, cfg.wrappers, episodes=3, seed=2**33, max_steps=cap)
    data = json.loads(out.read_text())
    assert data["seed"] == HELD_OUT_EVAL_SEED == 2**33  # no training seed reaches 2**33
    assert data["run"] == str(run.path) and data["checkpoint"] == str(ckpt)
    assert data["env"] == "VisualPendulum" and data["agent_steps"] == 400
    assert data["learner_updates"] == 37 and data["episodes"] == 3
    assert data["max_episode_steps"] == cap
    np.testing.assert_allclose(data["returns"], ref.returns, rtol=1e-6)
    assert data["mean"] == pytest.approx(ref.mean) and data["std"] == pytest.approx(ref.std)
    assert data["stderr"] == pytest.approx(stats.sem(ref.returns))
    assert data["threshold"] is None and data["solved"] is None
    assert "standard error of the mean" in capsys.readouterr().out


def test_episodes_in_several_processes_give_the_one_process_record(trained_run, tmp_path, capsys):
    _, run, _, _ = trained_run
    records, video = {}, tmp_path / "v.mp4"
    for jobs, flags in ((1, []), (2, ["--video", str(video)])):  # episode 0 filmed here
        out = tmp_path / f"jobs{jobs}.json"
        argv = eval_args(run.path, 4, 11, 5, "--jobs", str(jobs), "--json", str(out), *flags)
        assert launch.main(argv) == 0
        records[jobs] = json.loads(out.read_text())
        lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("episode ")]
        assert [x.split(":")[0] for x in lines] == [f"episode {k}" for k in range(1, 5)]
    assert len(set(records[1]["returns"])) == 4  # four different episodes
    assert records[2].pop("video") == str(video) and len(decode(video)) == 5
    assert records[1].pop("video") is None
    assert records[2] == records[1]  # the same returns, lengths and everything else


def test_jobs_zero_takes_one_process_per_core_and_never_more_than_the_episodes():
    from distributed_sac.run.eval_command import resolve_jobs

    cores = len(os.sched_getaffinity(0))
    assert resolve_jobs(0, 1000) == cores and resolve_jobs(0, 1) == 1
    assert resolve_jobs(4, 2) == 2 and resolve_jobs(1, 100) == 1 and resolve_jobs(3, 100) == 3


def test_solved_over_100_episodes_where_gymnasium_registers_a_threshold():
    solved = returns_report([905.0, 910.0] * 50, "CarRacing")
    assert solved["threshold"] == 900.0 and solved["solved"] is True
    assert solved["stderr"] == pytest.approx(stats.sem([905.0, 910.0] * 50))
    assert verdict(solved, "CarRacing").startswith("solved: yes, mean 907.5 >= 900")
    short = returns_report([905.0, 910.0], "CarRacing")
    assert short["at_or_above_threshold"] is True and short["solved"] is None
    assert "not judged" in verdict(short, "CarRacing") and "it takes 100" in verdict(
        short, "CarRacing"
    )
    below = returns_report([899.0] * 100, "CarRacing")
    assert below["solved"] is False and verdict(below, "CarRacing").startswith("solved: no,")
    pendulum = returns_report([-150.0] * 100, "VisualPendulum")
    assert pendulum["threshold"] is None and pendulum["solved"] is None
    cartpole = returns_report([463.0] * 10, "dmc:cartpole-swingup")
    assert cartpole["threshold"] is None and cartpole["at_or_above_threshold"] is None
    assert verdict(cartpole, "dmc:cartpole-swingup") == (
        "solved: not applicable to dmc:cartpole-swingup (it has no registered solved threshold)"
    )
    # A gym: id takes its own spec's reward_threshold (LunarLanderContinuous-v3 registers 200).
    lander = returns_report([210.0, 230.0] * 50, "gym:LunarLanderContinuous-v3")
    assert lander["threshold"] == gym.spec("LunarLanderContinuous-v3").reward_threshold == 200
    assert verdict(lander, "gym:LunarLanderContinuous-v3").startswith("solved: yes, mean 220.0")
    assert returns_report([1.0], "gym:NoSuchEnv-v0")["threshold"] is None
    one = returns_report([12.0], "CarRacing")
    assert one["stderr"] is None and one["std"] == 0.0


def test_training_time_evaluation_seeds_are_disjoint_per_root_seed_and_from_held_out():
    from distributed_sac.config.fields import TRAINING_EVAL_SEED_STRIDE as stride
    from distributed_sac.config.fields import TrainConfig, training_eval_seed, validate

    episodes = 10
    roots = [0, 1, 2, 2**31 - 1]
    sets = [{training_eval_seed(r) + k for k in range(episodes)} for r in roots]
    assert all(len(a & b) == 0 for i, a in enumerate(sets) for b in sets[i + 1 :])
    lowest = min(min(s) for s in sets)
    # Above the held-out 2**33 + k of `launch.py eval` and every 32-bit worker seed + env index.
    assert lowest > HELD_OUT_EVAL_SEED + 10**6 and lowest > 2**32 + 1024
    # An evaluation may not run more episodes than its root seed's share.
    too_many = TrainConfig(eval=dataclasses.replace(TrainConfig().eval, episodes=stride + 1))
    with pytest.raises(ValueError, match="eval.episodes"):
        validate(too_many)
