"""One training session: run directory, Ray connection, driver, clean shutdown."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import ray

from distributed_sac.config import TrainConfig, validate
from distributed_sac.remote.driver import Driver
from distributed_sac.remote.placement import connect, default_num_workers
from distributed_sac.run_dir import RunDir, RunDirError, default_run_dir

log = logging.getLogger("distributed_sac")

# Fields a resumed run may change: where and how fast it runs, not what it learns.
RESUMABLE_OVERRIDES = (
    "total_steps",
    "num_workers",
    "envs_per_worker",
    "address",
    "device",
    "log_every_s",
    "wandb",
    "wandb_project",
    "wandb_entity",
    "dashboard_host",
)


def prepare(
    cfg: TrainConfig, resume: str | None, cli_default: TrainConfig | None = None
) -> tuple[TrainConfig, RunDir]:
    """Create the run directory, or reopen it and merge the run-time overrides."""
    if resume:
        run, saved = RunDir.reopen(Path(resume))
        base = cli_default or TrainConfig()
        changed = {
            k: getattr(cfg, k) for k in RESUMABLE_OVERRIDES if getattr(cfg, k) != getattr(base, k)
        }
        cfg = dataclasses.replace(saved, **changed)
    else:
        path = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        cfg = dataclasses.replace(cfg, run_dir=str(path))
    if cfg.num_workers is None:
        cfg = dataclasses.replace(cfg, num_workers=default_num_workers())
    validate(cfg)
    if not resume:
        run = RunDir(Path(cfg.run_dir))
        if run.exists():
            raise RunDirError(
                f"{run.path} already holds a run; pass --resume {run.path} to continue it"
            )
    return cfg, run


def train(
    cfg: TrainConfig,
    resume: str | None = None,
    demos: tuple[str, ...] = (),
    pretrain_updates: int = 0,
    cli_default: TrainConfig | None = None,
) -> dict:
    """Train to `cfg.total_steps` on a local or joined Ray; returns the last metrics record."""
    demo_chunks = None
    if demos:
        from distributed_sac.demos import load_demos

        demo_chunks = load_demos(demos, cfg.env, cfg.wrappers)
    cfg, run = prepare(cfg, resume, cli_default)
    started = connect(cfg, cfg.num_workers)
    try:
        if not resume:
            run = RunDir.create(run.path, cfg)
        if started:
            log.info(
                "Ray dashboard: %s", ray.get_runtime_context().gcs_address and _dashboard_url()
            )
        log.info("run directory: %s", run.path)
        driver = Driver(cfg, run, resume=resume is not None)
        if demo_chunks:
            driver.pretrain(demo_chunks, pretrain_updates)
        return driver.train()
    finally:
        if started:
            ray.shutdown()


def _dashboard_url() -> str:
    url = ray.worker.get_dashboard_url() if hasattr(ray, "worker") else ""
    return f"http://{url}" if url and not url.startswith("http") else url
