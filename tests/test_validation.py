"""config.validate: one rule per field, one line naming flag, value and range; make_env agrees."""

from __future__ import annotations

import dataclasses

import pytest

from distributed_sac.config.fields import (
    IMAGE_SIZE_RANGE,
    RULE,
    RULES,
    AgentConfig,
    ConfigError,
    EnvConfig,
    TrainConfig,
    field_rules,
    flag,
    rule,
    validate,
)
from distributed_sac.config.presets import PRESETS
from distributed_sac.config.rules import Num, Text


def leaf_paths(obj, prefix=""):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from leaf_paths(value, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name


def replace_path(cfg, path, value):
    head, _, name = path.rpartition(".")
    if not head:
        return dataclasses.replace(cfg, **{name: value})
    section = dataclasses.replace(getattr(cfg, head), **{name: value})
    return dataclasses.replace(cfg, **{head: section})


def test_every_config_field_has_exactly_one_rule():
    assert list(RULES) == list(leaf_paths(TrainConfig()))
    # Each rule is the one declared beside its field.
    (batch,) = (f for f in dataclasses.fields(AgentConfig) if f.name == "batch_size")
    assert RULES["agent.batch_size"] is batch.metadata[RULE]
    assert batch.default == AgentConfig().batch_size == 128


def test_a_field_added_without_a_rule_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Section:
        checked: int = rule(1, Num(int, 0))
        unchecked: int = 2

    @dataclasses.dataclass(frozen=True)
    class Tree:
        name: str = rule("x", Text())
        section: Section = dataclasses.field(default_factory=Section)

    with pytest.raises(TypeError, match="config field section.unchecked has no rule"):
        field_rules(Tree)


def test_fields_bounded_by_others_are_checked_after_them():
    bad = replace_path(replace_path(TrainConfig(), "replay.capacity", 0), "replay.min_size", 5)
    with pytest.raises(ConfigError, match=r"^--replay.capacity 0: must be an integer >= 1$"):
        validate(bad)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_are_valid(preset):
    validate(PRESETS[preset]())


def out_of_range(rule: Num, cfg: TrainConfig):
    """Values just outside each end of a numeric rule, and a wrong type."""
    for bound, is_open, step in ((rule.lo, rule.lo_open, -1), (rule.hi, rule.hi_open, +1)):
        if bound is None:
            continue
        value = bound[1](cfg) if isinstance(bound, tuple) else bound
        if rule.kind is int:
            yield int(value) if is_open else int(value) + step
        else:
            yield float(value) if is_open else float(value) + step * 1e-3
    yield "x"


NUMERIC = [path for path, rule in RULES.items() if isinstance(rule, Num)]


@pytest.mark.parametrize("path", NUMERIC)
def test_out_of_range_values_are_refused_with_flag_value_and_range(path):
    cfg = TrainConfig()
    for bad in out_of_range(RULES[path], cfg):
        with pytest.raises(ConfigError) as err:
            validate(replace_path(cfg, path, bad))
        message = str(err.value)
        assert message.startswith(f"{flag(path)} "), message
        assert "must be" in message and "\n" not in message
        assert str(bad) in message


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("wrappers.image_size", 100, "--wrappers.image-size 100: must be an integer in [16, 84]"),
        ("replay.demo_fraction", 1.5, "--replay.demo-fraction 1.5: must be a number in [0, 1)"),
        ("env", "Atari", "--env 'Atari': must be CarRacing, VisualPendulum, dmc:DOMAIN-TASK or"),
        ("address", "nowhere", "--address 'nowhere': must be 'auto', host:port"),
        ("wandb_tags", ("a", ""), "--wandb-tags 'a' '': must be a list of non-empty strings"),
        (
            "replay.min_size",
            10,
            "--replay.min-size 10: must be an integer in [128 (--agent.batch-size), 100000",
        ),
    ],
)
def test_messages_read_as_one_line(path, value, expected):
    with pytest.raises(ConfigError) as err:
        validate(replace_path(TrainConfig(), path, value))
    assert str(err.value).startswith(expected)


def test_make_env_and_validate_share_the_image_size_bounds():
    from distributed_sac.envs.registry import make_env

    lo, hi = IMAGE_SIZE_RANGE
    for size in (lo - 1, hi + 1):
        with pytest.raises(ConfigError) as from_env:
            make_env("VisualPendulum", EnvConfig(image_size=size, pendulum_crop=500))
        with pytest.raises(ConfigError) as from_config:
            validate(TrainConfig(wrappers=EnvConfig(image_size=size)))
        assert str(from_env.value) == str(from_config.value)
    make_env("VisualPendulum", EnvConfig(image_size=lo)).close()
