"""A real two-node Ray cluster on this machine, started and stopped without touching other Rays.

`ray stop` kills every Ray process on the machine (it matches process names), so the cluster
here tracks the process tree of its own `ray start --block` commands and ends only those.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import ray  # isort: split  (Ray puts its bundled psutil on sys.path)
import psutil

REPO = Path(__file__).resolve().parent.parent
WORKER_PORTS = 40
"""Ports each node's worker processes may bind (driver, supervisor, actors, with slack)."""


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports the kernel reports free right now."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def free_port_range(size: int, low: int = 20_000, high: int = 40_000) -> int:
    """First port of `size` consecutive free ports, from a random start to dodge other tests."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        first = rng.randrange(low, high - size)
        if all(_is_free(p) for p in range(first, first + size)):
            return first
    raise RuntimeError(f"no {size} consecutive free ports in [{low}, {high})")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_env(token: str) -> dict[str, str]:
    """Environment for every process of the test: token auth with a fresh token, no GUI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        SDL_VIDEODRIVER="dummy",
        WANDB_MODE="disabled",
        WANDB_SILENT="true",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
        # Nodes drain for 30 s on SIGTERM by default (ray_constants); nothing here needs it.
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
    )
    return env


def _node_ports(head: bool) -> list[str]:
    names = [
        "--node-manager-port", "--object-manager-port", "--metrics-export-port",
        "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
    ]
    if head:
        names += ["--ray-client-server-port"]
    args = [a for name, port in zip(names, free_ports(len(names)), strict=True) for a in (name, str(port))]
    first = free_port_range(WORKER_PORTS)
    return args + ["--min-worker-port", str(first), "--max-worker-port", str(first + WORKER_PORTS - 1)]


@dataclass
class LocalCluster:
    """A head and one worker node; `stop` ends exactly the processes they started."""

    tmp: Path
    env: dict[str, str]
    cpus_per_node: int = 2
    gcs_port: int = 0
    dashboard_port: int = 0
    nodes: list[subprocess.Popen] = field(default_factory=list)
    seen: dict[int, psutil.Process] = field(default_factory=dict)
    _stop_watch: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the head, then a worker node with a `worker_node` resource; wait for both."""
        self.gcs_port, self.dashboard_port = free_ports(2)
        common = ["--num-cpus", str(self.cpus_per_node), "--object-store-memory", str(100 * 2**20),
                  "--disable-usage-stats", "--block"]
        self._start_node("head", [
            "--head", "--port", str(self.gcs_port), "--temp-dir", str(self.tmp / "ray"),
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(self.dashboard_port), *common, *_node_ports(head=True),
        ], timeout_s)
        self._start_node("worker", [
            "--address", self.address, "--resources", json.dumps({"worker_node": 2}),
            *common, *_node_ports(head=False),
        ], timeout_s)
        threading.Thread(target=self._watch, daemon=True).start()

    def _start_node(self, name: str, args: list[str], timeout_s: float) -> None:
        log = self.tmp / f"ray-start-{name}.log"
        with open(log, "wb") as out:
            # A new session keeps Ctrl-C and pytest's signals away from the cluster.
            proc = subprocess.Popen(["ray", "start", *args], env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes.append(proc)
        deadline = time.monotonic() + timeout_s
        while b"Ray runtime started" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start ({name}) failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        self.snapshot()

    def snapshot(self) -> None:
        """Record every live descendant of the `ray start` commands (before any is orphaned)."""
        for node in self.nodes:
            try:
                root = psutil.Process(node.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            self.seen.update((p.pid, p) for p in procs)

    def _watch(self) -> None:
        while not self._stop_watch.wait(0.5):
            self.snapshot()

    def run(self, *args: str, timeout_s: float, cwd: Path = REPO) -> subprocess.CompletedProcess:
        """Run a command against the cluster with its environment; output captured as text."""
        return subprocess.run(list(args), env=self.env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout_s, check=False)

    def list_state(self, resource: str, timeout_s: float = 60.0) -> list[dict]:
        """`ray list <resource>` as records (the state API behind the dashboard)."""
        out = self.run("ray", "list", resource, "--address", self.address, "--format", "json",
                       "--limit", "1000", timeout_s=timeout_s)
        if out.returncode != 0:
            raise RuntimeError(f"ray list {resource} failed:\n{out.stdout}\n{out.stderr}")
        return json.loads(out.stdout)

    def stop(self, grace_s: float = 30.0) -> list[str]:
        """SIGTERM the nodes (worker first), then kill whatever they left; returns what was left."""
        self.snapshot()
        self._stop_watch.set()
        for node in reversed(self.nodes):
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
                try:
                    node.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    node.kill()
                    node.wait()
        left = [p for p in self.seen.values() if _alive(p)]
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(left, timeout=10)
        return [f"{p.pid} {_name(p)}" for p in left]

    def remaining(self) -> list[str]:
        """Started processes still alive (a zombie counts as gone)."""
        return [f"{p.pid} {_name(p)}" for p in self.seen.values() if _alive(p)]


def _alive(p: psutil.Process) -> bool:
    # is_running also compares the start time, so a reused pid is not mistaken for ours.
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:120]
    except psutil.Error:
        return "?"


def new_token() -> str:
    """A fresh cluster token, as `ray get-auth-token --generate` makes (256 random bits)."""
    return secrets.token_hex(32)


__all__ = ["LocalCluster", "cluster_env", "free_port_range", "free_ports", "new_token", "ray"]
