"""Human demonstration files: one episode per compressed .npz, loaded as replay `Chunk`s.

A file holds the `Chunk` arrays of one episode (``frames`` uint8 (T + S, H, W), or
(T + S, C, H, W) for frames with channels, each frame stored once; ``action`` float32 (T, A) in
the agent's [-1, 1] space; ``reward`` float32 (T,); ``terminated`` and ``truncated`` bool (T,))
plus ``meta``, a JSON string describing the environment the episode was recorded in. The meta
of an RGB episode records ``"channels": 3``; grayscale ones record no channels (as every file
from before RGB), so their files are unchanged. Only plain arrays are stored, and files are read
with ``allow_pickle=False``, so loading a demonstration never runs code from it.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from distributed_sac.config.atomic import atomic_write
from distributed_sac.config.data import Chunk, validate_chunk
from distributed_sac.config.fields import EnvConfig
from distributed_sac.envs.registry import ENV_IDS, action_dim

FORMAT_VERSION = 1
"""Version written into every demonstration file; `load_demo` reads only this one."""

ARRAYS = ("frames", "action", "reward", "terminated", "truncated", "meta")
"""Arrays every demonstration file holds."""
_META_KEYS = {"env", "obs_shape", "frame_stack", "action_repeat"}


class DemoError(ValueError):
    """A demonstration file that cannot be used; the one-line message names the file."""


def demo_meta(env_name: str, cfg: EnvConfig, **extra: Any) -> dict[str, Any]:
    """Metadata of an episode recorded in `make_env(env_name, cfg)`; `extra` adds JSON fields."""
    channels = {} if cfg.channels == 1 else {"channels": cfg.channels}
    return {
        "env": env_name,
        "env_id": ENV_IDS.get(env_name, env_name),  # dmc: and gym: names are their own ids
        "obs_shape": list(cfg.obs_shape),
        **channels,
        "image_size": cfg.image_size,
        "frame_stack": cfg.frame_stack,
        "action_repeat": cfg.action_repeat,
        **extra,
    }


def _frame_shape(meta: Mapping[str, Any]) -> tuple[int, ...]:
    """One stored frame of an episode with this meta: (H, W), or (C, H, W) for C > 1 channels."""
    channels, side = meta.get("channels", 1), tuple(meta["obs_shape"][1:])
    return side if channels == 1 else (channels, *side)


def save_episode(
    path: str | os.PathLike,
    frames: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    meta: Mapping[str, Any],
) -> None:
    """Write one episode to `path` atomically; `meta` (see `demo_meta`) gains version and return."""
    missing = sorted(_META_KEYS - meta.keys())
    if missing:
        raise ValueError(f"episode meta lacks {', '.join(missing)}; build it with demo_meta")
    chunk = Chunk(frames, actions, rewards, terminated, truncated)
    validate_chunk(chunk, _frame_shape(meta), meta["frame_stack"], action_dim(meta["env"]))
    _check_action_range(actions)
    full_meta = {
        **meta,
        "format_version": FORMAT_VERSION,
        "length": chunk.num_transitions,
        "episode_return": float(np.sum(rewards, dtype=np.float64)),
    }
    arrays = {name: getattr(chunk, name) for name in ARRAYS[:-1]}
    arrays["meta"] = np.array(json.dumps(full_meta))
    # A reader (or a crash) never sees half a file; atomic_write's hidden .tmp name keeps
    # leftovers out of a folder's *.npz.
    atomic_write(Path(path), lambda f: np.savez_compressed(f, **arrays))


def _check_action_range(actions: np.ndarray) -> None:
    if not np.all(np.abs(actions) <= 1.0):
        worst = np.max(np.abs(actions))
        raise ValueError(f"actions must lie in [-1, 1], got |action| up to {worst}")


def _read(path: str) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        # np.load would try anything else as a pickle; .npz files are zip archives.
        if magic != b"PK\x03\x04":
            raise DemoError(f"{path}: not an .npz archive")
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
        if isinstance(e, DemoError):
            raise
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DemoError(f"{path}: unreadable demonstration file ({reason})") from e


def _check_meta(path: str, raw: np.ndarray, env_name: str, cfg: EnvConfig) -> dict[str, Any]:
    if raw.dtype.kind != "U" or raw.shape != ():
        raise DemoError(f"{path}: meta must be a JSON string scalar, got {raw.dtype} {raw.shape}")
    try:
        meta = json.loads(raw.item())
    except json.JSONDecodeError as e:
        raise DemoError(f"{path}: meta is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise DemoError(f"{path}: meta must be a JSON object, got {type(meta).__name__}")
    channels = meta.get("channels", 1)  # files without it are grayscale
    if channels != cfg.channels:
        kind = "grayscale" if cfg.grayscale else "RGB"
        raise DemoError(
            f"{path}: recorded with {channels!r} channels per frame, this run observes "
            f"{cfg.channels} ({kind}); record demonstrations with the run's --wrappers.grayscale"
        )
    expected = {
        "format_version": FORMAT_VERSION,
        "env": env_name,
        "obs_shape": list(cfg.obs_shape),
        "action_repeat": cfg.action_repeat,
    }
    for key, want in expected.items():
        if key not in meta:
            raise DemoError(f"{path}: meta lacks {key!r}")
        if meta[key] != want:
            raise DemoError(f"{path}: {key} is {meta[key]!r}, expected {want!r}")
    return meta


def load_demo(path: str | os.PathLike, env_name: str, env_cfg: EnvConfig) -> Chunk:
    """Read and validate one demonstration file recorded for `make_env(env_name, env_cfg)`."""
    action_dim(env_name)
    path = os.fspath(path)
    arrays = _read(path)
    missing = [name for name in ARRAYS if name not in arrays]
    if missing:
        raise DemoError(f"{path}: missing arrays {', '.join(missing)}")
    _check_meta(path, arrays["meta"], env_name, env_cfg)
    chunk = Chunk(*(arrays[name] for name in ARRAYS[:-1]))
    try:
        validate_chunk(chunk, env_cfg.frame_shape, env_cfg.frame_stack, action_dim(env_name))
        _check_action_range(chunk.action)
    except ValueError as e:
        raise DemoError(f"{path}: {e}") from e
    if not np.isfinite(chunk.reward).all():
        raise DemoError(f"{path}: rewards must be finite")
    return chunk


def load_demos(
    paths: Iterable[str | os.PathLike], env_name: str, env_cfg: EnvConfig
) -> list[Chunk]:
    """Load every demonstration in `paths` (files, or folders of *.npz), all validated first."""
    action_dim(env_name)
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.glob("*.npz")))
        elif p.is_file():
            files.append(p)
        else:
            raise DemoError(f"{p}: no such demonstration file or folder")
    if not files:
        raise DemoError("no demonstration files found (folders are searched for *.npz)")
    return [load_demo(f, env_name, env_cfg) for f in files]
