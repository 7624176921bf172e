"""A clean run prints no warning the project can avoid: eval without SDL's display noise, no
read-only-array warning, no colour codes off a terminal, no deprecated Ray API."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

from distributed_sac.config.data import Batch
from distributed_sac.config.presets import tiny_preset
from distributed_sac.run.run_dir import RunDir, save_run_checkpoint
from tests.conftest import run_payload

REPO = Path(__file__).resolve().parents[1]


def test_eval_is_quiet_and_caps_episodes_as_training_evaluation_does(tmp_path):
    import torch

    from distributed_sac.agent.sac_ae import SacAeAgent

    cfg = dataclasses.replace(tiny_preset(), run_dir=str(tmp_path / "run"))
    run = RunDir.create(Path(cfg.run_dir), cfg)
    torch.set_num_threads(1)
    agent = SacAeAgent(cfg.wrappers.obs_shape, 1, cfg.agent, seed=0)
    save_run_checkpoint(run.checkpoints, 1, run_payload(agent.state_dict()), cfg)
    env = {k: v for k, v in os.environ.items() if k not in ("SDL_VIDEODRIVER", "XDG_RUNTIME_DIR")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), "eval", str(run.path), "--episodes", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
    cap = cfg.eval.max_episode_steps
    assert (
        f"episodes capped at {cap} agent steps (the run's --eval.max-episode-steps)" in proc.stdout
    )
    assert f"({cap} steps)" in proc.stdout  # a VisualPendulum episode is 67 agent steps


def test_a_refused_train_prints_its_error_line_and_nothing_from_sdl(tmp_path):
    """MountainCar's render calls pygame.init(): without a display or sound card SDL printed
    ALSA errors and its own `error: XDG_RUNTIME_DIR ...` line beside ours."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SDL_VIDEODRIVER", "SDL_AUDIODRIVER", "XDG_RUNTIME_DIR", "DISPLAY")
    }
    args = ["train", "--preset", "tiny", "--env", "gym:MountainCarContinuous-v0"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args, "--demos", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"},
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: {tmp_path / 'none'}: no such demonstration file or folder"
    ], proc.stderr


def test_batches_from_read_only_arrays_convert_without_a_warning():
    import torch

    from distributed_sac.agent.tensors import batch_tensors

    rng = np.random.default_rng(0)
    shape = (3, 8, 8)
    arrays = {
        "obs": rng.integers(0, 256, (2, *shape), dtype=np.uint8),
        "action": np.zeros((2, 1), np.float32),
        "reward": np.zeros(2, np.float32),
        "next_obs": rng.integers(0, 256, (2, *shape), dtype=np.uint8),
        "terminated": np.zeros(2, bool),
        "truncated": np.zeros(2, bool),
    }
    for arr in arrays.values():
        arr.flags.writeable = False  # as Ray's object store hands them out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensors = batch_tensors(Batch(**arrays), shape, 1, torch.device("cpu"))
    assert torch.equal(tensors.obs, torch.from_numpy(arrays["obs"].copy()))


def test_ray_log_prefixes_have_no_colours_off_a_terminal(monkeypatch):
    from distributed_sac.remote.session import quiet_ray_logs

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    quiet_ray_logs(Terminal())
    assert "RAY_COLOR_PREFIX" not in os.environ
    quiet_ray_logs(io.StringIO())
    assert os.environ["RAY_COLOR_PREFIX"] == "0"


def test_no_deprecated_ray_worker_api():
    sources = [*REPO.glob("distributed_sac/**/*.py"), REPO / "launch.py"]
    assert not [p for p in sources if "ray.worker." in p.read_text()]


def test_reconstructions_of_read_only_observations_raise_no_warning():
    import torch

    from distributed_sac.agent.sac_ae import SacAeAgent

    cfg = tiny_preset()
    torch.set_num_threads(1)
    agent = SacAeAgent(cfg.wrappers.obs_shape, 1, cfg.agent, seed=0)
    obs = np.zeros((2, *cfg.wrappers.obs_shape), np.uint8)
    obs.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert agent.reconstruct(obs).shape == obs.shape
