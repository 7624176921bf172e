"""Command line: `python launch.py {train,eval,record} ...` (run with --help for each)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Annotated, Literal

import tyro

from distributed_sac.config import PRESETS, TrainConfig, validate

log = logging.getLogger("distributed_sac")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


@dataclass
class TrainCommand:
    """Train SAC-AE with distributed env workers on Ray (a local Ray unless --address)."""

    config: Annotated[TrainConfig, tyro.conf.arg(name="", prefix_name=False)] = field(
        default_factory=TrainConfig
    )
    preset: Literal["full", "tiny", "pendulum-cpu", "carracing-cpu"] = "full"
    """Defaults to start from: full (the spec), tiny (small images/networks, CPU smoke runs),
    pendulum-cpu (VisualPendulum sized for 2 CPU cores: 20k agent steps in about 22 minutes) or
    carracing-cpu (CarRacing sized for 2 CPU cores: 32x32 images, replay ratio 0.5)."""
    resume: str | None = None
    """Continue the run in this directory from its latest checkpoint."""
    demos: tuple[str, ...] = ()
    """Demonstration files or folders of them (from `launch.py record`) to load into replay."""
    pretrain_updates: int = 0
    """Learner updates on the demonstrations before the env workers start."""


@dataclass
class EvalCommand:
    """Run a trained policy deterministically and report its return."""

    path: Annotated[str, tyro.conf.Positional]
    """A run directory (its latest checkpoint) or a checkpoint file."""
    episodes: int = 10
    """Episodes to run."""
    video: str | None = None
    """Write an mp4 of the first episode here."""
    render: Literal["none", "human"] = "none"
    """`human` opens a window to watch the agent drive."""
    seed: int = 12345
    """Seed of the evaluation episodes."""
    max_steps: int = 1000
    """Agent-step cap per episode."""


class UsageError(ValueError):
    """A command line that does not parse."""


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


def _preset(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return "full"


def parse_train(argv: list[str]) -> TrainCommand:
    """Parse `train` flags on top of the chosen preset's defaults."""
    preset = _preset(argv)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    default = TrainCommand(config=PRESETS[preset](), preset=preset)  # type: ignore[arg-type]
    cmd = cli(TrainCommand, argv, "launch.py train", default=default)
    validate(cmd.config)
    if cmd.pretrain_updates < 0:
        raise ValueError(f"--pretrain-updates must be >= 0, got {cmd.pretrain_updates}")
    if cmd.pretrain_updates and not cmd.demos:
        raise ValueError("--pretrain-updates needs --demos")
    return cmd


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    commands = {"train": _train, "eval": _eval, "record": _record}
    if not argv or argv[0] not in commands:
        if argv and argv[0] in ("-h", "--help"):
            print(__doc__)
            return 0
        print(f"usage: launch.py {{{','.join(commands)}}} [--help]", file=sys.stderr)
        return 2
    try:
        return commands[argv[0]](argv[1:])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _train(argv: list[str]) -> int:
    from distributed_sac.remote.session import train

    cmd = parse_train(argv)
    train(
        cmd.config,
        resume=cmd.resume,
        demos=cmd.demos,
        pretrain_updates=cmd.pretrain_updates,
        cli_default=PRESETS[cmd.preset](),
    )
    return 0


def _eval(argv: list[str]) -> int:
    from distributed_sac.play import run_eval

    cmd = cli(EvalCommand, argv, "launch.py eval")
    return run_eval(cmd.path, cmd.episodes, cmd.video, cmd.render, cmd.seed, cmd.max_steps)


def _record(argv: list[str]) -> int:
    from distributed_sac.recorder import main as record_main

    return record_main(argv)


if __name__ == "__main__":
    sys.exit(main())
