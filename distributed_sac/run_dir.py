"""The run directory: config.json, metrics.jsonl, checkpoints/, videos/."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import typing
from pathlib import Path
from typing import Any

from distributed_sac.atomic import atomic_write
from distributed_sac.checkpoint import load_checkpoint
from distributed_sac.config import TrainConfig

CONFIG = "config.json"
METRICS = "metrics.jsonl"


class RunDirError(ValueError):
    """The run directory cannot be used as asked."""


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.env}-{time.strftime('%Y%m%d-%H%M%S')}"


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild the dataclass tree; unknown or missing keys are an error, not a guess."""
    hints = typing.get_type_hints(TrainConfig)
    try:
        kwargs = {
            k: hints[k](**v) if dataclasses.is_dataclass(hints.get(k)) else v
            for k, v in data.items()
        }
        return TrainConfig(**kwargs)
    except (TypeError, KeyError) as exc:
        raise RunDirError(f"{CONFIG} does not match this version's config: {exc}") from None


def fingerprint(cfg: TrainConfig) -> dict[str, Any]:
    """The parts of a config that a checkpoint's tensors depend on."""
    return {
        "env": cfg.env,
        "wrappers": dataclasses.asdict(cfg.wrappers),
        "agent": {k: v for k, v in dataclasses.asdict(cfg.agent).items() if k != "compile"},
    }


def load_run_checkpoint(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """A checkpoint written by a run of ``cfg`` (or by an older version, for fields since added
    at their defaults); CheckpointError otherwise."""
    return load_checkpoint(path, fingerprint(cfg), fingerprint(TrainConfig()))


class RunDir:
    """Creates or reopens a run directory; appends to its metrics.jsonl."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.videos = self.path / "videos"

    def exists(self) -> bool:
        return (self.path / CONFIG).exists()

    @classmethod
    def create(cls, path: Path, cfg: TrainConfig) -> RunDir:
        run = cls(path)
        if run.exists():
            raise RunDirError(
                f"{run.path} already holds a run; pass --resume {run.path} to continue it"
            )
        for folder in (run.path, run.checkpoints, run.videos):
            folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(config_to_dict(cfg), indent=2)
        atomic_write(run.path / CONFIG, lambda f: f.write(text.encode()))
        return run

    @classmethod
    def reopen(cls, path: Path) -> tuple[RunDir, TrainConfig]:
        run = cls(path)
        config = run.path / CONFIG
        if not config.exists():
            raise RunDirError(f"{run.path} is not a run directory (no {CONFIG})")
        try:
            data = json.loads(config.read_text())
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{config}: not valid JSON ({exc.msg})") from None
        run.videos.mkdir(exist_ok=True)
        run.checkpoints.mkdir(exist_ok=True)
        return run, config_from_dict(data)

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
