"""Replay actor: the one store of transitions, the samples-per-insert rate limiter, the demos.

Pixels cross to the learner once: ``feed`` ships the chunks the learner's mirror lacks (each
once, in order) with index batches for several updates, and the learner gathers stacks from its
mirror (``mirror.DeviceMirror``). The replay keeps no per-client delivery state: each request
says what the mirror holds and how many rate-limited updates the learner was granted
(``FeedRequest``), and the answer follows from that alone, so a dropped, repeated or retried
request, a restarted learner and a restored replay need no special case (docs/design.md, "The
feed protocol"). A mirror of another lineage (this replay restarted) or one a whole buffer
behind gets the whole content.

A threaded actor with concurrency groups, so no number of parked ``add`` calls can keep
``feed``, ``stats`` or the control calls from starting (they have their own threads). One lock
guards the buffer; each side waits on its own condition and is woken one call at a time
(``notify(1)``, passed on while the limiter still allows), never all at once. A throttled
``add`` waits at most ``ADD_WAIT_S`` and then answers ``throttled`` so the worker sends it again
(Reverb's rate-limiter timeouts), so no call holds a thread forever.

Weights reach the env workers without polling the learner: the learner hands each publish to
``set_weights``, and every worker keeps one ``weights`` call parked here (a thread each in
their own group), answered as soon as a publish differs from what the worker has. Both calls
go to the replay's ``WeightsBoard`` (``weights/board.py``), which has its own lock: a publish
waking every parked worker never holds up ``add`` or ``feed`` on the buffer's lock.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import deque

import numpy as np
import ray

from distributed_sac.config.data import (
    AddReply,
    Chunk,
    ChunkRun,
    EpisodeStats,
    Feed,
    FeedRequest,
    ReplayStats,
    WeightsReply,
)
from distributed_sac.remote.telemetry import ReplayTelemetry
from distributed_sac.replay.buffer import ReplayBuffer, ReplaySpec
from distributed_sac.replay.draws import BatchDraws, demo_buffer
from distributed_sac.replay.rate_limiter import RateLimiter
from distributed_sac.replay.snapshot import (
    SnapshotWriter,
    read_demos,
    restore_snapshot,
    write_demos,
)
from distributed_sac.weights.board import WeightsBoard

ADD_WAIT_S = 1.0
"""Longest an ``add`` waits on the rate limiter before answering ``throttled``."""
FEED_WAIT_S = 0.5
"""Longest a ``feed`` waits for the limiter to allow one update before answering with none."""
WEIGHTS_WAIT_S = 5.0
"""Longest a worker's ``weights`` call waits for news before answering with none."""
CONCURRENCY_GROUPS = {"add": 8, "feed": 1, "control": 4, "snapshot": 1, "weights": 1}
"""Threads per kind of call: ``feed`` is one thread so its chunks go out in order;
``weights`` gets one per env worker (``remote_replay``), each parked until a publish."""


