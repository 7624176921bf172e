"""WandbLogger: offline runs read back from W&B's own transaction log, online fallback, no-op."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from distributed_sac.run.evaluation import write_video
from distributed_sac.run.wandb_logger import WandbLogger, reconstruction_grid, saved_run_id

REPO = Path(__file__).resolve().parents[1]

from tests.wandb_records import config, history  # noqa: E402


def offline_log(run_dir: Path, run_id: str) -> list[Path]:
    return sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb"))


def test_offline_run_holds_config_records_video_and_reconstructions(tmp_path):
    video = tmp_path / "eval.mp4"
    write_video(video, [np.full((16, 16, 3), 40 * i, np.uint8) for i in range(3)])
    cfg = {"env": "VisualPendulum", "agent": {"latent_dim": 16}}
    logger = WandbLogger("offline", "test-project", None, tmp_path, cfg)
    assert logger.mode == "offline"
    logger.log({"agent_steps": 10, "loss/alpha": 0.5, "eval_return_mean": None, "tag": "x"}, 10)
    logger.log({"agent_steps": 20, "loss/alpha": 0.25, "replay_size": np.int64(7)}, 20)
    logger.log_video(str(video), 15)
    obs = np.zeros((2, 3, 8, 8), np.uint8)
    logger.log_reconstructions(obs, obs.astype(np.float32), 20)
    logger.finish()
    logger.finish()

    assert saved_run_id(tmp_path) == logger.run_id
    (log_file,) = offline_log(tmp_path, logger.run_id)
    assert config(log_file)["agent"] == {"latent_dim": 16}
    rows = history(log_file)
    assert [r["agent_steps"] for r in rows] == [10, 20, 15, 20]
    assert [r.get("loss/alpha") for r in rows[:2]] == [0.5, 0.25]
    assert rows[1]["replay_size"] == 7
    assert "eval_return_mean" not in rows[0] and "tag" not in rows[0]
    assert rows[2]["eval/video"]["_type"] == "video-file"
    assert rows[3]["autoencoder/reconstructions"]["_type"] == "image-file"
    assert rows[3]["autoencoder/reconstructions"]["height"] == 2 * 8
    media = log_file.parent / "files" / rows[2]["eval/video"]["path"]
    assert media.read_bytes() == video.read_bytes()


def test_resume_continues_the_same_run_id(tmp_path):
    first = WandbLogger("offline", "p", None, tmp_path, {})
    first.log({"x": 1.0}, 1)
    first.finish()
    second = WandbLogger("offline", "p", None, tmp_path, {}, resume_id=saved_run_id(tmp_path))
    second.log({"x": 2.0}, 2)
    second.finish()
    assert second.run_id == first.run_id
    logs = offline_log(tmp_path, first.run_id)
    assert [[r["x"] for r in history(p)] for p in logs] == [[1.0], [2.0]]


SCRIPT = """
import json, logging, sys
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append((record.levelname, record.name, record.getMessage()))
logging.getLogger().addHandler(Keep(level=logging.WARNING))
from distributed_sac.run.wandb_logger import WandbLogger
logger = WandbLogger(sys.argv[1], "p", None, sys.argv[2], {"a": 1}, init_timeout=2.0)
logger.log({"x": 1.0}, 1)
logger.finish()
print(json.dumps({"mode": logger.mode, "run_id": logger.run_id, "warnings": records,
                  "wandb_imported": "wandb" in sys.modules}))
"""


def run_isolated(mode: str, run_dir: Path, home: Path, **env: str) -> dict:
    """A fresh process: wandb reads its credentials and server once per process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NETRC"))}
    clean.update(HOME=str(home), WANDB_BASE_URL="http://127.0.0.1:9", WANDB_SILENT="true")
    clean.update(PYTHONPATH=str(REPO), **env)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), mode, str(run_dir)],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=run_dir,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_online_without_credentials_falls_back_offline_with_one_warning(tmp_path):
    result = run_isolated("online", tmp_path, tmp_path)
    assert result["mode"] == "offline"
    assert len(result["warnings"]) == 1, result["warnings"]
    level, name, message = result["warnings"][0]
    assert (level, name) == ("WARNING", "distributed_sac")
    assert "no API key" in message and "wandb sync" in message
    assert len(offline_log(tmp_path, result["run_id"])) == 1


