"""SacAeAgent and Policy on tiny networks: gradient routing, schedules, targets, determinism."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
import torch

from distributed_sac.agent import sac_ae
from distributed_sac.agent.policy import Policy
from distributed_sac.agent.sac_ae import SacAeAgent, bellman_target
from distributed_sac.agent.tensors import batch_tensors, draw_noise
from distributed_sac.config.data import Batch
from distributed_sac.config.fields import AgentConfig

OBS_SHAPE = (3, 32, 32)
ACTION_DIM = 2
CFG = AgentConfig(num_conv_layers=2, num_filters=8, latent_dim=16, hidden_dim=32, batch_size=8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def assert_same_actions(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal to float32 rounding: the same weights and fp32 graph can round differently in
    another CPU's kernels (an AMD EPYC host differed by <= 1.2e-7), so not bit for bit."""
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.fixture
def fp32_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path without bf16 autocast, whatever this machine's hardware."""
    monkeypatch.setattr(sac_ae, "native_bf16", lambda device: False)


def make_batch(seed: int, terminated: bool = False, truncated: bool = False, b: int = 8) -> Batch:
    rng = np.random.default_rng(seed)
    return Batch(
        obs=rng.integers(0, 256, (b, *OBS_SHAPE), dtype=np.uint8),
        action=rng.uniform(-1, 1, (b, ACTION_DIM)).astype(np.float32),
        reward=rng.normal(size=b).astype(np.float32),
        next_obs=rng.integers(0, 256, (b, *OBS_SHAPE), dtype=np.uint8),
        terminated=np.full(b, terminated),
        truncated=np.full(b, truncated),
    )


def make_agent(seed: int = 0, **overrides) -> SacAeAgent:
    return SacAeAgent(OBS_SHAPE, ACTION_DIM, dataclasses.replace(CFG, **overrides), seed=seed)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> dict[str, bool]:
    return {k: not torch.equal(before[k], v) for k, v in module.named_parameters()}


def test_update_metrics_act_and_reconstruct_shapes() -> None:
    agent = make_agent()
    first, second = agent.update(make_batch(0)), agent.update(make_batch(1))
    assert agent.num_updates == 2
    base = {"critic_loss", "q1", "q2", "target_q", "recon_loss", "latent_loss", "alpha"}
    assert set(first) == base | {"actor_loss", "alpha_loss", "entropy", "log_std"}
    assert set(second) == base
    assert all(type(v) is float and math.isfinite(v) for v in first.values())
    obs = make_batch(2).obs
    action = agent.act(obs)
    assert action.dtype == np.float32 and action.shape == (8, ACTION_DIM)
    assert np.abs(action).max() <= 1.0
    rec = agent.reconstruct(obs)
    assert rec.dtype == np.uint8 and rec.shape == obs.shape


@pytest.mark.parametrize(("fast_path", "forward"), [(False, 0.0), (True, 0.0), (True, 0.5)])
def test_each_loss_reaches_only_its_parameters(fast_path: bool, forward: float) -> None:
    agent = make_agent(fast_path=fast_path, forward_loss_weight=forward)
    assert agent.actor.encoder.convs is agent.critic.encoder.convs
    data = batch_tensors(make_batch(0), OBS_SHAPE, ACTION_DIM, agent.device)
    noise = draw_noise(8, OBS_SHAPE, ACTION_DIM, CFG.augment_pad, agent.generator)
    losses = agent.losses(data, noise, update_actor=True)
    groups = {
        "convs": list(agent.critic.encoder.convs.parameters()),
        "critic_proj": list(agent.critic.encoder.proj.parameters()),
        "q_heads": [*agent.critic.q1.parameters(), *agent.critic.q2.parameters()],
        "actor_proj": list(agent.actor.encoder.proj.parameters()),
        "actor_trunk": list(agent.actor.trunk.parameters()),
        "decoder": list(agent.decoder.parameters()),
        "log_alpha": [agent.log_alpha],
    }
    aux = {"decoder"}
    if forward:
        groups["forward_model"] = list(agent.forward_model.parameters())
        aux.add("forward_model")
        assert losses.metrics["forward_loss"] > 0
    # Gradients each loss must reach, and those it must not; the actor loss also reaches the Q
    # heads through Q(z, pi), which only the actor's optimiser (holding none of them) steps on.
    expected = {
        "critic": (
            {"convs", "critic_proj", "q_heads"},
            set(groups) - {"convs", "critic_proj", "q_heads"},
        ),
        "recon": ({"convs", "critic_proj"} | aux, set(groups) - {"convs", "critic_proj"} - aux),
        "actor": ({"actor_proj", "actor_trunk", "q_heads"}, {"convs", "log_alpha"} | aux),
        "alpha": ({"log_alpha"}, set(groups) - {"log_alpha"}),
    }
    for name, (reached, untouched) in expected.items():
        loss = getattr(losses, name)
        for group, params in groups.items():
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            nonzero = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
            if group in reached:
                assert nonzero, f"{name} loss should reach {group}"
            if group in untouched:
                assert not nonzero, f"{name} loss should not reach {group}"


