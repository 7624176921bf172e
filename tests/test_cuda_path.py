"""The CUDA path correct by construction, checked on the CPU: gradients in their parameters'
layout for fused Adam, no torch view of a read-only array, a bounded staging buffer that is
reused only once its copies ran, and no inference-mode branch in a compiled function."""

from __future__ import annotations

import ast
import inspect
import textwrap
import warnings

import numpy as np
import pytest
import torch

from benchmarks import gpu_replay_checks
from distributed_sac.agent import sac_ae
from distributed_sac.agent.networks import Decoder, PixelEncoder
from distributed_sac.agent.policy import Policy, PolicyWeights
from distributed_sac.agent.tensors import batch_tensors, host_tensor, to_device
from distributed_sac.replay.buffer import ReplayBuffer
from distributed_sac.replay.staging import Staging
from tests.test_agent import ACTION_DIM, CFG, OBS_SHAPE, make_agent, make_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OPTIMIZERS = ("critic_opt", "encoder_opt", "decoder_opt", "actor_opt", "alpha_opt")


@pytest.fixture
def strict_warnings():
    """Every warning an error, and torch's warn-once warnings (the read-only one) every time."""
    warn_always = torch.is_warn_always_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.set_warn_always(True)
        try:
            yield
        finally:
            torch.set_warn_always(warn_always)


def read_only(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr)
    arr.setflags(write=False)  # as Ray's object store hands arrays out
    return arr


# -- 1. gradients in the parameters' memory format ----------------------------------------------


