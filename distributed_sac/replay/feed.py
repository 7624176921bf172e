"""The learner's side of the feed protocol: its mirrors of the replay and of the demonstrations.

``ReplayMirror.request(...)`` is every feed request (``FeedRequest``: the replay content it
follows, the next chunk it expects, the demonstrations it holds, the updates granted so far);
``follow(feed)`` applies a feed's chunks and demonstrations and counts its granted updates,
and ``batches(feed)`` gathers its updates' batches. The replay answers each request from that
state alone (docs/design.md, "The feed protocol"), so nothing here needs to remember what was
asked for: a feed that cannot be followed is not applied, and the next request states the
mirror as it is. The learner actor (``remote/learner.py``) adds only the Ray calls around it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

from distributed_sac.agent.tensors import BatchTensors
from distributed_sac.config.data import EMPTY_MIRROR, Feed, FeedRequest, MirrorState
from distributed_sac.replay.mirror import DeviceMirror, concat_batches

log = logging.getLogger(__name__)


class ReplayMirror:
    """The replay ring and the demonstrations as the learner holds them (``device`` memory)."""

    def __init__(
        self, device: str | torch.device = "cpu", granted: int = 0, torch_rings: bool | None = None
    ) -> None:
        """``torch_rings``: as ``DeviceMirror``'s (default: torch rings on CUDA only)."""
        self.device = device
        self.torch_rings = torch_rings
        self.replay: DeviceMirror | None = None
        self.demos: DeviceMirror | None = None
        self._lineage: str | None = None
        self._demos_id: str | None = None
        self.granted = granted
        """Updates the replay's rate limiter granted this learner in the feeds it followed
        (made, or being made; not pretraining): every feed request states it."""

    def state(self) -> MirrorState:
        """What this mirror holds, for the next feed request."""
        if self.replay is None:
            return EMPTY_MIRROR._replace(demos=self._demos_id)
        return MirrorState(self._lineage, self.replay.next_seq, self._demos_id)

    def request(self, updates: int, weights_version: int, pretrain: bool = False) -> FeedRequest:
        """The feed request for ``updates`` more updates, from a learner at ``weights_version``."""
        return FeedRequest(self.state(), updates, self.granted, weights_version, pretrain)

    def follow(self, feed: Feed, pretrain: bool = False) -> bool:
        """Apply ``feed`` and count its updates as granted (not when ``pretrain``); False
        (nothing applied, its batches unusable) if it does not follow from what this mirror
        holds: a feed answering a request sent before the last one."""
        resync = feed.reset or self.replay is None or self.replay.geometry != feed.geometry
        if not resync and (feed.lineage != self._lineage or feed.first_seq != self.replay.next_seq):
            log.warning("a replay feed does not follow the mirror; skipping it")
            return False
        if resync:
            if self.replay is None or self.replay.geometry != feed.geometry:
                self.replay = DeviceMirror(feed.geometry, self.device, self.torch_rings)
            self.replay.restart(feed.first_seq)
        self.replay.add_run(feed.chunks)
        self._lineage = feed.lineage
        if feed.demos is not None:
            self.demos = DeviceMirror.holding(
                feed.demos, feed.geometry, self.device, self.torch_rings
            )
            self._demos_id = feed.demos_id
        if feed.demo_idx.shape[1] and (self.demos is None or self._demos_id != feed.demos_id):
            log.warning("a replay feed samples demonstrations this mirror lacks; skipping it")
            return False
        if not pretrain:
            self.granted += feed.updates
        return True

    def batch(self, feed: Feed, j: int) -> BatchTensors:
        """The ``j``-th update's batch of a followed ``feed``: demonstration rows first."""
        parts = []
        if feed.demo_idx.shape[1]:
            parts.append(self.demos.gather(feed.demo_idx[j]))
        if feed.replay_idx.shape[1]:
            parts.append(self.replay.gather(feed.replay_idx[j]))
        return concat_batches(parts)

    def batches(self, feed: Feed) -> Iterator[BatchTensors]:
        """The batches of a followed ``feed``, one per update, in order."""
        return (self.batch(feed, j) for j in range(feed.updates))
