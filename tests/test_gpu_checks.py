"""benchmarks/gpu_checks.py on the CPU at tiny sizes: the checks gpu_check.sh runs on CUDA."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import gpu_checks
from distributed_sac.replay.staging import Staging

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_all_checks_pass_on_the_cpu(tmp_path, monkeypatch, capsys):
    # The real torch.compile takes about a minute here (gcc); the compiled run's code path
    # is what is checked, so the compiled functions run eagerly.
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    path = tmp_path / "checks.json"
    argv = ["all", "--device", "cpu", "--tiny", "--torch-branch", "--staging-kib", "1"]
    out = gpu_checks.main([*argv, "--updates", "3", "--json", str(path)])
    assert out["ok"], out
    assert json.loads(path.read_text()) == out
    checks = out["checks"]
    assert set(checks) == {"mirror", "bf16", "resync"}
    assert all(c["warnings"] == [] for c in checks.values())
    mirror = checks["mirror"]
    assert mirror["wraps"] >= 4 and mirror["gathers"] == 2 * mirror["applies"]
    # The CUDA code path on CPU tensors: staged in 1 KiB pieces through two reused slots.
    data = mirror["staging"]["data"]
    assert data["nbytes"] <= 2 * 1024 and data["allocations"] <= 2
    assert checks["resync"]["transitions_resynced"] > 0
    runs = checks["bf16"]["runs"]
    assert set(runs) == {"eager", "compile"} and all(r["finite"] for r in runs.values())
    assert runs["compile"]["speedups"]["compile"] and not runs["eager"]["speedups"]["compile"]
    assert checks["bf16"]["first_update_max_rel_diff"] == 0.0  # the same eager code, same seed
    table = capsys.readouterr().out
    assert "mirror  ok" in table and "gpu_checks on cpu: all ok" in table
    assert gpu_checks.main(["mirror", "--device", "cpu", "--tiny"])["ok"]  # the numpy branch


def test_the_checks_pass_with_rgb_frames(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    argv = ["all", "--device", "cpu", "--tiny", "--rgb", "--torch-branch", "--staging-kib", "1"]
    out = gpu_checks.main([*argv, "--updates", "2"])
    assert out["ok"], out
    assert out["meta"]["frame_shape"] == [3, 16, 16]
    assert gpu_checks.TINY.rgb().obs_shape == (9, 16, 16) and gpu_checks.TINY.rgb().channels == 3


def test_the_mirror_checks_catch_a_corrupted_upload(monkeypatch):
    upload = Staging.upload

    def corrupt(self, *arrays):
        outs = upload(self, *arrays)
        if outs[0].dtype == torch.uint8 and outs[0].numel() > 1:  # frames of an apply
            outs[0].view(-1)[-1] += 1
        return outs

    monkeypatch.setattr(Staging, "upload", corrupt)
    cpu = torch.device("cpu")
    result = gpu_checks.check_mirror(cpu, gpu_checks.TINY, wraps=1, torch_branch=True)
    assert not result["ok"] and set(result["mismatches"]) <= {"obs", "next_obs"}
    result = gpu_checks.check_resync(cpu, gpu_checks.TINY, torch_branch=True)
    assert not result["ok"] and result["mismatches"]


def test_a_warning_fails_a_check(monkeypatch):
    def noisy(*args, **kwargs):
        ro = np.zeros(2)
        ro.setflags(write=False)
        torch.from_numpy(ro)  # the read-only view the checks exist to catch
        return {"ok": True}

    monkeypatch.setattr(gpu_checks, "check_mirror", noisy)
    result = gpu_checks.run_checks(["mirror"], torch.device("cpu"), gpu_checks.TINY)
    assert not result["mirror"]["ok"] and "not writable" in result["mirror"]["warnings"][0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_checks_refuse_a_machine_without_cuda(capsys):
    with pytest.raises(SystemExit) as info:
        gpu_checks.main(["all", "--device", "cuda"])
    assert info.value.code == 2 and "no CUDA device" in capsys.readouterr().err