class ReplayServer:
    """Takes chunks from env workers, feeds the learner's mirror, counts agent steps."""

    def __init__(self, spec: ReplaySpec, snapshot: str | None = None) -> None:
        self.spec = spec
        cfg = spec.cfg
        self.draws = BatchDraws(spec.batch_size, cfg.demo_fraction, spec.seed)
        self.buffer = ReplayBuffer(
            cfg.capacity, spec.frame_shape, spec.stack, spec.action_dim, spec.chunk_length
        )
        self.demos: ReplayBuffer | None = None
        self.demos_id: str | None = None
        self.lineage = uuid.uuid4().hex
        """This replay's content: a new one each time the actor (re)starts."""
        self.limiter = RateLimiter(
            cfg.replay_ratio, cfg.min_size, cfg.ratio_tolerance, spec.max_insert, spec.total_steps
        )
        self._lock = threading.Lock()
        self._insert_ready = threading.Condition(self._lock)
        self._sample_ready = threading.Condition(self._lock)
        self._episodes: deque[EpisodeStats] = deque(maxlen=1000)
        self._episodes_total = 0
        self._worker_steps: dict[int, int] = {}
        self.board = WeightsBoard()
        """The newest published weights and their history, handed to the workers."""
        self.add_wait_s, self.feed_wait_s = ADD_WAIT_S, FEED_WAIT_S
        self.weights_wait_s = WEIGHTS_WAIT_S
        self.telemetry = ReplayTelemetry()
        self._snapshots = SnapshotWriter(snapshot) if snapshot else None
        manifest = restore_snapshot(snapshot, self.buffer) if snapshot else None
        self.restored = manifest is not None
        """Whether this actor came back from a snapshot (a Ray restart, or ``--resume``)."""
        if manifest is not None:
            # Restarted by Ray after a crash (or resumed): carry on from the last snapshot.
            self._restore(manifest["counters"])
            self._snapshots.continue_from(manifest)
        saved_demos = read_demos(snapshot) if snapshot else None
        if saved_demos is not None:
            # The run's own copy of its demonstrations, written when they were loaded.
            self._set_demos(*saved_demos)

    @property
    def agent_steps(self) -> int:
        return self.limiter.inserts

    # -- env workers --------------------------------------------------------------------------

    @ray.method(concurrency_group="add")
    def add(self, worker: int, chunks: list[Chunk], episodes: list[EpisodeStats]) -> AddReply:
        """Insert chunks once the limiter allows, cut at ``total_steps``; see ``AddReply``."""
        n = sum(c.num_transitions for c in chunks)
        with self._lock:
            deadline = time.monotonic() + self.add_wait_s
            t0 = time.monotonic()
            throttled = False
            while not (self._done or n == 0 or self.limiter.can_insert(n)):
                left = deadline - time.monotonic()
                if left <= 0:
                    throttled = True
                    break
                self._insert_ready.wait(left)
            self.telemetry.insert_waited(time.monotonic() - t0)
            if not throttled and not self._done:
                self._insert(worker, chunks, episodes)
                self._sample_ready.notify()
                if self.limiter.can_insert(self.spec.max_insert):
                    self._insert_ready.notify()  # pass the turn on, one waiter at a time
            return AddReply(self.agent_steps, self._done, throttled)

    @property
    def _done(self) -> bool:
        return self.limiter.closed or self.agent_steps >= self.spec.total_steps

    def _insert(self, worker: int, chunks: list[Chunk], episodes: list[EpisodeStats]) -> None:
        inserted = 0
        for chunk in chunks:
            room = self.spec.total_steps - self.agent_steps - inserted
            if room <= 0:
                break
            if chunk.num_transitions > room:
                # Collection stops at total_steps exactly: keep the chunk's first `room` steps.
                chunk = Chunk(
                    chunk.frames[: room + self.spec.stack],
                    *(a[:room] for a in chunk[1:5]),
                    chunk.weights_version,
                )
            self.buffer.add(chunk)
            inserted += chunk.num_transitions
        if inserted:
            self.limiter.insert(inserted)
            if self.agent_steps >= self.spec.total_steps:
                self._finish()  # collection is over: the learner drains to the ratio
            self._worker_steps[worker] = self._worker_steps.get(worker, 0) + inserted
            self.telemetry.inserted(inserted)
            self.telemetry.size(len(self.buffer))
        self._episodes.extend(episodes)
        self._episodes_total += len(episodes)

    # -- the learner --------------------------------------------------------------------------

    @ray.method(concurrency_group="feed")
    def feed(self, request: FeedRequest) -> Feed:
        """The chunks ``request.mirror`` lacks and index batches for up to ``request.updates``.

        The answer follows from the request alone: the limiter takes the learner's
        ``granted`` as its count of updates (a restarted learner, a replay restored from a
        snapshot, a lost or retried feed: none skews the ratio), and the mirror gets what it
        does not hold (everything when it follows another lineage or fell a buffer behind;
        the demonstrations when it lacks these). ``pretrain``: demonstrations only, outside
        the limiter.
        """
        with self._lock:
            if request.pretrain:
                if self.demos is None or len(self.demos) < self.spec.batch_size:
                    raise ValueError("not enough demonstration transitions for one batch")
                k = request.updates
            else:
                self.limiter.align(request.granted)
                k = self._await_grant(request.updates)
            mirror, layout = request.mirror, self.buffer.layout
            reset = mirror.lineage != self.lineage or not (
                layout.first_seq <= mirror.next_seq <= layout.chunks_added
            )
            first = layout.first_seq if reset else mirror.next_seq
            chunks = self.buffer.run_since(first)
            demos = None
            if self.demos is not None and mirror.demos != self.demos_id:
                demos = self.demos.run_since(self.demos.layout.first_seq)
            if request.pretrain:
                demo_idx, replay_idx = self.draws.pretraining(k, len(self.demos))
            else:
                demo_size = len(self.demos) if self.demos is not None else 0
                demo_idx, replay_idx, age = self.draws.granted(
                    k, self.buffer, demo_size, request.weights_version
                )
                if age is not None:
                    self.telemetry.sample_age(age)
            if k and not request.pretrain:
                self.limiter.sample(k)
                self.telemetry.sampled(k)
                self._insert_ready.notify()
            done = (
                not request.pretrain
                and k == 0
                and self.limiter.closed
                and self.limiter.grant(1) == 0
            )
            return Feed(
                reset,
                self.lineage,
                self.buffer.geometry,
                first,
                chunks,
                self.demos_id,
                demos,
                demo_idx,
                replay_idx,
                done,
            )

    def _await_grant(self, updates: int) -> int:
        t0 = time.monotonic()
        deadline = t0 + self.feed_wait_s
        k = self._grant(updates)
        while k == 0 and not self.limiter.closed:
            # The learner is refused: the limiter then lets every insert through (no deadlock).
            self._insert_ready.notify()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._sample_ready.wait(left)
            k = self._grant(updates)
        self.telemetry.sample_waited(time.monotonic() - t0)
        return k

    def _grant(self, updates: int) -> int:
        demo_size = len(self.demos) if self.demos is not None else 0
        if len(self.buffer) + demo_size < self.spec.batch_size:
            return 0
        return self.limiter.grant(updates)

    @ray.method(concurrency_group="control")
    def load_demos(self, chunks: list[Chunk]) -> int:
        """Keep demonstrations in their own buffer, sampled at ``demo_fraction`` of each batch;
        with a snapshot folder, the run keeps a copy there that a restarted replay reloads."""
        demos = demo_buffer(self.buffer, self.spec.batch_size, chunks=chunks)
        demos_id = uuid.uuid4().hex
        if self._snapshots is not None:
            write_demos(self._snapshots.folder, demos.run_since(0), demos_id)
        with self._lock:
            self.demos, self.demos_id = demos, demos_id
        return len(demos)

    def _set_demos(self, run: ChunkRun, demos_id: str) -> None:
        self.demos = demo_buffer(self.buffer, self.spec.batch_size, run=run)
        self.demos_id = demos_id

    @ray.method(concurrency_group="control")
    def set_weights(
        self, weights_version: int, weights: list, published_at: float, replace: bool = False
    ) -> None:
        """The newest published weights (``[ObjectRef]``), for the workers' ``weights`` calls.

        ``replace``: from a learner restarted from a checkpoint, whose versions start lower
        again (the old learner's weights died with it); see ``WeightsBoard.publish``.
        """
        self.board.publish(weights_version, weights, published_at, replace)

    @ray.method(concurrency_group="weights")
    def weights(
        self, have_version: int, since: float = float("inf"), wait_s: float | None = None
    ) -> WeightsReply:
        """The newest weights once they differ from ``have_version`` (a publish, or a restarted
        learner's), waiting at most ``wait_s`` (``WEIGHTS_WAIT_S``) for them: each worker keeps
        one such call in flight, so weights reach it as soon as they are published. Once
        collection is over it answers at once.

        ``since``: time of the worker's oldest step whose acting lag is not yet known.
        """
        wait_s = self.weights_wait_s if wait_s is None else wait_s
        return self.board.wait(have_version, since, wait_s)

    @ray.method(concurrency_group="control")
    def close(self) -> None:
        """End collection: parked adds answer done; the learner drains what the ratio allows."""
        with self._lock:
            self._finish()
            self._insert_ready.notify_all()  # once per run: every parked add must answer done
            self._sample_ready.notify()

    def _finish(self) -> None:
        """Collection is over: the limiter lets the learner drain, weights calls answer at once."""
        self.limiter.finish()
        self.board.close()

    # -- checkpoints and monitoring -----------------------------------------------------------

    @ray.method(concurrency_group="snapshot")
    def snapshot(self) -> dict:
        """Write the chunks added since the last snapshot and the counters, atomically;
        returns those counters (``state``, as the snapshot holds them).

        A Ray restart of this actor reloads them (fault tolerance), and so does ``--resume``.
        Only copying the new chunks out holds the lock; the writing happens outside it.
        """
        if self._snapshots is None:
            raise ValueError("this replay actor was built without a snapshot path")
        return self._snapshots.write(self._lock, self.buffer, self._state)

    @ray.method(concurrency_group="control")
    def state(self) -> dict:
        """Counters to checkpoint beside the learner state."""
        with self._lock:
            return self._state()

    def _state(self) -> dict:
        return {
            "limiter": self.limiter.state_dict(),
            "episodes_total": self._episodes_total,
            "rng": self.draws.rng.bit_generator.state,
            "worker_steps": {str(k): v for k, v in self._worker_steps.items()},
        }

    @ray.method(concurrency_group="control")
    def restore(self, state: dict) -> None:
        """Counters of a checkpoint, for a replay that had no snapshot to restore from."""
        with self._lock:
            self._restore(state)

    def _restore(self, state: dict) -> None:
        self.limiter.load_state_dict(state["limiter"])
        # A resumed run may collect further (a larger total); one restored after its last
        # step stays closed, or its learner would wait for steps that never come.
        self.limiter.closed = self.agent_steps >= self.spec.total_steps
        if self.limiter.closed:
            self.board.close()
        self._episodes_total = int(state["episodes_total"])
        self.draws.rng.bit_generator.state = state["rng"]
        self._worker_steps = {int(k): int(v) for k, v in state.get("worker_steps", {}).items()}

    @ray.method(concurrency_group="control")
    def peek(self, n: int) -> np.ndarray | None:
        """A few stored observations for monitoring; not counted by the rate limiter."""
        with self._lock:
            if len(self.buffer) < n:
                return None
            return self.buffer.sample(n, np.random.default_rng()).obs

    @ray.method(concurrency_group="control")
    def stats(self) -> ReplayStats:
        """Counters for metrics; drains the episodes finished since the last call."""
        with self._lock:
            episodes = list(self._episodes)
            self._episodes.clear()
            demos = len(self.demos) if self.demos is not None else None
            demo_fraction = self.draws.demo_fraction_held(len(self.buffer), demos)
            return ReplayStats(
                agent_steps=self.agent_steps,
                replay_size=len(self.buffer),
                episodes_total=self._episodes_total,
                episodes=episodes,
                replay_ratio_held=self.limiter.ratio_held(),
                worker_steps=dict(self._worker_steps),
                sample_age=self.draws.sample_age(),
                closed=self._done,
                demo_fraction_held=demo_fraction,
            )

    @ray.method(concurrency_group="control")
    def was_restored(self) -> bool:
        """Whether this actor came back from a snapshot (its counters are the snapshot's)."""
        return self.restored

    @ray.method(concurrency_group="control")
    def pid(self) -> int:
        """This actor's process id (fault-injection tests kill it)."""
        return os.getpid()

    @ray.method(concurrency_group="control")
    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


def remote_replay(workers: int = 1) -> ray.actor.ActorClass:
    """``ReplayServer`` as a Ray actor class with its concurrency groups (which Ray takes only
    here, not in ``.options``): a ``weights`` thread per env worker, and two for restarts."""
    groups = {**CONCURRENCY_GROUPS, "weights": workers + 2}
    return ray.remote(concurrency_groups=groups)(ReplayServer)
