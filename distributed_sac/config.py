"""One frozen dataclass tree for the whole system; `launch.py` parses it once.

Each component receives only its own part (``EnvConfig`` for environments, ``AgentConfig``
for the learner, ...). Docstrings under fields become ``--help`` text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from distributed_sac.rules import Choice, Num, Text

EnvName = Literal["CarRacing", "VisualPendulum"]
ENV_NAMES: tuple[EnvName, ...] = get_args(EnvName)
"""The project's own environments; `dmc:DOMAIN-TASK` and `gym:ID` name any other pixel task
(distributed_sac/envs.py)."""
ACTION_DIMS = {"CarRacing": 3, "VisualPendulum": 1}
"""Action dimensions of the project's own environments, all in [-1, 1]; envs.action_dim(name)
answers for every env."""
ENV_PATTERN = r"CarRacing|VisualPendulum|dmc:[a-z0-9_]+-[a-z0-9_]+|gym:[A-Za-z0-9_./:-]+"
"""What --env accepts before the env itself is looked up (distributed_sac/envs.py)."""
PENDULUM_RENDER_SIZE = 500
"""Side of Pendulum-v1's rgb_array render; the pendulum's pivot is the frame's centre."""

# Evaluation seeds (docs/design.md, Seeds). Env worker i's env j first resets with seed
# rollout.worker_seed(root seed, i, restarts) + j, a 32-bit SeedSequence draw, and later episodes
# continue that env's generator; demonstrations from `launch.py record --seed S` use S, S + 1, ...
TRAINING_EVAL_SEED_OFFSET = 10_000_000
"""Training-time evaluation episode k (every evaluation) resets with root seed + this + k."""
HELD_OUT_EVAL_SEED = 2**33
"""`launch.py eval` (and a sweep's final evaluation) episode k resets with this + k: above every
32-bit worker seed and every training-time evaluation seed (root seeds are below 2**31)."""
SOLVED_THRESHOLDS = {"CarRacing": 900.0}
"""Mean return over 100 consecutive episodes that solves an env: CarRacing-v3's registered
reward_threshold. VisualPendulum has none (gymnasium registers none for Pendulum-v1)."""
SOLVED_EPISODES = 100
"""Episodes the solved criterion averages over."""


