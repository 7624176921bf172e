"""SAC-AE's losses as functions of the networks' outputs (docs/design.md, Losses, per update).

``SacAeAgent.losses`` (``agent/sac_ae.py``) runs the target and online passes and feeds them here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class TargetPass(NamedTuple):
    """The target networks and the policy on next_obs, without gradient."""

    next_z: torch.Tensor
    """The target encoder's latent of next_obs."""
    next_q: torch.Tensor
    """min(Q1, Q2)_target(next_obs, a') for a' ~ pi(.|next_obs)."""
    next_log_pi: torch.Tensor
    """log pi(a'|next_obs)."""


class OnlinePass(NamedTuple):
    """The online networks on the shifted obs: everything the update's losses read."""

    q1: torch.Tensor
    q2: torch.Tensor
    """Q(obs, action) of the two heads, through the critic projection and the convs."""
    z: torch.Tensor
    """The critic encoder's latent of obs, with its graph through projection and convs."""
    log_pi: torch.Tensor | None
    """log pi(a|obs) for a ~ pi(.|obs) on detached conv features (None off the actor schedule)."""
    log_std: torch.Tensor | None
    """The policy's log standard deviation on obs."""
    pi_q: torch.Tensor | None
    """min(Q1, Q2)(obs, a) on detached conv features, for the actor loss."""
    mu: torch.Tensor | None = None
    """The policy's mean before the tanh on obs; tanh(mu) is the deterministic action."""


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


def critic_loss(
    online: OnlinePass, target_q: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Both Q heads' squared error against the soft Bellman target (SAC, clipped double Q)."""
    loss = F.mse_loss(online.q1, target_q) + F.mse_loss(online.q2, target_q)
    return loss, {
        "critic_loss": loss.detach(),
        "q1": online.q1.detach().mean(),
        "q2": online.q2.detach().mean(),
        "target_q": target_q.mean(),
    }


def autoencoder_loss(
    decoder: nn.Module,
    z: torch.Tensor,
    obs: torch.Tensor,
    dequant: torch.Tensor,
    latent_l2: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reconstruction error of the dequantised uint8 ``obs`` (Glow) plus the latent L2 (SAC-AE).

    ``z`` is the critic encoder's latent of ``obs``; ``dequant`` is U[0, 1) noise per pixel, so
    the target (obs + u) / 256 is continuous.
    """
    # z's gradient sums its uses in graph order: this order keeps updates bit-identical to
    # earlier versions (tests compare runs exactly).
    latent_loss = 0.5 * z.pow(2).sum(1).mean()
    target_pixels = (obs.float() + dequant) / 256.0
    loss = F.mse_loss(decoder(z), target_pixels) + latent_l2 * latent_loss
    return loss, {"latent_loss": latent_loss.detach(), "recon_loss": loss.detach()}


def actor_and_alpha_loss(
    online: OnlinePass, log_alpha: torch.Tensor, target_entropy: float
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """SAC's policy loss on detached conv features, and its temperature loss over log_alpha."""
    alpha = log_alpha.detach().exp()
    actor_loss = (alpha * online.log_pi - online.pi_q).mean()
    entropy = -online.log_pi.detach().mean()
    alpha_loss = log_alpha.exp() * (entropy - target_entropy)
    return (
        actor_loss,
        alpha_loss,
        {
            "actor_loss": actor_loss.detach(),
            "alpha_loss": alpha_loss.detach(),
            "entropy": entropy,
            "log_std": online.log_std.detach().mean(),
        },
    )


def behaviour_cloning_loss(mu: torch.Tensor, demo_action: torch.Tensor) -> torch.Tensor:
    """Squared error of the deterministic action tanh(mu) against demonstrated actions.

    Added to the actor loss on the demonstration rows of a batch (TD3+BC, Fujimoto & Gu 2021):
    the critic alone, trained on a few expert episodes, scores actions it never saw and pulls
    the policy towards them (docs/benchmarks.md, CarRacing).
    """
    return (torch.tanh(mu) - demo_action).pow(2).sum(1).mean()
