"""From config to Ray: joining or starting a cluster, the learner's device, actor options."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Iterator
from typing import NamedTuple

import ray
from ray.util.placement_group import PlacementGroup, get_current_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from distributed_sac.config.fields import TrainConfig

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """Ray cannot be reached or cannot host the run as configured."""


def connect(
    cfg: TrainConfig, num_workers: int, num_cpus: int | None = None, log_to_driver: bool = True
) -> bool:
    """Join `cfg.address` or start a local Ray; returns True if this process started it.

    `num_cpus` sizes a local Ray (default `local_cpus`); `log_to_driver` False keeps the
    actors' output in Ray's log files (a sweep's trials log into their run directories).
    """
    if cfg.address:
        _check_reachable(cfg.address)
        try:
            ray.init(
                address=cfg.address, log_to_driver=log_to_driver, logging_level=logging.WARNING
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterError(f"cannot reach Ray at {cfg.address!r}: {first}") from None
        return False
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ClusterError("--device cuda, but torch sees no CUDA device on this machine")
    context = start_local_ray(
        cfg,
        num_workers,
        include_dashboard=True,
        logging_level=logging.WARNING,
        log_to_driver=log_to_driver,
        **({"num_cpus": num_cpus} if num_cpus else {}),
    )
    url = context.dashboard_url
    if url:
        mode = os.environ.get("RAY_AUTH_MODE", "token")
        log.info(
            "Ray dashboard: %s (token authentication: %s; `ray get-auth-token` prints the token)",
            url if "://" in url else f"http://{url}",
            "on" if mode == "token" else mode,
        )
    return True


def local_cpus(cfg: TrainConfig, num_workers: int) -> int:
    """Logical CPUs a local Ray needs to place every actor of a run with `num_workers`."""
    needed = math.ceil(num_workers + cfg.learner_cpus + REPLAY_CPUS + evaluator_cpus(cfg))
    # A laptop may have fewer cores than actors; oversubscribing is better than never scheduling.
    return max(os.cpu_count() or 1, needed)


def start_local_ray(cfg: TrainConfig, num_workers: int, **init_kwargs):
    """A new local Ray sized by `local_cpus` (benchmarks and `connect`); its context."""
    # Ray 2.60 turns token authentication on for a new local cluster and warns that it did;
    # `connect`'s dashboard line says so instead. (Setting RAY_AUTH_MODE=token would silence it
    # too, but only before `import ray`.)
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        _not_token_auth_enabled
    )
    init_kwargs.setdefault("include_dashboard", False)
    if init_kwargs["include_dashboard"]:
        init_kwargs.setdefault("dashboard_host", cfg.dashboard_host)
    init_kwargs.setdefault("num_cpus", local_cpus(cfg, num_workers))
    return ray.init(
        address="local",  # a new local Ray, even when `ray start` runs one on this machine
        **init_kwargs,
    )


def _not_token_auth_enabled(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled")


# Env workers and the evaluator render off-screen and play no sound; without a display or a
# sound card SDL would complain.
HEADLESS = {"env_vars": {"SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}}


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a host:port nobody listens on (ray.init would retry for minutes)."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address must be 'auto' or host:port, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach Ray at {address}: {exc.strerror or exc}") from None


def learner_device(cfg: TrainConfig) -> str:
    """`cuda` when asked, or on auto when the cluster offers a GPU; else `cpu`."""
    gpus = ray.cluster_resources().get("GPU", 0)
    if cfg.device == "cuda" and gpus < 1:
        raise ClusterError("--device cuda, but the Ray cluster has no GPU")
    if cfg.device == "cpu" or gpus < 1:
        return "cpu"
    return "cuda"


def learner_options(device: str, num_cpus: float = 1.0) -> dict:
    # Restarted if its process dies; the driver reloads the newest checkpoint into it and
    # starts its update loop again (its calls in flight fail rather than rerun).
    opts = {
        "name": actor_name("learner"),
        "max_concurrency": 4,
        "num_cpus": num_cpus,
        "max_restarts": -1,
    }
    if device == "cuda":
        opts["num_gpus"] = 1
    return _in_trial_bundle(LEARNER_BUNDLE, opts)


def on_node(node_id: str) -> NodeAffinitySchedulingStrategy:
    """Pin an actor to a node (the replay actor sits beside the learner)."""
    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


REPLAY_CPUS = 1.0
"""The replay actor inserts, feeds the learner and writes snapshots: a core's work at scale."""


def evaluator_cpus(cfg: TrainConfig) -> float:
    """The evaluator steps an env and a policy while it evaluates (none when it never does)."""
    return 1.0 if cfg.eval.every else 0.0


def replay_options(node_id: str) -> dict:
    # Restarted from its latest snapshot if it dies; callers' pending calls are retried.
    opts = {
        "name": actor_name("replay"),
        "num_cpus": REPLAY_CPUS,
        "scheduling_strategy": on_node(node_id),
        "max_restarts": -1,
        "max_task_retries": -1,
    }
    return _in_trial_bundle(LEARNER_BUNDLE, opts)


def evaluator_options(node_id: str, cfg: TrainConfig) -> dict:
    """Beside the learner, reserving the CPU it uses while evaluating."""
    opts = {
        "name": actor_name("evaluator"),
        "num_cpus": evaluator_cpus(cfg),
        "scheduling_strategy": on_node(node_id),
        "runtime_env": HEADLESS,
    }
    return _in_trial_bundle(LEARNER_BUNDLE, opts)


def worker_options(index: int) -> dict:
    # Restarted by Ray if its process dies; the driver calls `run` again on the new one.
    opts = {
        "name": actor_name(f"env-worker-{index}"),
        "num_cpus": 1,
        "max_concurrency": 2,
        "max_restarts": -1,
        "scheduling_strategy": "SPREAD",
        "runtime_env": HEADLESS,
    }
    return _in_trial_bundle(FIRST_WORKER_BUNDLE + index, opts)


# A sweep trial (remote/sweep.py): one whole run inside the placement group Ray Tune reserved
# for it, side by side with other trials in one Ray cluster. Outside a trial nothing changes.

DRIVER_CPUS = 1.0
"""A sweep trial's own process: its driver loop, then its final evaluation when one is asked."""
LEARNER_BUNDLE = 1
"""The bundle of the learner, the replay and the evaluator (one bundle: one node, as
`replay_options` and `evaluator_options` place them beside the learner outside a trial)."""
FIRST_WORKER_BUNDLE = 2
"""Env worker `i` takes bundle FIRST_WORKER_BUNDLE + i."""


def trial_bundles(cfg: TrainConfig, device: str) -> list[dict[str, float]]:
    """The placement-group bundles of one sweep trial, in the order the option functions above
    use them: the trial's process, the learner with the replay and the evaluator, one per env
    worker. `device` is `learner_device(cfg)`."""
    learner_side = {"CPU": cfg.learner_cpus + REPLAY_CPUS + evaluator_cpus(cfg)}
    if device == "cuda":
        learner_side["GPU"] = 1.0
    workers = [{"CPU": 1.0} for _ in range(cfg.num_workers or 0)]
    return [{"CPU": DRIVER_CPUS}, learner_side, *workers]


class _Trial(NamedTuple):
    prefix: str
    group: PlacementGroup


_trial: _Trial | None = None


@contextlib.contextmanager
def trial_placement(prefix: str) -> Iterator[None]:
    """Inside a sweep trial: every actor is named `prefix` + its name (trials side by side share
    one Ray namespace, and env workers find the replay by name) and goes into its bundle of the
    trial's placement group (`trial_bundles`), instead of the node or spread strategy above."""
    global _trial
    group = get_current_placement_group()
    if group is None:
        raise ClusterError("a sweep trial runs inside its placement group; this process has none")
    previous, _trial = _trial, _Trial(prefix, group)
    try:
        yield
    finally:
        _trial = previous


def actor_name(role: str) -> str:
    """The Ray name of one of the run's actors (`replay`, `learner`, `env-worker-3`, ...)."""
    return role if _trial is None else _trial.prefix + role


def _in_trial_bundle(index: int, opts: dict) -> dict:
    if _trial is not None:
        opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            _trial.group, placement_group_bundle_index=index
        )
    return opts


