"""Training on a real two-node Ray cluster (two `ray start` here), the way docs/cluster.md says.

Covers joining with `--address host:port` and `ray job submit --working-dir .` under token
authentication, both at once on the same cluster, env workers on both nodes, and runs that
leave the cluster up with none of their actors behind. The fixture ends exactly the processes
this module started (never `ray stop`, which would also end every other Ray on the machine).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

if shutil.which("ray") is None:
    pytest.skip("the `ray` command line is not installed", allow_module_level=True)

from tests.cluster_helpers import LocalCluster, cluster_env, new_token  # noqa: E402

pytestmark = pytest.mark.ray

TOTAL_STEPS = 200
NUM_WORKERS = 2
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and a worker node, 2 CPUs each, with a token made for this module."""
    # Two concurrent runs, each a 1-CPU replay and two 1-CPU env workers, exactly fill the two
    # 3-CPU nodes, so env workers land on both whichever node each replay takes.
    live = LocalCluster(
        tmp_path_factory.mktemp("cluster"), cluster_env(new_token()), cpus_per_node=3
    )
    try:
        live.start()
        yield live
    finally:
        live.stop()


def train_args(run_dir: Path, address: str) -> list[str]:
    return [
        "launch.py", "train", "--preset", "tiny", "--address", address,
        "--num-workers", str(NUM_WORKERS), "--learner-cpus", "0",
        "--total-steps", str(TOTAL_STEPS), "--run-dir", str(run_dir),
        "--eval.every", "0", "--wandb", "disabled",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(cluster):
    """Both documented ways to train, at once: 2 + 2 env workers fill the cluster's 4 CPUs."""
    tmp = cluster.tmp
    submission_id = f"distributed-sac-{uuid.uuid4().hex[:8]}"
    direct = cluster.popen(
        [sys.executable, *train_args(tmp / "direct-run", cluster.address)], tmp / "direct.log"
    )
    job = cluster.popen(
        ["ray", "job", "submit", "--address", cluster.dashboard, "--submission-id", submission_id,
         "--working-dir", ".", "--", "python", *train_args(tmp / "job-run", "auto")],
        tmp / "job.log",
    )  # fmt: skip
    codes = {}
    deadline = time.monotonic() + RUN_TIMEOUT_S
    for name, proc in (("direct", direct), ("job", job)):
        try:
            codes[name] = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes[name] = proc.wait()
    actors = cluster.list_state("actors")
    return {
        "codes": codes,
        "logs": {name: (tmp / f"{name}.log").read_text() for name in codes},
        "runs": {"direct": tmp / "direct-run", "job": tmp / "job-run"},
        "submission_id": submission_id,
        "actors": actors,
    }


def check_finished_run(run_dir: Path) -> dict:
    """The run reached its step budget and wrote its final checkpoint; returns the last record."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    assert last["agent_steps"] >= TOTAL_STEPS
    assert last["learner_updates"] > 0
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt_*.pt"))
    assert ckpts and ckpts[-1].name == f"ckpt_{last['agent_steps']:012d}.pt"
    assert (run_dir / "checkpoints" / "replay" / "manifest.json").exists()
    return last


def test_both_nodes_joined_with_token_auth(cluster):
    alive = [n for n in cluster.list_state("nodes") if n["state"] == "ALIVE"]
    assert sorted(n["is_head_node"] for n in alive) == [False, True]
    worker = next(n for n in alive if not n["is_head_node"])
    assert worker["resources_total"]["worker_node"] == 2
    assert sum(n["resources_total"]["CPU"] for n in alive) == 2 * 3
    # docs/cluster.md: no token is answered 401, a wrong one 403.
    assert cluster.api("/api/v0/nodes", token=None)[0] == 401
    assert cluster.api("/api/v0/nodes", token="0" * 64)[0] == 403


def test_train_joins_by_address(cluster, runs):
    assert runs["codes"]["direct"] == 0, runs["logs"]["direct"][-4000:]
    run_dir = runs["runs"]["direct"]
    check_finished_run(run_dir)
    assert json.loads((run_dir / "config.json").read_text())["address"] == cluster.address


def test_job_submit_with_working_dir(cluster, runs):
    log = runs["logs"]["job"]
    assert runs["codes"]["job"] == 0, log[-4000:]
    assert f"Job '{runs['submission_id']}' succeeded" in log
    status, job = cluster.api(f"/api/jobs/{runs['submission_id']}")
    assert (status, job["status"]) == (200, "SUCCEEDED")
    assert json.loads((runs["runs"]["job"] / "config.json").read_text())["address"] == "auto"
    check_finished_run(runs["runs"]["job"])


def test_actors_span_both_nodes(cluster, runs):
    node_ids = {n["node_id"] for n in cluster.list_state("nodes")}
    by_job: dict[str, dict[str, dict]] = {}
    for actor in runs["actors"]:
        if actor.get("name"):
            by_job.setdefault(actor["job_id"], {})[actor["name"]] = actor
    runs_seen = [names for names in by_job.values() if "learner" in names]
    assert len(runs_seen) == 2
    env_workers = [names[f"env-worker-{i}"] for names in runs_seen for i in range(NUM_WORKERS)]
    # The two runs' replays and four env workers fill both 3-CPU nodes: both nodes host workers
    # that fed a replay actor on one of them, so some transitions crossed nodes.
    assert {w["node_id"] for w in env_workers} == node_ids
    for names in runs_seen:
        # docs/cluster.md: the replay actor is pinned beside the learner.
        assert names["replay"]["node_id"] == names["learner"]["node_id"]


def test_finished_runs_leave_the_cluster_up_and_none_of_their_actors(cluster, runs):
    # A run that joins a cluster (--address) must not stop it, and its actors end with it.
    assert runs["codes"] == {"direct": 0, "job": 0}
    ours = {a["actor_id"]: a["name"] for a in runs["actors"] if a.get("name")}
    # Both runs' learner, replay and env workers: without them an empty answer proves nothing.
    assert sorted(ours.values()).count("learner") == 2
    deadline = time.monotonic() + 60  # the state API reports deaths a little late
    while True:
        alive = [
            ours[a["actor_id"]]
            for a in cluster.list_state("actors")
            if a["actor_id"] in ours and a["state"] != "DEAD"
        ]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert alive == []
    assert [n["state"] for n in cluster.list_state("nodes")].count("ALIVE") == 2
