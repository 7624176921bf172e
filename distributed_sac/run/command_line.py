"""The command line of `launch.py` (`distributed-sac`): its commands as dataclasses, parsed by
tyro into the config tree and checked once, with one-line usage errors.

Light imports only (tyro and the config tree): gymnasium is imported to build the env once
the flags are good, Ray and torch only after that, by the commands themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
from dataclasses import dataclass, field
from typing import Annotated, Literal

import tyro

from distributed_sac.config.fields import RULES, TrainConfig, flag, validate
from distributed_sac.config.presets import PRESETS, describe, per_env_steps

# `python launch.py ...` or the installed console script `distributed-sac ...`.
PROG = "distributed-sac" if os.path.basename(sys.argv[0]) == "distributed-sac" else "launch.py"
PresetName = Literal[tuple(PRESETS)]
"""The names of the preset registry (distributed_sac/config/presets.py), the choices of --preset."""


@dataclass
class TrainCommand:
    """Train SAC-AE with distributed env workers on Ray (a local Ray unless --address)."""

    config: Annotated[TrainConfig, tyro.conf.arg(name="", prefix_name=False)] = field(
        default_factory=TrainConfig
    )
    preset: Annotated[PresetName, tyro.conf.arg(help=f"Defaults to start from: {describe()}")] = (
        "full"
    )
    from_config: Annotated[str | None, tyro.conf.arg(name="config")] = None
    """Start a new run from this config.json (another run's); flags given override it."""
    resume: str | None = None
    """Continue the run in this directory from its newest intact checkpoint."""
    demos: tuple[str, ...] = ()
    """Demonstration files or folders of them (from `launch.py record`) to load into replay."""
    pretrain_updates: int = 0
    """Learner updates on the demonstrations before the env workers start."""


@dataclass
class EvalCommand:
    """Run a trained policy deterministically and report its return."""

    path: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_OR_CHECKPOINT")]
    """A run directory (its newest intact checkpoint) or a checkpoint file."""
    episodes: int = 10
    """Episodes to run."""
    video: str | None = None
    """Write an mp4 of the first episode here."""
    render: Literal["none", "human"] = "none"
    """`human` opens a window to watch the agent drive."""
    seed: int | None = None
    """Episode k resets with seed + k. None takes 8589934592 (2**33): tracks no training run
    uses. Training's env j of worker i first resets with a 32-bit SeedSequence draw of (root
    seed, i, restarts) plus j and later episodes continue that env's generator; training-time
    evaluation resets with 2**34 + root seed * 2**20 + k (root seeds are below 2**31);
    `record --seed S` demonstrations with S, S + 1, ... (distributed_sac/config/fields.py)."""
    max_steps: int | None = None
    """Agent-step cap per episode; None takes the run's --eval.max-episode-steps."""
    json: str | None = None
    """Also write the returns, mean, std, standard error and solved verdict as JSON here."""
    jobs: int = 1
    """Processes to run the episodes in, each with one env and one torch thread; 0 takes one
    per core. The returns are the same for any count (episode k still resets with seed + k)."""


@dataclass
class SweepCommand:
    """Run training runs as Ray Tune trials, seeds crossed with configurations; aggregate them.

    Every `train` flag applies to every trial (`launch.py train --help`); --run-dir is the
    sweep's directory, one run directory per trial inside it (README.md, Seeds and sweeps).
    """

    seeds: tuple[int, ...] = ()
    """Root seeds of each configuration's runs; empty takes --num-seeds seeds from --seed on."""
    num_seeds: int = 1
    """Runs per configuration without --seeds: root seeds --seed, --seed + 1, ..."""
    grid: tuple[str, ...] = ()
    """FIELD=V1,V2,... with train's fields as dotted names (agent.alpha_lr=1e-3,1e-4 for
    --agent.alpha-lr); every combination of the values given is one configuration."""
    sample: tuple[str, ...] = ()
    """FIELD=loguniform:LO:HI, uniform:LO:HI, randint:LO:HI (both included) or choice:A,B,...:
    --num-samples configurations drawn at random (4 significant digits), each crossed with
    --grid."""
    num_samples: int = 0
    """Configurations --sample draws."""
    sample_seed: int = 0
    """Seed of the --sample draws."""
    name: str | None = None
    """Name of the configuration, or the prefix of each one's name with --grid or --sample;
    None takes the preset's name, or the swept values alone."""
    resume: str | None = None
    """Continue the sweep in this directory as its sweep.json says (only --address may be given
    with it): finished trials are kept, unfinished and failed ones resume from their newest
    checkpoint."""
    final_eval_episodes: int = 0
    """After training, `launch.py eval RUN --episodes N --json RUN/final_eval.json` on each
    trial's final checkpoint, on tracks no training run uses; 0 skips it. 100 judges CarRacing's
    solved criterion."""
    max_failures: int = 1
    """Times a failed trial is retried from its newest checkpoint before it is left failed."""
    max_concurrent: int = 0
    """Trials running at once at most; 0 runs as many side by side as the cluster has room for."""
    threshold: float | None = None
    """Eval return of the aggregates' steps-to-threshold; None takes the env's: CarRacing 900
    (its solved threshold), VisualPendulum -250 (this project's target; it has no solved one)."""


class UsageError(ValueError):
    """Bad input on the command line (exit code 2)."""


def cli(cls, args: list[str], prog: str, default=None):
    """tyro.cli, with its boxed parse errors folded into one line (raised as UsageError)."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(cls, default=default, args=args, prog=prog)
    except SystemExit as exc:
        if not exc.code:
            raise
        raise UsageError(_one_line(captured.getvalue())) from None


def _one_line(boxed: str) -> str:
    """The message inside tyro's error box, without the frame and the help pointer."""
    text = []
    for line in boxed.splitlines():
        body = line.strip().strip("│╭╮╰╯─ ").strip()
        if not body or body.startswith("For full helptext") or set(body) <= set("─"):
            if text and not body:
                continue
            if body.startswith("For full helptext"):
                break
            continue
        text.append(body)
    return " ".join(text[1:] if len(text) > 1 else text) or "invalid command line"


def value_of(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def given_fields(argv: list[str]) -> set[str]:
    """Config field paths that `argv` sets (`--agent.actor-lr 1` and `--agent.no-fast-path`)."""
    paths = {flag(p): p for p in RULES}
    out = set()
    for arg in argv:
        if not arg.startswith("--"):
            continue
        name = arg.split("=", 1)[0].replace("_", "-")
        head, _, last = name.rpartition(".")
        negated = f"{head}.{last.removeprefix('no-')}" if head else name.replace("--no-", "--")
        out |= {paths[n] for n in (name, negated) if n in paths}
    return out


def parse_train(argv: list[str], build_env: bool = True) -> TrainCommand:
    """Parse and validate `train` flags on the chosen preset's (or --config file's) defaults;
    `build_env` also builds the env once (`envs.check_env`), which imports gymnasium."""
    preset = value_of(argv, "--preset") or "full"
    if preset not in PRESETS:
        raise UsageError(f"--preset {preset}: must be one of {', '.join(PRESETS)}")
    base = PRESETS[preset]()
    source = value_of(argv, "--config")
    if source is not None:
        from distributed_sac.run.run_dir import read_config

        base, meta = read_config(source)
        # A new run: its own directory and W&B name, unless given.
        base = dataclasses.replace(base, run_dir="", wandb_name=None)
        preset = value_of(argv, "--preset") or meta.get("preset") or preset
    default = TrainCommand(config=base, preset=preset)  # type: ignore[arg-type]
    cmd = cli(TrainCommand, argv, f"{PROG} train", default=default)
    validate(cmd.config)
    if source is None and not cmd.resume and ":" in cmd.config.env:  # dmc: and gym: tasks
        from distributed_sac.envs.registry import with_env_defaults

        cmd = dataclasses.replace(cmd, config=with_env_defaults(cmd.config, given_fields(argv)))
        validate(cmd.config)
    if source is None and not cmd.resume:
        config = per_env_steps(cmd.config, preset, given_fields(argv))
        cmd = dataclasses.replace(cmd, config=config)
        validate(cmd.config)
    if build_env and not cmd.resume:
        from distributed_sac.envs.registry import check_env

        check_env(cmd.config.env, cmd.config.wrappers)
    if cmd.pretrain_updates < 0:
        raise UsageError(f"--pretrain-updates {cmd.pretrain_updates}: must be an integer >= 0")
    if cmd.pretrain_updates and not cmd.demos:
        raise UsageError("--pretrain-updates needs --demos")
    if cmd.resume and cmd.from_config:
        raise UsageError("--resume continues a run with its own config; drop --config")
    if cmd.resume and cmd.demos:
        raise UsageError(
            "--demos: a resumed run keeps the demonstrations it started with "
            "(its replay snapshot holds them); drop --demos and --pretrain-updates"
        )
    return cmd