@dataclass(frozen=True)
class EnvConfig:
    """Observation pipeline of the pixel environments (docs/design.md, Environments)."""

    image_size: int = 84
    """Side of the square observation, 16 to 84; 84 as in docs/design.md (Observations),
    smaller only for small runs."""
    frame_stack: int = 4
    """Frames stacked channels-first in each observation; --env dmc:... takes 3 (the
    PlaNet-benchmark protocol) unless given."""
    action_repeat: int = 3
    """Env frames per agent step; rewards are summed over the repeat. --env dmc:... takes the
    task's (cartpole 8, finger 2, walker 2, others 4) and gym:... takes 1, unless given."""
    grayscale: bool = True
    """Observe luma frames (one channel each); false keeps RGB (three channels per frame).
    --env dmc:... takes RGB (as the papers do) unless given, every other env grayscale."""
    camera: int | None = None
    """dmc: camera the frames are rendered from; None takes the papers' (quadruped 2, else 0)."""
    pendulum_crop: int = 500
    """VisualPendulum: side of the centred square cut from the 500x500 render before resizing;
    500 keeps the whole frame (docs/design.md, Environments), 260 keeps only the pendulum's
    reach (rod, tip, arrow)."""
    fast_render: bool = True
    """CarRacing: render only observed frames with vectorized culling (byte-identical)."""
    early_stop_window: int = 100
    """CarRacing: agent steps in the window of the early-termination rule."""
    early_stop_threshold: float = -30.0
    """CarRacing: terminate when the window's reward sum drops below this."""
    early_stop_penalty: float = -10.0
    """CarRacing: extra reward added on early termination."""

    @property
    def channels(self) -> int:
        """Channels of one frame: 1 grayscale, 3 RGB."""
        return 1 if self.grayscale else 3

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one stored frame: (H, W) grayscale, (3, H, W) RGB."""
        side = (self.image_size, self.image_size)
        return side if self.grayscale else (3, *side)

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        """Channels-first uint8 observation shape: the stack's frames' channels in order
        (frame 0's channels first), then height and width."""
        return (self.frame_stack * self.channels, self.image_size, self.image_size)


@dataclass(frozen=True)
class AgentConfig:
    """SAC-AE networks, losses and optimisation (docs/design.md, The agent)."""

    num_conv_layers: int = 4
    """Conv layers in the encoder (3x3, first stride 2)."""
    num_filters: int = 32
    """Filters per conv layer."""
    latent_dim: int = 64
    """Encoder output size after linear + LayerNorm."""
    hidden_dim: int = 1024
    """Hidden units of the actor and critic MLPs."""
    batch_size: int = 128
    """Transitions per learner update."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.0075
    """Soft-update rate of the target critic and target encoder."""
    target_update_every: int = 2
    """Learner updates between target soft updates."""
    actor_update_every: int = 2
    """Learner updates between actor (and temperature) updates."""
    actor_lr: float = 3e-4
    """Actor learning rate."""
    critic_lr: float = 3e-4
    """Critic (Q heads) learning rate."""
    encoder_lr: float = 5e-4
    """Encoder learning rate (reconstruction loss)."""
    decoder_lr: float = 1e-3
    """Decoder learning rate."""
    alpha_lr: float = 1e-4
    """Entropy temperature learning rate."""
    init_alpha: float = 0.5
    """Initial entropy temperature."""
    log_std_min: float = -20.0
    """Lower clamp of the actor's log standard deviation."""
    log_std_max: float = 2.0
    """Upper clamp of the actor's log standard deviation."""
    latent_l2: float = 1e-6
    """L2 penalty on the latent vector in the reconstruction loss (SAC-AE, Yarats et al. 2019)."""
    decoder_weight_decay: float = 1e-7
    """Weight decay of the decoder (SAC-AE)."""
    forward_loss_weight: float = 0.0
    """Weight of an auxiliary latent forward model (predicts the target encoder's next latent from
    latent and action, cosine loss, trained with the autoencoder); 0 is plain SAC-AE."""
    bc_weight: float = 0.0
    """Weight of a behaviour-cloning term in the actor loss on the demonstration rows of each
    batch (squared error of tanh(mu) against the demonstrated action, TD3+BC); 0 is plain
    SAC-AE, and without --demos it has no effect."""
    frame_diff: bool = False
    """Encoder input: the newest frame and the consecutive frame differences, not the raw stack."""
    augment_pad: int = 4
    """Random-shift augmentation padding in pixels (DrQ); 0 disables it."""
    fast_path: bool = True
    """Fused update: one encoder pass shared by critic and actor, channels-last, AMP on CUDA."""
    compile: bool = False
    """torch.compile the networks (useful on GPU; slow to warm up)."""


@dataclass(frozen=True)
class ReplayConfig:
    """The frame-deduplicated replay buffer and its rate limiter."""

    capacity: int = 100_000
    """Transitions kept; each stores one 84x84 frame (1M fits in about 8 GB)."""
    min_size: int = 1_000
    """Transitions in replay before the learner starts updating."""
    replay_ratio: float = 1.0
    """Target learner updates per agent step (samples-per-insert divided by batch size)."""
    ratio_tolerance: float = 0.1
    """Relative slack of the rate limiter before it throttles the side that runs ahead."""
    demo_fraction: float = 0.25
    """Share of each batch drawn from demonstrations when any are loaded."""


@dataclass(frozen=True)
class RolloutConfig:
    """How env workers act and ship data."""

    exploration_steps: int = 5_000
    """First agent steps (counted over all workers) act uniformly at random."""
    chunk_length: int = 64
    """Agent steps per transition chunk sent to replay (shorter at episode ends)."""
    reward_smoothing: bool = False
    """Exponential moving average of rewards within an episode."""
    reward_smoothing_alpha: float = 0.1
    """Smoothing factor of the reward moving average."""
    weights_poll_every: int = 16
    """Agent steps between non-blocking checks for newer policy weights."""


@dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation of the deterministic policy in a separate worker."""

    every: int = 10_000
    """Agent steps between evaluations; 0 disables them."""
    episodes: int = 5
    """Episodes per evaluation; their mean return is logged."""
    video: bool = True
    """Record an mp4 of the first evaluation episode."""
    max_episode_steps: int = 1_000
    """Agent-step cap per evaluation episode; `launch.py eval` applies the same cap unless given
    --max-steps, and both print it."""


@dataclass(frozen=True)
class TrainConfig:
    """Distributed SAC-AE training."""

    env: str = "CarRacing"
    """Environment to train on: CarRacing, VisualPendulum, dmc:DOMAIN-TASK (the DeepMind Control
    Suite, e.g. dmc:cartpole-swingup) or gym:ID (a gymnasium env with a Box action space and
    rgb_array rendering, e.g. gym:MountainCarContinuous-v0)."""
    num_workers: int | None = None
    """Env-worker actors, 1 CPU each; None takes one per core but one (at least 1)."""
    envs_per_worker: int = 1
    """Environments stepped by each worker with one batched policy forward."""
    total_steps: int = 1_000_000
    """Agent steps to train for (each is `action_repeat` env frames)."""
    seed: int = 0
    """Root seed: env worker i (after r restarts) seeds its env j with a 32-bit SeedSequence draw
    of (seed, i, r) plus j; training-time evaluation episode k resets with seed + 10,000,000 + k."""
    run_dir: str = ""
    """Run directory; empty picks runs/<env>-<timestamp>."""
    address: str | None = None
    """Ray cluster to join (`auto` or host:port); omitted starts a local Ray."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Learner device; auto takes a GPU when the cluster offers one."""
    learner_cpus: float = 1.0
    """CPUs the learner actor reserves (0 lets it share cores with the env workers)."""
    schedule_timeout_s: float = 600.0
    """Seconds to wait for the cluster to place every actor before giving up with an error."""
    weights_publish_every: int = 100
    """Learner updates between policy-weight publications."""
    checkpoint_every: int = 50_000
    """Agent steps between checkpoints (a final one is always written)."""
    keep_checkpoints: int = 3
    """Checkpoints kept on disk; older ones are deleted."""
    log_every_s: float = 10.0
    """Seconds between lines in metrics.jsonl."""
    wandb: Literal["offline", "online", "disabled"] = "offline"
    """Weights & Biases mode; offline needs no account."""
    wandb_project: str = "distributed-sac-ae"
    """W&B project name."""
    wandb_entity: str | None = None
    """W&B entity (team or user)."""
    wandb_name: str | None = None
    """W&B run name; None takes the run directory's name."""
    wandb_group: str | None = None
    """W&B group; None takes the env name."""
    wandb_tags: tuple[str, ...] = ()
    """W&B tags; empty takes the env and the preset."""
    dashboard_host: str = "127.0.0.1"
    """Interface the local Ray dashboard listens on."""
    wrappers: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def default_num_workers() -> int:
    """One env worker per core, keeping one core for the learner (at least 1)."""
    return max(1, (os.cpu_count() or 2) - 1)


# Validation: every field has one rule here, checked before Ray or torch is imported. make_env
# runs the `wrappers.*` rules too, so the environments and the command line share one bound.

IMAGE_SIZE_RANGE = (16, 84)
"""Observation sides the pipeline supports: CarRacing's crop is 84 (area resize only shrinks),
and below 16 pixels no encoder layer fits."""


class ConfigError(ValueError):
    """A config value outside its allowed range; the message names flag, value and range."""


def _max_conv_layers(cfg: TrainConfig) -> int:
    # networks.conv_output_size(size, n) = (size - 3) // 2 + 1 - 2 (n - 1) must stay >= 1.
    return ((cfg.wrappers.image_size - 3) // 2) // 2 + 1


_BOOL = Choice((False, True))
_POS_INT, _POS_FLOAT = Num(int, 1), Num(float, 0, lo_open=True)
_BATCH = ("--agent.batch-size", lambda c: c.agent.batch_size)
_CAPACITY = ("--replay.capacity", lambda c: c.replay.capacity)
_IMAGE = ("--wrappers.image-size", lambda c: c.wrappers.image_size)

RULES: dict[str, Any] = {
    "env": Text(
        pattern=ENV_PATTERN,
        describe="CarRacing, VisualPendulum, dmc:DOMAIN-TASK or gym:ID",
    ),
    "num_workers": Num(int, 1, optional=True),
    "envs_per_worker": _POS_INT,
    "total_steps": _POS_INT,
    "seed": Num(int, 0, 2**31 - 1),
    "run_dir": Text(),
    "address": Text(
        optional=True,
        pattern=r"auto|[^\s:/]+:\d+|[a-z]+://\S+",
        describe="'auto', host:port or a ray:// address",
    ),
    "device": Choice(("auto", "cpu", "cuda")),
    "learner_cpus": Num(float, 0),
    "schedule_timeout_s": _POS_FLOAT,
    "weights_publish_every": _POS_INT,
    "checkpoint_every": _POS_INT,
    "keep_checkpoints": _POS_INT,
    "log_every_s": _POS_FLOAT,
    "wandb": Choice(("offline", "online", "disabled")),
    "wandb_project": Text(nonempty=True),
    "wandb_entity": Text(nonempty=True, optional=True),
    "wandb_name": Text(nonempty=True, optional=True),
    "wandb_group": Text(nonempty=True, optional=True),
    "wandb_tags": Text(nonempty=True, many=True),
    "dashboard_host": Text(nonempty=True),
    "wrappers.image_size": Num(int, *IMAGE_SIZE_RANGE),
    "wrappers.frame_stack": Num(int, 1, 16),
    "wrappers.action_repeat": _POS_INT,
    "wrappers.grayscale": _BOOL,
    "wrappers.camera": Num(int, 0, optional=True),
    "wrappers.pendulum_crop": Num(int, _IMAGE, PENDULUM_RENDER_SIZE),
    "wrappers.fast_render": _BOOL,
    "wrappers.early_stop_window": _POS_INT,
    "wrappers.early_stop_threshold": Num(float),
    "wrappers.early_stop_penalty": Num(float),
    "agent.num_conv_layers": Num(int, 1, ("most that fit the image size", _max_conv_layers)),
    "agent.num_filters": _POS_INT,
    "agent.latent_dim": _POS_INT,
    "agent.hidden_dim": _POS_INT,
    "agent.batch_size": Num(int, 1, _CAPACITY),
    "agent.gamma": Num(float, 0, 1),
    "agent.tau": Num(float, 0, 1, lo_open=True),
    "agent.target_update_every": _POS_INT,
    "agent.actor_update_every": _POS_INT,
    "agent.actor_lr": _POS_FLOAT,
    "agent.critic_lr": _POS_FLOAT,
    "agent.encoder_lr": _POS_FLOAT,
    "agent.decoder_lr": _POS_FLOAT,
    "agent.alpha_lr": _POS_FLOAT,
    "agent.init_alpha": _POS_FLOAT,
    "agent.log_std_min": Num(
        float, None, ("--agent.log-std-max", lambda c: c.agent.log_std_max), hi_open=True
    ),
    "agent.log_std_max": Num(float),
    "agent.latent_l2": Num(float, 0),
    "agent.decoder_weight_decay": Num(float, 0),
    "agent.forward_loss_weight": Num(float, 0),
    "agent.bc_weight": Num(float, 0),
    "agent.frame_diff": _BOOL,
    "agent.augment_pad": Num(int, 0, _IMAGE),
    "agent.fast_path": _BOOL,
    "agent.compile": _BOOL,
    "replay.capacity": _POS_INT,
    "replay.min_size": Num(int, _BATCH, _CAPACITY),
    "replay.replay_ratio": _POS_FLOAT,
    "replay.ratio_tolerance": Num(float, 0),
    "replay.demo_fraction": Num(float, 0, 1, hi_open=True),
    "rollout.exploration_steps": Num(int, 0),
    "rollout.chunk_length": _POS_INT,
    "rollout.reward_smoothing": _BOOL,
    "rollout.reward_smoothing_alpha": Num(float, 0, 1, lo_open=True),
    "rollout.weights_poll_every": _POS_INT,
    "eval.every": Num(int, 0),
    "eval.episodes": _POS_INT,
    "eval.video": _BOOL,
    "eval.max_episode_steps": _POS_INT,
}
"""One rule per config field, keyed by its dotted path (the flag without `--`, `_` for `-`)."""


def flag(path: str) -> str:
    """The command-line flag of a config field path: `agent.batch_size` -> `--agent.batch-size`."""
    return "--" + path.replace("_", "-")


def field_value(cfg: TrainConfig, path: str) -> Any:
    value: Any = cfg
    for name in path.split("."):
        value = getattr(value, name)
    return value


def validate(cfg: TrainConfig, prefix: str = "") -> None:
    """Raise ConfigError naming flag, value and allowed range for the first bad field.

    `prefix` ("wrappers.") checks one section only (make_env checks its EnvConfig this way).
    """
    # Fields whose bounds other fields set come last, so a bad bound is reported as itself.
    for path, rule in sorted(RULES.items(), key=lambda item: getattr(item[1], "dynamic", False)):
        if not path.startswith(prefix):
            continue
        value = field_value(cfg, path)
        allowed = rule.check(value, cfg)
        if allowed is not None:
            shown = repr(value) if isinstance(value, str) else value
            if isinstance(value, tuple | list):
                shown = " ".join(map(repr, value))
            raise ConfigError(f"{flag(path)} {shown}: must be {allowed}")


def validate_env(cfg: EnvConfig) -> None:
    """The `wrappers.*` rules of `validate` for one EnvConfig (the environments' own check)."""
    validate(TrainConfig(wrappers=cfg), prefix="wrappers.")
