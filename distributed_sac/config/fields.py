"""One frozen dataclass tree for the whole system; `launch.py` parses it once.

Each component receives only its own part (``EnvConfig`` for environments, ``AgentConfig``
for the learner, ...). Docstrings under fields become ``--help`` text.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from distributed_sac.config.rules import Choice, Num, Rule, Text

EnvName = Literal["CarRacing", "VisualPendulum"]
ENV_NAMES: tuple[EnvName, ...] = get_args(EnvName)
"""The project's own environments; `dmc:DOMAIN-TASK` and `gym:ID` name any other pixel task
(distributed_sac/envs/registry.py)."""
ACTION_DIMS = {"CarRacing": 3, "VisualPendulum": 1}
"""Action dimensions of the project's own environments, all in [-1, 1];
envs.registry.action_dim(name) answers for every env."""
ENV_PATTERN = r"CarRacing|VisualPendulum|dmc:[a-z0-9_]+-[a-z0-9_]+|gym:[A-Za-z0-9_./:-]+"
"""What --env accepts before the env itself is looked up (distributed_sac/envs/registry.py)."""
PENDULUM_RENDER_SIZE = 500
"""Side of Pendulum-v1's rgb_array render; the pendulum's pivot is the frame's centre."""

# Evaluation seeds (docs/design.md, Seeds). Env worker i's env j first resets with seed
# rollout.worker_seed(root seed, i, restarts) + j, a 32-bit SeedSequence draw, and later episodes
# continue that env's generator; demonstrations from `launch.py record --seed S` use S, S + 1, ...
TRAINING_EVAL_SEED_BASE = 2**34
"""Training-time evaluation episode k (every evaluation) of root seed r resets with
this + r * TRAINING_EVAL_SEED_STRIDE + k: above the held-out seeds and every worker seed."""
TRAINING_EVAL_SEED_STRIDE = 2**20
"""Seeds each root seed's training-time evaluation owns, so no two root seeds share an episode
(root + offset + k, used before, gave roots 0 and 1 nine of ten start states in common)."""
HELD_OUT_EVAL_SEED = 2**33
"""`launch.py eval` (and a sweep's final evaluation) episode k resets with this + k: above every
32-bit worker seed, below every training-time evaluation seed."""


def training_eval_seed(root: int) -> int:
    """The seed of training-time evaluation episode 0 for root seed `root` (episode k adds k)."""
    return TRAINING_EVAL_SEED_BASE + root * TRAINING_EVAL_SEED_STRIDE


SOLVED_THRESHOLDS = {"CarRacing": 900.0}
"""Mean return over 100 consecutive episodes that solves a named env: CarRacing-v3's registered
reward_threshold. VisualPendulum has none (gymnasium registers none for Pendulum-v1); a gym:ID
takes its own spec's (envs.registry.solved_threshold)."""
SOLVED_EPISODES = 100
"""Episodes the solved criterion averages over."""


# Validation: every field declares its rule beside its docstring (`rule(default, ...)`), checked
# before Ray or torch is imported. make_env runs the `wrappers.*` rules too, so the environments
# and the command line share one bound.

IMAGE_SIZE_RANGE = (16, 84)
"""Observation sides the pipeline supports: CarRacing's crop is 84 (area resize only shrinks),
and below 16 pixels no encoder layer fits."""
RULE = "rule"
"""The key of a config field's metadata that holds its rule."""


def rule(default: Any, check: Rule) -> Any:
    """A config field with its default and the rule `validate` checks it against."""
    return field(default=default, metadata={RULE: check})


