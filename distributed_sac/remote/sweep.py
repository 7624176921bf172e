"""A sweep on Ray Tune: every trial one whole actor-learner run, then the aggregates.

Each trial is a Tune function trainable (`run_trial`) around `session.prepare` and `Driver`:
its own learner, replay, env workers and evaluator, in a placement group that reserves what
they take (`placement.trial_bundles`: the trial's process, the learner beside the replay and
the evaluator, one bundle per env worker), so trials run side by side where the cluster has
room and one after another where it has not. Its actors are named after the trial
(`<trial>/learner`, `<trial>/replay`, ...; `placement.trial_placement`), since trials share one
Ray namespace. Every metrics record also goes to Tune (`tune.report`). A trial that fails is
retried `max_failures` times from its run's newest checkpoint, then left failed while the
others go on; one that runs again after it finished (Tune's state lags behind by up to a
checkpoint period) only reports its last record. `--resume` restores Tune's experiment and
every unfinished or failed trial resumes its run from its newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from distributed_sac.remote import session
from distributed_sac.remote.placement import (
    connect,
    learner_device,
    trial_bundles,
    trial_placement,
)
from distributed_sac.run.checkpoint import CheckpointError, list_checkpoints
from distributed_sac.run.run_dir import RunDir, config_from_dict, latest_run_checkpoint
from distributed_sac.run.sweep_plan import (
    FINAL_EVAL_FILE,
    TRIAL_FILE,
    TRIAL_LOG,
    SweepPlan,
    TrialSpec,
    trial_status,
    write_trial_status,
)
from distributed_sac.run.sweep_report import outcome, report

log = logging.getLogger("distributed_sac")

QUIET_LOGGERS = ("ray.tune", "ray.train", "ray.air")
"""Tune's own lines (boxed tables, tracebacks of failed trials): the sweep prints one line per
trial state change instead, and the trial's traceback stays in its error file and log.txt."""
SKIPPED_METRICS = ("time",)
"""Record keys Tune does not get (it stamps its own `timestamp`)."""


class ReportingRunDir(RunDir):
    """A run directory whose every metrics record also goes to Ray Tune."""

    def __init__(self, path: Path, report=tune.report) -> None:
        super().__init__(path)
        self._report = report
        self._last_eval: dict[str, float] = {}

    def log_metrics(self, record: dict[str, Any]) -> None:
        super().log_metrics(record)
        self._report(tune_metrics(record, self._last_eval))


def tune_metrics(record: dict[str, Any], last_eval: dict[str, float]) -> dict[str, Any]:
    """The numbers of a metrics record, with the newest evaluation carried forward as
    `eval_return_last` and `eval_agent_steps_last` (updated in `last_eval`)."""
    if record.get("eval_return_mean") is not None:
        last_eval["eval_return_last"] = float(record["eval_return_mean"])
        last_eval["eval_agent_steps_last"] = int(record.get("eval_agent_steps", 0))
    numbers = {
        k: v
        for k, v in record.items()
        if k not in SKIPPED_METRICS
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
    }
    return {**numbers, **last_eval}


def trial_resources(config: dict[str, Any]) -> tune.PlacementGroupFactory:
    """What one trial reserves: `placement.trial_bundles` of its config, packed."""
    cfg = config_from_dict(TrialSpec.from_dict(config["trial"]).config)
    return tune.PlacementGroupFactory(trial_bundles(cfg, learner_device(cfg)), strategy="PACK")


def run_trial(config: dict[str, Any]) -> None:
    """The Tune trainable: one trial's run (resumed from its newest checkpoint if it has one),
    then its final evaluation when asked; trial.json follows its status."""
    spec = TrialSpec.from_dict(config["trial"])
    path = Path(spec.run_dir)
    path.mkdir(parents=True, exist_ok=True)
    handler = _log_into(path / TRIAL_LOG)
    try:
        status = trial_status(path)
        if status.get("status") == "finished":
            log.info("trial %s finished before; reporting its last record only", spec.name)
            records = RunDir(path).read_metrics()
            if records:
                last: dict[str, float] = {}
                for record in records:
                    metrics = tune_metrics(record, last)
                tune.report(metrics)
            return
        attempts = int(status.get("attempts", 0)) + 1
        write_trial_status(spec, status=status.get("status", "running"), attempts=attempts)
        try:
            if status.get("status") != "evaluating":
                write_trial_status(spec, status="running", error=None)
                _train(spec)
            if spec.final_eval_episodes:
                write_trial_status(spec, status="evaluating")
                _final_eval(spec)
        except (SystemExit, KeyboardInterrupt):  # Tune stopping the trial (Ctrl-C on the sweep)
            write_trial_status(spec, status="interrupted")
            log.warning("trial %s stopped; it resumes from its newest checkpoint", spec.name)
            raise
        except BaseException as exc:
            write_trial_status(spec, status="failed", error=one_line(exc))
            log.exception("trial %s failed", spec.name)
            raise
        write_trial_status(spec, status="finished", error=None, finished=time.time())
    finally:
        logging.getLogger("distributed_sac").removeHandler(handler)
        handler.close()


