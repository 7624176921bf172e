"""`launch.py sweep`'s command line: its own flags split from `train`'s, --grid and --sample
expanded into configurations, each parsed and checked by `train`'s parsing, into a
`SweepPlan` (run/sweep_plan.py), all before Ray starts.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import shlex
import time
from pathlib import Path

from distributed_sac.config.fields import RULES, TrainConfig, field_value, flag
from distributed_sac.run.command_line import (
    PROG,
    SweepCommand,
    UsageError,
    cli,
    given_fields,
    parse_train,
    value_of,
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

    address = value_of(train, "--address")
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
    if cmd.seeds and value_of(own, "--num-seeds") is not None:
        raise UsageError("--seeds and --num-seeds: give one of them")
    if cmd.seeds and value_of(train, "--seed") is not None:
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
    from distributed_sac.envs.registry import check_env

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
