# shellcheck shell=bash disable=SC2034  # globals the later steps read
# test/gpu/steps/70-overhead.sh — vgpu-bench overhead --driver real
# Sourced by test/gpu/run.sh (see its header): runs in its shell, with test/gpu/lib.sh's
# variables and functions; a step reports through result/note and never exits
# unless the run cannot go on.

if [ "$HAVE_GO_BINS" = 0 ]; then
    result SKIP overhead "no bin/vgpu-bench"
else
    # Fewer samples than on the simulator: a real launch costs microseconds, and the
    # whole script must finish in a few minutes.
    # shellcheck disable=SC2086
    if step overhead 420 bin/vgpu-bench overhead --driver real --out "$OUT/overhead-real.json" \
        --iters 1000 --batch 50 --rounds 3 --init-rounds 2 ${BENCH_ARGS:-}; then
        met=$(json_field "$OUT/overhead-real.json" all_met)
        # Goals are reported, not asserted: a missed goal is a finding, not a failure.
        result PASS overhead "recorded overhead-real.json / .md; all goals met: $met"
    else
        result FAIL overhead "vgpu-bench overhead --driver real failed (see run.log)"
    fi
fi
