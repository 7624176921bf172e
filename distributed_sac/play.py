"""`launch.py eval`: run a trained policy deterministically, optionally in a window or on video."""

from __future__ import annotations

from pathlib import Path

from distributed_sac.checkpoint import latest_checkpoint
from distributed_sac.config import ACTION_DIMS, TrainConfig
from distributed_sac.evaluation import EvalResult, evaluate
from distributed_sac.policy import Policy
from distributed_sac.run_dir import RunDir, RunDirError, load_run_checkpoint
from distributed_sac.sac_ae import SacAeAgent

RENDER_MODES = ("none", "human")


def resolve(path: str) -> tuple[Path, TrainConfig]:
    """(checkpoint file, its run's config) for a run directory or a checkpoint file."""
    target = Path(path)
    if target.is_dir():
        run, cfg = RunDir.reopen(target)
        ckpt = latest_checkpoint(run.checkpoints)
        if ckpt is None:
            raise ValueError(f"{target} has no checkpoint yet (nothing in {run.checkpoints})")
        return ckpt, cfg
    if target.is_file():
        # save_checkpoint writes into <run_dir>/checkpoints/.
        try:
            _, cfg = RunDir.reopen(target.parent.parent)
        except RunDirError as exc:
            raise RunDirError(f"{target}: cannot find its run's config ({exc})") from None
        return target, cfg
    raise ValueError(f"{target}: no such run directory or checkpoint file")


def load_policy(ckpt: Path, cfg: TrainConfig) -> Policy:
    """The checkpoint's actor on CPU, loaded through the agent's own state dict."""
    payload = load_run_checkpoint(ckpt, cfg)
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


def run_eval(
    path: str, episodes: int, video: str | None, render: str, seed: int, max_steps: int
) -> int:
    """Evaluate the latest (or given) checkpoint deterministically; print returns; exit code."""
    if render not in RENDER_MODES:
        raise ValueError(f"--render must be one of {', '.join(RENDER_MODES)}, got {render!r}")
    if render == "human" and video:
        raise ValueError("--video films off-screen; run it without --render human")
    if max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {max_steps}")
    ckpt, cfg = resolve(path)
    policy = load_policy(ckpt, cfg)
    print(f"checkpoint {ckpt} ({cfg.env}, {policy.version} learner updates)")
    video_path = Path(video) if video else None
    if video_path is not None:
        video_path.parent.mkdir(parents=True, exist_ok=True)
    result = evaluate(
        policy,
        cfg.env,
        cfg.wrappers,
        episodes=episodes,
        seed=seed,
        max_steps=max_steps,
        video_path=video_path,
        render_mode="human" if render == "human" else None,
    )
    print(summary(result))
    if result.video:
        print(f"video: {result.video}")
    return 0
