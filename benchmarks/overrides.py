"""``--set FIELD=VALUE`` for benchmarks: dotted config fields overridden by text."""

from __future__ import annotations

import dataclasses


def override(cfg, items: list[str]):
    """``cfg`` with each dotted ``FIELD=VALUE`` set, the value parsed as the field's type."""
    for item in items:
        path, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"expected FIELD=VALUE, got {item!r}")
        cfg = _set(cfg, path.split("."), text, path)
    return cfg


def _set(obj, names: list[str], text: str, path: str):
    head, rest = names[0], names[1:]
    if not dataclasses.is_dataclass(obj) or head not in {f.name for f in dataclasses.fields(obj)}:
        raise ValueError(f"no config field {path!r}")
    current = getattr(obj, head)
    if rest:
        return dataclasses.replace(obj, **{head: _set(current, rest, text, path)})
    if dataclasses.is_dataclass(current):
        raise ValueError(f"{path!r} is a group of fields, not one")
    if isinstance(current, bool):
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{path} takes true or false, got {text!r}")
        value = text.lower() == "true"
    elif current is None or isinstance(current, str):
        value = text
    elif isinstance(current, int):
        number = float(text)
        if not number.is_integer():
            raise ValueError(f"{path} takes an integer, got {text!r}")
        value = int(number)
    else:
        value = type(current)(text)
    return dataclasses.replace(obj, **{head: value})