def test_update_moves_convs_by_critic_and_decoder_but_actor_only_on_schedule() -> None:
    agent = make_agent(actor_update_every=2)
    nets = {"critic": agent.critic, "actor": agent.actor, "decoder": agent.decoder}
    before = {name: snapshot(net) for name, net in nets.items()}
    alpha_before = agent.log_alpha.item()
    agent.update(make_batch(0))
    moved = {name: changed(before[name], net) for name, net in nets.items()}
    assert all(moved["critic"].values()) and all(moved["decoder"].values())
    assert all(moved["actor"].values())  # its tied convs (critic, decoder) and its own layers
    assert agent.log_alpha.item() != alpha_before

    before = {name: snapshot(net) for name, net in nets.items()}
    alpha_before = agent.log_alpha.item()
    agent.update(make_batch(1))  # off the actor schedule
    moved = changed(before["actor"], agent.actor)
    assert all(v for k, v in moved.items() if k.startswith("encoder.convs"))
    assert not any(v for k, v in moved.items() if not k.startswith("encoder.convs"))
    assert agent.log_alpha.item() == alpha_before


def test_conv_weights_ignore_the_actor_loss_in_update() -> None:
    # With zero critic and encoder learning rates only the actor loss could move the critic.
    agent = make_agent(critic_lr=0.0, encoder_lr=0.0)
    critic, proj = snapshot(agent.critic), snapshot(agent.actor.encoder.proj)
    agent.update(make_batch(0))
    assert not any(changed(critic, agent.critic).values())
    assert all(changed(proj, agent.actor.encoder.proj).values())