def _train(spec: TrialSpec) -> dict[str, Any]:
    """`launch.py train` of the trial's config inside its placement group: a new run, or its
    run resumed from the newest intact checkpoint (a run without one starts over)."""
    from distributed_sac.remote.driver import Driver

    path = Path(spec.run_dir)
    cfg = config_from_dict(spec.config)
    run = RunDir(path)
    found = None
    if run.exists():
        try:
            found = latest_run_checkpoint(run.checkpoints, cfg)
        except CheckpointError as exc:
            log.warning("%s", exc)
        if found is None:
            log.warning("trial %s: its run has no intact checkpoint; starting it over", spec.name)
            _start_over(path)
    if found is None:
        plan = session.prepare(cfg, None, given=set(), meta=spec.meta)
    else:
        meta = {"command": spec.meta.get("command"), "sweep_trial": spec.name}
        plan = session.prepare(cfg, str(path), given=set(), meta=meta)
    chunks = None
    if spec.demos and not plan.resume:  # a resumed run's replay reloads its own copy
        from distributed_sac.replay.demos import load_demos

        chunks = load_demos(spec.demos, plan.cfg.env, plan.cfg.wrappers)
        write_trial_status(spec, demo_transitions=sum(c.num_transitions for c in chunks))
    with trial_placement(f"{spec.name}/"):
        run = session.open_run(plan)
        driver = Driver(
            plan.cfg, ReportingRunDir(run.path), resume=plan.resume, checkpoint=plan.checkpoint
        )
        try:
            session.record_wandb_mode(run, plan, driver.wandb.mode)
            if chunks:
                driver.pretrain(chunks, spec.pretrain_updates)
            return driver.train()
        finally:
            end_actors(driver)


def _final_eval(spec: TrialSpec) -> None:
    """`launch.py eval RUN --episodes N --json RUN/final_eval.json` in this process."""
    import torch

    from distributed_sac.run.eval_command import evaluate_run

    torch.set_num_threads(1)  # the trial's own bundle holds one CPU
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    path = Path(spec.run_dir)
    result = evaluate_run(path, spec.final_eval_episodes, json_path=path / FINAL_EVAL_FILE)
    log.info("final evaluation: %s", result["verdict"])
    tune.report(
        {
            "final_eval_mean": result["mean"],
            "final_eval_stderr": result["stderr"] if result["stderr"] is not None else math.nan,
            "final_eval_episodes": result["episodes"],
        }
    )


def end_actors(driver) -> None:
    """Kill a trial's actors once its run has ended (their memory, replay above all, goes back
    before the final evaluation; the trial's placement group stays until the trial ends).
    The replay goes last: calls to it from the others would be retried into a dead actor."""
    for actor in [*driver.workers, driver.evaluator, driver.learner, driver.replay]:
        try:
            ray.kill(actor)
        except Exception as exc:  # already gone
            log.debug("kill: %s", exc)


