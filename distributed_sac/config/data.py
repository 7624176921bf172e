"""Data contracts between env workers, replay and the learner (numpy only, no Ray)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class Chunk(NamedTuple):
    """Consecutive transitions of one environment inside one episode, each frame stored once.

    With ``S`` stacked frames and ``T`` transitions, ``frames`` holds ``T + S`` frames of the
    frame shape ((H, W) grayscale, (C, H, W) with channels): ``obs[t]`` is
    ``frames[t : t + S]`` and ``next_obs[t]`` is ``frames[t + 1 : t + 1 + S]``, each stacked
    channels first (``stacked_shape``). A chunk never spans two episodes; only its last
    transition may be terminated or truncated.
    """

    frames: np.ndarray
    """uint8 (T + S, *frame_shape)."""
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


class ChunkRun(NamedTuple):
    """Consecutive chunks laid end to end: what replay ships to the learner's mirror and to disk.

    Chunk ``k`` has ``lengths[k]`` transitions and ``lengths[k] + S`` frames; its frames follow
    chunk ``k - 1``'s in ``frames``, its transitions follow in the per-transition arrays.
    """

    frames: np.ndarray
    """uint8 (sum(T_k + S), *frame_shape)."""
    action: np.ndarray
    """float32 (sum T_k, A)."""
    reward: np.ndarray
    """float32 (sum T_k,)."""
    terminated: np.ndarray
    """bool (sum T_k,)."""
    truncated: np.ndarray
    """bool (sum T_k,)."""
    weights_version: np.ndarray
    """int64 (sum T_k,): version of the weights that acted (-1: random exploration)."""
    lengths: np.ndarray
    """int64 (K,): transitions per chunk."""

    @property
    def num_transitions(self) -> int:
        return int(self.action.shape[0])


class Geometry(NamedTuple):
    """Sizes that fix a replay's ring layout; the learner's mirror must match them exactly."""

    capacity: int
    frame_capacity: int
    frame_shape: tuple[int, ...]
    """One stored frame: (H, W) grayscale, (C, H, W) with channels."""
    stack: int
    action_dim: int


class MirrorState(NamedTuple):
    """What the learner's mirror holds, stated in every feed request (the replay keeps no
    per-client delivery state: it answers from this alone)."""

    lineage: str | None
    """The replay content the mirror follows (``Feed.lineage``); None: it holds nothing yet."""
    next_seq: int
    """Sequence number of the next chunk it expects (its last applied chunk's, plus one)."""
    demos: str | None
    """Id of the demonstrations it holds (``Feed.demos_id``); None: none."""


EMPTY_MIRROR = MirrorState(None, 0, None)


class FeedRequest(NamedTuple):
    """A learner's ``ReplayServer.feed`` call: its mirror, its count, what it asks for."""

    mirror: MirrorState
    updates: int
    """Index batches asked for (at most)."""
    granted: int
    """Rate-limited updates this learner has been granted in the feeds it applied (made, or
    being made); the replay's limiter takes it as its count, so nothing lost or repeated
    skews the ratio. Pretraining updates are not counted."""
    weights_version: int = 0
    """The learner's update count (the weights version it would publish): sample ages."""
    pretrain: bool = False
    """Demonstrations only, outside the rate limiter (before collection)."""


class Feed(NamedTuple):
    """What the replay sends the learner per call: new chunks once, then index batches."""

    reset: bool
    """The mirror must clear first: ``chunks`` is then the replay's whole content."""
    lineage: str
    """Id of the replay's content: it changes when the replay restarts (restored from a
    snapshot), so a mirror of another lineage resyncs in full."""
    geometry: Geometry
    first_seq: int
    """Sequence number of the first chunk in ``chunks`` (chunks are numbered as inserted)."""
    chunks: ChunkRun
    """Chunks after the mirror's ``next_seq`` (all live ones on ``reset``), oldest first."""
    demos_id: str | None
    """Id of the replay's demonstrations (None: it holds none)."""
    demos: ChunkRun | None
    """All demonstrations, when the mirror does not hold ``demos_id``'s."""
    demo_idx: np.ndarray
    """int64 (K, D): logical demonstration indices, D per update."""
    replay_idx: np.ndarray
    """int64 (K, B - D): logical replay indices; K updates in all."""
    done: bool
    """Collection is over and the ratio allows no more updates: the learner stops."""

    @property
    def updates(self) -> int:
        return int(self.replay_idx.shape[0])


class EpisodeStats(NamedTuple):
    """One finished training episode (raw, unsmoothed rewards)."""

    episode_return: float
    length: int
    terminated: bool
    early_stop: bool


class AddReply(NamedTuple):
    """The replay's answer to an env worker's ``add``."""

    agent_steps: int
    done: bool
    """Collection reached ``total_steps`` (or was closed): the worker stops."""
    throttled: bool
    """The rate limiter held the chunks for the whole wait: send them again."""


class WeightsReply(NamedTuple):
    """The replay's answer to a worker's ``weights`` call, sent once there is news."""

    weights_version: int
    """Newest published weights version the replay knows (-1: none yet)."""
    weights: list | None
    """``[ObjectRef]`` of those weights when they differ from the worker's (a list keeps Ray
    from resolving it), else None."""
    publishes: tuple[tuple[int, float], ...]
    """(version, ``time.time()`` published) since the worker's oldest unresolved step, and the
    last one before it: what resolves its acting lag (``weights/acting_lag.py``)."""
    sent_at: float
    """The replay's ``time.time()`` when it answered: steps up to then can be resolved."""


class ReplayStats(NamedTuple):
    """Replay counters for the driver's metrics; ``episodes`` drains on every call."""

    agent_steps: int
    replay_size: int
    episodes_total: int
    episodes: list[EpisodeStats]
    replay_ratio_held: float
    worker_steps: dict[int, int]
    sample_age: float
    """Median over recent feeds of (learner updates - weights version of the sampled data),
    both counting every update (pretraining too); never negative."""
    closed: bool
    demo_fraction_held: float = 0.0
    """Demonstration rows per batch row over the last 64 granted feeds (before any, the share
    the next batch draws); 0.0 in a run without demonstrations."""


class LearnerStats(NamedTuple):
    updates: int
    weights_version: int
    wait_s: float
    """Seconds the update loop waited for the replay's feeds."""
    update_s: float
    """Seconds the update loop spent in updates (launch time on a GPU: it does not sync)."""
    losses: dict[str, float]
    """Means of each update metric over recent updates."""
    publish_times: dict[int, float]
    """``time.time()`` of the last few publishes, by version."""


class WorkerStats(NamedTuple):
    worker: int
    steps: int
    steps_per_s: float
    weights_version: int
    """The weights version the worker acts with (-1: none yet)."""
    node_id: str
    acting_lag: np.ndarray
    """int64: updates the acting weights were behind the newest published, per step since the
    last ``stats`` call (at most the last few thousand)."""
    first_use: dict[int, float]
    """``time.time()`` the last few versions were first acted with, by version."""


class EvalRecord(NamedTuple):
    """One evaluation of published weights, as the evaluator actor reports it."""

    agent_steps: int
    """Agent steps collected when the weights were taken."""
    weights_version: int
    return_mean: float
    return_std: float
    length_mean: float
    """Mean episode length in agent steps."""
    video: str | None
    """Path of the first episode's video, if one was written."""


class Batch(NamedTuple):
    """A sampled batch; pixels stay uint8 until the encoder."""

    obs: np.ndarray
    """uint8 (B, S * C, H, W): S frames of C channels (1 grayscale), oldest first."""
    action: np.ndarray
    """float32 (B, A)."""
    reward: np.ndarray
    """float32 (B,)."""
    next_obs: np.ndarray
    """uint8 (B, S * C, H, W)."""
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


def check_frame_shape(frame_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``frame_shape`` as ints; ValueError unless it is (H, W) or (C, H, W), every size >= 1."""
    shape = tuple(int(d) for d in frame_shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"frame_shape must be (H, W) or (C, H, W), sizes >= 1, got {shape}")
    return shape


def stacked_shape(frame_shape: tuple[int, ...], stack: int) -> tuple[int, int, int]:
    """Observation shape of ``stack`` frames of ``frame_shape`` stacked channels first:
    (S * C, H, W), C = 1 for (H, W) frames."""
    *channels, height, width = frame_shape
    return (stack * math.prod(channels), height, width)


def split_frames(obs: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
    """The frames of one (S * C, H, W) observation as an (S, *frame_shape) view, oldest first
    (for (H, W) frames, ``obs`` itself)."""
    return obs.reshape(-1, *frame_shape)


def validate_chunk(chunk: Chunk, frame_shape: tuple[int, ...], stack: int, action_dim: int) -> None:
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
    """Raise ValueError unless ``obs`` is a uint8 (B, S * C, H, W) batch of ``obs_shape``."""
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
