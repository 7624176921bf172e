"""SAC-AE agent (Yarats et al. 2019) with DrQ random shifts (Kostrikov et al. 2020).

One update, every loss taken at the parameters theta_t the update starts from:

1. obs and next_obs get independent random shifts (replicate pad ``augment_pad``, crop back).
2. target_q = r + gamma * (1 - terminated) * (min Q_target(next, a') - alpha * log_pi(a'|next)),
   a' ~ pi(.|next). Truncation bootstraps; only termination cuts the return (SPEC).
3. critic_loss = mse(q1, target_q) + mse(q2, target_q), through the Q heads, the critic
   projection and the convs.
4. recon_loss = mse(decoder(z), (obs + u) / 256) + latent_l2 * mean(0.5 * |z|^2) with
   u ~ U[0, 1) per pixel (dequantisation, Glow, Kingma & Dhariwal 2018) and z the critic
   encoder's latent; the decoder's Adam has weight decay ``decoder_weight_decay`` (SAC-AE).
   Opt-in (``forward_loss_weight`` > 0, not in the spec): plus that weight times a latent
   forward model's loss, 2 - 2 cos(f(z, a), z'), z' the target encoder's latent of next_obs
   (the Bellman target's own pass); f trains in the decoder's optimiser.
5. Every ``actor_update_every`` updates: actor_loss = mean(alpha * log_pi - min Q(z, pi)) on
   detached conv features (the actor trains its own projection and MLP, never the convs) and
   alpha_loss = mean(alpha * (-log_pi - target_entropy)), target_entropy = -action_dim,
   minimised over log_alpha (SAC-AE, with its Adam beta1 of 0.5 for the temperature).
6. Each optimiser steps with the gradient of its own loss: critic (Q heads, critic projection,
   convs), encoder (convs, critic projection), decoder, actor, log_alpha.
7. Every ``target_update_every`` updates: target <- (1 - tau) * target + tau * online for the
   target encoder (convs and projection) and the target Q heads.

Taking every loss at theta_t is the one departure from SAC-AE's code, which runs its actor and
autoencoder updates after the critic's optimiser step; it is what lets the fast path share one
encoder pass and stay an exact rewrite of the plain path.

Plain path (``fast_path=False``): fp32 eager, one forward pass per loss, as the seed did: a
critic pass, an actor pass (the actor's conv pass and the critic's again for Q(obs, pi)) and an
autoencoder pass. Fast path (``fast_path=True``), the same math:

- one conv + critic-projection pass over obs shared by the critic, reconstruction and actor
  losses (the actor reads it detached, as DrQ-v2 does): no conv pass of its own for the
  autoencoder, nor the actor pass's two;
- channels-last conv and deconv layouts;
- fused Adam (``torch.optim.Adam(fused=True)``), the same update rule in one kernel per step;
- bf16 autocast of the conv stacks and the decoder where the device has bf16 matrix hardware
  (``networks.native_bf16``: CUDA, or a CPU with AVX512-BF16 or AMX, where oneDNN runs native
  bf16 conv kernels; on other CPUs its bf16 is emulated, for correctness rather than speed, so
  there it stays fp32). Projections, Q heads, actor MLP, losses, parameters and Adam states stay
  fp32; bf16 keeps fp32's exponent range, so no loss scaling. This rounding is the only place
  the two paths differ;
- ``torch.compile`` of the conv stacks and the decoder when ``cfg.compile`` (off by default: on
  the 2-core reference CPU it made the bf16 fast path slower, 0.7-0.9x in two runs).

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
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distributed_sac.augment import (
    BatchTensors,
    UpdateNoise,
    batch_tensors,
    check_obs,
    draw_noise,
    random_shift,
)
from distributed_sac.config import AgentConfig
from distributed_sac.data import Batch
from distributed_sac.networks import (
    Critic,
    Decoder,
    LatentForward,
    PixelEncoder,
    init_weights,
    native_bf16,
    set_compute,
    squashed_sample,
)
from distributed_sac.policy import PolicyWeights, build_actor, check_dims, policy_act


class Losses(NamedTuple):
    """One update's losses (with graphs) and detached scalar metrics."""

    critic: torch.Tensor
    recon: torch.Tensor
    actor: torch.Tensor | None
    alpha: torch.Tensor | None
    metrics: dict[str, torch.Tensor]


def bellman_target(
    reward: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    next_q: torch.Tensor,
    next_log_pi: torch.Tensor,
    alpha: torch.Tensor,
) -> torch.Tensor:
    """Soft Bellman target r + gamma * (1 - terminated) * (next_q - alpha * next_log_pi)."""
    return reward + gamma * (1.0 - terminated) * (next_q - alpha * next_log_pi)