def test_targets_move_by_tau_on_schedule_only() -> None:
    tau = 0.1
    agent = make_agent(tau=tau, target_update_every=2)
    online, target = agent.critic, agent.critic_target
    pairs = zip(online.parameters(), target.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    for step in range(4):
        before = snapshot(target)
        agent.update(make_batch(step))
        for name, new in target.named_parameters():
            if step % 2 == 0:
                expected = (1 - tau) * before[name] + tau * dict(online.named_parameters())[name]
                torch.testing.assert_close(new, expected, atol=1e-7, rtol=1e-6)
                assert not torch.equal(new, before[name])
            else:
                assert torch.equal(new, before[name])


def test_actor_and_temperature_follow_actor_update_every() -> None:
    agent = make_agent(actor_update_every=3)
    actor_steps = []
    for step in range(7):
        trunk, alpha = snapshot(agent.actor.trunk), agent.log_alpha.item()
        metrics = agent.update(make_batch(step))
        moved = any(changed(trunk, agent.actor.trunk).values())
        assert moved == ("actor_loss" in metrics) == (agent.log_alpha.item() != alpha)
        actor_steps.append(moved)
    assert actor_steps == [True, False, False, True, False, False, True]


@pytest.mark.parametrize(("log_std", "alpha_moves"), [(0.0, -1.0), (-5.0, 1.0)])
def test_temperature_follows_entropy_against_target(log_std: float, alpha_moves: float) -> None:
    agent = make_agent()
    last = agent.actor.trunk[-1]
    with torch.no_grad():
        last.weight[ACTION_DIM:].zero_()
        last.bias[ACTION_DIM:].fill_(log_std)
    metrics = agent.update(make_batch(0))
    entropy_above_target = metrics["entropy"] > -ACTION_DIM
    assert entropy_above_target == (alpha_moves < 0)
    # Adam's first step is lr * sign(gradient); d alpha_loss / d log_alpha = alpha (H - H_target).
    expected = math.log(CFG.init_alpha) + alpha_moves * CFG.alpha_lr
    assert agent.log_alpha.item() == pytest.approx(expected, abs=1e-7)


def test_bellman_target_formula() -> None:
    target = bellman_target(
        reward=torch.tensor([1.0, 2.0]),
        terminated=torch.tensor([1.0, 0.0]),
        gamma=0.9,
        next_q=torch.tensor([10.0, 10.0]),
        next_log_pi=torch.tensor([0.5, 0.5]),
        alpha=torch.tensor(0.2),
    )
    torch.testing.assert_close(target, torch.tensor([1.0, 2.0 + 0.9 * (10.0 - 0.1)]))


def test_termination_cuts_and_truncation_bootstraps() -> None:
    terminal = make_agent().update(make_batch(0, terminated=True))
    assert terminal["target_q"] == pytest.approx(float(make_batch(0).reward.mean()), abs=1e-6)
    truncated = make_agent().update(make_batch(0, truncated=True))
    running = make_agent().update(make_batch(0))
    assert truncated["target_q"] == running["target_q"]
    assert abs(truncated["target_q"] - terminal["target_q"]) > 1e-3


def test_same_seed_same_metrics_and_actions() -> None:
    a, b, c = make_agent(seed=3), make_agent(seed=3), make_agent(seed=4)
    batches = [make_batch(i) for i in range(3)]
    runs = [[agent.update(batch) for batch in batches] for agent in (a, b, c)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    obs = batches[0].obs
    np.testing.assert_array_equal(a.act(obs), b.act(obs))


@pytest.mark.parametrize("forward", [0.0, 0.5])
def test_state_dict_round_trip_gives_identical_next_update(forward: float) -> None:
    agent = make_agent(seed=1, forward_loss_weight=forward)
    for i in range(3):
        agent.update(make_batch(i))
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    with pytest.raises(ValueError, match="forward-loss-weight"):
        make_agent(forward_loss_weight=0.5 - forward).load_state_dict(state)
    restored = make_agent(seed=99, forward_loss_weight=forward)
    restored.load_state_dict(state)
    assert restored.num_updates == 3
    assert restored.update(make_batch(7)) == agent.update(make_batch(7))
    assert restored.update(make_batch(8)) == agent.update(make_batch(8))
    obs = make_batch(9).obs
    np.testing.assert_array_equal(restored.act(obs), agent.act(obs))


@pytest.mark.parametrize("frame_diff", [False, True])
def test_policy_acts_like_the_agent_and_keeps_its_copy(frame_diff: bool) -> None:
    agent = make_agent(seed=2, frame_diff=frame_diff)
    agent.update(make_batch(0))
    policy = Policy(OBS_SHAPE, ACTION_DIM, dataclasses.replace(CFG, frame_diff=frame_diff), seed=5)
    assert policy.weights_version == -1
    weights = agent.policy_weights()
    assert weights.weights_version == 1
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in weights.state} == {
        "encoder.convs",
        "encoder.proj",
        "trunk.0",
        "trunk.2",
        "trunk.4",
    }
    policy.load(weights)
    assert policy.weights_version == 1
    obs = make_batch(1).obs
    expected = agent.act(obs, deterministic=True)
    assert_same_actions(policy.act(obs, deterministic=True), expected)
    frozen = {k: v.clone() for k, v in weights.state.items()}
    agent.update(make_batch(2))
    assert all(torch.equal(v, frozen[k]) for k, v in weights.state.items())
    assert_same_actions(policy.act(obs, deterministic=True), expected)
    assert not np.array_equal(policy.act(obs), expected)


@pytest.mark.parametrize("forward", [0.0, 0.5])
def test_fast_and_plain_paths_compute_the_same_update(fp32_fast_path: None, forward: float) -> None:
    plain = make_agent(fast_path=False, forward_loss_weight=forward)
    fast = make_agent(fast_path=True, forward_loss_weight=forward)
    assert not fast.speedups["bf16"] and fast.speedups["shared_encoder_pass"]
    for i in range(4):
        a, b = plain.update(make_batch(i)), fast.update(make_batch(i))
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    for p, q in zip(plain.critic.parameters(), fast.critic.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("native", [False, True])
def test_bf16_only_on_the_fast_path_and_bf16_hardware(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(sac_ae, "native_bf16", lambda device: native)
    for fast_path in (False, True):
        agent = make_agent(fast_path=fast_path)
        expected = torch.bfloat16 if native and fast_path else None
        assert agent.speedups["bf16"] == (expected is not None)
        coders = [agent.critic.encoder, agent.critic_target.encoder, agent.actor.encoder]
        assert all(m.amp_dtype == expected for m in [*coders, agent.decoder])


def test_bf16_fast_path_losses_stay_within_bf16_rounding_of_fp32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sac_ae, "native_bf16", lambda device: True)
    plain, fast = make_agent(seed=5, fast_path=False), make_agent(seed=5, fast_path=True)
    conv_dtypes = set()
    fast.critic.encoder.convs[0].register_forward_hook(lambda m, i, o: conv_dtypes.add(o.dtype))
    a, b = plain.update(make_batch(0)), fast.update(make_batch(0))
    assert conv_dtypes == {torch.bfloat16}
    # Same parameters, so only rounding differs: bf16 keeps 8 significant bits (unit roundoff
    # 2^-9), accumulated in fp32. Over twelve seeds the metrics moved at most 0.4% (values
    # above 0.1) or 1e-3 (values near zero, which the absolute bound covers): 5x margin.
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-2, abs=1e-2), key
    assert b != a
    # Acting stays fp32, so the learner acts exactly as the fp32 Policy its weights go to.
    conv_dtypes.clear()
    policy = Policy(OBS_SHAPE, ACTION_DIM, CFG)
    policy.load(fast.policy_weights())
    obs = make_batch(1).obs
    expected = policy.act(obs, deterministic=True)
    assert_same_actions(fast.act(obs, deterministic=True), expected)
    assert conv_dtypes == {torch.float32}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("obs", np.zeros((8, *OBS_SHAPE), np.float32), "obs must be uint8"),
        ("obs", np.zeros((8, 3, 32, 30), np.uint8), "obs must be uint8"),
        ("next_obs", np.zeros((7, *OBS_SHAPE), np.uint8), "batch.next_obs"),
        ("action", np.zeros((8, 3), np.float32), "batch.action"),
        ("reward", np.zeros((8, 1), np.float32), "batch.reward"),
        ("terminated", np.zeros(8, np.float32), "batch.terminated"),
        ("truncated", [False] * 8, "batch.truncated"),
    ],
)
def test_bad_batches_raise(field: str, value: object, message: str) -> None:
    agent = make_agent()
    with pytest.raises(ValueError, match=message):
        agent.update(make_batch(0)._replace(**{field: value}))
    assert agent.num_updates == 0


