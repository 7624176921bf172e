"""A sweep's plan, without Ray: its trials (configurations crossed with seeds) and its files.

`launch.py sweep` builds the plan from the command line (every configuration parsed and checked
by `train`'s own parsing), writes it as `sweep.json` in the sweep's directory, then hands it to
`remote/sweep.py`, which runs each trial as a Ray Tune trial. `--resume` reads it back.

A sweep directory holds

    sweep.json                       the plan: every trial's full config, the sweep's settings
    <config>/seed<k>/                one run directory per trial (config.json, metrics.jsonl,
                                     checkpoints/, videos/, wandb/, log.txt, trial.json and,
                                     with --final-eval-episodes, final_eval.json)
    tune/                            Ray Tune's experiment state (what --resume restores)
    aggregates/                      per configuration <config>.json and <config>.csv,
                                     summary.json, curves.png (distributed_sac/run/study.py)
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from distributed_sac.config.atomic import atomic_write
from distributed_sac.config.fields import TrainConfig, default_num_workers, validate

SWEEP_FILE = "sweep.json"
TUNE_DIR = "tune"
AGGREGATES_DIR = "aggregates"
TRIAL_FILE = "trial.json"
"""In each run directory: the trial's name, configuration, seed, labels and status."""
FINAL_EVAL_FILE = "final_eval.json"
"""In each run directory: `launch.py eval RUN --json` of the final checkpoint, when asked."""
TRIAL_LOG = "log.txt"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """One trial: one whole training run of one configuration with one root seed."""

    name: str
    """Unique in the sweep: `<config>-seed<k>` (the Tune trial's name)."""
    config_name: str
    seed: int
    run_dir: str
    """Absolute: a Tune trial runs in a working directory of its own."""
    config: dict[str, Any]
    """The run's TrainConfig as a dict (config.json's fields)."""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    """config.json's `meta` for a new run: command, preset, sweep, configuration."""
    demos: tuple[str, ...] = ()
    pretrain_updates: int = 0
    final_eval_episodes: int = 0
    labels: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Free-form tags of the configuration (benchmarks/learning.py: its arm)."""

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "demos": list(self.demos)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        return cls(**{**data, "demos": tuple(data.get("demos", ()))})


@dataclasses.dataclass
class SweepPlan:
    """Every trial of a sweep and how the sweep runs them."""

    path: Path
    trials: list[TrialSpec]
    configurations: list[dict[str, Any]]
    """In order: {"name", "overrides" (dotted field -> value text), "labels"}."""
    max_failures: int = 1
    max_concurrent: int = 0
    threshold: float | None = None
    command: str = ""
    created: str = ""

    @property
    def tune_dir(self) -> Path:
        return self.path / TUNE_DIR

    @property
    def aggregates_dir(self) -> Path:
        return self.path / AGGREGATES_DIR

    def save(self) -> None:
        data = {
            "format_version": FORMAT_VERSION,
            "command": self.command,
            "created": self.created or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "max_failures": self.max_failures,
            "max_concurrent": self.max_concurrent,
            "threshold": self.threshold,
            "configurations": self.configurations,
            "trials": [t.to_dict() for t in self.trials],
        }
        write_json(self.path / SWEEP_FILE, data)

    @classmethod
    def load(cls, path: Path) -> SweepPlan:
        """The plan in `path`/sweep.json; ValueError if there is none or it cannot be read."""
        path = Path(path).resolve()
        file = path / SWEEP_FILE
        if not file.is_file():
            raise ValueError(f"--resume {path}: not a sweep directory (no {SWEEP_FILE})")
        try:
            data = json.loads(file.read_text())
            return cls(
                path=path,
                trials=[TrialSpec.from_dict(t) for t in data["trials"]],
                configurations=list(data["configurations"]),
                max_failures=int(data.get("max_failures", 1)),
                max_concurrent=int(data.get("max_concurrent", 0)),
                threshold=data.get("threshold"),
                command=data.get("command", ""),
                created=data.get("created", ""),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{file}: not a sweep plan ({exc})") from None


@dataclasses.dataclass(frozen=True)
class Configuration:
    """One configuration of a sweep: a checked config, run once per seed."""

    name: str
    cfg: TrainConfig
    overrides: dict[str, str] = dataclasses.field(default_factory=dict)
    """The swept fields (dotted path -> value as given) that set it apart."""
    labels: dict[str, Any] = dataclasses.field(default_factory=dict)
    demos: tuple[str, ...] = ()
    pretrain_updates: int = 0


def file_stem(name: str) -> str:
    """A configuration's name as one path component (separators replaced)."""
    return name.replace("/", "_").replace("\\", "_").strip(".") or "config"


