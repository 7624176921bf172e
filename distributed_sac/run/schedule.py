"""When the driver logs, evaluates and checkpoints: ``Every`` (drqv2's helper, on any counter)."""

from __future__ import annotations


class Every:
    """True once each time ``value`` reaches the next multiple of ``every`` (never if 0).

    ``start``: the value the count resumes from; the first trigger is the multiple after it.
    """

    def __init__(self, every: float, start: float = 0) -> None:
        self.every = every
        self.next = self._after(start) if every else float("inf")

    def _after(self, value: float) -> float:
        return (value // self.every + 1) * self.every

    def __call__(self, value: float) -> bool:
        if value < self.next:
            return False
        self.next = self._after(value)
        return True
