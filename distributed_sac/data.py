"""Data contracts between env workers, replay and the learner (numpy only, no Ray)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Chunk(NamedTuple):
    """Consecutive transitions of one environment inside one episode, each frame stored once.

    With ``S`` stacked frames and ``T`` transitions, ``frames`` holds ``T + S`` frames:
    ``obs[t] = frames[t : t + S]`` and ``next_obs[t] = frames[t + 1 : t + 1 + S]``.
    A chunk never spans two episodes; only its last transition may be terminated or truncated.
    """

    frames: np.ndarray
    """uint8 (T + S, H, W)."""
    action: np.ndarray
    """float32 (T, A), the agent's actions in [-1, 1]."""
    reward: np.ndarray
    """float32 (T,), summed over the action repeat."""
    terminated: np.ndarray
    """bool (T,): the MDP ended (no bootstrap)."""
    truncated: np.ndarray
    """bool (T,): a time limit cut the episode (bootstrap through it)."""
    weights_version: int = -1
    """Version of the policy weights that chose the actions (-1: random exploration)."""

    @property
    def num_transitions(self) -> int:
        """T: transitions in the chunk (``len`` would count the tuple's fields)."""
        return int(self.action.shape[0])


class Batch(NamedTuple):
    """A sampled batch; pixels stay uint8 until the encoder."""

    obs: np.ndarray
    """uint8 (B, S, H, W)."""
    action: np.ndarray
    """float32 (B, A)."""
    reward: np.ndarray
    """float32 (B,)."""
    next_obs: np.ndarray
    """uint8 (B, S, H, W)."""
    terminated: np.ndarray
    """bool (B,)."""
    truncated: np.ndarray
    """bool (B,)."""


def validate_chunk(chunk: Chunk, frame_shape: tuple[int, int], stack: int, action_dim: int) -> None:
    """Raise ValueError naming the first field whose shape or dtype breaks the contract."""
    t = chunk.action.shape[0] if chunk.action.ndim == 2 else -1
    expected = {
        "frames": ((t + stack, *frame_shape), np.uint8),
        "action": ((t, action_dim), np.float32),
        "reward": ((t,), np.float32),
        "terminated": ((t,), np.bool_),
        "truncated": ((t,), np.bool_),
    }
    if t < 1:
        raise ValueError(f"chunk.action must be (T>=1, {action_dim}), got {chunk.action.shape}")
    for name, (shape, dtype) in expected.items():
        arr = getattr(chunk, name)
        if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.shape != shape:
            got = (getattr(arr, "shape", None), getattr(arr, "dtype", type(arr).__name__))
            raise ValueError(
                f"chunk.{name} must be {np.dtype(dtype)} {shape}, got {got[1]} {got[0]}"
            )
    if np.any(chunk.terminated[:-1] | chunk.truncated[:-1]):
        raise ValueError("chunk spans an episode end: only its last transition may end the episode")