def test_online_with_unreachable_server_falls_back_offline(tmp_path):
    # init_timeout=2 s in the script; a hang would end in run_isolated's subprocess timeout.
    result = run_isolated("online", tmp_path, tmp_path, WANDB_API_KEY="a" * 40)
    assert result["mode"] == "offline"
    assert len(result["warnings"]) == 1, result["warnings"]
    assert "cannot reach the server" in result["warnings"][0][2]
    assert len(offline_log(tmp_path, result["run_id"])) == 1


def test_disabled_does_nothing_and_never_imports_wandb(tmp_path):
    result = run_isolated("disabled", tmp_path, tmp_path)
    assert (result["mode"], result["run_id"], result["warnings"]) == ("disabled", None, [])
    assert result["wandb_imported"] is False
    assert not (tmp_path / "wandb").exists()
    logger = WandbLogger("disabled", "p", None, tmp_path, {})
    logger.log_video(str(tmp_path / "missing.mp4"), 1)
    logger.log_reconstructions(np.zeros((1, 1, 2, 2), np.uint8), np.zeros((1, 1, 2, 2)), 1)
    logger.finish()
    assert saved_run_id(tmp_path) is None


def test_unknown_mode_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="wandb mode must be one of"):
        WandbLogger("cloud", "p", None, tmp_path, {})  # type: ignore[arg-type]


def test_reconstruction_grid_puts_frames_beside_their_reconstructions():
    n, s, h, w = 3, 4, 5, 6
    value = (10 * np.arange(n)[:, None] + np.arange(s)[None, :]).astype(np.uint8)
    obs = np.broadcast_to(value[:, :, None, None], (n, s, h, w)).copy()
    recon = obs.astype(np.float32) / 256.0 + 0.0001
    grid = reconstruction_grid(obs, recon)
    assert grid.shape == (n * h, 2 * s * w) and grid.dtype == np.uint8
    for i in range(n):
        for j in range(2 * s):
            tile = grid[i * h : (i + 1) * h, j * w : (j + 1) * w]
            np.testing.assert_array_equal(tile, 10 * i + j % s)
    np.testing.assert_array_equal(reconstruction_grid(obs, obs), grid)
    clipped = reconstruction_grid(obs[:1, :1], np.full((1, 1, h, w), 2.0))
    np.testing.assert_array_equal(clipped[:, w:], 255)


def test_rgb_reconstruction_grid_draws_each_frame_in_colour():
    n, s, h, w = 2, 3, 4, 5
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, s, h, w, 3), dtype=np.uint8)  # (N, S, H, W, RGB)
    obs = np.ascontiguousarray(frames.transpose(0, 1, 4, 2, 3).reshape(n, s * 3, h, w))
    recon = 255 - obs
    grid = reconstruction_grid(obs, recon, channels=3)
    assert grid.shape == (n * h, 2 * s * w, 3) and grid.dtype == np.uint8
    for i in range(n):
        for j in range(s):
            rows = slice(i * h, (i + 1) * h)
            np.testing.assert_array_equal(grid[rows, j * w : (j + 1) * w], frames[i, j])
            right = grid[rows, (s + j) * w : (s + j + 1) * w]
            np.testing.assert_array_equal(right, 255 - frames[i, j])
    with pytest.raises(ValueError, match="not frames of 3 channel"):
        reconstruction_grid(obs[:, :4], recon[:, :4], channels=3)


def test_reconstruction_grid_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match=r"\(N, S, H, W\)"):
        reconstruction_grid(np.zeros((2, 4, 8, 8), np.uint8), np.zeros((2, 4, 8, 7)))
    with pytest.raises(ValueError, match="uint8"):
        reconstruction_grid(np.zeros((2, 4, 8, 8)), np.zeros((2, 4, 8, 8)))
