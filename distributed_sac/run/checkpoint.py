"""Atomic, verified checkpoints: temporary file then rename, last K kept, safe loading."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed_sac.config.atomic import atomic_write

log = logging.getLogger("distributed_sac")

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d{12})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or was written by an incompatible config."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file that cannot be read back (truncated, overwritten, foreign)."""


def checkpoint_path(folder: Path, agent_steps: int) -> Path:
    return folder / f"ckpt_{agent_steps:012d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def save_checkpoint(
    folder: Path, agent_steps: int, state: dict[str, Any], fingerprint: dict, keep: int
) -> Path:
    """Write `state` atomically with the config fingerprint; delete all but the newest `keep`."""
    import torch

    path = checkpoint_path(folder, agent_steps)
    payload = {"format": FORMAT_VERSION, "fingerprint": json.dumps(fingerprint, sort_keys=True)}
    payload.update(state)
    atomic_write(path, lambda f: torch.save(payload, f))
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(
    path: Path, fingerprint: dict | None = None, defaults: dict | None = None
) -> dict[str, Any]:
    """Load with `weights_only=True`; raise CheckpointError if corrupt or from another config.

    `defaults` holds fingerprint values for keys an older checkpoint lacks (config fields added
    since, whose defaults keep the old behaviour): a section's missing keys take them.
    """
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CorruptCheckpointError(
            f"{path}: not a readable checkpoint ({type(exc).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CorruptCheckpointError(f"{path}: unknown checkpoint format")
    if fingerprint is not None:
        saved = json.loads(payload["fingerprint"])
        for key, value in (defaults or {}).items():
            if isinstance(value, dict) and isinstance(saved.get(key), dict):
                saved[key] = {**value, **saved[key]}
        diff = sorted(
            k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k)
        )
        if diff:
            raise CheckpointError(f"{path}: written by a different config ({', '.join(diff)})")
    return payload


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def latest_intact_checkpoint(
    folder: Path, load: Callable[[Path], dict[str, Any]]
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that `load` reads, and its payload; None if there is none.

    A corrupt newer one is skipped with a warning naming it and the one used instead; a
    checkpoint from another config is an error, not skipped. All corrupt: CheckpointError.
    """
    skipped: list[str] = []
    for path in reversed(list_checkpoints(folder)):
        try:
            payload = load(path)
        except CorruptCheckpointError as exc:
            skipped.append(str(exc))
            continue
        if skipped:
            log.warning("skipping %s; using %s, the newest intact one", "; ".join(skipped), path)
        return path, payload
    if skipped:
        raise CheckpointError(f"no intact checkpoint in {folder}: {'; '.join(skipped)}")
    return None
