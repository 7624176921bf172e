"""The learner's side of the feed protocol: its mirrors of the replay and of the demonstrations.

``ReplayMirror.state()`` is what every feed request states (``MirrorState``: the replay content
it follows, the next chunk it expects, the demonstrations it holds); ``follow(feed)`` applies a
feed's chunks and demonstrations, and ``batch(feed, j)`` gathers the ``j``-th update's batch.
The replay answers each request from that state alone (docs/design.md, "The feed protocol"),
so nothing here needs to remember what was asked for: a feed that cannot be followed is not
applied, and the next request states the mirror as it is.
"""

from __future__ import annotations

import logging

import torch

from distributed_sac.data import EMPTY_MIRROR, Feed, MirrorState
from distributed_sac.mirror import DeviceMirror, concat_batches
from distributed_sac.tensors import BatchTensors

log = logging.getLogger(__name__)


class ReplayMirror:
    """The replay ring and the demonstrations as the learner holds them (``device`` memory)."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = device
        self.replay: DeviceMirror | None = None
        self.demos: DeviceMirror | None = None
        self._lineage: str | None = None
        self._demos_id: str | None = None

    def state(self) -> MirrorState:
        """What this mirror holds, for the next feed request."""
        if self.replay is None:
            return EMPTY_MIRROR._replace(demos=self._demos_id)
        return MirrorState(self._lineage, self.replay.layout.chunks_added, self._demos_id)

    def follow(self, feed: Feed) -> bool:
        """Apply ``feed``; False (nothing applied, its batches unusable) if it does not follow
        from what this mirror holds: a feed answering a request sent before the last one."""
        resync = feed.reset or self.replay is None or self.replay.geometry != feed.geometry
        if not resync and (
            feed.lineage != self._lineage or feed.first_seq != self.replay.layout.chunks_added
        ):
            log.warning("a replay feed does not follow the mirror; skipping it")
            return False
        if resync:
            if self.replay is None or self.replay.geometry != feed.geometry:
                self.replay = self._new_mirror(feed.geometry)
            self.replay.layout.clear()
            self.replay.layout.chunks_added = feed.first_seq
        self.replay.apply(feed.chunks)
        self._lineage = feed.lineage
        if feed.demos is not None:
            n = feed.demos.num_transitions
            geometry = feed.geometry._replace(
                capacity=n, frame_capacity=n + feed.geometry.stack * len(feed.demos.lengths)
            )
            self.demos = self._new_mirror(geometry)
            self.demos.apply(feed.demos)
            self._demos_id = feed.demos_id
        if feed.demo_idx.shape[1] and (self.demos is None or self._demos_id != feed.demos_id):
            log.warning("a replay feed samples demonstrations this mirror lacks; skipping it")
            return False
        return True

    def _new_mirror(self, geometry) -> DeviceMirror:
        return DeviceMirror(geometry, self.device)

    def batch(self, feed: Feed, j: int) -> BatchTensors:
        """The ``j``-th update's batch of a followed ``feed``: demonstration rows first."""
        parts = []
        if feed.demo_idx.shape[1]:
            parts.append(self.demos.gather(feed.demo_idx[j]))
        if feed.replay_idx.shape[1]:
            parts.append(self.replay.gather(feed.replay_idx[j]))
        return concat_batches(parts)
