#!/usr/bin/env bash
# GPU check: everything a CUDA machine should show, in at most 9 minutes, into OUTDIR.
#
#   bash benchmarks/gpu_check.sh OUTDIR
#
# 1. learner throughput on CUDA: plain and fast path, then the fast path with torch.compile
#    (at most 2 minutes);
# 2. benchmarks/learner_feed.py on CUDA when it exists (batches/s through the real replay and
#    learner actors; at most 40 s);
# 3. a full-spec CarRacing run (84x84, the spec's networks and schedule) with (cores - 2) env
#    workers, stopped by SIGINT after at most 5.75 minutes (the Ctrl-C path: final checkpoint), its
#    final weights evaluated over 5 episodes, and its curve and summary written by
#    benchmarks/learning.py --replot.
# The time limits add up to 9 minutes. Every step writes JSON into OUTDIR; the log of each is OUTDIR/<step>.log. Nothing in CI or
# the tests runs this script.
set -uo pipefail
if [ $# -ne 1 ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUTDIR" >&2
    exit 2
fi
out=$1
cd "$(dirname "$0")/.."
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to torch; run this on a GPU machine" >&2
    exit 2
fi
mkdir -p "$out" || exit 2
cores=$(nproc)
workers=$((cores > 3 ? cores - 2 : 1))
started=$(date +%s)
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUTDIR/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit}s): $*"
    timeout -s INT -k 20 "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    tail -n 15 "$out/$name.log"
    # 124 (or 130 from SIGINT) is the planned end of the time-limited training run.
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 130 ]; then
        echo "!! $name exited with $rc"
        status=1
    fi
}

step learner_plain_fast 40 python -m benchmarks.learner_throughput --device cuda \
    --updates 200 --warmup 20 --json "$out/learner_plain_fast.json"
step learner_compile 80 python -m benchmarks.learner_throughput --device cuda --compile \
    --updates 200 --warmup 20 --json "$out/learner_compile.json"
if [ -f benchmarks/learner_feed.py ]; then
    step learner_feed 40 python -m benchmarks.learner_feed --json "$out/learner_feed.json"
fi
step carracing_full 345 python launch.py train --env CarRacing --num-workers "$workers" \
    --device cuda --total-steps 1000000 --eval.every 20000 --eval.episodes 5 \
    --checkpoint-every 50000 --wandb disabled --run-dir "$out/carracing_full"
step carracing_eval 25 python launch.py eval "$out/carracing_full" --episodes 5 \
    --video "$out/carracing_full.mp4"
step carracing_curve 10 python -m benchmarks.learning --replot "$out/carracing_full" \
    --threshold 900 --out "$out/carracing_curve" --json "$out/carracing_summary.json"
echo "gpu_check: done in $(($(date +%s) - started)) s with $workers env workers; results in $out"
exit $status