def build_plan(
    path: Path,
    configurations: list[Configuration],
    seeds: list[int],
    *,
    preset: str | None = None,
    command: str = "",
    final_eval_episodes: int = 0,
    max_failures: int = 1,
    max_concurrent: int = 0,
    threshold: float | None = None,
    meta: dict[str, Any] | None = None,
) -> SweepPlan:
    """Every configuration crossed with every seed: run directory `path`/<config>/seed<k>, W&B
    run `<config>-seed<k>` in group `path`'s name (unless the config names others), tagged env,
    preset and configuration; ConfigError for a value out of range, ValueError for a repeat."""
    path = Path(path).resolve()
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"--seeds {' '.join(map(str, seeds))}: a seed is repeated")
    names = [c.name for c in configurations]
    stems = [file_stem(n) for n in names]
    if len(set(stems)) < len(stems):
        raise ValueError(f"configuration names repeat: {', '.join(names)}")
    trials = []
    for conf in configurations:
        for seed in seeds:
            name = f"{conf.name}-seed{seed}"
            run_path = path / file_stem(conf.name) / f"seed{seed}"
            cfg = conf.cfg
            tags = cfg.wandb_tags or tuple(
                dict.fromkeys(t[:64] for t in (cfg.env, preset, conf.name) if t)
            )
            cfg = dataclasses.replace(
                cfg,
                seed=seed,
                run_dir=str(run_path),
                num_workers=cfg.num_workers or default_num_workers(),
                wandb_group=cfg.wandb_group or path.name,
                wandb_name=f"{cfg.wandb_name}-{name}" if cfg.wandb_name else name,
                wandb_tags=tags,
            )
            validate(cfg)
            trial_meta = {
                **(meta or {}),
                "command": command,
                "sweep": str(path),
                "sweep_config": conf.name,
                "overrides": dict(conf.overrides),
            }
            if preset:
                trial_meta["preset"] = preset
            trials.append(
                TrialSpec(
                    name=name,
                    config_name=conf.name,
                    seed=seed,
                    run_dir=str(run_path),
                    config=json.loads(json.dumps(dataclasses.asdict(cfg))),  # as saved
                    meta=trial_meta,
                    demos=tuple(str(Path(d).resolve()) for d in conf.demos),
                    pretrain_updates=conf.pretrain_updates,
                    final_eval_episodes=final_eval_episodes,
                    labels=dict(conf.labels),
                )
            )
    return SweepPlan(
        path=path,
        trials=trials,
        configurations=[
            {"name": c.name, "overrides": dict(c.overrides), "labels": dict(c.labels)}
            for c in configurations
        ],
        max_failures=max_failures,
        max_concurrent=max_concurrent,
        threshold=threshold,
        command=command,
    )


def write_json(path: Path, data: Any) -> None:
    """Indented JSON written atomically; NaN and inf become null."""
    text = json.dumps(_finite(data), indent=2) + "\n"
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None if it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def trial_status(run_dir: Path) -> dict[str, Any]:
    """The run directory's trial.json ({} before the trial first started)."""
    return read_json(Path(run_dir) / TRIAL_FILE) or {}


def write_trial_status(spec: TrialSpec, **fields: Any) -> dict[str, Any]:
    """Update the run directory's trial.json with `fields` (status, attempts, error, ...)."""
    status = {
        **trial_status(Path(spec.run_dir)),
        "name": spec.name,
        "config": spec.config_name,
        "seed": spec.seed,
        "labels": spec.labels,
        "overrides": spec.meta.get("overrides", {}),
        "demos": list(spec.demos),
        "pretrain_updates": spec.pretrain_updates,
        **fields,
    }
    write_json(Path(spec.run_dir) / TRIAL_FILE, status)
    return status
