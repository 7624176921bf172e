"""Distributed SAC-AE on Ray: train from pixels, sweep seeds and configs, evaluate, record demos.

Parses and checks the command line with light imports only (tyro and the config tree); Ray and
torch are imported once the input is known to be good.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import logging
import math
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from distributed_sac import __version__
from distributed_sac.config.fields import RULES, TrainConfig, field_value, flag, validate
from distributed_sac.config.presets import PRESETS, describe

log = logging.getLogger("distributed_sac")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
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


COMMANDS = {
    "train": TrainCommand.__doc__,
    "sweep": "Run seeds crossed with configurations as Ray Tune trials and aggregate them.",
    "eval": EvalCommand.__doc__,
    "record": "Drive CarRacing in a window and save the episodes as demonstrations.",
}


class UsageError(ValueError):
    """Bad input on the command line (exit code 2)."""


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(
        [
            f"usage: {PROG} {{{','.join(COMMANDS)}}} [--help | --version] ...",
            "",
            (__doc__ or "").splitlines()[0],
            "",
            "commands:",
            *lines,
            "",
            f"Run `{PROG} COMMAND --help` for the flags of one command (README.md: examples).",
        ]
    )


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


def _value_of(argv: list[str], name: str) -> str | None:
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
    preset = _value_of(argv, "--preset") or "full"
    if preset not in PRESETS:
        raise UsageError(f"--preset {preset}: must be one of {', '.join(PRESETS)}")
    base = PRESETS[preset]()
    source = _value_of(argv, "--config")
    if source is not None:
        from distributed_sac.run.run_dir import read_config

        base, meta = read_config(source)
        # A new run: its own directory and W&B name, unless given.
        base = dataclasses.replace(base, run_dir="", wandb_name=None)
        preset = _value_of(argv, "--preset") or meta.get("preset") or preset
    default = TrainCommand(config=base, preset=preset)  # type: ignore[arg-type]
    cmd = cli(TrainCommand, argv, f"{PROG} train", default=default)
    validate(cmd.config)
    if source is None and not cmd.resume and ":" in cmd.config.env:  # dmc: and gym: tasks
        from distributed_sac.envs.wrappers import with_env_defaults

        cmd = dataclasses.replace(cmd, config=with_env_defaults(cmd.config, given_fields(argv)))
        validate(cmd.config)
    if build_env and not cmd.resume:
        from distributed_sac.envs.wrappers import check_env

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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    commands = {"train": _train, "sweep": _sweep, "eval": _eval, "record": _record}
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    if argv[:1] == ["--version"]:
        print(f"distributed-sac {__version__}")
        return 0
    if not argv or argv[0] not in commands:
        print(usage(), file=sys.stderr)
        return 2
    try:
        return commands[argv[0]](argv[1:])
    except KeyboardInterrupt as exc:
        # Ctrl-C, or lifecycle.Stopped: a stop signal (SIGTERM: after the final checkpoint;
        # a second signal: at once), with its one line and signal number.
        print(str(exc) or "interrupted", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _usage_errors():
    """Every error raised while checking the input, before Ray starts, is a usage error."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


def _train(argv: list[str]) -> int:
    with _usage_errors():
        cmd = parse_train(argv)
        from distributed_sac.remote import session

        meta = {"command": shlex.join([PROG, "train", *argv])}
        if not cmd.resume or _value_of(argv, "--preset"):
            meta["preset"] = cmd.preset
        if cmd.from_config:
            meta["from_config"] = cmd.from_config
        given = given_fields(argv)
        plan = session.prepare(cmd.config, cmd.resume, given=given, meta=meta)
        chunks = None
        if cmd.demos:
            from distributed_sac.replay.demos import load_demos

            chunks = load_demos(cmd.demos, plan.cfg.env, plan.cfg.wrappers)
    session.start(plan, chunks, cmd.pretrain_updates)
    return 0


def _eval(argv: list[str]) -> int:
    with _usage_errors():
        cmd = cli(EvalCommand, argv, f"{PROG} eval")
        from distributed_sac.run import eval_command

        policy, ckpt, cfg = eval_command.load(
            cmd.path, cmd.episodes, cmd.video, cmd.render, cmd.max_steps
        )
    return eval_command.run_loaded(
        policy, ckpt, cfg, cmd.episodes, cmd.video, cmd.render, cmd.seed, cmd.max_steps, cmd.json
    )


SWEEP_FLAGS = {
    "--" + f.name.replace("_", "-"): str(f.type).startswith("tuple")
    for f in dataclasses.fields(SweepCommand)
}
"""`launch.py sweep`'s own flags, each with whether it takes several values; the others are
`train`'s."""
SWEPT_ELSEWHERE = {"seed": "--seeds or --num-seeds", "run_dir": "--run-dir"}


