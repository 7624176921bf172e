"""Weights & Biases logging of the driver's metrics records, eval videos and reconstructions.

Offline by default: no account and no network, the run is written under ``run_dir/wandb`` and
uploaded later with ``wandb sync`` (docs/monitoring.md). Online without credentials or without
a reachable server falls back to offline with one warning; it never prompts and never waits
longer than ``init_timeout``. Disabled never imports wandb.
"""

from __future__ import annotations

import logging
import numbers
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

log = logging.getLogger("distributed_sac")

MODES = ("offline", "online", "disabled")
RUN_ID_FILE = "run_id"
"""Inside ``run_dir/wandb``: the W&B run id, so a resumed training continues the same run."""
STEP_METRIC = "agent_steps"


def saved_run_id(run_dir: Path) -> str | None:
    """The W&B run id an earlier session of this run directory wrote, if any."""
    path = Path(run_dir) / "wandb" / RUN_ID_FILE
    if not path.exists():
        return None
    return path.read_text().strip() or None


def reconstruction_grid(obs: np.ndarray, recon: np.ndarray, channels: int = 1) -> np.ndarray:
    """Row i shows sample i's S frames, then their reconstructions: a (N*H, 2*S*W) uint8 image
    for grayscale stacks, (N*H, 2*S*W, 3) for RGB ones (`channels` 3: each frame's 3 channels
    are one colour tile, not three grey ones).

    `obs` is (N, S * channels, H, W) uint8; `recon` has the same shape, as uint8 or as floats
    on the decoder's ``obs / 256`` scale (networks.Decoder).
    """
    obs, recon = np.asarray(obs), np.asarray(recon)
    if obs.ndim != 4 or obs.shape != recon.shape:
        raise ValueError(
            f"obs and recon must both be (N, S, H, W), got {obs.shape} and {recon.shape}"
        )
    if obs.dtype != np.uint8:
        raise ValueError(f"obs must be uint8 pixels, got {obs.dtype}")
    if channels not in (1, 3) or obs.shape[1] % channels:
        raise ValueError(f"{obs.shape[1]} planes are not frames of {channels} channel(s)")
    if recon.dtype != np.uint8:
        recon = np.clip(np.rint(recon.astype(np.float64) * 256.0), 0, 255).astype(np.uint8)
    n, planes, h, w = obs.shape
    s = planes // channels
    pairs = np.concatenate([obs, recon], axis=1).reshape(n, 2 * s, channels, h, w)
    grid = pairs.transpose(0, 3, 1, 4, 2).reshape(n * h, 2 * s * w, channels)
    return np.ascontiguousarray(grid[..., 0] if channels == 1 else grid)


class WandbLogger:
    """One W&B run per training run; every call is a no-op when the mode is ``disabled``."""

    def __init__(
        self,
        mode: Literal["offline", "online", "disabled"],
        project: str,
        entity: str | None,
        run_dir: Path,
        config: dict[str, Any],
        resume_id: str | None = None,
        init_timeout: float = 30.0,
        name: str | None = None,
        group: str | None = None,
        tags: tuple[str, ...] = (),
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"wandb mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self._run = None
        self._run_id: str | None = None
        if mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self._wandb = wandb
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        kwargs = dict(
            project=project,
            entity=entity,
            dir=str(run_dir),
            config=config,
            name=name,
            group=group,
            tags=list(tags) or None,
            id=resume_id,
            resume="allow" if resume_id else None,
        )
        if mode == "online":
            self._run = self._init_online(kwargs, init_timeout, run_dir)
        if self._run is None:
            self.mode = "offline"
            self._run = wandb.init(mode="offline", settings=self._settings(30.0), **kwargs)
            if mode != "offline" and "wandb" in config:
                self._run.config.update({"wandb": self.mode}, allow_val_change=True)
        # Eval videos and reconstructions arrive after later records were logged; keying every
        # chart on agent_steps instead of W&B's own monotonic step keeps them all.
        self._run.define_metric(STEP_METRIC)
        self._run.define_metric("*", step_metric=STEP_METRIC)
        self._run_id = self._run.id
        (run_dir / "wandb" / RUN_ID_FILE).write_text(self._run_id)
        log.info("W&B %s run %s in %s", self.mode, self._run.id, self._run.settings.sync_dir)

    def _settings(self, init_timeout: float) -> Any:
        # console="off": the terminal progress bar must not be mirrored into the run's logs.
        return self._wandb.Settings(
            silent=True, console="off", init_timeout=init_timeout, finish_timeout=60.0
        )

    def _init_online(self, kwargs: dict[str, Any], init_timeout: float, run_dir: Path) -> Any:
        fallback = (
            f"logging offline instead; upload later with `wandb sync {run_dir}/wandb/offline-run-*`"
        )
        try:
            # Reads WANDB_API_KEY, .netrc or the settings file; prompt=False never asks and
            # verify=False makes no network call.
            has_key = self._wandb.login(prompt=False, verify=False)
        except self._wandb.Error as exc:
            log.warning("W&B online: unusable credentials (%s); %s", _first_line(exc), fallback)
            return None
        if not has_key:
            log.warning(
                "W&B online: no API key (set WANDB_API_KEY or run `wandb login`); %s", fallback
            )
            return None
        try:
            return self._wandb.init(mode="online", settings=self._settings(init_timeout), **kwargs)
        except (self._wandb.Error, TimeoutError) as exc:
            log.warning("W&B online: cannot reach the server (%s); %s", _first_line(exc), fallback)
            return None

    @property
    def run_id(self) -> str | None:
        """The W&B run id (pass it back as `resume_id` to continue this run); None if disabled."""
        return self._run_id

    def log(self, record: dict[str, Any], step: int) -> None:
        """Log the record's numeric entries at agent step `step`; None and text are skipped."""
        if self._run is None:
            return
        data = {
            k: v
            for k, v in record.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool)
        }
        data[STEP_METRIC] = int(step)
        self._run.log(data)

    def log_video(self, path: str, step: int, key: str = "eval/video") -> None:
        """Attach an mp4 (an evaluation episode) at agent step `step`."""
        if self._run is None:
            return
        if not Path(path).is_file():
            raise ValueError(f"{path}: no such video file")
        self._run.log({key: self._wandb.Video(str(path), format="mp4"), STEP_METRIC: int(step)})

    def log_reconstructions(
        self, obs: np.ndarray, recon: np.ndarray, step: int, channels: int = 1
    ) -> None:
        """Log a `reconstruction_grid` image of observations beside their decoder outputs."""
        if self._run is None:
            return
        grid = reconstruction_grid(obs, recon, channels)
        caption = "each row: stacked frames, then their reconstructions"
        image = self._wandb.Image(grid, caption=caption)
        self._run.log({"autoencoder/reconstructions": image, STEP_METRIC: int(step)})

    def finish(self) -> None:
        """Flush and close the run; safe to call twice."""
        if self._run is not None:
            self._run.finish()
            self._run = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
