"""Distributed SAC-AE on Ray: train from pixels, evaluate a run, record demonstrations.

Parses and checks the command line with light imports only (tyro and the config tree); Ray and
torch are imported once the input is known to be good.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shlex
import signal
import sys
from dataclasses import dataclass, field
from typing import Annotated, Literal

import tyro

from distributed_sac import __version__
from distributed_sac.config import RULES, TrainConfig, flag, validate
from distributed_sac.presets import PRESETS

log = logging.getLogger("distributed_sac")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
# `python launch.py ...` or the installed console script `distributed-sac ...`.
PROG = "distributed-sac" if os.path.basename(sys.argv[0]) == "distributed-sac" else "launch.py"


@dataclass
class TrainCommand:
    """Train SAC-AE with distributed env workers on Ray (a local Ray unless --address)."""

    config: Annotated[TrainConfig, tyro.conf.arg(name="", prefix_name=False)] = field(
        default_factory=TrainConfig
    )
    preset: Literal["full", "tiny", "pendulum-cpu", "carracing-cpu"] = "full"
    """Defaults to start from: full (docs/design.md), tiny (smoke runs), pendulum-cpu or
    carracing-cpu (VisualPendulum or CarRacing sized for 2 CPU cores)."""
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
    seed: int = 12345
    """Seed of the evaluation episodes."""
    max_steps: int | None = None
    """Agent-step cap per episode; None takes the run's --eval.max-episode-steps."""


COMMANDS = {
    "train": TrainCommand.__doc__,
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


def parse_train(argv: list[str]) -> TrainCommand:
    """Parse and validate `train` flags on the chosen preset's (or --config file's) defaults."""
    preset = _value_of(argv, "--preset") or "full"
    if preset not in PRESETS:
        raise UsageError(f"--preset {preset}: must be one of {', '.join(PRESETS)}")
    base = PRESETS[preset]()
    source = _value_of(argv, "--config")
    if source is not None:
        import dataclasses

        from distributed_sac.run_dir import read_config

        base, meta = read_config(source)
        # A new run: its own directory and W&B name, unless given.
        base = dataclasses.replace(base, run_dir="", wandb_name=None)
        preset = _value_of(argv, "--preset") or meta.get("preset") or preset
    default = TrainCommand(config=base, preset=preset)  # type: ignore[arg-type]
    cmd = cli(TrainCommand, argv, f"{PROG} train", default=default)
    validate(cmd.config)
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
    commands = {"train": _train, "eval": _eval, "record": _record}
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
            from distributed_sac.demos import load_demos

            chunks = load_demos(cmd.demos, plan.cfg.env, plan.cfg.wrappers)
    session.start(plan, chunks, cmd.pretrain_updates)
    return 0


def _eval(argv: list[str]) -> int:
    with _usage_errors():
        cmd = cli(EvalCommand, argv, f"{PROG} eval")
        from distributed_sac import eval_command

        policy, ckpt, cfg = eval_command.load(
            cmd.path, cmd.episodes, cmd.video, cmd.render, cmd.max_steps
        )
    return eval_command.run_loaded(
        policy, ckpt, cfg, cmd.episodes, cmd.video, cmd.render, cmd.seed, cmd.max_steps
    )


def _record(argv: list[str]) -> int:
    from distributed_sac.recorder import main as record_main

    return record_main(argv)


if __name__ == "__main__":
    sys.exit(main())
