#!/usr/bin/env bash
# GPU check: everything a CUDA machine should show, in at most 9 minutes, into OUTDIR.
#
#   bash benchmarks/gpu_check.sh OUTDIR
#
# 1. benchmarks/gpu_checks.py mirror resync on CUDA: the learner's DeviceMirror, fed the same
#    read-only chunk runs as a ReplayBuffer over 4 wraps of its rings through a 256 KiB staging
#    cap, gathers byte-identical batches, and again after a forced resync (at most 40 s);
# 2. learner throughput on CUDA: plain and fast path, then the fast path with torch.compile
#    (at most 2 minutes);
# 3. benchmarks/gpu_checks.py bf16 on CUDA: 20 bf16 fast-path updates without and with
#    torch.compile, every loss finite, ms per update (at most 80 s; after step 2, so that
#    inductor's cache holds most of the compiled kernels);
# 4. benchmarks/learner_feed.py on CUDA when it exists (batches/s through the real replay and
#    learner actors; at most 40 s);
# 5. a full-spec CarRacing run (84x84, the spec's networks and schedule) with (cores - 2) env
#    workers, stopped by SIGINT after at most 3.75 minutes (the Ctrl-C path: final checkpoint),
#    its final weights evaluated over 5 episodes, and its curve and summary written by
#    benchmarks/learning.py --replot.
# The time limits add up to 9 minutes. Every step writes JSON into OUTDIR; the log of each is
# OUTDIR/<step>.log. A gpu_checks step fails on any non-zero exit, its time limit included.
# Nothing in CI or the tests runs this script (tests/test_gpu_checks.py runs gpu_checks.py on
# the CPU).
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
run_step() {  # run_step NAME SECONDS STRICT COMMAND...: time limit, log to OUTDIR/NAME.log
    local name=$1 limit=$2 strict=$3
    shift 3
    echo "== $name (at most ${limit}s): $*"
    timeout -s INT -k 20 "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    tail -n 15 "$out/$name.log"
    # 124 (or 130 from SIGINT) is the planned end of the time-limited training run; a strict
    # step (a check) must finish in its time.
    if [ "$rc" -ne 0 ] && { [ "$strict" -eq 1 ] || { [ "$rc" -ne 124 ] && [ "$rc" -ne 130 ]; }; }; then
        echo "!! $name exited with $rc"
        status=1
    fi
}
step() { run_step "$1" "$2" 0 "${@:3}"; }
check() { run_step "$1" "$2" 1 "${@:3}"; }

check gpu_mirror 40 python -m benchmarks.gpu_checks mirror resync --device cuda \
    --json "$out/gpu_mirror.json"

step learner_plain_fast 40 python -m benchmarks.learner_throughput --device cuda \
    --updates 200 --warmup 20 --json "$out/learner_plain_fast.json"
step learner_compile 80 python -m benchmarks.learner_throughput --device cuda --compile \
    --updates 200 --warmup 20 --json "$out/learner_compile.json"
check gpu_bf16 80 python -m benchmarks.gpu_checks bf16 --device cuda --updates 20 \
    --json "$out/gpu_bf16.json"
if [ -f benchmarks/learner_feed.py ]; then
    step learner_feed 40 python -m benchmarks.learner_feed --json "$out/learner_feed.json"
fi
step carracing_full 225 python launch.py train --env CarRacing --num-workers "$workers" \
    --device cuda --total-steps 1000000 --eval.every 20000 --eval.episodes 5 \
    --checkpoint-every 50000 --wandb disabled --run-dir "$out/carracing_full"
step carracing_eval 25 python launch.py eval "$out/carracing_full" --episodes 5 \
    --video "$out/carracing_full.mp4"
step carracing_curve 10 python -m benchmarks.learning --replot "$out/carracing_full" \
    --threshold 900 --out "$out/carracing_curve" --json "$out/carracing_summary.json"
echo "gpu_check: done in $(($(date +%s) - started)) s with $workers env workers; results in $out"
exit $status
