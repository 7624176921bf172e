"""Allowed values of config fields, each able to say what it allows in one phrase.

Every config field declares one of these beside its docstring (`config.rule`); `config.validate`
applies them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Bound = float | tuple[str, Callable[[Any], float]]
"""A fixed bound, or (what it is, how to read it from the config) for one set by another field."""


@dataclass(frozen=True)
class Num:
    """An int or float in [lo, hi] (an end open where asked); None allowed if `optional`."""

    kind: type
    lo: Bound | None = None
    hi: Bound | None = None
    lo_open: bool = False
    hi_open: bool = False
    optional: bool = False

    @property
    def dynamic(self) -> bool:
        """Whether another field sets a bound (so that field is checked first)."""
        return isinstance(self.lo, tuple) or isinstance(self.hi, tuple)

    def check(self, value: Any, cfg: Any) -> str | None:
        if value is None and self.optional:
            return None
        lo, hi = _bound(self.lo, cfg), _bound(self.hi, cfg)
        ok = _is_number(value, self.kind)
        if ok and lo is not None:
            ok = value > lo if self.lo_open else value >= lo
        if ok and hi is not None:
            ok = value < hi if self.hi_open else value <= hi
        if ok:
            return None
        what = "an integer" if self.kind is int else "a number"
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            text = f"{what} in {left}{_show(self.lo, lo)}, {_show(self.hi, hi)}{right}"
        elif self.lo is not None:
            text = f"{what} {'>' if self.lo_open else '>='} {_show(self.lo, lo)}"
        elif self.hi is not None:
            text = f"{what} {'<' if self.hi_open else '<='} {_show(self.hi, hi)}"
        else:
            text = f"a finite {what[2:]}" if self.kind is float else what
        return text + (" or None" if self.optional else "")


@dataclass(frozen=True)
class Choice:
    """One of ``values``, of the type of the first (so 1 is no choice between False and True)."""

    values: tuple[Any, ...]

    def check(self, value: Any, cfg: Any) -> str | None:
        if value in self.values and type(value) is type(self.values[0]):
            return None
        return "one of " + ", ".join(map(str, self.values))


@dataclass(frozen=True)
class Text:
    """A string; `nonempty` forbids ""; `optional` allows None; `many` means a tuple of them."""

    nonempty: bool = False
    optional: bool = False
    many: bool = False
    pattern: str | None = None
    describe: str = ""

    def check(self, value: Any, cfg: Any) -> str | None:
        if value is None and self.optional:
            return None
        items = value if self.many and isinstance(value, tuple | list) else [value]
        good = (not self.many or isinstance(value, tuple | list)) and all(
            isinstance(v, str)
            and (v or not self.nonempty)
            and (self.pattern is None or re.fullmatch(self.pattern, v))
            for v in items
        )
        if good:
            return None
        text = self.describe or ("non-empty string" if self.nonempty else "string")
        text = f"a list of {text}s" if self.many else ("" if self.describe else "a ") + text
        return text + (" or None" if self.optional else "")


def _is_number(value: Any, kind: type) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) if kind is int else math.isfinite(value)


def _bound(bound: Bound | None, cfg: Any) -> float | None:
    value = bound[1](cfg) if isinstance(bound, tuple) else bound
    # A bound set by a field that is itself bad: that field's own rule reports it.
    return value if _is_number(value, float) else None


def _show(bound: Bound, value: float) -> str:
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{shown} ({bound[0]})" if isinstance(bound, tuple) else shown


Rule = Num | Choice | Text
"""What a config field's value may be; ``rule.check(value, cfg)`` says what it allows when the
value is not allowed, else None."""
