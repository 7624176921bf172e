"""Rebuild a sweep's aggregates from run directories alone (`distributed_sac/run/study.py`).

A study that spans sessions commits its runs' files (config.json, metrics.jsonl, trial.json,
final_eval.json) and rebuilds the summary from them:

    python -m benchmarks.aggregate runs/a/seed0 runs/b/seed1 --name demos --out docs/results/x
    python -m benchmarks.aggregate runs/sweep --out runs/sweep/aggregates   # a whole sweep

With `--name`, every run given is one configuration of that name; without it, each run's
trial.json names its configuration (a sweep directory stands for all of its runs). Writes
<config>.json, <config>.csv, summary.json and curves.png into --out and prints a table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distributed_sac.run import study, study_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="run or sweep dirs")
    parser.add_argument("--name", default=None, help="the configuration all runs belong to")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="eval return for steps-to-threshold (default: CarRacing 900, VisualPendulum -250)",
    )
    args = parser.parse_args(argv)
    try:
        groups = study.group_runs(args.runs, args.name)
        summaries = [study.aggregate(runs, name, args.threshold) for name, runs in groups.items()]
    except (ValueError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    study_files.write(summaries, args.out)
    print(study_files.table(summaries))
    print(f"aggregates: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
