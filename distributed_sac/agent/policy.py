"""What acts: the actor's weights as the learner publishes them, and the env workers' ``Policy``.

``SacAeAgent`` (``agent/sac_ae.py``) builds its actor with ``build_actor`` and acts with
``_act``, so a worker's ``Policy`` loaded with the agent's ``PolicyWeights`` acts exactly as
the agent does.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from distributed_sac.agent.networks import Actor, PixelEncoder, init_weights, squashed_sample
from distributed_sac.agent.tensors import host_tensor, to_device
from distributed_sac.config.data import check_obs
from distributed_sac.config.fields import AgentConfig


class PolicyWeights(NamedTuple):
    """Inference weights (conv encoder + actor) tagged with the learner's update count.

    The learner publishes them as numpy arrays: they pickle about 4x faster than tensors.
    """

    weights_version: int
    """The learner's update count when they were taken."""
    state: dict[str, torch.Tensor | np.ndarray]


def build_actor(
    obs_shape: tuple[int, int, int],
    action_dim: int,
    cfg: AgentConfig,
    convs: nn.Module | None,
    channels: int = 1,
) -> Actor:
    """Actor on its own projection; ``convs`` ties its conv stack to the critic's; ``channels``
    per stacked frame (1 grayscale, 3 RGB)."""
    encoder = PixelEncoder(
        obs_shape, cfg.num_conv_layers, cfg.num_filters, cfg.latent_dim, convs, cfg.frame_diff,
        channels,
    )  # fmt: skip
    return Actor(encoder, action_dim, cfg.hidden_dim, cfg.log_std_min, cfg.log_std_max)


def check_dims(obs_shape: tuple[int, int, int], action_dim: int) -> tuple[int, int, int]:
    """``obs_shape`` as ints; ValueError unless it is (S * C, H, W) and ``action_dim`` >= 1."""
    if len(obs_shape) != 3 or min(obs_shape) < 1 or action_dim < 1:
        raise ValueError(
            f"need obs_shape (S * C, H, W) and action_dim >= 1, got {obs_shape}, {action_dim}"
        )
    return tuple(int(d) for d in obs_shape)  # type: ignore[return-value]


def policy_act(
    actor: Actor,
    obs: np.ndarray,
    obs_shape: tuple[int, int, int],
    generator: torch.Generator,
    deterministic: bool,
) -> np.ndarray:
    """Actions in [-1, 1] of ``actor`` for uint8 ``obs``: tanh(mu) or a squashed sample."""
    check_obs(obs, obs_shape)
    with torch.inference_mode():
        mu, log_std = actor(to_device(obs, generator.device))
        if deterministic:
            return torch.tanh(mu).cpu().numpy()
        eps = torch.randn(mu.shape, generator=generator, device=generator.device)
        return squashed_sample(mu, log_std, eps)[0].cpu().numpy()


class Policy:
    """What env workers run on CPU: the conv encoder and the actor, loaded from PolicyWeights."""

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        action_dim: int,
        cfg: AgentConfig,
        seed: int = 0,
        channels: int = 1,
    ) -> None:
        """``channels`` per stacked frame of ``obs_shape``: 1 grayscale, 3 RGB (what the
        agent's encoder was built with)."""
        self.obs_shape = check_dims(obs_shape, action_dim)
        self.actor = build_actor(self.obs_shape, action_dim, cfg, convs=None, channels=channels)
        self.generator = torch.Generator().manual_seed(seed)
        init_weights(self.actor, self.generator)
        self.weights_version = -1
        """The version of the weights loaded (-1: the initial random ones)."""

    def load(self, weights: PolicyWeights) -> None:
        """Take the given weights and their version."""
        # load_state_dict copies each array into the parameters: a view is enough, except of
        # the read-only arrays Ray hands out (host_tensor copies those).
        self.actor.load_state_dict(
            {
                k: v if isinstance(v, torch.Tensor) else host_tensor(np.asarray(v))
                for k, v in weights.state.items()
            }
        )
        self.weights_version = weights.weights_version

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions in [-1, 1], float32 (B, A), for uint8 (B, S * C, H, W) observations."""
        return policy_act(self.actor, obs, self.obs_shape, self.generator, deterministic)