def wait_until_back(actor: ray.actor.ActorHandle, probe: str, timeout_s: float) -> None:
    """Block until an actor that Ray is restarting answers ``probe``: calls made meanwhile
    fail (``ActorUnavailableError``) instead of waiting for it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ray.get(getattr(actor, probe).remote(), timeout=max(1.0, deadline - time.monotonic()))
            return
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
            if time.monotonic() > deadline:
                msg = f"an actor was not back {timeout_s:.0f} s after it died"
                raise ClusterError(msg) from None
            time.sleep(0.2)


def await_placement(actors: dict[str, ray.actor.ActorHandle], probe: str, timeout_s: float) -> None:
    """Wait until every actor answers `probe`; ask the autoscaler for what is missing; time out.

    Ray queues an actor whose resources no node has; without this check a run that asks for
    more workers than the cluster holds would wait silently forever.
    """
    pending = {getattr(a, probe).remote(): name for name, a in actors.items()}
    deadline = time.monotonic() + timeout_s
    asked = False
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=5.0)
        for ref in ready:
            ray.get(ref)
            pending.pop(ref)
        if not pending:
            return
        if not asked and time.monotonic() > deadline - timeout_s + 20.0:
            asked = True
            _request_resources(len(pending))
            log.warning(
                "%d actors not placed after 20 s (%s); cluster has %s. Waiting up to %.0f s",
                len(pending),
                ", ".join(sorted(pending.values())[:4]),
                {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")},
                timeout_s,
            )
        if time.monotonic() > deadline:
            raise ClusterError(
                f"{len(pending)} actors could not be placed within {timeout_s:.0f} s "
                f"({', '.join(sorted(pending.values())[:4])}); the cluster offers "
                f"{ray.cluster_resources().get('CPU', 0):.0f} CPUs: "
                "lower --num-workers or add nodes"
            )


def _request_resources(num_cpus: int) -> None:
    """Ask an autoscaling cluster for the missing CPUs (a no-op without an autoscaler)."""
    try:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[{"CPU": 1}] * num_cpus)
    except Exception as exc:  # no autoscaler on a local or fixed cluster
        log.debug("request_resources unavailable: %s", exc)