def contiguous_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.autograd.grad`` returning contiguous gradients, as cuDNN may for channels-last
    weights (the CPU's oneDNN returns channels-last ones)."""
    grad = torch.autograd.grad
    monkeypatch.setattr(
        torch.autograd,
        "grad",
        lambda *a, **kw: tuple(g.contiguous() for g in grad(*a, **kw)),
    )


def layout_log(agent: sac_ae.SacAeAgent) -> list[tuple[str, bool]]:
    """(parameter shape, whether its grad has its strides), for every step of every optimiser."""
    log = []

    def check(opt, args, kwargs):
        for group in opt.param_groups:
            for p in group["params"]:
                log.append((tuple(p.shape), p.grad.stride() == p.stride()))

    for name in OPTIMIZERS:
        getattr(agent, name).register_step_pre_hook(check)
    return log


@pytest.mark.parametrize("contiguous_grads", [False, True])
def test_fused_adam_steps_on_gradients_in_each_parameters_layout(
    monkeypatch: pytest.MonkeyPatch, contiguous_grads: bool
) -> None:
    reference = make_agent(fast_path=True)
    agent = make_agent(fast_path=True)
    assert agent.speedups["channels_last"] and agent.speedups["fused_adam"]
    assert all(getattr(agent, name).defaults["fused"] for name in OPTIMIZERS)
    weight = agent.critic.encoder.convs[2].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    log = layout_log(agent)
    with monkeypatch.context() as m:
        if contiguous_grads:
            contiguous_autograd(m)
        for i in range(2):  # the first update steps all five optimisers
            agent.update(make_batch(i))

    def count(names) -> int:
        return sum(len(g["params"]) for n in names for g in getattr(agent, n).param_groups)

    # Every parameter of all five optimisers, then of the three that step off the actor schedule.
    assert len(log) == count(OPTIMIZERS) + count(OPTIMIZERS[:3])
    assert all(ok for _, ok in log), [shape for shape, ok in log if not ok]
    assert any(len(shape) == 4 for shape, _ in log)
    for i in range(2):
        reference.update(make_batch(i))
    # Restrided gradients step exactly as the layout autograd would have given.
    for p, q in zip(reference.critic.parameters(), agent.critic.parameters(), strict=True):
        assert torch.equal(p, q)


def test_without_restriding_fused_adam_would_misread_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Why grad_in_layout exists: fused Adam walks gradient and parameter as flat buffers."""
    reference, agent = make_agent(fast_path=True), make_agent(fast_path=True)
    reference.update(make_batch(0))
    with monkeypatch.context() as m:
        contiguous_autograd(m)
        m.setattr(sac_ae, "grad_in_layout", lambda p, g: g)
        agent.update(make_batch(0))
    w = (reference.critic.encoder.convs[2].weight, agent.critic.encoder.convs[2].weight)
    assert not torch.equal(*w)  # silently wrong on the CPU; on CUDA it may also raise


def test_optimizer_states_loaded_from_a_plain_path_agent_take_the_parameters_layout() -> None:
    plain = make_agent(fast_path=False)
    plain.update(make_batch(0))
    fast = make_agent(fast_path=True)
    fast.load_state_dict(plain.state_dict())
    restrided = 0
    for name in OPTIMIZERS:
        saved, loaded = getattr(plain, name), getattr(fast, name)
        for group, fast_group in zip(saved.param_groups, loaded.param_groups, strict=True):
            for p, q in zip(group["params"], fast_group["params"], strict=True):
                for key in ("exp_avg", "exp_avg_sq"):
                    state = loaded.state[q][key]
                    assert state.stride() == q.stride() and torch.equal(state, saved.state[p][key])
                restrided += q.stride() != p.stride()
    assert restrided > 0  # the channels-last conv weights
    log = layout_log(fast)
    fast.update(make_batch(1))
    assert log and all(ok for _, ok in log)


# -- 2. no torch view of a read-only array ------------------------------------------------------


def test_the_warning_guard_sees_a_read_only_view(strict_warnings) -> None:
    arr = read_only(np.zeros(3, np.float32))
    for _ in range(2):  # every time, not once per process
        with pytest.raises(UserWarning, match="not writable"):
            torch.from_numpy(arr)


def test_host_tensors_copy_read_only_arrays_only(strict_warnings) -> None:
    writable = np.arange(6, dtype=np.float32)
    assert host_tensor(writable).data_ptr() == writable.ctypes.data  # no copy on the hot path
    ro = read_only(writable)
    t = host_tensor(ro)
    assert t.data_ptr() != ro.ctypes.data and torch.equal(t, torch.arange(6.0))
    for arr in (writable, ro):
        assert torch.equal(to_device(arr, torch.device("cpu")), torch.arange(6.0))
        assert torch.equal(to_device(arr, "cpu"), torch.arange(6.0))
        # Another device (meta stands in for CUDA here) takes torch.tensor's copy when read-only.
        assert to_device(arr, "meta").shape == (6,)
    batch = make_batch(0)
    tensors = batch_tensors(batch._replace(obs=read_only(batch.obs)), OBS_SHAPE, ACTION_DIM, "cpu")
    assert torch.equal(tensors.obs, torch.from_numpy(batch.obs))


def test_policy_weights_and_observations_from_ray_load_and_act_without_a_view(
    strict_warnings,
) -> None:
    agent = make_agent()
    weights = agent.policy_weights()
    published = PolicyWeights(  # as the learner publishes them: numpy, read-only once in Ray
        weights.weights_version, {k: read_only(v.numpy()) for k, v in weights.state.items()}
    )
    policy = Policy(OBS_SHAPE, ACTION_DIM, CFG)
    policy.load(published)
    obs = read_only(make_batch(1).obs)
    expected = agent.act(obs, deterministic=True)
    np.testing.assert_array_equal(policy.act(obs, deterministic=True), expected)
    assert agent.reconstruct(obs).shape == obs.shape
    writable = PolicyWeights(1, {k: v.numpy().copy() for k, v in weights.state.items()})
    policy.load(writable)  # writable arrays: viewed, then copied into the parameters
    np.testing.assert_array_equal(policy.act(obs, deterministic=True), expected)


def _filled_replay(seed: int = 0) -> ReplayBuffer:
    rng, tiny = np.random.default_rng(seed), gpu_replay_checks.TINY
    rb = ReplayBuffer(tiny.capacity, tiny.frame_shape, tiny.stack, tiny.action_dim, 16)
    while rb.total_added < 2 * tiny.capacity:
        rb.add(gpu_replay_checks.random_chunk(rng, tiny))
    return rb


@pytest.mark.parametrize("torch_branch", [False, True])
def test_mirror_takes_read_only_feeds_on_both_branches(strict_warnings, torch_branch) -> None:
    rb = _filled_replay()
    mirror = gpu_replay_checks.make_mirror(rb, torch.device("cpu"), torch_branch)
    mirror.add_run(gpu_replay_checks.read_only(rb.run_since(rb.layout.first_seq)))
    idx = read_only(np.random.default_rng(1).integers(0, len(rb), 32))
    assert gpu_replay_checks.mismatches(mirror.gather(idx), rb.gather(idx)) == []


# -- 3. a bounded, reused staging buffer ----------------------------------------------------


def _arrays(rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Uploads of many sizes (below, at and above the cap) and dtypes, some several at once."""
    sizes = [10, 1000, 3, 256, 257, 5000, 7, 64]
    uploads = [[rng.integers(0, 256, n, dtype=np.uint8)] for n in sizes]
    uploads.append([rng.normal(size=(50, 3)).astype(np.float32), rng.integers(-9, 9, 40)])
    uploads.append([rng.random(33) < 0.5, np.array(rng.normal(), np.float32)])
    uploads.append([read_only(rng.integers(0, 256, (300, 4, 4), dtype=np.uint8))])
    return uploads


def _check(outs: list[torch.Tensor], arrays: list[np.ndarray]) -> None:
    for out, arr in zip(outs, arrays, strict=True):
        arr = np.asarray(arr)
        assert out.shape == arr.shape and out.numpy().dtype == arr.dtype
        np.testing.assert_array_equal(out.numpy(), arr)


def test_staging_uploads_exactly_through_bounded_reused_buffers(strict_warnings) -> None:
    staging = Staging("cpu", max_bytes=256, slots=2)
    assert not staging.pin
    uploads = _arrays(np.random.default_rng(0))
    results = [staging.upload(*arrays) for arrays in uploads]
    for outs, arrays in zip(results, uploads, strict=True):  # still right after later uploads
        _check(outs, arrays)
    assert staging.nbytes <= 2 * 256 and staging.allocations <= 2 * 2
    grown = staging.allocations
    for arrays in uploads:  # the same sizes again: the buffers are reused, none allocated
        _check(staging.upload(*arrays), arrays)
    assert staging.allocations == grown and staging.nbytes <= 2 * 256
    with pytest.raises(ValueError, match="pinned staging needs a CUDA device"):
        Staging("cpu", pin=True)


class _Deferred:
    """A fake CUDA event over copies that run only when it is waited on, as DMA runs late."""

    def __init__(self, copies: list, honest: bool) -> None:
        self.copies, self.honest = copies, honest

    def query(self) -> bool:
        return False

    def synchronize(self, final: bool = False) -> None:
        if self.honest or final:
            for dst, src in self.copies:
                dst.copy_(src)
            self.copies = []


class AsyncStaging(Staging):
    """Staging whose copies are deferred until their slot's event is waited on."""

    def __init__(self, honest: bool = True, **kw) -> None:
        super().__init__("cpu", **kw)
        self.honest, self.pending, self.events = honest, [], []

    def _copy(self, dst, src) -> None:
        self.pending.append((dst, src))

    def _record(self):
        self.events.append(_Deferred(self.pending, self.honest))
        self.pending = []
        return self.events[-1]

    def finish(self) -> None:
        for event in self.events:
            event.synchronize(final=True)


@pytest.mark.parametrize("honest", [True, False])
def test_a_staging_slot_is_rewritten_only_after_its_copies_ran(honest: bool) -> None:
    staging = AsyncStaging(honest=honest, max_bytes=256, slots=2)
    uploads = _arrays(np.random.default_rng(1))
    results = [staging.upload(*arrays) for arrays in uploads]
    staging.finish()
    assert staging.waits > 0
    try:
        for outs, arrays in zip(results, uploads, strict=True):
            _check(outs, arrays)
        intact = True
    except AssertionError:
        intact = False
    # Waiting on a slot's event before refilling it is what keeps late copies right: with
    # waits that return early (honest=False), copies read bytes written after them.
    assert intact == honest


# -- 4. no inference-mode branch inside compiled functions ------------------------------------

MODE_NAMES = {"is_inference_mode_enabled", "inference_mode", "training", "is_grad_enabled"}


@pytest.mark.parametrize(
    "fn",
    [PixelEncoder.update_features, PixelEncoder._features, Decoder.update_forward, Decoder._decode],
)
def test_the_compiled_functions_read_no_mode(fn) -> None:
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & MODE_NAMES
    for node in ast.walk(tree):  # and no comparison of a device (its type)
        if isinstance(node, ast.Compare):
            compared = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            assert not compared & {"device", "type"}


def test_compiled_functions_run_only_outside_inference_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, bool]] = []

    def fake_compile(fn, **kwargs):
        def compiled(*args):
            calls.append((fn.__name__, torch.is_inference_mode_enabled()))
            return fn(*args)

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    compiled = make_agent(fast_path=True, compile=True)
    eager = make_agent(fast_path=True)
    assert compiled.speedups["compile"]
    obs = make_batch(5).obs
    np.testing.assert_array_equal(compiled.act(obs, True), eager.act(obs, True))
    np.testing.assert_array_equal(compiled.reconstruct(obs), eager.reconstruct(obs))
    assert calls == []  # acting and reconstructing took the eager fp32 functions
    for i in range(2):
        assert compiled.update(make_batch(i)) == eager.update(make_batch(i))
    assert {name for name, _ in calls} == {"update_features", "update_forward"}
    assert not any(inference for _, inference in calls)


@pytest.mark.slow
def test_torch_compile_on_the_cpu_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real torch.compile (about a minute on 2 cores: gcc builds the kernels)."""
    monkeypatch.setattr(sac_ae, "native_bf16", lambda device: False)
    compiled = make_agent(fast_path=True, compile=True)
    eager = make_agent(fast_path=True)
    obs = make_batch(5).obs
    for i in range(2):
        a, b = compiled.update(make_batch(i)), eager.update(make_batch(i))
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    np.testing.assert_allclose(compiled.act(obs, True), eager.act(obs, True), atol=1e-4)
    np.testing.assert_array_equal(compiled.reconstruct(obs).shape, obs.shape)
