"""The run directory: config.json, metrics.jsonl, checkpoints/, videos/."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import time
import typing
from pathlib import Path
from typing import Any

from distributed_sac import __version__
from distributed_sac.config.atomic import atomic_write
from distributed_sac.config.fields import RETIRED_FIELDS, TrainConfig
from distributed_sac.run.checkpoint import (
    CorruptCheckpointError,
    latest_intact_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from distributed_sac.run.records import CheckpointPayload

CONFIG = "config.json"
METRICS = "metrics.jsonl"
META = "meta"
"""Key of config.json that records how the run was started, beside the config's fields."""


class RunDirError(ValueError):
    """The run directory cannot be used as asked."""


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.env}-{time.strftime('%Y%m%d-%H%M%S')}"


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild the dataclass tree (fields added since take their defaults, fields retired since
    are dropped: `config.RETIRED_FIELDS`); other unknown keys are an error, not a guess. JSON
    lists become the tuples the config holds."""
    hints = typing.get_type_hints(TrainConfig)
    try:
        kwargs = {k: _field(hints.get(k), v, k) for k, v in _current(data).items() if k != META}
        return TrainConfig(**kwargs)
    except (TypeError, KeyError, AttributeError) as exc:
        raise RunDirError(f"{CONFIG} does not match this version's config: {exc}") from None


def _current(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``data`` without the retired fields of the section at ``prefix``."""
    return {k: v for k, v in data.items() if prefix + k not in RETIRED_FIELDS}


def _field(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return hint(**_current(value, f"{path}."))
    return tuple(value) if isinstance(value, list) else value


def fingerprint(cfg: TrainConfig) -> dict[str, Any]:
    """The parts of a config that a checkpoint's tensors depend on."""
    return {
        "env": cfg.env,
        "wrappers": dataclasses.asdict(cfg.wrappers),
        "agent": {k: v for k, v in dataclasses.asdict(cfg.agent).items() if k != "compile"},
    }


def save_run_checkpoint(
    folder: Path, agent_steps: int, payload: CheckpointPayload, cfg: TrainConfig
) -> Path:
    """``payload`` as checkpoint ``agent_steps`` of a run of ``cfg``, keeping its newest
    ``--keep-checkpoints``."""
    return save_checkpoint(
        folder, agent_steps, payload.to_state(), fingerprint(cfg), cfg.keep_checkpoints
    )


def load_run_checkpoint(path: Path, cfg: TrainConfig) -> CheckpointPayload:
    """A checkpoint written by a run of ``cfg`` (or by an older version, for fields since added
    at their defaults); CheckpointError otherwise, CorruptCheckpointError for a file that holds
    no run's payload."""
    state = load_checkpoint(path, fingerprint(cfg), fingerprint(TrainConfig()))
    try:
        return CheckpointPayload.from_state(state)
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"lacks {exc}" if isinstance(exc, KeyError) else str(exc)
        raise CorruptCheckpointError(f"{path}: not a run's checkpoint ({detail})") from None


def latest_run_checkpoint(folder: Path, cfg: TrainConfig) -> tuple[Path, CheckpointPayload] | None:
    """The newest intact checkpoint of a run of ``cfg`` in ``folder`` (corrupt ones skipped)."""
    return latest_intact_checkpoint(folder, lambda path: load_run_checkpoint(path, cfg))


def check_writable(path: Path) -> None:
    """RunDirError unless ``path`` can be created (or exists) and written; leaves nothing behind."""
    path = Path(path)
    missing, existing = [], path
    while not existing.exists():
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirError(f"--run-dir {path}: {existing} is not a directory")
    created: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        probe = path / f".write-test-{time.monotonic_ns()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"--run-dir {path}: not writable ({exc.strerror or exc})") from None
    finally:
        for folder in reversed(created):
            folder.rmdir()


def provenance() -> dict[str, Any]:
    """The project version and, in a git checkout, its commit and whether it had local edits."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"version": __version__, "git_commit": commit, "git_dirty": bool(dirty)}


def read_config(path: Path) -> tuple[TrainConfig, dict[str, Any]]:
    """(config, meta) from a config.json; RunDirError if it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: no such config file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: not a config (a JSON object)")
    return config_from_dict(data), dict(data.get(META) or {})


class RunDir:
    """Creates or reopens a run directory; appends to its metrics.jsonl."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.videos = self.path / "videos"

    def exists(self) -> bool:
        return (self.path / CONFIG).exists()

    @classmethod
    def create(cls, path: Path, cfg: TrainConfig, meta: dict[str, Any] | None = None) -> RunDir:
        run = cls(path)
        if run.exists():
            raise RunDirError(
                f"{run.path} already holds a run; pass --resume {run.path} to continue it"
            )
        for folder in (run.path, run.checkpoints, run.videos):
            folder.mkdir(parents=True, exist_ok=True)
        run.write_config(cfg, meta or {})
        return run

    @classmethod
    def reopen(cls, path: Path) -> tuple[RunDir, TrainConfig]:
        run = cls(path)
        if not (run.path / CONFIG).exists():
            raise RunDirError(f"{run.path} is not a run directory (no {CONFIG})")
        cfg, _ = read_config(run.path / CONFIG)
        run.videos.mkdir(exist_ok=True)
        run.checkpoints.mkdir(exist_ok=True)
        return run, cfg

    def write_config(self, cfg: TrainConfig, meta: dict[str, Any]) -> None:
        """config.json: every config field, and under "meta" how the run was started."""
        text = json.dumps({**config_to_dict(cfg), META: meta}, indent=2)
        atomic_write(self.path / CONFIG, lambda f: f.write(text.encode()))

    def read_config(self) -> tuple[TrainConfig, dict[str, Any]]:
        return read_config(self.path / CONFIG)

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON object per line; NaN and inf become null so every line is JSON."""
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(clean) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
