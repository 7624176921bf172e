"""Cluster configs: launchers pass Ray's own checks; KubeRay manifests hold what KubeRay needs."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
LAUNCHER = ["aws.yaml", "onprem.yaml"]
MANIFESTS = ["raycluster.yaml", "rayjob.yaml"]
LOOPBACK = {"127.0.0.1", "localhost"}
RAY_PIN = re.search(
    r"^ray\[default[^\]]*\]==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE
).group(1)
DOCKERFILE = (KUBERAY / "Dockerfile").read_text()


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def ray_up_view(raw: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` validates: defaults.yaml merged, node types filled, setup commands merged.

    `ray up` also asks AWS for instance resources in between; both configs state them instead.
    """
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_config_passes_ray_validation(name: str) -> None:
    config = ray_up_view(load(CLUSTER / name))
    assert config["head_node_type"] in config["available_node_types"]


DROP = object()


def edited(raw: dict, edits: list[tuple[tuple, Any]]) -> dict:
    """A copy of `raw` with each (path, value) set, or deleted where the value is DROP."""
    config = copy.deepcopy(raw)
    for path, value in edits:
        node = config
        for key in path[:-1]:
            node = node[key]
        if value is DROP:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return config


WORKER = ("available_node_types", "worker.cpu")


@pytest.mark.parametrize(
    "name, edits, error",
    [
        ("aws.yaml", [(("max_workers",), "8")], jsonschema.ValidationError),
        ("aws.yaml", [(("setup_command",), [])], jsonschema.ValidationError),
        ("aws.yaml", [((*WORKER, "node_config"), DROP)], jsonschema.ValidationError),
        ("aws.yaml", [((*WORKER, "resources", "CPU"), 0.5)], jsonschema.ValidationError),
        ("aws.yaml", [(("head_node_type",), "head.missing")], ValueError),
        ("aws.yaml", [((*WORKER, "min_workers"), 9)], ValueError),
        ("onprem.yaml", [(("provider", "worker_ips"), "192.0.2.11")], jsonschema.ValidationError),
    ],
    ids=[
        "str-count",
        "typo-key",
        "no-node-config",
        "fractional-cpu",
        "bad-head",
        "min-gt-max",
        "ips-str",
    ],
)
def test_broken_launcher_config_fails_validation(name: str, edits: list, error: type) -> None:
    raw = load(CLUSTER / name)
    ray_up_view(raw)
    with pytest.raises(error):
        ray_up_view(edited(raw, edits))


def test_aws_gpu_head_and_cpu_workers_scaling_from_zero() -> None:
    config = ray_up_view(load(CLUSTER / "aws.yaml"))
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"]["GPU"] == 1 and head["max_workers"] == 0
    head_start = " ".join(config["head_start_ray_commands"])
    assert f"--num-gpus={head['resources']['GPU']}" in head_start
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all("GPU" not in t["resources"] and t["min_workers"] == 0 for t in workers)
    assert max(t["max_workers"] for t in workers) == config["max_workers"] == 8


@pytest.mark.parametrize("name", LAUNCHER)
def test_every_node_installs_requirements_from_the_synced_project(name: str) -> None:
    config = ray_up_view(load(CLUSTER / name))
    home = f"/home/{config['auth']['ssh_user']}"
    synced_root = [remote for remote, local in config["file_mounts"].items() if local == "."]
    assert len(synced_root) == 1
    for kind in ("head_setup_commands", "worker_setup_commands"):
        installs = [c for c in config[kind] if "requirements.txt" in c]
        assert len(installs) == 1, kind
        path = shlex.split(installs[0])[shlex.split(installs[0]).index("-r") + 1]
        assert path.replace("~", home, 1) == f"{synced_root[0]}/requirements.txt"


@pytest.mark.parametrize("name", LAUNCHER)
def test_dashboard_on_loopback_and_token_auth_on_every_node(name: str) -> None:
    config = ray_up_view(load(CLUSTER / name))
    head_start = " ".join(config["head_start_ray_commands"])
    assert re.search(r"--dashboard-host=(\S+)", head_start).group(1) in LOOPBACK
    assert not any("0.0.0.0" in s for s in strings(config))
    assert any("export RAY_AUTH_MODE=token" in c for c in config["initialization_commands"])
    token = f"/home/{config['auth']['ssh_user']}/.ray/auth_token"
    assert config["file_mounts"][token] == "~/.ray/auth_token"


def cluster_spec(manifest: dict) -> dict:
    return manifest["spec"]["rayClusterSpec"] if manifest["kind"] == "RayJob" else manifest["spec"]