def _max_conv_layers(cfg: TrainConfig) -> int:
    # networks.conv_output_size(size, n) = (size - 3) // 2 + 1 - 2 (n - 1) must stay >= 1.
    return ((cfg.wrappers.image_size - 3) // 2) // 2 + 1


_BOOL = Choice((False, True))
_POS_INT, _POS_FLOAT = Num(int, 1), Num(float, 0, lo_open=True)
_BATCH = ("--agent.batch-size", lambda c: c.agent.batch_size)
_CAPACITY = ("--replay.capacity", lambda c: c.replay.capacity)
_IMAGE = ("--wrappers.image-size", lambda c: c.wrappers.image_size)
_CONV_FIT = ("most that fit the image size", _max_conv_layers)
_LOG_STD_MAX = ("--agent.log-std-max", lambda c: c.agent.log_std_max)


@dataclass(frozen=True)
class EnvConfig:
    """Observation pipeline of the pixel environments (docs/design.md, Observations)."""

    image_size: int = rule(84, Num(int, *IMAGE_SIZE_RANGE))
    """Side of the square observation, 16 to 84; 84 as in docs/design.md (Observations),
    smaller only for small runs."""
    frame_stack: int = rule(4, Num(int, 1, 16))
    """Frames stacked channels-first in each observation; --env dmc:... takes 3 (the
    PlaNet-benchmark protocol) unless given."""
    action_repeat: int = rule(3, _POS_INT)
    """Env frames per agent step; rewards are summed over the repeat. --env dmc:... takes the
    task's (cartpole 8, finger 2, walker 2, others 4) and gym:... takes 1, unless given."""
    grayscale: bool = rule(True, _BOOL)
    """Observe luma frames (one channel each); false keeps RGB (three channels per frame).
    --env dmc:... takes RGB (as the papers do) unless given, every other env grayscale."""
    camera: int | None = rule(None, Num(int, 0, optional=True))
    """dmc: camera the frames are rendered from; None takes the papers' (quadruped 2, else 0)."""
    pendulum_crop: int = rule(500, Num(int, _IMAGE, PENDULUM_RENDER_SIZE))
    """VisualPendulum: side of the centred square cut from the 500x500 render before resizing;
    500 keeps the whole frame (docs/design.md, VisualPendulum), 260 keeps only the pendulum's
    reach (rod, tip, arrow)."""
    fast_render: bool = rule(True, _BOOL)
    """CarRacing: render only observed frames with vectorized culling (byte-identical)."""
    early_stop_window: int = rule(100, _POS_INT)
    """CarRacing: agent steps in the window of the early-termination rule."""
    early_stop_threshold: float = rule(-30.0, Num(float))
    """CarRacing: terminate when the window's reward sum drops below this."""
    early_stop_penalty: float = rule(-10.0, Num(float))
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
    """SAC-AE networks, losses and optimisation (docs/design.md, Algorithm)."""

    num_conv_layers: int = rule(4, Num(int, 1, _CONV_FIT))
    """Conv layers in the encoder (3x3, first stride 2)."""
    num_filters: int = rule(32, _POS_INT)
    """Filters per conv layer."""
    latent_dim: int = rule(64, _POS_INT)
    """Encoder output size after linear + LayerNorm."""
    hidden_dim: int = rule(1024, _POS_INT)
    """Hidden units of the actor and critic MLPs."""
    batch_size: int = rule(128, Num(int, 1, _CAPACITY))
    """Transitions per learner update."""
    gamma: float = rule(0.99, Num(float, 0, 1))
    """Discount factor."""
    tau: float = rule(0.0075, Num(float, 0, 1, lo_open=True))
    """Soft-update rate of the target critic and target encoder."""
    target_update_every: int = rule(2, _POS_INT)
    """Learner updates between target soft updates."""
    actor_update_every: int = rule(2, _POS_INT)
    """Learner updates between actor (and temperature) updates."""
    actor_lr: float = rule(3e-4, _POS_FLOAT)
    """Actor learning rate."""
    critic_lr: float = rule(3e-4, _POS_FLOAT)
    """Critic (Q heads) learning rate."""
    encoder_lr: float = rule(5e-4, _POS_FLOAT)
    """Encoder learning rate (reconstruction loss)."""
    decoder_lr: float = rule(1e-3, _POS_FLOAT)
    """Decoder learning rate."""
    alpha_lr: float = rule(1e-4, _POS_FLOAT)
    """Entropy temperature learning rate."""
    init_alpha: float = rule(0.5, _POS_FLOAT)
    """Initial entropy temperature."""
    log_std_min: float = rule(-20.0, Num(float, None, _LOG_STD_MAX, hi_open=True))
    """Lower clamp of the actor's log standard deviation."""
    log_std_max: float = rule(2.0, Num(float))
    """Upper clamp of the actor's log standard deviation."""
    latent_l2: float = rule(1e-6, Num(float, 0))
    """L2 penalty on the latent vector in the reconstruction loss (SAC-AE, Yarats et al. 2019)."""
    decoder_weight_decay: float = rule(1e-7, Num(float, 0))
    """Weight decay of the decoder (SAC-AE)."""
    forward_loss_weight: float = rule(0.0, Num(float, 0))
    """Weight of an auxiliary latent forward model (predicts the target encoder's next latent from
    latent and action, cosine loss, trained with the autoencoder); 0 is plain SAC-AE."""
    bc_weight: float = rule(0.0, Num(float, 0))
    """Weight of a behaviour-cloning term in the actor loss on the demonstration rows of each
    batch (squared error of tanh(mu) against the demonstrated action, TD3+BC); 0 is plain
    SAC-AE, and without --demos it has no effect."""
    frame_diff: bool = rule(False, _BOOL)
    """Encoder input: the newest frame and the consecutive frame differences, not the raw stack."""
    augment_pad: int = rule(4, Num(int, 0, _IMAGE))
    """Random-shift augmentation padding in pixels (DrQ); 0 disables it."""
    fast_path: bool = rule(True, _BOOL)
    """Fused update: one encoder pass shared by critic and actor, channels-last, fused Adam, and
    bf16 autocast of the conv stacks and the decoder where the device has bf16 matrix hardware
    (docs/design.md, Fast path)."""
    compile: bool = rule(False, _BOOL)
    """torch.compile the networks (useful on GPU; slow to warm up)."""


@dataclass(frozen=True)
class ReplayConfig:
    """The frame-deduplicated replay buffer and its rate limiter."""

    capacity: int = rule(100_000, _POS_INT)
    """Transitions kept; each stores one 84x84 frame (1M fits in about 8 GB)."""
    min_size: int = rule(1_000, Num(int, _BATCH, _CAPACITY))
    """Transitions in replay before the learner starts updating."""
    replay_ratio: float = rule(1.0, _POS_FLOAT)
    """Target learner updates per agent step (samples-per-insert divided by batch size)."""
    ratio_tolerance: float = rule(0.1, Num(float, 0))
    """Relative slack of the rate limiter before it throttles the side that runs ahead."""
    demo_fraction: float = rule(0.25, Num(float, 0, 1, hi_open=True))
    """Share of each batch drawn from demonstrations when any are loaded."""


@dataclass(frozen=True)
class RolloutConfig:
    """How env workers act and ship data."""

    exploration_steps: int = rule(5_000, Num(int, 0))
    """First agent steps (counted over all workers) act uniformly at random."""
    chunk_length: int = rule(64, _POS_INT)
    """Agent steps per transition chunk sent to replay (shorter at episode ends)."""
    reward_smoothing: bool = rule(False, _BOOL)
    """Exponential moving average of rewards within an episode."""
    reward_smoothing_alpha: float = rule(0.1, Num(float, 0, 1, lo_open=True))
    """Smoothing factor of the reward moving average."""


@dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation of the deterministic policy in a separate worker."""

    every: int = rule(10_000, Num(int, 0))
    """Agent steps between evaluations; 0 disables them."""
    episodes: int = rule(5, Num(int, 1, TRAINING_EVAL_SEED_STRIDE))
    """Episodes per evaluation; their mean return is logged."""
    video: bool = rule(True, _BOOL)
    """Record an mp4 of the first evaluation episode."""
    max_episode_steps: int = rule(1_000, _POS_INT)
    """Agent-step cap per evaluation episode; `launch.py eval` applies the same cap unless given
    --max-steps, and both print it."""


@dataclass(frozen=True)
class TrainConfig:
    """Distributed SAC-AE training."""

    env: str = rule(
        "CarRacing",
        Text(pattern=ENV_PATTERN, describe="CarRacing, VisualPendulum, dmc:DOMAIN-TASK or gym:ID"),
    )
    """Environment to train on: CarRacing, VisualPendulum, dmc:DOMAIN-TASK (the DeepMind Control
    Suite, e.g. dmc:cartpole-swingup) or gym:ID (a gymnasium env with a Box action space and
    rgb_array rendering, e.g. gym:MountainCarContinuous-v0)."""
    num_workers: int | None = rule(None, Num(int, 1, optional=True))
    """Env-worker actors, 1 CPU each; None takes one per core but one (at least 1)."""
    envs_per_worker: int = rule(1, _POS_INT)
    """Environments stepped by each worker with one batched policy forward."""
    total_steps: int = rule(1_000_000, _POS_INT)
    """Agent steps to train for (each is `action_repeat` env frames)."""
    seed: int = rule(0, Num(int, 0, 2**31 - 1))
    """Root seed: env worker i after r restarts draws w = rollout.worker_seed(seed, i, r) (a
    32-bit SeedSequence draw) for its random actions and policy sampling; its env j first resets
    with w + j and later episodes continue that env's generator. Training-time evaluation
    episode k resets with 2**34 + seed * 2**20 + k (docs/design.md, Seeds)."""
    run_dir: str = rule("", Text())
    """Run directory; empty picks runs/<env>-<timestamp>."""
    address: str | None = rule(
        None,
        Text(
            optional=True,
            pattern=r"auto|[^\s:/]+:\d+|[a-z]+://\S+",
            describe="'auto', host:port or a ray:// address",
        ),
    )
    """Ray cluster to join (`auto` or host:port); omitted starts a local Ray."""
    device: Literal["auto", "cpu", "cuda"] = rule("auto", Choice(("auto", "cpu", "cuda")))
    """Learner device; auto takes a GPU when the cluster offers one."""
    learner_cpus: float = rule(1.0, Num(float, 0))
    """CPUs the learner actor reserves (0 lets it share cores with the env workers)."""
    schedule_timeout_s: float = rule(600.0, _POS_FLOAT)
    """Seconds to wait for the cluster to place every actor before giving up with an error."""
    weights_publish_every: int = rule(100, _POS_INT)
    """Learner updates between policy-weight publications."""
    checkpoint_every: int = rule(50_000, _POS_INT)
    """Agent steps between checkpoints (a final one is always written)."""
    keep_checkpoints: int = rule(3, _POS_INT)
    """Checkpoints kept on disk; older ones are deleted."""
    log_every_s: float = rule(10.0, _POS_FLOAT)
    """Seconds between lines in metrics.jsonl."""
    wandb: Literal["offline", "online", "disabled"] = rule(
        "offline", Choice(("offline", "online", "disabled"))
    )
    """Weights & Biases mode; offline needs no account."""
    wandb_project: str = rule("distributed-sac-ae", Text(nonempty=True))
    """W&B project name."""
    wandb_entity: str | None = rule(None, Text(nonempty=True, optional=True))
    """W&B entity (team or user)."""
    wandb_name: str | None = rule(None, Text(nonempty=True, optional=True))
    """W&B run name; None takes the run directory's name."""
    wandb_group: str | None = rule(None, Text(nonempty=True, optional=True))
    """W&B group; None takes the env name."""
    wandb_tags: tuple[str, ...] = rule((), Text(nonempty=True, many=True))
    """W&B tags; empty takes the env and the preset."""
    dashboard_host: str = rule("127.0.0.1", Text(nonempty=True))
    """Interface the local Ray dashboard listens on."""
    wrappers: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def default_num_workers() -> int:
    """One env worker per core, keeping one core for the learner (at least 1)."""
    return max(1, (os.cpu_count() or 2) - 1)


class ConfigError(ValueError):
    """A config value outside its allowed range; the message names flag, value and range."""


def field_rules(cls: type = TrainConfig, prefix: str = "") -> dict[str, Rule]:
    """The rule of every leaf field of the dataclass tree ``cls``, by dotted path (the flag
    without ``--``, ``_`` for ``-``), in field order; TypeError for a field declared without
    one (``rule(default, ...)``)."""
    rules: dict[str, Rule] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory):
            rules.update(field_rules(f.default_factory, f"{prefix}{f.name}."))
        elif RULE in f.metadata:
            rules[prefix + f.name] = f.metadata[RULE]
        else:
            raise TypeError(f"config field {prefix}{f.name} has no rule: declare it with rule()")
    return rules


RULES = field_rules()
"""Every config field's rule by dotted path, read from the fields themselves."""
RETIRED_FIELDS = {
    "rollout.weights_poll_every": "read by nothing: workers get new weights from a parked "
    "`weights` call (remote/weights_client.py), not by polling",
}
"""Fields of older versions, by dotted path, with why each went: a config.json that still holds
one loads without it (`run_dir.config_from_dict`); any other unknown key is an error."""


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
    for path, check in sorted(RULES.items(), key=lambda item: getattr(item[1], "dynamic", False)):
        if not path.startswith(prefix):
            continue
        value = field_value(cfg, path)
        allowed = check.check(value, cfg)
        if allowed is not None:
            shown = repr(value) if isinstance(value, str) else value
            if isinstance(value, tuple | list):
                shown = " ".join(map(repr, value))
            raise ConfigError(f"{flag(path)} {shown}: must be {allowed}")


def validate_env(cfg: EnvConfig) -> None:
    """The `wrappers.*` rules of `validate` for one EnvConfig (the environments' own check)."""
    validate(TrainConfig(wrappers=cfg), prefix="wrappers.")
