"""One training session: checks before Ray (`prepare`), then Ray, driver, clean shutdown (`start`).

`prepare` imports neither Ray nor the driver: every check that can fail on the user's input
(config ranges, run directory, checkpoint, changed flags on resume) runs before Ray starts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from distributed_sac.config.fields import (
    ConfigError,
    TrainConfig,
    default_num_workers,
    field_value,
    flag,
    validate,
)
from distributed_sac.replay.rate_limiter import update_budget
from distributed_sac.run.records import CheckpointPayload
from distributed_sac.run.run_dir import (
    RunDir,
    RunDirError,
    check_writable,
    default_run_dir,
    latest_run_checkpoint,
    provenance,
)

log = logging.getLogger("distributed_sac")

RESUMABLE_PREFIXES = ("eval.",)
RESUMABLE_OVERRIDES = (
    "total_steps",
    "num_workers",
    "envs_per_worker",
    "address",
    "device",
    "learner_cpus",
    "schedule_timeout_s",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every_s",
    "wandb",
    "wandb_project",
    "wandb_entity",
    "wandb_name",
    "wandb_group",
    "wandb_tags",
    "dashboard_host",
)
"""Fields a resumed run may change: where and how fast it runs, what it logs and evaluates, not
what it learns (everything else in config.json is kept; changing it is refused)."""


@dataclasses.dataclass
class Plan:
    """A checked run, ready to start: its config, directory and the checkpoint to resume."""

    cfg: TrainConfig
    run: RunDir
    resume: bool
    meta: dict[str, Any]
    checkpoint: tuple[Path, CheckpointPayload] | None = None

    @property
    def finished(self) -> bool:
        """A resumed run whose checkpoint is its last: collection reached --total-steps and
        the learner drained every update the ratio allows (nothing left to run)."""
        if not self.resume or self.checkpoint is None:
            return False
        limiter, replay = self.checkpoint[1].replay.limiter, self.cfg.replay
        return (
            limiter.closed
            and limiter.inserts >= self.cfg.total_steps
            and limiter.samples
            >= update_budget(replay.replay_ratio, replay.min_size, limiter.inserts)
        )


def resumable(path: str) -> bool:
    return path in RESUMABLE_OVERRIDES or path.startswith(RESUMABLE_PREFIXES)


def merge_resume(saved: TrainConfig, cfg: TrainConfig, given: set[str]) -> TrainConfig:
    """`saved` with the resumable fields in `given` taken from `cfg`; ConfigError for a changed
    learning field (one line naming it)."""
    for path in sorted(given):
        if not resumable(path) and field_value(cfg, path) != field_value(saved, path):
            allowed = ", ".join(flag(p) for p in RESUMABLE_OVERRIDES[:5])
            raise ConfigError(
                f"{flag(path)} {field_value(cfg, path)}: a resumed run keeps its config.json "
                f"value {field_value(saved, path)}; only where and how fast it runs may change "
                f"({allowed}, logging and --eval.* flags)"
            )
    top = {p: getattr(cfg, p) for p in given if resumable(p) and "." not in p}
    sections: dict[str, dict[str, Any]] = {}
    for p in given:
        if resumable(p) and "." in p:
            section, name = p.split(".", 1)
            sections.setdefault(section, {})[name] = field_value(cfg, p)
    nested = {s: dataclasses.replace(getattr(saved, s), **kw) for s, kw in sections.items()}
    return dataclasses.replace(saved, **top, **nested)


def changed_fields(cfg: TrainConfig, base: TrainConfig, prefix: str = "") -> set[str]:
    """Dotted paths of the fields where `cfg` differs from `base`."""
    out = set()
    for f in dataclasses.fields(cfg):
        a, b = getattr(cfg, f.name), getattr(base, f.name)
        if dataclasses.is_dataclass(a):
            out |= changed_fields(a, b, f"{prefix}{f.name}.")
        elif a != b:
            out.add(prefix + f.name)
    return out


def prepare(
    cfg: TrainConfig,
    resume: str | None,
    given: set[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> Plan:
    """Check everything that can be checked before Ray: config, run directory, checkpoint.

    `given` holds the config fields set on the command line (default: those that differ from
    TrainConfig()); on resume only resumable ones may differ from the run's config.json.
    """
    meta = {**(meta or {}), **provenance(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    validate(cfg)
    checkpoint = None
    if resume:
        run, saved = RunDir.reopen(Path(resume))
        _, saved_meta = run.read_config()
        given = changed_fields(cfg, TrainConfig()) if given is None else given
        cfg = merge_resume(saved, cfg, given)
        if meta.get("preset") and saved_meta.get("preset") not in (None, meta["preset"]):
            raise ConfigError(
                f"--preset {meta['preset']}: a resumed run keeps its preset "
                f"{saved_meta['preset']} (drop --preset)"
            )
        resumes = [*saved_meta.get("resumes", []), meta]
        meta = {**saved_meta, "resumes": resumes}
        check_writable(run.path)
        checkpoint = latest_run_checkpoint(run.checkpoints, cfg)
    else:
        path = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        cfg = dataclasses.replace(cfg, run_dir=str(path))
        run = RunDir(path)
        if run.exists():
            raise RunDirError(
                f"{run.path} already holds a run; pass --resume {run.path} to continue it"
            )
        check_writable(run.path)
    if cfg.num_workers is None:
        cfg = dataclasses.replace(cfg, num_workers=default_num_workers())
    cfg = dataclasses.replace(
        cfg,
        wandb_name=cfg.wandb_name or run.path.name,
        wandb_group=cfg.wandb_group or cfg.env,
        wandb_tags=cfg.wandb_tags or tuple(t for t in (cfg.env, meta.get("preset")) if t),
    )
    validate(cfg)
    return Plan(cfg, run, bool(resume), meta, checkpoint)


def quiet_ray_logs(stream=None) -> None:
    """No ANSI colours in the prefixes of actors' log lines when stderr is not a terminal."""
    if not (stream or sys.stderr).isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


