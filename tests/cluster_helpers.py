"""A real two-node Ray cluster on this machine, started and stopped without touching other Rays.

`ray stop` ends every Ray process on the machine (it matches process names), so this cluster
records the process tree of its own `ray start --block` commands and ends only those.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

# Ray ships psutil in ray/thirdparty_files and puts that folder on sys.path when imported.
import ray  # noqa: F401

# isort: split
import psutil

REPO = Path(__file__).resolve().parent.parent
WORKER_PORTS = 40
"""Ports each node's worker processes may bind (drivers, job supervisors, actors, slack)."""


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports the kernel reports free right now."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def free_port_range(size: int, low: int = 20_000, high: int = 40_000) -> int:
    """First of `size` consecutive free ports, from a random start to dodge other clusters."""
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


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def new_token() -> str:
    """A fresh cluster token, as `ray get-auth-token --generate` makes one (256 random bits)."""
    return secrets.token_hex(32)


def cluster_env(token: str) -> dict[str, str]:
    """Environment of every process the cluster tests start: token auth, no display, no W&B."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        SDL_VIDEODRIVER="dummy",
        WANDB_MODE="disabled",
        WANDB_SILENT="true",
        # docs/cluster.md: the switch on every node and client; the token from the environment
        # keeps ~/.ray/auth_token (shared with other local clusters) out of the test.
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
        # A node drains for 30 s on SIGTERM by default (ray_constants); nothing here needs it.
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        # On a shared 2-core machine at load 20-30 the GCS once declared a busy node dead after
        # the default 5 missed health checks (3 s apart); allow 20.
        RAY_health_check_failure_threshold="20",
    )
    return env


def node_port_args(head: bool) -> list[str]:
    """Every port flag of `ray start` set to a free port, so no default port can collide."""
    names = [
        "--node-manager-port", "--object-manager-port", "--metrics-export-port",
        "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
    ]  # fmt: skip
    if head:
        names.append("--ray-client-server-port")
    first = free_port_range(WORKER_PORTS)
    workers = range(first, first + WORKER_PORTS)
    ports = free_ports(len(names))
    while any(p in workers for p in ports):  # a free port inside the worker range collides
        ports = free_ports(len(names))
    args = [f"{name}={port}" for name, port in zip(names, ports, strict=True)]
    return [*args, f"--min-worker-port={first}", f"--max-worker-port={first + WORKER_PORTS - 1}"]


@dataclass
class LocalCluster:
    """A head and one worker node on this machine; `stop` ends exactly what they started."""

    tmp: Path
    env: dict[str, str]
    cpus_per_node: int = 2
    gcs_port: int = 0
    dashboard_port: int = 0
    ray_tmp: str = ""
    nodes: list[subprocess.Popen] = field(default_factory=list)
    seen: dict[int, psutil.Process] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the head and a worker node with a `worker_node` resource; wait for both."""
        deadline = time.monotonic() + timeout_s
        self.gcs_port, self.dashboard_port = free_ports(2)
        # `ray start` writes its address file here, not to /tmp/ray, so no other test's bare
        # `ray.init()` joins this cluster; a short path because AF_UNIX paths end at 107 bytes.
        self.ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        common = [f"--num-cpus={self.cpus_per_node}", f"--object-store-memory={100 * 2**20}",
                  "--disable-usage-stats", "--block"]  # fmt: skip
        head = self._spawn("head", [
            "--head", f"--port={self.gcs_port}", f"--temp-dir={self.ray_tmp}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}", *common, *node_port_args(head=True),
        ])  # fmt: skip
        # The worker node waits in GCS for the head's raylet, so it may start once GCS listens.
        while not _accepts(self.gcs_port):
            self._check_alive(*head, deadline)
            time.sleep(0.2)
        worker = self._spawn("worker", [
            f"--address={self.address}", "--resources", json.dumps({"worker_node": 2}),
            *common, *node_port_args(head=False),
        ])  # fmt: skip
        for node in (head, worker):
            while b"Ray runtime started" not in node[1].read_bytes():
                self._check_alive(*node, deadline)
                time.sleep(0.2)
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _spawn(self, name: str, args: list[str]) -> tuple[subprocess.Popen, Path]:
        log = self.tmp / f"ray-start-{name}.log"
        with open(log, "wb") as out:
            # Its own session keeps pytest's Ctrl-C away; the node still ends if pytest dies.
            proc = subprocess.Popen(["ray", "start", *args], env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_term_on_parent_death)  # fmt: skip
        self.nodes.append(proc)
        return proc, log

    def _check_alive(self, proc: subprocess.Popen, log: Path, deadline: float) -> None:
        self.snapshot()
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args[:3]} did not start:\n{log.read_text()[-3000:]}")

    def snapshot(self) -> None:
        """Record every live descendant of the `ray start` commands before any is orphaned."""
        for node in self.nodes:
            # An unreaped child keeps its pid, so a running `node` cannot be a reused pid.
            if node.poll() is not None:
                continue
            try:
                root = psutil.Process(node.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for p in procs:
                if p.pid not in self.seen or not self.seen[p.pid].is_running():
                    self.seen[p.pid] = p
                # Refreshed each time: a fork is recorded before it execs gcs_server or raylet.
                self.names[p.pid] = _cmdline(p) or self.names.get(p.pid, "?")

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            self.snapshot()

    def popen(self, args: list[str], log: Path) -> subprocess.Popen:
        """Start a client command (driver, `ray job submit`) in the repository, output to `log`."""
        with open(log, "wb") as out:
            return subprocess.Popen(args, env=self.env, cwd=REPO, stdout=out,
                                    stderr=subprocess.STDOUT)  # fmt: skip

    def api(self, path: str, token: str | None = "") -> tuple[int, dict]:
        """GET a dashboard endpoint with the cluster's token (or `token`; None sends none)."""
        token = self.env["RAY_AUTH_TOKEN"] if token == "" else token
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        request = urllib.request.Request(self.dashboard + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, {}

    def list_state(self, resource: str) -> list[dict]:
        """Records of the state API (`ray list <resource>`), e.g. nodes or actors."""
        status, body = self.api(f"/api/v0/{resource}?limit=1000")
        if status != 200:
            raise RuntimeError(f"state API /api/v0/{resource} answered {status}")
        return body["data"]["result"]["result"]

    def stop(self, grace_s: float = 30.0) -> list[str]:
        """SIGTERM the nodes (worker first), kill what they leave; returns what had to be killed."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()
        self.snapshot()
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
        if self.ray_tmp:
            logs = Path(self.ray_tmp) / "session_latest" / "logs"
            if logs.is_dir() and not (self.tmp / "ray-logs").exists():
                shutil.copytree(logs, self.tmp / "ray-logs")
            shutil.rmtree(self.ray_tmp, ignore_errors=True)
        return [f"{p.pid} {self.names[p.pid]}" for p in left]


def _term_on_parent_death() -> None:
    # prctl(PR_SET_PDEATHSIG, SIGTERM): `ray start --block` then stops its node as on `stop`.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def _alive(p: psutil.Process) -> bool:
    # is_running also compares the start time, so a reused pid is never taken for ours.
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:160]
    except psutil.Error:
        return ""