class SacAeAgent:
    """The learner's SAC-AE: networks, optimisers, temperature and the update schedule."""

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        action_dim: int,
        cfg: AgentConfig,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        self.obs_shape = check_dims(obs_shape, action_dim)
        self.action_dim, self.cfg = action_dim, cfg
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.num_updates = 0
        encoder = PixelEncoder(
            self.obs_shape, cfg.num_conv_layers, cfg.num_filters, cfg.latent_dim,
            frame_diff=cfg.frame_diff,
        )  # fmt: skip
        self.critic = Critic(encoder, action_dim, cfg.hidden_dim)
        self.actor = build_actor(self.obs_shape, action_dim, cfg, convs=encoder.convs)
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
                # methods keeps the state_dict keys of the modules unchanged.
                for enc in (self.critic.encoder, self.critic_target.encoder, self.actor.encoder):
                    enc.conv_features = torch.compile(enc.conv_features)
                self.decoder.forward = torch.compile(self.decoder.forward)

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

    def update(self, batch: Batch) -> dict[str, float]:
        """One learner update on ``batch``; actor, temperature and targets follow the schedule."""
        data = batch_tensors(batch, self.obs_shape, self.action_dim, self.device)
        noise = draw_noise(
            data.obs.shape[0], self.obs_shape, self.action_dim, self.cfg.augment_pad, self.generator
        )
        update_actor = self.num_updates % self.cfg.actor_update_every == 0
        losses = self.losses(data, noise, update_actor)
        jobs = [
            (losses.critic, [self.critic_opt]),
            (losses.recon, [self.encoder_opt, self.decoder_opt]),
        ]
        if update_actor:
            jobs += [(losses.actor, [self.actor_opt]), (losses.alpha, [self.alpha_opt])]
        # All gradients first: the critic and encoder optimisers share the convs, and each must
        # see the gradient of its own loss at theta_t.
        grads = [torch.autograd.grad(loss, _params(opts), retain_graph=True) for loss, opts in jobs]
        for (_, opts), grad in zip(jobs, grads, strict=True):
            for p, g in zip(_params(opts), grad, strict=True):
                p.grad = g
            for opt in opts:
                opt.step()
                opt.zero_grad(set_to_none=True)
        if self.num_updates % self.cfg.target_update_every == 0:
            with torch.no_grad():
                for target, online in zip(
                    self.critic_target.parameters(), self.critic.parameters(), strict=True
                ):
                    target.lerp_(online, self.cfg.tau)
        self.num_updates += 1
        names = list(losses.metrics)
        values = torch.stack([losses.metrics[k].float() for k in names]).tolist()
        return dict(zip(names, values, strict=True))

    def losses(self, data: BatchTensors, noise: UpdateNoise, update_actor: bool) -> Losses:
        """All losses of one update at the current parameters, by the configured path."""
        pad = self.cfg.augment_pad
        obs = random_shift(data.obs, noise.shifts[0], pad)
        next_obs = random_shift(data.next_obs, noise.shifts[1], pad)
        with torch.no_grad():
            next_action, next_log_pi = squashed_sample(*self.actor(next_obs), noise.next_eps)
            next_z = self.critic_target.encoder(next_obs)
            next_q = torch.min(*self.critic_target.heads(next_z, next_action))
            target_q = bellman_target(
                data.reward, data.terminated, self.cfg.gamma, next_q, next_log_pi, self.alpha
            )
        encoder = self.critic.encoder
        if self.cfg.fast_path:
            h = encoder.conv_features(obs)
            z = encoder.proj(h)
            q1, q2 = self.critic.heads(z, data.action)
        else:
            q1, q2 = self.critic(obs, data.action)
            z = encoder(obs)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        latent_loss = 0.5 * z.pow(2).sum(1).mean()
        target_pixels = (obs.float() + noise.dequant) / 256.0
        recon_loss = F.mse_loss(self.decoder(z), target_pixels) + self.cfg.latent_l2 * latent_loss
        extra = {"recon_loss": recon_loss.detach()}
        if self.forward_model is not None:
            forward_loss = self.forward_model.loss(z, data.action, next_z)
            # The forward model trains with the autoencoder: same optimisers, same backward.
            recon_loss = recon_loss + self.cfg.forward_loss_weight * forward_loss
            extra["forward_loss"] = forward_loss.detach()
        metrics = {
            "critic_loss": critic_loss.detach(),
            "q1": q1.detach().mean(),
            "q2": q2.detach().mean(),
            "target_q": target_q.mean(),
            "latent_loss": latent_loss.detach(),
            "alpha": self.alpha,
            **extra,
        }
        if not update_actor:
            return Losses(critic_loss, recon_loss, None, None, metrics)
        if self.cfg.fast_path:
            mu, log_std = self.actor.heads(self.actor.encoder.proj(h.detach()))
            pi, log_pi = squashed_sample(mu, log_std, noise.eps)
            actor_q = torch.min(*self.critic.heads(z.detach(), pi))
        else:
            mu, log_std = self.actor(obs, detach_convs=True)
            pi, log_pi = squashed_sample(mu, log_std, noise.eps)
            actor_q = torch.min(*self.critic(obs, pi, detach_convs=True))
        actor_loss = (self.alpha * log_pi - actor_q).mean()
        entropy = -log_pi.detach().mean()
        alpha_loss = self.log_alpha.exp() * (entropy - self.target_entropy)
        metrics |= {
            "actor_loss": actor_loss.detach(),
            "alpha_loss": alpha_loss.detach(),
            "entropy": entropy,
            "log_std": log_std.detach().mean(),
        }
        return Losses(critic_loss, recon_loss, actor_loss, alpha_loss, metrics)

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions in [-1, 1], float32 (B, A), for uint8 (B, S, H, W) observations."""
        return policy_act(self.actor, obs, self.obs_shape, self.generator, deterministic)

    def reconstruct(self, obs: np.ndarray) -> np.ndarray:
        """uint8 autoencoder reconstructions of uint8 (B, S, H, W) observations (no shift)."""
        check_obs(obs, self.obs_shape)
        with torch.inference_mode():
            # A copy: observations from Ray's object store are read-only, which torch warns about.
            rec = self.decoder(self.critic.encoder(torch.from_numpy(np.array(obs)).to(self.device)))
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
            getattr(self, name).load_state_dict(state[name])
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


def _params(opts: list[torch.optim.Optimizer]) -> list[torch.Tensor]:
    return [p for opt in opts for group in opt.param_groups for p in group["params"]]
