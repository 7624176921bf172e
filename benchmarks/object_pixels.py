"""How many pixels a DMC task's key object covers at each observation size.

The frame size is the main input cost of the learner and the main limit of what it can see: a
ball of two pixels at 32x32 is hard to track. For each ``--dmc TASK:GEOM[,GEOM]`` (the geoms
named in the task's MuJoCo model, e.g. ``ball_in_cup-catch:ball``), episodes are driven with
seeded uniform random actions and every ``--every``-th frame of the first ``--frames`` control
steps is drawn from the task's camera as a segmentation image at each ``--sizes`` side; the
pixels whose geom is one of GEOM are counted. Reports the mean, minimum and maximum count and
the share of frames where the object is visible at all (one pixel or more). No timing: the
figures are the same on every machine. Example:

    python -m benchmarks.object_pixels --dmc reacher-easy:target ball_in_cup-catch:ball \
        cartpole-swingup:pole_1 --json bench_out/object_pixels.json
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.report import write_json
from distributed_sac.envs.dmc import DMCError, make_dmc

GEOM = 5
"""MuJoCo's object type of a geom (mjOBJ_GEOM), the second channel of a segmentation image."""
DEFAULT_TASKS = ("reacher-easy:target", "ball_in_cup-catch:ball", "cartpole-swingup:pole_1")


def parse_task(arg: str) -> tuple[str, list[str]]:
    """("ball_in_cup-catch", ["ball"]) from "ball_in_cup-catch:ball"."""
    task, sep, geoms = arg.partition(":")
    if not sep or not geoms:
        raise ValueError(f"--dmc {arg}: expected TASK:GEOM[,GEOM], e.g. ball_in_cup-catch:ball")
    return task, geoms.split(",")


def count_pixels(
    task: str, geoms: list[str], sizes: list[int], episodes: int, frames: int, every: int, seed: int
) -> dict[int, list[int]]:
    """Per size, the object's pixel count in each sampled frame."""
    env = make_dmc(task, max(sizes))
    try:
        physics = env.physics
        names = [physics.model.id2name(i, "geom") for i in range(physics.model.ngeom)]
        missing = [g for g in geoms if g not in names]
        if missing:
            raise ValueError(
                f"--dmc {task}: no geom {', '.join(missing)} in its model "
                f"(geoms: {', '.join(n for n in names if n)})"
            )
        ids = [names.index(g) for g in geoms]
        rng = np.random.default_rng(seed)
        env.action_space.seed(seed)
        counts: dict[int, list[int]] = {s: [] for s in sizes}
        for _ in range(episodes):
            env.reset(seed=int(rng.integers(2**31)))
            for t in range(frames):
                if t % every == 0:
                    for s in sizes:
                        seg = physics.render(s, s, camera_id=env.camera_id, segmentation=True)
                        hit = np.isin(seg[..., 0], ids) & (seg[..., 1] == GEOM)
                        counts[s].append(int(hit.sum()))
                env.step(env.action_space.sample())
        return counts
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dmc", nargs="+", default=list(DEFAULT_TASKS), help="TASK:GEOM[,GEOM]")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64, 84], help="sides")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per task")
    parser.add_argument("--frames", type=int, default=200, help="control steps per episode")
    parser.add_argument("--every", type=int, default=10, help="draw every N-th control step")
    parser.add_argument("--seed", type=int, default=0, help="env and action seed")
    parser.add_argument("--json", default="", help="write results to this path")
    args = parser.parse_args()
    if min(args.episodes, args.frames, args.every, *args.sizes) < 1:
        parser.error("--episodes, --frames, --every and --sizes must be positive")

    rows = []
    for arg in args.dmc:
        try:
            task, geoms = parse_task(arg)
            counts = count_pixels(
                task, geoms, args.sizes, args.episodes, args.frames, args.every, args.seed
            )
        except (ValueError, DMCError) as exc:
            parser.error(str(exc))
        for size, c in counts.items():
            a = np.asarray(c)
            rows.append(
                {
                    "env": f"dmc:{task}",
                    "geoms": geoms,
                    "image_size": size,
                    "frames": len(c),
                    "pixels_mean": float(a.mean()),
                    "pixels_min": int(a.min()),
                    "pixels_max": int(a.max()),
                    "visible_frac": float((a > 0).mean()),
                }
            )
    w = max([len(",".join(r["geoms"])) + 2 for r in rows] + [7])
    print(f"{'env':<26}{'geoms':<{w}}{'size':>5}{'mean px':>9}{'min':>5}{'max':>5}{'visible':>9}")
    for r in rows:
        print(
            f"{r['env']:<26}{','.join(r['geoms']):<{w}}{r['image_size']:>5}{r['pixels_mean']:>9.1f}"
            f"{r['pixels_min']:>5}{r['pixels_max']:>5}{r['visible_frac']:>8.0%}"
        )
    write_json(args.json, {"rows": rows, "episodes": args.episodes, "seed": args.seed})


if __name__ == "__main__":
    main()
