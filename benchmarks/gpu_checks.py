"""CUDA-path checks: the mirror equals the replay, bf16 fast-path updates, a forced resync.

Three checks, each a function that returns a JSON-able dict with ``ok``:

* ``mirror``: fills a ``ReplayBuffer`` with random chunks over several wraps of its rings,
  applies the same ``ChunkRun``s (read-only, as Ray's object store hands them out) to a
  ``DeviceMirror`` on the device as the learner does, and after every apply gathers random
  indices on both sides: obs, next_obs, action, reward and terminated must be byte-identical.
  Uploads go through a small staging cap (``--staging-kib``), so every apply crosses in
  pieces, slot after slot, and a slot overwritten before its non-blocking copy ran would show
  as a mismatch.
* ``bf16``: ``--updates`` fast-path updates (bf16 autocast where the device has it, channels-last,
  fused Adam) without and with ``torch.compile``: every loss finite, seconds of the first update
  (warm-up and compilation), median ms of the others, and how far the two runs' first-update
  losses lie apart (same seed, same batch: only rounding differs).
* ``resync``: a forced learner resync through the production feed protocol: the learner's
  ``ReplayMirror`` follows a ``ReplayServer``'s feeds (no Ray), the replay restarts from its
  snapshot (a new lineage), and the next feed resets the mirror and ships the whole content;
  every batch, then every stored index, is gathered against the replay's, then a few
  incremental feeds follow.

``--device cpu --tiny`` runs all three in seconds (tests/test_gpu_checks.py); ``--torch-branch``
runs the mirror's CUDA code (torch rings, staged uploads) on CPU tensors; ``--rgb`` stores
frames of 3 channels instead of grayscale ones (stacks of S * 3 channels). On a GPU machine
benchmarks/gpu_check.sh runs them with ``--device cuda``. Exit status 1 when a check fails.

    python -m benchmarks.gpu_checks all --device cuda --json bench_out/gpu_checks.json
    python -m benchmarks.gpu_checks mirror resync --device cpu --tiny --torch-branch
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

from benchmarks.report import write_json
from distributed_sac.agent.sac_ae import SacAeAgent
from distributed_sac.agent.tensors import BatchTensors
from distributed_sac.config.data import Batch, Chunk, ChunkRun, stacked_shape
from distributed_sac.config.fields import AgentConfig, ReplayConfig
from distributed_sac.remote.replay_server import ReplayServer
from distributed_sac.replay import mirror as mirror_module
from distributed_sac.replay.buffer import ReplayBuffer, ReplaySpec
from distributed_sac.replay.feed import ReplayMirror
from distributed_sac.replay.mirror import DeviceMirror

CHECKS = ("mirror", "bf16", "resync")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Replay geometry and networks of the checks."""

    frame_shape: tuple[int, ...] = (84, 84)
    """One stored frame: (H, W) grayscale, (C, H, W) with channels."""
    stack: int = 4
    action_dim: int = 3
    capacity: int = 4096
    chunk_length: int = 64
    batch_size: int = 128
    agent: AgentConfig = AgentConfig()
    """Networks of the bf16 check (the default, full-size ones)."""

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        """(S * C, H, W): ``stack`` frames stacked channels first."""
        return stacked_shape(self.frame_shape, self.stack)

    @property
    def channels(self) -> int:
        """Channels per frame: 1 for (H, W) frames."""
        return self.obs_shape[0] // self.stack

    def rgb(self) -> Sizes:
        """These sizes with 3-channel frames."""
        return dataclasses.replace(self, frame_shape=(3, *self.frame_shape[-2:]))


