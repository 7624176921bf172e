"""SAC-AE agent (Yarats et al. 2019) with DrQ random shifts (Kostrikov et al. 2020).

One update (``update``), every loss taken at the parameters theta_t the update starts from
(docs/design.md, Algorithm):

1. obs and next_obs get independent random shifts (replicate pad ``augment_pad``, crop back).
2. ``losses.critic_loss``: mse(q1, target_q) + mse(q2, target_q), through the Q heads, the
   critic projection and the convs, with target_q = r + gamma * (1 - terminated) *
   (min Q_target(next, a') - alpha * log_pi(a'|next)), a' ~ pi(.|next). Truncation
   bootstraps; only termination cuts the return.
3. ``losses.autoencoder_loss``: mse(decoder(z), (obs + u) / 256) + latent_l2 * mean(0.5 |z|^2)
   with u ~ U[0, 1) per pixel (dequantisation, Glow, Kingma & Dhariwal 2018) and z the critic
   encoder's latent; the decoder's Adam has weight decay ``decoder_weight_decay`` (SAC-AE).
   Opt-in (``forward_loss_weight`` > 0, not in SAC-AE): plus that weight times a latent
   forward model's loss, 2 - 2 cos(f(z, a), z'), z' the target encoder's latent of next_obs
   (the Bellman target's own pass); f trains in the decoder's optimiser.
4. ``losses.actor_and_alpha_loss``, every ``actor_update_every`` updates: actor_loss =
   mean(alpha * log_pi - min Q(z, pi)) on detached conv features (the actor trains its own
   projection and MLP, never the convs) and alpha_loss = mean(alpha * (-log_pi -
   target_entropy)), target_entropy = -action_dim, minimised over log_alpha (SAC-AE, with its
   Adam beta1 of 0.5 for the temperature).
5. ``_descend``: each optimiser steps with the gradient of its own loss: critic (Q heads, critic
   projection, convs), encoder (convs, critic projection), decoder, actor, log_alpha.
6. ``_update_targets``, every ``target_update_every`` updates: target <- (1 - tau) * target +
   tau * online for the target encoder (convs and projection) and the target Q heads.

The forward passes these losses read come from ``_target_pass`` (no gradient) and
``_online_pass``, the one place where the two paths below differ.

Taking every loss at theta_t is the one departure from SAC-AE's code, which runs its actor and
autoencoder updates after the critic's optimiser step; it is what lets the fast path share one
encoder pass and stay an exact rewrite of the plain path.

Plain path (``fast_path=False``): fp32 eager, one forward pass per loss, as the original
single-process project did. Fast path (``fast_path=True``), the same math: one conv pass shared
by the critic, reconstruction and actor losses, channels-last layouts, fused Adam (each
gradient handed over in its parameter's layout: ``grad_in_layout``), bf16 autocast of the conv
stacks and the decoder where the device has bf16 matrix hardware (``networks.native_bf16``; that
rounding is the only place the two paths differ), and ``torch.compile`` of their update passes
when ``cfg.compile`` (docs/design.md, Fast path).

With bf16 off the two paths agree to float rounding; with it on, their losses at equal
parameters agree within 1% (tests/test_agent.py). ``act`` and ``reconstruct`` run in inference
mode, hence in fp32, and act exactly as the env workers' fp32 ``Policy``. ``speedups`` says
which of these an agent uses, and benchmarks/learner_throughput.py measures them.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings

import numpy as np
import torch
from torch import nn

from distributed_sac.agent.augment import random_shift
from distributed_sac.agent.layouts import grad_in_layout, match_state_layouts
from distributed_sac.agent.losses import (
    Losses,
    OnlinePass,
    TargetPass,
    actor_and_alpha_loss,
    autoencoder_loss,
    behaviour_cloning_loss,
    bellman_target,
    critic_loss,
)
from distributed_sac.agent.networks import (
    Critic,
    Decoder,
    LatentForward,
    PixelEncoder,
    init_weights,
    native_bf16,
    set_compute,
    squashed_sample,
)
from distributed_sac.agent.policy import PolicyWeights, build_actor, check_dims, policy_act
from distributed_sac.agent.tensors import (
    BatchTensors,
    UpdateNoise,
    batch_tensors,
    draw_noise,
    to_device,
)
from distributed_sac.config.data import Batch, check_obs
from distributed_sac.config.fields import AgentConfig


class SacAeAgent:
    """The learner's SAC-AE: networks, optimisers, temperature and the update schedule."""

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        action_dim: int,
        cfg: AgentConfig,
        device: str | torch.device = "cpu",
        seed: int = 0,
        channels: int = 1,
    ) -> None:
        """``channels`` per stacked frame of ``obs_shape``: 1 grayscale, 3 RGB (the encoder's
        frame differences group them; no weights depend on it)."""
        self.obs_shape = check_dims(obs_shape, action_dim)
        self.action_dim, self.cfg = action_dim, cfg
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.num_updates = 0
        encoder = PixelEncoder(
            self.obs_shape, cfg.num_conv_layers, cfg.num_filters, cfg.latent_dim,
            frame_diff=cfg.frame_diff, channels=channels,
        )  # fmt: skip
        self.critic = Critic(encoder, action_dim, cfg.hidden_dim)
        self.actor = build_actor(self.obs_shape, action_dim, cfg, encoder.convs, channels)
        self.decoder = Decoder(self.obs_shape, cfg.num_conv_layers, cfg.num_filters, cfg.latent_dim)
        init_gen = torch.Generator().manual_seed(seed)
        for net in (self.critic, self.actor.encoder.proj, self.actor.trunk, self.decoder):
            init_weights(net, init_gen)
        self.forward_model: LatentForward | None = None
        if cfg.forward_loss_weight > 0:
            self.forward_model = LatentForward(cfg.latent_dim, action_dim, FORWARD_HIDDEN)
            init_weights(self.forward_model, init_gen)
            self.forward_model.to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        nets = (self.critic, self.critic_target, self.actor, self.decoder)
        for net in nets:
            net.to(self.device)
        bf16 = cfg.fast_path and native_bf16(self.device)
        self.amp_dtype = torch.bfloat16 if bf16 else None
        if cfg.fast_path:
            for net in nets:
                set_compute(net, channels_last=True, amp_dtype=self.amp_dtype)
            if cfg.compile:
                # The conv stacks and the decoder carry almost all the work; compiling bound
                # methods keeps the state_dict keys of the modules unchanged. Only the update
                # passes' functions are compiled: inference mode takes the eager fp32 ones,
                # chosen outside them (agent/networks.py), so no compiled code branches on the mode.
                for enc in (self.critic.encoder, self.critic_target.encoder, self.actor.encoder):
                    enc.update_features = torch.compile(enc.update_features)
                self.decoder.update_forward = torch.compile(self.decoder.update_forward)

        self.log_alpha = torch.tensor(math.log(cfg.init_alpha), device=self.device).requires_grad_()
        self.target_entropy = -float(action_dim)
        actor_params = [*self.actor.encoder.proj.parameters(), *self.actor.trunk.parameters()]
        # Fused Adam updates each parameter in one pass instead of one pass per arithmetic op.
        adam = functools.partial(torch.optim.Adam, fused=cfg.fast_path)
        self.critic_opt = adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.encoder_opt = adam(self.critic.encoder.parameters(), lr=cfg.encoder_lr)
        decoder_groups = [
            {"params": list(self.decoder.parameters()), "weight_decay": cfg.decoder_weight_decay}
        ]
        if self.forward_model is not None:
            # The forward model trains beside the decoder, at its learning rate, no weight decay.
            decoder_groups.append({"params": list(self.forward_model.parameters())})
        self.decoder_opt = adam(decoder_groups, lr=cfg.decoder_lr)
        self.actor_opt = adam(actor_params, lr=cfg.actor_lr)
        self.alpha_opt = adam([self.log_alpha], lr=cfg.alpha_lr, betas=(0.5, 0.999))

    @property
    def speedups(self) -> dict[str, bool]:
        """Which fast-path speedups this agent uses (all False on the plain path)."""
        fast = self.cfg.fast_path
        return {
            "shared_encoder_pass": fast,
            "channels_last": fast,
            "fused_adam": fast,
            "bf16": self.amp_dtype is not None,
            "compile": fast and self.cfg.compile,
        }

    @property
    def alpha(self) -> torch.Tensor:
        """Current entropy temperature exp(log_alpha), detached."""
        return self.log_alpha.detach().exp()

    def update(self, batch: Batch | BatchTensors, num_demo: int = 0) -> dict[str, float]:
        """One learner update on ``batch``; actor, temperature and targets follow the schedule.

        The first ``num_demo`` rows are demonstrations: the actor loss adds the behaviour-cloning
        term on them when ``bc_weight`` is set.
        """
        metrics = self.update_on_device(batch, num_demo)
        values = torch.stack([v.float() for v in metrics.values()]).tolist()
        return dict(zip(metrics, values, strict=True))

    def update_on_device(
        self, batch: Batch | BatchTensors, num_demo: int = 0
    ) -> dict[str, torch.Tensor]:
        """``update`` whose metrics stay 0-d tensors on the device: no host sync per update."""
        if isinstance(batch, BatchTensors):
            data = batch
        else:
            data = batch_tensors(batch, self.obs_shape, self.action_dim, self.device)
        noise = draw_noise(
            data.obs.shape[0], self.obs_shape, self.action_dim, self.cfg.augment_pad, self.generator
        )
        update_actor = self.num_updates % self.cfg.actor_update_every == 0
        losses = self.losses(data, noise, update_actor, num_demo)
        self._descend(losses)
        if self.num_updates % self.cfg.target_update_every == 0:
            self._update_targets()
        self.num_updates += 1
        return losses.metrics

    def losses(
        self, data: BatchTensors, noise: UpdateNoise, update_actor: bool, num_demo: int = 0
    ) -> Losses:
        """All losses of one update at the current parameters (the actor's only if scheduled)."""
        pad = self.cfg.augment_pad
        obs = random_shift(data.obs, noise.shifts[0], pad)
        next_obs = random_shift(data.next_obs, noise.shifts[1], pad)
        target = self._target_pass(next_obs, noise.next_eps)
        online = self._online_pass(obs, data.action, noise.eps if update_actor else None)
        target_q = bellman_target(
            data.reward, data.terminated, self.cfg.gamma, target.next_q, target.next_log_pi,
            self.alpha,
        )  # fmt: skip
        critic, metrics = critic_loss(online, target_q)
        recon, ae_metrics = autoencoder_loss(
            self.decoder, online.z, obs, noise.dequant, self.cfg.latent_l2
        )
        metrics |= {"alpha": self.alpha, **ae_metrics}
        if self.forward_model is not None:
            # The opt-in forward model trains with the autoencoder: same optimisers, one backward.
            forward = self.forward_model.loss(online.z, data.action, target.next_z)
            recon = recon + self.cfg.forward_loss_weight * forward
            metrics["forward_loss"] = forward.detach()
        if not update_actor:
            return Losses(critic, recon, None, None, metrics)
        actor, alpha, actor_metrics = actor_and_alpha_loss(
            online, self.log_alpha, self.target_entropy
        )
        if self.cfg.bc_weight > 0 and num_demo > 0:
            bc = behaviour_cloning_loss(online.mu[:num_demo], data.action[:num_demo])
            actor = actor + self.cfg.bc_weight * bc
            actor_metrics["bc_loss"] = bc.detach()
        return Losses(critic, recon, actor, alpha, metrics | actor_metrics)

    @torch.no_grad()
    def _target_pass(self, next_obs: torch.Tensor, next_eps: torch.Tensor) -> TargetPass:
        next_action, next_log_pi = squashed_sample(*self.actor(next_obs), next_eps)
        next_z = self.critic_target.encoder(next_obs)
        next_q = torch.min(*self.critic_target.heads(next_z, next_action))
        return TargetPass(next_z, next_q, next_log_pi)

    def _online_pass(
        self, obs: torch.Tensor, action: torch.Tensor, eps: torch.Tensor | None
    ) -> OnlinePass:
        """The online networks on ``obs``; the policy part only when ``eps`` is given.

        Fast path: one conv + critic-projection pass that critic, autoencoder and actor share.
        Plain path: a critic pass, an encoder pass for the autoencoder, and an actor pass that
        runs the convs again (detached) for pi and for Q(obs, pi). The same values either way.
        """
        encoder = self.critic.encoder
        if self.cfg.fast_path:
            h = encoder.conv_features(obs)
            z = encoder.proj(h)
            q1, q2 = self.critic.heads(z, action)
            if eps is None:
                return OnlinePass(q1, q2, z, None, None, None)
            mu, log_std = self.actor.heads(self.actor.encoder.proj(h.detach()))
            pi, log_pi = squashed_sample(mu, log_std, eps)
            pi_q = torch.min(*self.critic.heads(z.detach(), pi))
        else:
            q1, q2 = self.critic(obs, action)
            z = encoder(obs)
            if eps is None:
                return OnlinePass(q1, q2, z, None, None, None)
            mu, log_std = self.actor(obs, detach_convs=True)
            pi, log_pi = squashed_sample(mu, log_std, eps)
            pi_q = torch.min(*self.critic(obs, pi, detach_convs=True))
        return OnlinePass(q1, q2, z, log_pi, log_std, pi_q, mu)

    def _descend(self, losses: Losses) -> None:
        """Step each optimiser along the gradient of its own loss w.r.t. the parameters it holds.

        critic_opt: critic loss (Q heads, critic projection, convs); encoder_opt and decoder_opt:
        autoencoder loss (convs and critic projection; decoder and forward model); actor_opt:
        actor loss (actor projection and MLP); alpha_opt: temperature loss (log_alpha). All
        gradients come first: critic_opt and encoder_opt share the convs, and each must see the
        gradient of its own loss at the parameters the update started from.
        """
        jobs = [
            (losses.critic, [self.critic_opt]),
            (losses.recon, [self.encoder_opt, self.decoder_opt]),
        ]
        if losses.actor is not None:
            jobs += [(losses.actor, [self.actor_opt]), (losses.alpha, [self.alpha_opt])]
        params = [
            [p for opt in opts for group in opt.param_groups for p in group["params"]]
            for _, opts in jobs
        ]
        grads = [
            torch.autograd.grad(loss, ps, retain_graph=True)
            for (loss, _), ps in zip(jobs, params, strict=True)
        ]
        for (_, opts), ps, gs in zip(jobs, params, grads, strict=True):
            for p, g in zip(ps, gs, strict=True):
                p.grad = grad_in_layout(p, g)
            for opt in opts:
                opt.step()
                opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def _update_targets(self) -> None:
        for target, online in zip(
            self.critic_target.parameters(), self.critic.parameters(), strict=True
        ):
            target.lerp_(online, self.cfg.tau)

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions in [-1, 1], float32 (B, A), for uint8 (B, S * C, H, W) observations."""
        return policy_act(self.actor, obs, self.obs_shape, self.generator, deterministic)

    def reconstruct(self, obs: np.ndarray) -> np.ndarray:
        """uint8 autoencoder reconstructions of uint8 (B, S * C, H, W) observations (no shift)."""
        check_obs(obs, self.obs_shape)
        with torch.inference_mode():
            rec = self.decoder(self.critic.encoder(to_device(obs, self.device)))
            # Inverts the dequantisation: the target (obs + u) / 256 lies in [obs, obs + 1) / 256.
            pixels = (rec * 256.0).floor_().clamp_(0, 255).to(torch.uint8)
            return pixels.contiguous().cpu().numpy()

    def policy_weights(self) -> PolicyWeights:
        """CPU copies of the conv encoder and actor weights, tagged with ``num_updates``."""
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.actor.state_dict().items()}
        return PolicyWeights(self.num_updates, state)

    def state_dict(self) -> dict:
        """Networks, targets, optimisers, temperature, update count and RNG (weights_only-safe)."""
        return {
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor": self.actor.state_dict(),
            "decoder": self.decoder.state_dict(),
            **_optional_state("forward_model", self.forward_model),
            "log_alpha": self.log_alpha.detach().clone(),
            **{name: getattr(self, name).state_dict() for name in _OPTIMIZERS},
            "num_updates": self.num_updates,
            "generator": self.generator.get_state(),
            "generator_device": self.device.type,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore everything ``state_dict`` saved (RNG only from a same-device-type state)."""
        for name in ("critic", "critic_target", "actor", "decoder"):
            getattr(self, name).load_state_dict(state[name])
        if (self.forward_model is None) != ("forward_model" not in state):
            raise ValueError("checkpoint and config disagree on --agent.forward-loss-weight > 0")
        if self.forward_model is not None:
            self.forward_model.load_state_dict(state["forward_model"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for name in _OPTIMIZERS:
            opt = getattr(self, name)
            opt.load_state_dict(state[name])
            match_state_layouts(opt)
        self.num_updates = int(state["num_updates"])
        if state["generator_device"] == self.device.type:
            self.generator.set_state(state["generator"])
        else:
            warnings.warn(
                f"RNG state saved on {state['generator_device']} cannot seed a "
                f"{self.device.type} generator; keeping this agent's seed",
                stacklevel=2,
            )


FORWARD_HIDDEN = 256
"""Hidden units of the latent forward model's one hidden layer."""

_OPTIMIZERS = ("critic_opt", "encoder_opt", "decoder_opt", "actor_opt", "alpha_opt")


def _optional_state(name: str, module: nn.Module | None) -> dict[str, dict]:
    return {} if module is None else {name: module.state_dict()}