def split_sweep_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the sweep's own flags with their values, train's flags)."""
    own, train = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0].replace("_", "-")
        i += 1
        if not arg.startswith("--") or name not in SWEEP_FLAGS:
            train.append(arg)
            continue
        own.append(arg)
        if "=" in arg:
            continue
        if SWEEP_FLAGS[name]:
            while i < len(argv) and not argv[i].startswith("--"):
                own.append(argv[i])
                i += 1
        elif i < len(argv):
            own.append(argv[i])
            i += 1
    return own, train


def _assignment(item: str, option: str, given: set[str]) -> tuple[str, str]:
    """(dotted field path, value text) of `FIELD=VALUE`, the field checked against RULES."""
    path, sep, text = item.partition("=")
    path = path.strip().removeprefix("--").replace("-", "_")
    if not sep or not text:
        raise UsageError(f"{option} {item}: expected FIELD=VALUES, e.g. agent.alpha_lr=1e-3,1e-4")
    if path not in RULES:
        raise UsageError(
            f"{option} {item}: no config field {path!r} (the dotted name of a `train` flag: "
            f"agent.alpha_lr for --agent.alpha-lr; `{PROG} train --help` lists them)"
        )
    if path in SWEPT_ELSEWHERE:
        raise UsageError(f"{option} {item}: {flag(path)} is set by {SWEPT_ELSEWHERE[path]}")
    if path in given:
        raise UsageError(f"{option} {item}: {flag(path)} is also given as a flag; give it once")
    return path, text


def _draw(path: str, spec: str, rng) -> str:
    """One value of a --sample distribution, as the text a flag takes."""
    kind, _, args = spec.partition(":")
    try:
        if kind == "choice":
            values = args.split(",")
            if args and all(values):
                return values[int(rng.integers(len(values)))]
        elif kind == "randint":
            lo, hi = (int(v) for v in args.split(":"))
            if lo <= hi:
                return str(int(rng.integers(lo, hi + 1)))
        elif kind in ("uniform", "loguniform"):
            lo, hi = (float(v) for v in args.split(":"))
            if kind == "uniform" and lo < hi:
                return f"{rng.uniform(lo, hi):.4g}"
            if kind == "loguniform" and 0 < lo < hi:
                return f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.4g}"
    except ValueError:
        pass
    raise UsageError(
        f"--sample {path}={spec}: expected loguniform:LO:HI (0 < LO < HI), uniform:LO:HI, "
        "randint:LO:HI or choice:A,B,..."
    )


def _override_tokens(path: str, text: str, base: TrainConfig) -> list[str]:
    """The `train` flags that set field `path` to `text`."""
    current = field_value(base, path)
    if isinstance(current, bool):
        head, _, last = path.rpartition(".")
        if text.lower() in ("true", "yes", "1"):
            return [flag(path)]
        if text.lower() in ("false", "no", "0"):
            return [flag(f"{head}.no_{last}" if head else f"no_{last}")]
        raise UsageError(f"{flag(path)} {text}: must be true or false")
    if isinstance(current, tuple):
        return [flag(path), *text.split()]
    return [f"{flag(path)}={text}"]


def _at_least(value: int, option: str, floor: int) -> None:
    if value < floor:
        raise UsageError(f"{option} {value}: must be an integer >= {floor}")


def _resume_sweep(own: list[str], train: list[str], path: str):
    """(the saved plan, True, --address) for `sweep --resume DIR [--address ADDR]`."""
    from distributed_sac.run.sweep_plan import SweepPlan

    address = _value_of(train, "--address")
    rest = [a for a in train if a.split("=", 1)[0] != "--address" and a != address]
    other = [a for a in own if a.split("=", 1)[0] not in ("--resume", path) and a != path]
    if other or rest:
        raise UsageError(
            f"--resume continues a sweep as its sweep.json says; drop {(other or rest)[0]} "
            "(only --address may be given with it)"
        )
    return SweepPlan.load(Path(path)), True, address


def plan_sweep(argv: list[str]):
    """(plan, resume, address) from `launch.py sweep` flags, every configuration parsed and
    checked by `parse_train`; UsageError (exit 2) for anything wrong, before Ray starts."""
    from distributed_sac.run.sweep_plan import Configuration, build_plan

    own, train = split_sweep_argv(argv)
    if "-h" in train or "--help" in train:
        own = ["--help"]
    cmd = cli(SweepCommand, own, f"{PROG} sweep")
    if cmd.resume:
        return _resume_sweep(own, train, cmd.resume)
    _at_least(cmd.num_seeds, "--num-seeds", 1)
    for option in ("final_eval_episodes", "max_failures", "max_concurrent", "num_samples"):
        _at_least(getattr(cmd, option), flag(option), 0)
    if cmd.seeds and _value_of(own, "--num-seeds") is not None:
        raise UsageError("--seeds and --num-seeds: give one of them")
    if cmd.seeds and _value_of(train, "--seed") is not None:
        raise UsageError("--seeds names every root seed; drop --seed")
    if bool(cmd.sample) != bool(cmd.num_samples):
        raise UsageError("--sample and --num-samples go together")
    base = parse_train(train, build_env=False)
    given = given_fields(train)
    axes: list[list[tuple[str, str]]] = []
    for item in cmd.grid:
        path, text = _assignment(item, "--grid", given)
        values = text.split(",")
        if not all(values) or len(set(values)) < len(values):
            raise UsageError(f"--grid {item}: a value is empty or repeated")
        if any(axis[0][0] == path for axis in axes):
            raise UsageError(f"--grid {item}: {path} is swept twice")
        axes.append([(path, v) for v in values])
    sampled = [_assignment(item, "--sample", given) for item in cmd.sample]
    swept = [axis[0][0] for axis in axes] + [p for p, _ in sampled]
    if len(set(swept)) < len(swept):
        raise UsageError("--grid and --sample sweep the same field twice")
    import numpy as np

    rng = np.random.default_rng(cmd.sample_seed)
    draws = [[(p, _draw(p, spec, rng)) for p, spec in sampled] for _ in range(cmd.num_samples)]
    combos = [d + list(g) for d in (draws or [[]]) for g in itertools.product(*axes)]
    configurations: list[Configuration] = []
    checked_demos: set = set()
    for overrides in combos:
        name = ",".join(([cmd.name] if cmd.name else []) + [f"{p}={v}" for p, v in overrides])
        name = name or base.preset
        if any(c.name == name for c in configurations):  # a sample drawn twice
            name = f"{name}-{len(configurations)}"
        try:
            tokens = [t for p, v in overrides for t in _override_tokens(p, v, base.config)]
            parsed = parse_train(train + tokens, build_env=False) if tokens else base
        except (UsageError, ValueError) as exc:
            raise UsageError(f"configuration {name}: {exc}") from None
        key = (parsed.config.env, parsed.config.wrappers)
        if parsed.demos and key not in checked_demos:
            from distributed_sac.replay.demos import load_demos

            load_demos(parsed.demos, *key)
            checked_demos.add(key)
        configurations.append(
            Configuration(
                name=name,
                cfg=parsed.config,
                overrides=dict(overrides),
                demos=parsed.demos,
                pretrain_updates=parsed.pretrain_updates,
            )
        )
    from distributed_sac.envs.wrappers import check_env

    for env, wrappers in dict.fromkeys((c.cfg.env, c.cfg.wrappers) for c in configurations):
        check_env(env, wrappers)  # every configuration parsed first: bad flags need no gymnasium
    seeds = list(cmd.seeds) or list(range(base.config.seed, base.config.seed + cmd.num_seeds))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(base.config.run_dir or f"runs/sweep-{base.config.env}-{stamp}")
    from distributed_sac.run.run_dir import CONFIG, check_writable
    from distributed_sac.run.sweep_plan import SWEEP_FILE

    if (path / SWEEP_FILE).exists():
        raise UsageError(f"{path} already holds a sweep; pass --resume {path} to continue it")
    if (path / CONFIG).exists():
        raise UsageError(f"--run-dir {path} holds a run, not a sweep; choose another")
    check_writable(path)
    plan = build_plan(
        path,
        configurations,
        seeds,
        preset=base.preset,
        command=shlex.join([PROG, "sweep", *argv]),
        final_eval_episodes=cmd.final_eval_episodes,
        max_failures=cmd.max_failures,
        max_concurrent=cmd.max_concurrent,
        threshold=cmd.threshold,
        meta={"from_config": base.from_config} if base.from_config else None,
    )
    return plan, False, None


def _sweep(argv: list[str]) -> int:
    with _usage_errors():
        plan, resume, address = plan_sweep(argv)
        from distributed_sac.remote import sweep

    return sweep.run(plan, resume, address)


def _record(argv: list[str]) -> int:
    from distributed_sac.run.recorder import main as record_main

    return record_main(argv)


if __name__ == "__main__":
    sys.exit(main())
