"""Distributed SAC-AE on Ray: train from pixels, sweep seeds and configs, evaluate, record demos.

Parses and checks the command line with light imports only (tyro and the config tree); Ray and
torch are imported once the input is known to be good.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import sys

from distributed_sac import __version__
from distributed_sac.run.command_line import (
    PROG,
    EvalCommand,
    TrainCommand,
    UsageError,
    cli,
    given_fields,
    parse_train,
    value_of,
)
from distributed_sac.run.sweep_command import plan_sweep

__all__ = ["PROG", "UsageError", "given_fields", "main", "parse_train", "plan_sweep"]
"""What tests and scripts use: the parsing lives in distributed_sac/run/command_line.py and
sweep_command.py; this file dispatches the commands."""
log = logging.getLogger("distributed_sac")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
# No env plays sound; SDL's audio probe would print ALSA errors when an env calls pygame.init().
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


def _off_screen() -> None:
    """Training draws every env off-screen: no display for SDL to look for (and complain of,
    with a line of its own that starts `error:`)."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


COMMANDS = {
    "train": TrainCommand.__doc__,
    "sweep": "Run seeds crossed with configurations as Ray Tune trials and aggregate them.",
    "eval": EvalCommand.__doc__,
    "record": "Drive CarRacing in a window and save the episodes as demonstrations.",
}


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
    except BrokenPipeError:
        raise  # stdout's reader went away: `console` ends quietly
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _usage_errors():
    """Every error raised while checking the input, before Ray starts, is a usage error."""
    try:
        yield
    except (UsageError, BrokenPipeError):
        raise
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


def _train(argv: list[str]) -> int:
    _off_screen()
    with _usage_errors():
        cmd = parse_train(argv)
        from distributed_sac.remote import session

        meta = {"command": shlex.join([PROG, "train", *argv])}
        if not cmd.resume or value_of(argv, "--preset"):
            meta["preset"] = cmd.preset
        if cmd.from_config:
            meta["from_config"] = cmd.from_config
        given = given_fields(argv)
        plan = session.prepare(cmd.config, cmd.resume, given=given, meta=meta)
        if plan.finished:
            limiter = plan.checkpoint[1].replay.limiter
            print(
                f"{plan.run.path}: already finished ({limiter.inserts} agent steps of "
                f"--total-steps {plan.cfg.total_steps}, {limiter.samples} granted updates); "
                "a larger --total-steps trains on"
            )
            return 0
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
            cmd.path, cmd.episodes, cmd.video, cmd.render, cmd.max_steps, cmd.jobs
        )
    return eval_command.run_loaded(
        policy,
        ckpt,
        cfg,
        cmd.episodes,
        cmd.video,
        cmd.render,
        cmd.seed,
        cmd.max_steps,
        cmd.json,
        cmd.jobs,
    )


def _sweep(argv: list[str]) -> int:
    _off_screen()
    with _usage_errors():
        plan, resume, address = plan_sweep(argv)
        from distributed_sac.remote import sweep

    return sweep.run(plan, resume, address)


def _record(argv: list[str]) -> int:
    from distributed_sac.run.recorder import main as record_main

    return record_main(argv)


def console(argv: list[str] | None = None) -> int:
    """The entry point: `main`, quiet when its reader goes away (`launch.py --help | head`)."""
    try:
        code = main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        code = 128 + signal.SIGPIPE
    return code


if __name__ == "__main__":
    sys.exit(console())