def start(plan: Plan, demo_chunks: list | None = None, pretrain_updates: int = 0) -> dict:
    """Connect to (or start) Ray, train to `total_steps`; returns the last metrics record.

    Ctrl-C stops cleanly (final checkpoint) and returns. SIGTERM stops the same way, then raises
    `lifecycle.Stopped` (exit status 143, its message the one line to print); before and after
    the training loop it raises Stopped at once, as Ctrl-C raises KeyboardInterrupt.
    """
    quiet_ray_logs()
    import ray

    import distributed_sac.remote.driver  # noqa: F401

    # Everything the run imports, before Ray connects: inside `ray job submit` the job's
    # working directory can be set up again when the driver connects, and a module first
    # imported after that was not found there (tests/test_cluster_live.py).
    import distributed_sac.run.cpu_rate  # noqa: F401
    from distributed_sac.remote.lifecycle import InterruptFlag, Stopped, sigterm_interrupts
    from distributed_sac.remote.placement import connect

    cfg = plan.cfg
    before = signal.getsignal(signal.SIGTERM)
    started = connect(cfg, cfg.num_workers)
    with sigterm_interrupts(restore_to=before):
        try:
            record = _run(plan, demo_chunks, pretrain_updates)
            if InterruptFlag.stopped_by == signal.SIGTERM:
                raise Stopped(
                    signal.SIGTERM,
                    "stopped by SIGTERM: final checkpoint written at "
                    f"{record['agent_steps']} agent steps",
                )
            return record
        finally:
            if started:
                ray.shutdown()


def _run(plan: Plan, demo_chunks: list | None, pretrain_updates: int) -> dict:
    """`start` once Ray is up: the run directory, the driver, a CPU learner's speed, training."""
    from distributed_sac.remote.driver import Driver
    from distributed_sac.remote.placement import learner_device

    cfg = plan.cfg
    run = open_run(plan)
    with ThreadPoolExecutor(1, thread_name_prefix="cpu-rate") as pool:
        # The probe builds while the driver waits for its actors; it is timed once they idle.
        probe = None
        if learner_device(cfg) == "cpu":
            from distributed_sac.run.cpu_rate import UpdateProbe

            probe = pool.submit(UpdateProbe, cfg)
        driver = Driver(cfg, run, resume=plan.resume, checkpoint=plan.checkpoint)
        if probe is not None:
            try:
                warn_if_slow(cfg, probe.result().rate())
            except Exception as exc:  # advisory only: the learner itself reports real errors
                log.warning("could not time a CPU learner here: %s", exc)
    record_wandb_mode(run, plan, driver.wandb.mode)
    if demo_chunks:
        driver.pretrain(demo_chunks, pretrain_updates)
    return driver.train()


def open_run(plan: Plan) -> RunDir:
    """The plan's run directory, created (a new run) or with its config.json rewritten (a
    resumed one, with this session in its `resumes`); logs where it is and what it evaluates."""
    cfg, run = plan.cfg, plan.run
    if not plan.resume:
        run = RunDir.create(run.path, cfg, plan.meta)
    else:
        run.write_config(cfg, plan.meta)
    log.info("run directory: %s", run.path)
    if cfg.eval.every:
        log.info(
            "evaluation every %d agent steps: deterministic episodes %d, each capped at %d "
            "agent steps (--eval.max-episode-steps; launch.py eval uses the same cap)",
            cfg.eval.every,
            cfg.eval.episodes,
            cfg.eval.max_episode_steps,
        )
    return run


def warn_if_slow(cfg: TrainConfig, rate: float) -> None:
    """One warning when a CPU learner's measured `rate` (updates/s) is below
    `cpu_rate.SLOW_UPDATES_PER_S`: what the run would take, and the preset sized for CPUs."""
    from distributed_sac.run.cpu_rate import slow_cpu_warning

    warning = slow_cpu_warning(cfg, rate)
    if warning:
        log.warning("%s", warning)


def record_wandb_mode(run: RunDir, plan: Plan, mode: str) -> TrainConfig:
    """config.json says what happened: online without credentials fell back to offline."""
    if mode == plan.cfg.wandb:
        return plan.cfg
    cfg = dataclasses.replace(plan.cfg, wandb=mode)
    run.write_config(cfg, {**plan.meta, "wandb_requested": plan.cfg.wandb})
    return cfg


def train(
    cfg: TrainConfig,
    resume: str | None = None,
    demos: tuple[str, ...] = (),
    pretrain_updates: int = 0,
    given: set[str] | None = None,
) -> dict:
    """`prepare` then `start`, loading `demos` (files or folders) in between."""
    plan = prepare(cfg, resume, given)
    chunks = None
    if demos:
        from distributed_sac.replay.demos import load_demos

        chunks = load_demos(demos, plan.cfg.env, plan.cfg.wrappers)
    return start(plan, chunks, pretrain_updates)
