"""Host-to-device uploads through a small, reused staging buffer (pinned on CUDA).

A non-blocking copy to a GPU is only asynchronous from page-locked (pinned) host memory, and
pinning is slow and never given back to the OS by torch's host allocator. ``Staging`` keeps a
few pinned slots instead, each grown to the largest size an upload has needed, up to
``max_bytes``: numpy arrays are copied into a slot (numpy reads them, so read-only arrays from
Ray's object store need no torch view), the slot is copied to the device without blocking,
and an event recorded after that copy guards the slot: the next upload that takes it waits for
the event first, so a copy still in flight never reads bytes overwritten under it. Arrays
larger than a slot cross in pieces, slot after slot; arrays smaller than one share a slot.

With ``pin=False`` (the CPU, or tests) the same code runs with plain host memory and
synchronous copies, which is how tests/test_cuda_path.py checks the bookkeeping without a GPU.
"""

from __future__ import annotations

import numpy as np
import torch

MIN_SLOT_BYTES = 4096
"""Smallest slot allocated: tiny uploads (an index batch) all fit in one."""


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype of numpy ``dtype`` (bool, ints, floats)."""
    return torch.from_numpy(np.empty(0, dtype)).dtype


class Staging:
    """Uploads numpy arrays to ``device`` through ``slots`` reused host buffers of at most
    ``max_bytes`` each (pinned when ``pin``; default: on CUDA devices)."""

    def __init__(
        self,
        device: str | torch.device,
        pin: bool | None = None,
        max_bytes: int = 32 << 20,
        slots: int = 2,
    ) -> None:
        self.device = torch.device(device)
        self.pin = self.device.type == "cuda" if pin is None else bool(pin)
        if max_bytes < 1 or slots < 1:
            raise ValueError(f"need max_bytes >= 1 and slots >= 1, got {max_bytes}, {slots}")
        if self.pin and self.device.type != "cuda":
            raise ValueError(f"pinned staging needs a CUDA device, got {self.device}")
        self.max_bytes, self.slots = int(max_bytes), int(slots)
        self._buffers: list[torch.Tensor | None] = [None] * self.slots
        self._events: list = [None] * self.slots
        """Per slot: the event of its last copies, or None when they are known to be done."""
        self._next = 0
        self.allocations = 0
        """Host buffers allocated so far: stops growing once the largest upload has been seen."""
        self.waits = 0
        """Times a slot's previous copy had not finished when the slot was taken again."""

    @property
    def nbytes(self) -> int:
        """Bytes of host memory held now (at most ``slots * max_bytes``)."""
        return sum(b.numel() for b in self._buffers if b is not None)

    def upload(self, *arrays: np.ndarray) -> list[torch.Tensor]:
        """New tensors on the device with the contents of ``arrays``, in their order.

        The copies are queued on the current stream (non-blocking when pinned): work queued
        after them on that stream sees the data, and the arrays may change once this returns.
        """
        srcs = [np.asarray(a) for a in arrays]
        # ascontiguousarray would make 0-d arrays 1-d; those are contiguous anyway.
        srcs = [a if a.flags.c_contiguous else np.ascontiguousarray(a) for a in srcs]
        outs = [torch.empty(a.shape, dtype=torch_dtype(a.dtype), device=self.device) for a in srcs]
        left = sum(a.nbytes for a in srcs)
        slot, buf, used = -1, None, 0
        for src, out in zip(srcs, outs, strict=True):
            src_bytes = src.reshape(-1).view(np.uint8)
            dst_bytes = out.view(-1).view(torch.uint8)
            done = 0
            while done < src_bytes.size:
                if buf is None or used == buf.numel():
                    if buf is not None:
                        self._release(slot)
                    slot, buf, used = self._take(min(left, self.max_bytes))
                n = min(src_bytes.size - done, buf.numel() - used)
                buf.numpy()[used : used + n] = src_bytes[done : done + n]
                self._copy(dst_bytes[done : done + n], buf[used : used + n])
                used, done, left = used + n, done + n, left - n
        if buf is not None:
            self._release(slot)
        return outs

    def _take(self, nbytes: int) -> tuple[int, torch.Tensor, int]:
        """The next slot, once its last copy is done, holding at least ``nbytes``."""
        slot = self._next
        self._next = (slot + 1) % self.slots
        event = self._events[slot]
        if event is not None:
            if not event.query():
                self.waits += 1
            event.synchronize()
            self._events[slot] = None
        buf = self._buffers[slot]
        if buf is None or buf.numel() < nbytes:
            # Powers of two: a handful of sizes at most before the largest upload is reached.
            size = min(max(MIN_SLOT_BYTES, 1 << (nbytes - 1).bit_length()), self.max_bytes)
            buf = torch.empty(size, dtype=torch.uint8, pin_memory=self.pin)
            self._buffers[slot] = buf
            self.allocations += 1
        return slot, buf, 0

    def _copy(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        """Queue the copy of staged bytes ``src`` to the device bytes ``dst``."""
        dst.copy_(src, non_blocking=self.pin)

    def _record(self):
        """An event that completes when the copies queued so far have run (None: they have)."""
        if not self.pin:
            return None
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return event

    def _release(self, slot: int) -> None:
        """Mark ``slot`` busy until the copies queued from it so far have run."""
        self._events[slot] = self._record()

    def synchronize(self) -> None:
        """Wait for every copy queued from the slots."""
        for slot, event in enumerate(self._events):
            if event is not None:
                event.synchronize()
                self._events[slot] = None
