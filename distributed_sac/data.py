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


def check_array(name: str, arr: object, dtype: type, shape: tuple[int | str, ...]) -> None:
    """Raise ValueError unless ``arr`` is a ``dtype`` ndarray of ``shape``.

    A named dimension (a str such as ``"B"``) takes any size of at least one. Every shape and
    dtype check of the data contracts goes through here, so all of them read alike.
    """
    ok = (
        isinstance(arr, np.ndarray)
        and arr.dtype == dtype
        and arr.ndim == len(shape)
        and all(
            got >= 1 if isinstance(want, str) else got == want
            for got, want in zip(arr.shape, shape, strict=True)
        )
    )
    if not ok:
        named = [d for d in shape if isinstance(d, str)]
        at_least = f" with {', '.join(named)} at least one" if named else ""
        want = f"({', '.join(map(str, shape))}{',' if len(shape) == 1 else ''})"
        got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise ValueError(f"{name} must be {np.dtype(dtype)} {want}{at_least}, got {got}")


def validate_chunk(chunk: Chunk, frame_shape: tuple[int, int], stack: int, action_dim: int) -> None:
    """Raise ValueError naming the first field whose shape or dtype breaks the contract."""
    check_array("chunk.action", chunk.action, np.float32, ("T", action_dim))
    t = chunk.action.shape[0]
    check_array("chunk.frames", chunk.frames, np.uint8, (t + stack, *frame_shape))
    check_array("chunk.reward", chunk.reward, np.float32, (t,))
    check_array("chunk.terminated", chunk.terminated, np.bool_, (t,))
    check_array("chunk.truncated", chunk.truncated, np.bool_, (t,))
    if np.any(chunk.terminated[:-1] | chunk.truncated[:-1]):
        raise ValueError("chunk spans an episode end: only its last transition may end the episode")


def check_obs(obs: object, obs_shape: tuple[int, int, int], name: str = "obs") -> None:
    """Raise ValueError unless ``obs`` is a uint8 (B, S, H, W) batch of ``obs_shape`` stacks."""
    check_array(name, obs, np.uint8, ("B", *obs_shape))


def validate_batch(batch: Batch, obs_shape: tuple[int, int, int], action_dim: int) -> None:
    """Raise ValueError naming the first field of ``batch`` that breaks the contract."""
    check_obs(batch.obs, obs_shape, "batch.obs")
    b = batch.obs.shape[0]
    check_array("batch.next_obs", batch.next_obs, np.uint8, (b, *obs_shape))
    check_array("batch.action", batch.action, np.float32, (b, action_dim))
    for name in ("reward", "terminated", "truncated"):
        dtype = np.float32 if name == "reward" else np.bool_
        check_array(f"batch.{name}", getattr(batch, name), dtype, (b,))
