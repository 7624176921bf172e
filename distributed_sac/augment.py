"""Learner-side input handling: batch checks, DrQ random shifts, per-update noise draws.

Pixels stay uint8 through all of this; the encoder is the first place they become floats.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from distributed_sac.data import Batch


class BatchTensors(NamedTuple):
    """A ``Batch`` on the learner's device; ``terminated`` as float for the Bellman target."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


class UpdateNoise(NamedTuple):
    """Every random draw of one update, taken up front from the agent's generator."""

    shifts: torch.Tensor
    """int64 (2, B, 2): crop offsets in [0, 2 pad] for obs and next_obs."""
    dequant: torch.Tensor
    """float (B, S, H, W) in [0, 1): one grey level of noise for the reconstruction target."""
    next_eps: torch.Tensor
    """float (B, A): Gaussian noise of the next action in the Bellman target."""
    eps: torch.Tensor
    """float (B, A): Gaussian noise of the policy action in the actor loss."""


def check_obs(obs: np.ndarray, obs_shape: tuple[int, int, int], name: str = "obs") -> None:
    """Raise ValueError unless ``obs`` is a uint8 (B>=1, S, H, W) array of ``obs_shape`` frames."""
    if not isinstance(obs, np.ndarray) or obs.dtype != np.uint8 or obs.shape[1:] != obs_shape:
        got = (getattr(obs, "dtype", type(obs).__name__), getattr(obs, "shape", None))
        raise ValueError(f"{name} must be uint8 (B, {', '.join(map(str, obs_shape))}), got {got}")
    if obs.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one observation, got shape {obs.shape}")


def batch_tensors(
    batch: Batch, obs_shape: tuple[int, int, int], action_dim: int, device: torch.device
) -> BatchTensors:
    """Check a batch against the data contract and move it to ``device``."""
    check_obs(batch.obs, obs_shape)
    b = batch.obs.shape[0]
    expected = {
        "next_obs": ((b, *obs_shape), np.uint8),
        "action": ((b, action_dim), np.float32),
        "reward": ((b,), np.float32),
        "terminated": ((b,), np.bool_),
        "truncated": ((b,), np.bool_),
    }
    for name, (shape, dtype) in expected.items():
        arr = getattr(batch, name)
        if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.shape != shape:
            got = (getattr(arr, "dtype", type(arr).__name__), getattr(arr, "shape", None))
            raise ValueError(f"batch.{name} must be {np.dtype(dtype)} {shape}, got {got}")

    def put(arr: np.ndarray) -> torch.Tensor:
        arr = np.ascontiguousarray(arr)
        if not arr.flags.writeable:  # Ray's object store hands out read-only arrays
            arr = arr.copy()
        return torch.from_numpy(arr).to(device, non_blocking=True)

    return BatchTensors(
        obs=put(batch.obs),
        action=put(batch.action),
        reward=put(batch.reward),
        next_obs=put(batch.next_obs),
        terminated=put(batch.terminated).float(),
    )


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


def random_shift(obs: torch.Tensor, shifts: torch.Tensor, pad: int) -> torch.Tensor:
    """Replicate-pad by ``pad`` and crop back at per-sample offsets ``shifts`` (B, 2) (DrQ).

    Reading through clamped row and column indices equals padding with edge pixels and
    cropping, without materialising the padded images; uint8 in, uint8 out.
    """
    if pad == 0:
        return obs
    b, s, h, w = obs.shape
    rows = (torch.arange(h, device=obs.device) + shifts[:, :1] - pad).clamp_(0, h - 1)
    cols = (torch.arange(w, device=obs.device) + shifts[:, 1:] - pad).clamp_(0, w - 1)
    obs = obs.gather(2, rows[:, None, :, None].expand(b, s, h, w))
    return obs.gather(3, cols[:, None, None, :].expand(b, s, h, w))