def test_bad_observations_and_dims_raise() -> None:
    agent = make_agent()
    with pytest.raises(ValueError, match="obs must be uint8"):
        agent.act(np.zeros(OBS_SHAPE, np.uint8))
    with pytest.raises(ValueError, match="at least one"):
        agent.act(np.zeros((0, *OBS_SHAPE), np.uint8))
    with pytest.raises(ValueError, match="action_dim"):
        SacAeAgent(OBS_SHAPE, 0, CFG)
    with pytest.raises(ValueError, match="square"):
        Policy((3, 32, 16), ACTION_DIM, CFG)


def test_behaviour_cloning_acts_only_on_the_demonstration_rows() -> None:
    batch = make_batch(3)
    plain, cloning = make_agent(seed=4), make_agent(seed=4, bc_weight=5.0)
    for _ in range(2):
        plain.update(batch)
        metrics = cloning.update(batch)  # no demonstration rows: the spec's update exactly
    assert "bc_loss" not in metrics
    for (name, p), q in zip(
        plain.actor.named_parameters(), cloning.actor.parameters(), strict=True
    ):
        assert torch.equal(p, q), name

    demo_rows = 3
    before = snapshot(cloning.actor)
    metrics = cloning.update(batch, num_demo=demo_rows)
    assert metrics["bc_loss"] > 0
    assert any(changed(before, cloning.actor).values())
    # The term reads only the first num_demo rows: other rows' actions do not change it.
    other = batch._replace(action=batch.action.copy())
    other.action[demo_rows:] *= -1
    twins = [make_agent(seed=9, bc_weight=5.0) for _ in range(2)]
    out = [a.update(b, num_demo=demo_rows) for a, b in zip(twins, (batch, other), strict=True)]
    assert out[0]["bc_loss"] == out[1]["bc_loss"]


def test_behaviour_cloning_pulls_the_deterministic_action_to_the_demonstrations() -> None:
    batch = make_batch(5)
    batch.action[:] = (0.6, -0.4)  # one demonstrated action for every observation
    agents = {w: make_agent(seed=1, bc_weight=w, actor_lr=3e-3) for w in (0.0, 20.0)}
    start = np.abs(agents[0.0].act(batch.obs, deterministic=True) - batch.action).mean()
    for agent in agents.values():
        for _ in range(60):
            agent.update(batch, num_demo=len(batch.obs))
    error = {
        w: np.abs(a.act(batch.obs, deterministic=True) - batch.action).mean()
        for w, a in agents.items()
    }
    assert error[20.0] < 0.5 * start and error[20.0] < 0.5 * error[0.0]