TINY = Sizes(
    frame_shape=(16, 16),
    stack=3,
    action_dim=2,
    capacity=300,
    chunk_length=16,
    batch_size=16,
    agent=AgentConfig(num_conv_layers=2, num_filters=8, latent_dim=16, hidden_dim=32),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_mirror(rb: ReplayBuffer, device: torch.device, torch_branch: bool) -> DeviceMirror:
    """A mirror of ``rb``'s geometry; ``torch_branch`` on the CPU takes the CUDA code path."""
    # Torch rings on the CPU: the code CUDA runs, with CPU tensors.
    return DeviceMirror(rb.geometry, device, torch_rings=torch_branch or device.type == "cuda")


def random_chunk(rng: np.random.Generator, sizes: Sizes, ends: bool = True) -> Chunk:
    """A chunk of random content and length; its last transition may end the episode."""
    t = int(rng.integers(1, sizes.chunk_length + 1))
    end = np.zeros(t, bool)
    terminated, truncated = end.copy(), end.copy()
    if ends and rng.uniform() < 0.3:
        (terminated if rng.uniform() < 0.5 else truncated)[-1] = True
    return Chunk(
        rng.integers(0, 256, (t + sizes.stack, *sizes.frame_shape), dtype=np.uint8),
        rng.uniform(-1, 1, (t, sizes.action_dim)).astype(np.float32),
        rng.normal(size=t).astype(np.float32),
        terminated,
        truncated,
        int(rng.integers(-1, 100)),
    )


def read_only(run: ChunkRun) -> ChunkRun:
    """``run`` with every array read-only, as a feed arrives from Ray's object store."""
    for arr in run:
        arr.setflags(write=False)
    return run


def mismatches(mirrored: BatchTensors, batch: Batch) -> list[str]:
    """Fields of a mirror gather that differ in any byte from ``ReplayBuffer.gather``'s."""
    want = {
        "obs": batch.obs,
        "action": batch.action,
        "reward": batch.reward,
        "next_obs": batch.next_obs,
        "terminated": batch.terminated.astype(np.float32),
    }
    bad = []
    for name, expected in want.items():
        got = getattr(mirrored, name).cpu().numpy()
        same = got.dtype == expected.dtype and got.shape == expected.shape
        if not (same and np.ascontiguousarray(got).tobytes() == expected.tobytes()):
            bad.append(name)
    return bad


def _compare(mirror: DeviceMirror, rb: ReplayBuffer, idx: np.ndarray) -> list[str]:
    idx = idx.copy()
    idx.setflags(write=False)  # index batches arrive read-only too
    if len(mirror) != len(rb):
        return ["len"]
    return mismatches(mirror.gather(idx), rb.gather(idx))


def _staging_stats(mirror: DeviceMirror) -> dict:
    stagings = getattr(mirror, "_stagings", None)
    if stagings is None:  # the CPU's numpy branch uploads nothing
        return {}
    return {
        name: {"allocations": s.allocations, "nbytes": s.nbytes, "waits": s.waits}
        for name, s in zip(("data", "index"), stagings, strict=True)
    }


def check_mirror(
    device: torch.device, sizes: Sizes, wraps: int = 4, seed: int = 0, torch_branch: bool = False
) -> dict:
    """Byte equality of mirror and replay gathers while the rings wrap ``wraps`` times."""
    rng = np.random.default_rng(seed)
    rb = ReplayBuffer(
        sizes.capacity, sizes.frame_shape, sizes.stack, sizes.action_dim, sizes.chunk_length
    )
    mirror = make_mirror(rb, device, torch_branch)
    sent = applies = gathers = resyncs = 0
    bad: list[str] = []
    start = time.perf_counter()
    while rb.total_added < wraps * sizes.capacity and not bad:
        for _ in range(int(rng.integers(1, 9))):  # the learner hears of several chunks at once
            rb.add(random_chunk(rng, sizes))
        if sent < rb.layout.first_seq:  # fell a whole buffer behind: start over, as a learner
            mirror.layout.clear()
            sent = mirror.layout.chunks_added = rb.layout.first_seq
            resyncs += 1
        mirror.add_run(read_only(rb.run_since(sent)))
        sent = rb.layout.chunks_added
        applies += 1
        batch = min(sizes.batch_size, len(rb))
        for idx in (rng.integers(0, len(rb), batch), np.array([0, len(rb) - 1])):
            bad += _compare(mirror, rb, idx)
            gathers += 1
    _sync(device)
    return {
        "ok": not bad,
        "mismatches": sorted(set(bad)),
        "transitions_added": rb.total_added,
        "wraps": rb.total_added / sizes.capacity,
        "applies": applies,
        "gathers": gathers,
        "resyncs": resyncs,
        "staging": _staging_stats(mirror),
        "seconds": time.perf_counter() - start,
    }


def check_resync(
    device: torch.device, sizes: Sizes, seed: int = 1, torch_branch: bool = False
) -> dict:
    """A forced learner resync through the production protocol: the learner's ``ReplayMirror``
    follows a ``ReplayServer``'s feeds, the replay restarts from its snapshot (a new lineage),
    and the next feed resyncs the mirror in full; every feed's batches are gathered against the
    replay's own, then the whole content, then a few incremental feeds again."""
    rng = np.random.default_rng(seed)
    cfg = ReplayConfig(
        capacity=sizes.capacity, min_size=sizes.batch_size, replay_ratio=1.0, ratio_tolerance=1e9
    )
    spec = ReplaySpec(
        cfg,
        sizes.frame_shape,
        sizes.stack,
        sizes.action_dim,
        sizes.batch_size,
        10**12,
        seed,
        chunk_length=sizes.chunk_length,
        max_insert=sizes.chunk_length,
    )
    mirror = ReplayMirror(device, torch_rings=torch_branch or device.type == "cuda")
    bad, resets = [], 0

    def take(server: ReplayServer, updates: int = 2) -> bool:
        nonlocal resets
        feed = server.feed(mirror.request(updates, 0))
        feed = feed._replace(chunks=read_only(feed.chunks))  # as Ray's object store hands it
        if not mirror.follow(feed):
            bad.append("a feed did not follow")
            return False
        resets += feed.reset
        for batch, idx in zip(mirror.batches(feed), feed.replay_idx, strict=True):
            bad.extend(mismatches(batch, server.buffer.gather(idx)))
        return feed.reset

    with tempfile.TemporaryDirectory() as folder:
        server = ReplayServer(spec, snapshot=folder)
        while server.buffer.total_added < 2.5 * sizes.capacity:  # wrapped: content mid-ring
            server.add(0, [random_chunk(rng, sizes)], [])
            if len(server.buffer) >= sizes.batch_size and rng.uniform() < 0.3:
                take(server)
        take(server)
        server.snapshot()
        back = ReplayServer(spec, snapshot=folder)  # the replay restarted by Ray
        _sync(device)
        start = time.perf_counter()
        forced = take(back)
        _sync(device)
        seconds = time.perf_counter() - start
        n = len(back.buffer)
        for lo in range(0, n, sizes.batch_size):
            idx = np.arange(lo, min(lo + sizes.batch_size, n))
            bad += mismatches(mirror.replay.gather(idx), back.buffer.gather(idx))
        for _ in range(5):  # and it follows incrementally again afterwards
            back.add(0, [random_chunk(rng, sizes)], [])
            if take(back):
                bad.append("an incremental feed after the resync was a reset")
    _sync(device)
    frame_bytes = n * math.prod(sizes.frame_shape)
    return {
        "ok": forced and not bad and len(mirror.replay) == len(back.buffer),
        "mismatches": sorted(set(bad)),
        "forced_reset": forced,
        "resets": resets,
        "transitions_resynced": n,
        "resync_seconds": seconds,
        "resync_mb_per_s": frame_bytes / seconds / 1e6 if seconds > 0 else None,
        "staging": _staging_stats(mirror.replay),
    }


def random_batch(rng: np.random.Generator, sizes: Sizes) -> Batch:
    b, obs = sizes.batch_size, sizes.obs_shape
    return Batch(
        obs=rng.integers(0, 256, (b, *obs), dtype=np.uint8),
        action=rng.uniform(-1, 1, (b, sizes.action_dim)).astype(np.float32),
        reward=rng.normal(size=b).astype(np.float32),
        next_obs=rng.integers(0, 256, (b, *obs), dtype=np.uint8),
        terminated=rng.random(b) < 0.01,
        truncated=np.zeros(b, bool),
    )


def _run_updates(device: torch.device, sizes: Sizes, compile_: bool, updates: int) -> dict:
    cfg = dataclasses.replace(
        sizes.agent, fast_path=True, compile=compile_, batch_size=sizes.batch_size
    )
    agent = SacAeAgent(sizes.obs_shape, sizes.action_dim, cfg, device, 0, sizes.channels)
    batches = [random_batch(np.random.default_rng(i), sizes) for i in range(4)]
    seconds, losses = [], []
    for i in range(updates):
        _sync(device)
        start = time.perf_counter()
        losses.append(agent.update(batches[i % len(batches)]))  # floats: a device sync
        seconds.append(time.perf_counter() - start)
    finite = all(math.isfinite(v) for m in losses for v in m.values())
    rest = seconds[1:] or seconds
    return {
        "speedups": agent.speedups,
        "finite": finite,
        "first_update_s": seconds[0],
        "ms_per_update": 1e3 * statistics.median(rest),
        "first_losses": losses[0],
        "last_losses": losses[-1],
    }


def check_bf16(device: torch.device, sizes: Sizes, updates: int = 20) -> dict:
    """``updates`` fast-path updates without and with torch.compile: finite, and how fast."""
    runs = {
        mode: _run_updates(device, sizes, mode == "compile", updates)
        for mode in ("eager", "compile")
    }
    first = [runs[m]["first_losses"] for m in ("eager", "compile")]
    rel = max(abs(first[1][k] - v) / max(abs(v), 1e-3) for k, v in first[0].items())
    ok = all(r["finite"] for r in runs.values()) and runs["compile"]["speedups"]["compile"]
    if device.type == "cuda":  # every CUDA GPU this project targets has bf16 matrix hardware
        ok = ok and all(r["speedups"]["bf16"] for r in runs.values())
    return {
        "ok": bool(ok),
        "updates": updates,
        "runs": runs,
        "first_update_max_rel_diff": rel,
    }


def run_checks(
    names: list[str],
    device: torch.device,
    sizes: Sizes,
    updates: int = 20,
    torch_branch: bool = False,
) -> dict:
    """Run the named checks; any warning they cause (a read-only array, say) fails them."""
    results = {}
    warn_always = torch.is_warn_always_enabled()
    for name in names:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.set_warn_always(True)  # torch warns once per process otherwise
            try:
                if name == "mirror":
                    result = check_mirror(device, sizes, torch_branch=torch_branch)
                elif name == "resync":
                    result = check_resync(device, sizes, torch_branch=torch_branch)
                else:
                    result = check_bf16(device, sizes, updates)
            finally:
                torch.set_warn_always(warn_always)
        messages = [
            f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
            for w in caught
            if not _inside_torch(w)
        ]
        result["warnings"] = messages
        result["ok"] = bool(result["ok"] and not messages)
        results[name] = result
    return results


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _inside_torch(w: warnings.WarningMessage) -> bool:
    """A warning torch raises about itself (torch.compile's imports, say), not about a call of
    the project's: torch attributes those, the read-only one included, to the calling line."""
    return os.path.abspath(w.filename).startswith(_TORCH_DIR)


def _row(name: str, result: dict) -> str:
    if name == "mirror":
        detail = (
            f"{result['transitions_added']} transitions ({result['wraps']:.1f} wraps), "
            f"{result['applies']} applies, {result['gathers']} gathers byte-compared"
        )
    elif name == "resync":
        detail = (
            f"{result['transitions_resynced']} transitions resynced in "
            f"{1e3 * result['resync_seconds']:.1f} ms, all gathered back"
        )
    else:
        detail = ", ".join(
            f"{mode}: bf16 {run['speedups']['bf16']}, first {run['first_update_s']:.2f} s, "
            f"{run['ms_per_update']:.1f} ms/update, finite {run['finite']}"
            for mode, run in result["runs"].items()
        )
        detail += f"; first-update losses {100 * result['first_update_max_rel_diff']:.2f} % apart"
    bad = result.get("mismatches") or result["warnings"]
    return f"{name:<7} {'ok' if result['ok'] else 'FAIL':<5} {detail}" + (
        f"  ({'; '.join(bad)})" if bad else ""
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checks", nargs="+", choices=[*CHECKS, "all"], help="checks to run")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (tests, CPU)")
    parser.add_argument("--rgb", action="store_true", help="frames of 3 channels (RGB)")
    parser.add_argument("--updates", type=int, default=20, help="updates per bf16 run")
    parser.add_argument(
        "--staging-kib",
        type=int,
        default=256,
        help="the mirror's chunk-data staging cap per slot (small: every apply in pieces)",
    )
    parser.add_argument(
        "--torch-branch", action="store_true", help="on the CPU, run the mirror's CUDA code"
    )
    parser.add_argument("--json", default="", help="write results to this path")
    args = parser.parse_args(argv)
    if args.updates < 2 or args.staging_kib < 1:
        parser.error(
            f"need --updates >= 2, --staging-kib >= 1; got {args.updates}, {args.staging_kib}"
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device")
    names = list(CHECKS) if "all" in args.checks else list(dict.fromkeys(args.checks))
    device = torch.device(args.device)
    sizes = TINY if args.tiny else Sizes()
    sizes = sizes.rgb() if args.rgb else sizes
    cap = mirror_module.DATA_STAGING_BYTES
    mirror_module.DATA_STAGING_BYTES = args.staging_kib << 10  # read when a mirror first uploads
    try:
        results = run_checks(names, device, sizes, args.updates, args.torch_branch)
    finally:
        mirror_module.DATA_STAGING_BYTES = cap
    for name, result in results.items():
        print(_row(name, result))
    ok = all(r["ok"] for r in results.values())
    meta = {
        "device": args.device,
        "cuda_device": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "torch": torch.__version__,
        "sizes": "tiny" if args.tiny else "full",
        "frame_shape": list(sizes.frame_shape),
        "staging_kib": args.staging_kib,
        "torch_branch": args.torch_branch and device.type == "cpu",
    }
    print(f"gpu_checks on {meta['cuda_device'] or args.device}: {'all ok' if ok else 'FAILED'}")
    out = {"ok": ok, "checks": results, "meta": meta}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