def _start_over(path: Path) -> None:
    """Empty a run directory that has no intact checkpoint, keeping the trial's own files."""
    for entry in path.iterdir():
        if entry.name in (TRIAL_FILE, TRIAL_LOG):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _log_into(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("distributed_sac")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler


def one_line(exc: BaseException) -> str:
    """An exception as `Type: last line of its message`."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1]}" if text else type(cause).__name__


# The sweep's side: Tune's experiment, one line per trial state change, the closing tables.


def trial_name(trial) -> str:
    return trial.config["trial"]["name"]


def trial_dirname(trial) -> str:
    return trial.config["trial"]["name"].replace("/", "_")


class TrialLines(tune.Callback):
    """One line per trial state change: started (or resumed), finished, failed and retried,
    failed and left."""

    def __init__(self, max_failures: int) -> None:
        self.max_failures = max_failures

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        spec = TrialSpec.from_dict(trial.config["trial"])
        ckpts = list_checkpoints(Path(spec.run_dir) / "checkpoints")
        status = trial_status(Path(spec.run_dir))
        if status.get("status") == "finished":
            how = "finished before: kept, not run again"
        elif ckpts:
            how = f"resuming its run from its checkpoint at {int(ckpts[-1].stem[5:])} agent steps"
        else:
            how = "started"
        _say(f"{spec.name} (config {spec.config_name}, seed {spec.seed}): {how} -> {spec.run_dir}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        spec = TrialSpec.from_dict(trial.config["trial"])
        _say(f"{spec.name}: finished; {outcome(spec)}")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        _say(
            f"{trial_name(trial)}: failed ({_error(trial)}); retrying from its newest checkpoint "
            f"(retry {trial.num_failures} of {self.max_failures})"
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        _say(
            f"{trial_name(trial)}: failed ({_error(trial)}); left failed after "
            f"{trial.num_failures} failures (error file {trial.error_file}); the others go on"
        )


def _say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} trial {line}", flush=True)


def _error(trial) -> str:
    """The trial's error in one line: as it wrote it to trial.json, else its error file's last
    line (a trial whose process was lost could not write it)."""
    status = trial_status(Path(trial.config["trial"]["run_dir"]))
    if status.get("error"):
        return status["error"]
    try:
        lines = [line for line in Path(trial.error_file).read_text().splitlines() if line.strip()]
        return lines[-1].strip() if lines else "unknown error"
    except (OSError, TypeError):
        return "unknown error"


def run(plan: SweepPlan, resume: bool = False, address: str | None = None) -> int:
    """Run (or resume) the sweep on the connected Ray, else on one this starts (or joins, with
    `address`); print the trial table and the aggregates; 0 when every trial finished."""
    session.quiet_ray_logs()
    cfgs = [config_from_dict(t.config) for t in plan.trials]
    first = cfgs[0] if address is None else dataclasses.replace(cfgs[0], address=address)
    started = False
    if not ray.is_initialized():
        needed = max(sum(b["CPU"] for b in trial_bundles(c, "cpu")) for c in cfgs)
        cpus = max(os.cpu_count() or 1, math.ceil(needed))
        started = connect(first, first.num_workers or 1, num_cpus=cpus, log_to_driver=False)
    try:
        _check_room(plan, cfgs)
        if not resume:
            plan.save()
        print(
            f"sweep {plan.path}: {len(plan.trials)} trials, {len(plan.configurations)} "
            f"configurations; resume with: launch.py sweep --resume {plan.path}",
            flush=True,
        )
        _fit(plan, resume)
    finally:
        if started:
            ray.shutdown()
    return report(plan)


def _check_room(plan: SweepPlan, cfgs: list) -> None:
    """ClusterError for a trial whose learner cannot have its device (`--device cuda` without a
    GPU); a warning for one larger than the whole cluster (it waits for an autoscaler)."""
    cpus = ray.cluster_resources().get("CPU", 0)
    for spec, cfg in zip(plan.trials, cfgs, strict=True):
        need = sum(b["CPU"] for b in trial_bundles(cfg, learner_device(cfg)))
        if need > cpus:
            log.warning(
                "trial %s reserves %g CPUs and the cluster has %g: it waits until an "
                "autoscaler adds them",
                spec.name,
                need,
                cpus,
            )


def _fit(plan: SweepPlan, resume: bool) -> None:
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the legacy reporter: silent at verbose 0
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    trainable = tune.with_resources(run_trial, trial_resources)
    try:
        if resume and tune.Tuner.can_restore(str(plan.tune_dir)):
            tuner = tune.Tuner.restore(
                str(plan.tune_dir), trainable, resume_unfinished=True, restart_errored=True
            )
        else:
            if resume:  # killed before Tune saved its state: the trials resume their runs
                shutil.rmtree(plan.tune_dir, ignore_errors=True)
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search([t.to_dict() for t in plan.trials])},
                tune_config=tune.TuneConfig(
                    reuse_actors=False,
                    max_concurrent_trials=plan.max_concurrent or None,
                    trial_name_creator=trial_name,
                    trial_dirname_creator=trial_dirname,
                ),
                run_config=tune.RunConfig(
                    name=plan.tune_dir.name,
                    storage_path=str(plan.path),
                    verbose=0,
                    callbacks=[TrialLines(plan.max_failures)],
                    failure_config=tune.FailureConfig(max_failures=plan.max_failures),
                ),
            )
        tuner.fit()
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
