"""The torch side of an update's inputs: numpy data moved to a device, and the update's noise.

Pixels cross as uint8; the encoder is the first place they become floats.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from distributed_sac.config.data import Batch, validate_batch


class BatchTensors(NamedTuple):
    """A ``Batch`` on the learner's device; ``terminated`` as float for the Bellman target."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


def host_tensor(arr: np.ndarray) -> torch.Tensor:
    """A CPU tensor of ``arr``: its memory when writable, else a copy.

    Ray's object store hands out read-only arrays; a torch view of one warns, and a write
    through it would be undefined behaviour, so those alone are copied.
    """
    if arr.flags.writeable:
        return torch.from_numpy(arr)
    return torch.from_numpy(arr.copy())


def to_device(arr: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """``arr`` as a tensor on ``device``, sharing its memory where the device is the CPU."""
    arr, device = np.ascontiguousarray(arr), torch.device(device)
    if arr.flags.writeable or device.type == "cpu":
        return host_tensor(arr).to(device, non_blocking=True)
    # Read-only, to an accelerator: torch.tensor copies from numpy's memory to the device
    # directly (no writable view, hence no warning, and no host copy first).
    return torch.tensor(arr, device=device)


def batch_tensors(
    batch: Batch, obs_shape: tuple[int, int, int], action_dim: int, device: torch.device
) -> BatchTensors:
    """``data.validate_batch`` the batch, then move it to ``device``."""
    validate_batch(batch, obs_shape, action_dim)
    return BatchTensors(
        obs=to_device(batch.obs, device),
        action=to_device(batch.action, device),
        reward=to_device(batch.reward, device),
        next_obs=to_device(batch.next_obs, device),
        terminated=to_device(batch.terminated, device).float(),
    )


class UpdateNoise(NamedTuple):
    """Every random draw of one update, taken up front from the agent's generator."""

    shifts: torch.Tensor
    """int64 (2, B, 2): crop offsets in [0, 2 pad] for obs and next_obs."""
    dequant: torch.Tensor
    """float (B, S * C, H, W) in [0, 1): one pixel level of noise for the reconstruction target."""
    next_eps: torch.Tensor
    """float (B, A): Gaussian noise of the next action in the Bellman target."""
    eps: torch.Tensor
    """float (B, A): Gaussian noise of the policy action in the actor loss."""


def draw_noise(
    batch_size: int,
    obs_shape: tuple[int, int, int],
    action_dim: int,
    pad: int,
    generator: torch.Generator,
) -> UpdateNoise:
    """Draw one update's randomness in a fixed order, so both update paths see the same."""
    kw = {"generator": generator, "device": generator.device}
    return UpdateNoise(
        shifts=torch.randint(0, 2 * pad + 1, (2, batch_size, 2), **kw),
        dequant=torch.rand((batch_size, *obs_shape), **kw),
        next_eps=torch.randn((batch_size, action_dim), **kw),
        eps=torch.randn((batch_size, action_dim), **kw),
    )
