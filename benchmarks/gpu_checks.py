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

The ``mirror`` and ``resync`` checks and the sizes live in ``benchmarks/gpu_replay_checks.py``.
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
import time
import warnings

import numpy as np
import torch

from benchmarks.gpu_replay_checks import TINY, Sizes, check_mirror, check_resync, sync_device
from benchmarks.report import write_json
from distributed_sac.agent.sac_ae import SacAeAgent
from distributed_sac.config.data import Batch
from distributed_sac.replay import mirror as mirror_module

CHECKS = ("mirror", "bf16", "resync")


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
        sync_device(device)
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