def node_groups(manifest: dict) -> list[tuple[str, dict]]:
    spec = cluster_spec(manifest)
    workers = [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]
    return [("head", spec["headGroupSpec"]), *workers]


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_manifest_names_its_kind_version_and_entrypoint(name: str) -> None:
    manifest = load(KUBERAY / name)
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["metadata"]["name"]
    assert manifest["kind"] == {"raycluster.yaml": "RayCluster", "rayjob.yaml": "RayJob"}[name]
    if manifest["kind"] == "RayJob":
        assert shlex.split(manifest["spec"]["entrypoint"])[:2] == ["python", "launch.py"]
    assert cluster_spec(manifest)["rayVersion"] == RAY_PIN


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_node_groups_are_well_formed(name: str) -> None:
    groups = node_groups(load(KUBERAY / name))
    assert [g for g, _ in groups][1:], "no worker group"
    for group_name, group in groups:
        # KubeRay's CRD types rayStartParams as map[string]string: an int is rejected.
        params = group["rayStartParams"]
        assert all(isinstance(v, str) for v in params.values()), group_name
        assert containers(group), group_name
        assert all(c["name"] and c["image"] for c in containers(group)), group_name
        if group_name != "head":
            sizes = [group["minReplicas"], group["replicas"], group["maxReplicas"]]
            assert all(isinstance(n, int) for n in sizes) and sizes == sorted(sizes), group_name
    assert "ray-head" in [c["name"] for c in containers(groups[0][1])]


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_gpu_only_on_the_head(name: str) -> None:
    # The learner asks for the one GPU; env workers are CPU-only pods.
    for group_name, group in node_groups(load(KUBERAY / name)):
        gpus = sum(
            int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
            for c in containers(group)
        )
        assert gpus == (1 if group_name == "head" else 0), group_name


@pytest.mark.parametrize("name", MANIFESTS)
def test_kuberay_dashboard_is_loopback_or_token_behind_cluster_ip(name: str) -> None:
    spec = cluster_spec(load(KUBERAY / name))
    head = spec["headGroupSpec"]
    # KubeRay's default dashboard host is 0.0.0.0.
    host = head["rayStartParams"].get("dashboard-host", "0.0.0.0")
    if host not in LOOPBACK:
        assert spec["authOptions"]["mode"] == "token"
        assert head.get("serviceType", "ClusterIP") == "ClusterIP"


def test_standalone_cluster_dashboard_on_loopback() -> None:
    params = load(KUBERAY / "raycluster.yaml")["spec"]["headGroupSpec"]["rayStartParams"]
    assert params["dashboard-host"] in LOOPBACK


def test_kuberay_images_are_built_from_requirements() -> None:
    tag = re.search(r"docker build -f cluster/kuberay/Dockerfile -t (\S+) \.", DOCKERFILE).group(1)
    base = re.search(r"^FROM rayproject/ray:(\S+)-py(\d)(\d+)-gpu$", DOCKERFILE, re.MULTILINE)
    assert base.group(1) == RAY_PIN
    assert re.search(r"^RUN pip install .*-r requirements\.txt$", DOCKERFILE, re.MULTILINE)
    for name in MANIFESTS:
        spec = cluster_spec(load(KUBERAY / name))
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        assert {c["image"] for g in groups for c in g["template"]["spec"]["containers"]} == {tag}
    # The launcher configs build the same Python as the image.
    for name in LAUNCHER:
        python = re.search(r"--python (\d+\.\d+)", " ".join(load(CLUSTER / name)["setup_commands"]))
        assert python.group(1) == f"{base.group(2)}.{base.group(3)}"


def test_rayjob_entrypoint_parses_and_writes_to_the_runs_volume() -> None:
    import launch  # here, so the other checks still run while launch.py is being edited

    job = load(KUBERAY / "rayjob.yaml")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "launch.py", "train"]
    cfg = launch.parse_train(argv[3:]).config
    assert (cfg.address, cfg.num_workers) == ("auto", 8)
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mount = head["containers"][0]["volumeMounts"][0]
    assert Path(cfg.run_dir).is_relative_to(mount["mountPath"])
    claim = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in head["volumes"]}[
        mount["name"]
    ]
    assert claim == load(KUBERAY / "runs-pvc.yaml")["metadata"]["name"]
    workdir = re.search(r"^WORKDIR (\S+)$", DOCKERFILE, re.MULTILINE).group(1)
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["working_dir"] == workdir
