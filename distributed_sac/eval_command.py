"""The `launch.py eval` command: load a run's policy, run it deterministically, print returns.

`load` checks the arguments and loads the checkpoint (its errors are usage errors); `run_loaded`
runs the episodes, optionally in a window or on video. The episodes themselves are
`evaluation.evaluate`, shared with training-time evaluation.
"""

from __future__ import annotations

import os
from pathlib import Path

from distributed_sac.config import ACTION_DIMS, TrainConfig
from distributed_sac.evaluation import EvalResult, evaluate
from distributed_sac.policy import Policy
from distributed_sac.run_dir import RunDir, RunDirError, latest_run_checkpoint, load_run_checkpoint
from distributed_sac.sac_ae import SacAeAgent

RENDER_MODES = ("none", "human")


def resolve(path: str) -> tuple[Path, TrainConfig]:
    """(checkpoint file, its run's config) for a run directory or a checkpoint file."""
    ckpt, cfg, _ = _resolve(path)
    return ckpt, cfg


def _resolve(path: str) -> tuple[Path, TrainConfig, dict | None]:
    target = Path(path)
    if target.is_dir():
        run, cfg = RunDir.reopen(target)
        found = latest_run_checkpoint(run.checkpoints, cfg)
        if found is None:
            raise ValueError(f"{target} has no checkpoint yet (nothing in {run.checkpoints})")
        return found[0], cfg, found[1]
    if target.is_file():
        # save_checkpoint writes into <run_dir>/checkpoints/.
        try:
            _, cfg = RunDir.reopen(target.parent.parent)
        except RunDirError as exc:
            raise RunDirError(f"{target}: cannot find its run's config ({exc})") from None
        return target, cfg, None
    raise ValueError(f"{target}: no such run directory or checkpoint file")


def load_policy(ckpt: Path, cfg: TrainConfig, payload: dict | None = None) -> Policy:
    """The checkpoint's actor on CPU, loaded through the agent's own state dict."""
    payload = payload or load_run_checkpoint(ckpt, cfg)
    obs_shape, action_dim = cfg.wrappers.obs_shape, ACTION_DIMS[cfg.env]
    agent = SacAeAgent(obs_shape, action_dim, cfg.agent, device="cpu", seed=cfg.seed)
    agent.load_state_dict(payload["agent"])
    policy = Policy(obs_shape, action_dim, cfg.agent, seed=cfg.seed)
    policy.load(agent.policy_weights())
    return policy


def summary(result: EvalResult) -> str:
    """Per-episode returns and their mean ± std, one line each."""
    lines = [
        f"episode {i + 1}: return {ret:.1f} ({length} steps)"
        for i, (ret, length) in enumerate(zip(result.returns, result.lengths, strict=True))
    ]
    lines.append(
        f"return over {len(result.returns)} episodes: {result.mean:.1f} ± {result.std:.1f}"
    )
    return "\n".join(lines)


def load(
    path: str,
    episodes: int = 1,
    video: str | None = None,
    render: str = "none",
    max_steps: int | None = None,
) -> tuple[Policy, Path, TrainConfig]:
    """Check the arguments and load the policy; ValueError (a usage error) if they are bad."""
    if render not in RENDER_MODES:
        raise ValueError(f"--render {render}: must be one of {', '.join(RENDER_MODES)}")
    if render == "human" and video:
        raise ValueError("--video films off-screen; run it without --render human")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"--max-steps {max_steps}: must be an integer >= 1")
    if episodes < 1:
        raise ValueError(f"--episodes {episodes}: must be an integer >= 1")
    ckpt, cfg, payload = _resolve(path)
    return load_policy(ckpt, cfg, payload), ckpt, cfg


def run_loaded(
    policy: Policy,
    ckpt: Path,
    cfg: TrainConfig,
    episodes: int,
    video: str | None,
    render: str,
    seed: int,
    max_steps: int | None = None,
) -> int:
    """Evaluate a loaded policy deterministically; print the returns; exit code."""
    if render != "human":
        # Off-screen rendering needs no display; without this SDL looks for one and complains.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    cap = cfg.eval.max_episode_steps if max_steps is None else max_steps
    source = "the run's --eval.max-episode-steps" if max_steps is None else "--max-steps"
    print(f"checkpoint {ckpt} ({cfg.env}, {policy.version} learner updates)")
    print(f"episodes capped at {cap} agent steps ({source}), as training-time evaluation is")
    video_path = Path(video) if video else None
    if video_path is not None:
        video_path.parent.mkdir(parents=True, exist_ok=True)
    result = evaluate(
        policy,
        cfg.env,
        cfg.wrappers,
        episodes=episodes,
        seed=seed,
        max_steps=cap,
        video_path=video_path,
        render_mode="human" if render == "human" else None,
    )
    print(summary(result))
    if result.video:
        print(f"video: {result.video}")
    return 0
