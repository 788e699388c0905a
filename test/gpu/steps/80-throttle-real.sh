# shellcheck shell=bash disable=SC2034  # globals the later steps read
# test/gpu/steps/80-throttle-real.sh — vgpu-bench throttle --driver real (the in-process controller)
# Sourced by test/gpu/run.sh (see its header): runs in its shell, with test/gpu/lib.sh's
# variables and functions; a step reports through result/note and never exits
# unless the run cannot go on.

# A real kernel: test/cprog/throttle_real.c (PTX loaded with cuModuleLoadData, no nvcc)
# built here against the real libcuda, so a missing driver entry point shows at link
# time. The benchmark calibrates it alone, then runs 4 cells of 3 s + 10 s under
# libvgpu with the controller in the loop.
THROTTLE_PROG=$GPUBUILD/throttle_real
if [ "$HAVE_GO_BINS" = 0 ]; then
    result SKIP throttle-real "no bin/vgpu-bench"
elif ! { [ -n "$REAL_LIBCUDA" ] && [ -n "$REAL_LIBNVML" ] &&
    step build-throttle-real 120 gcc -std=gnu11 -O2 -g -Wall -Wextra -Ilibvgpu/include -Itest/cprog \
        -o "$THROTTLE_PROG" test/cprog/throttle_real.c test/cprog/testutil.c test/cprog/testutil_linked.c \
        "$REAL_LIBCUDA" "$REAL_LIBNVML" -ldl -pthread -lm; }; then
    result FAIL throttle-real "could not build test/cprog/throttle_real.c against the real libcuda (${REAL_LIBCUDA:-not found})"
else
    # shellcheck disable=SC2086
    if step throttle-real 240 bin/vgpu-bench throttle --driver real --controller inproc --prog "$THROTTLE_PROG" \
        --out "$OUT/throttle-real.json" --step-log "$OUT/throttle-real-steps.txt" ${THROTTLE_ARGS:-}; then
        tsum=$(python3 -c 'import json,sys
try:
    r = json.load(open(sys.argv[1])); s = r["summary"]; c = r["config"]["real"]
    print("%d of %d cells within 2 points (max error %.2f pts), achieved from %s, kernel %.3f ms" % (
        s["cells_met"], s["cells"], s["max_error_pts"], c["measure"], c["kernel_ns"] / 1e6))
except Exception as e:
    print("unreadable report: %s" % e)' "$OUT/throttle-real.json" 2>/dev/null)
        # Goals are reported, not asserted: a missed share is a finding, not a failure.
        result PASS throttle-real "recorded throttle-real.json / .md: $tsum"
    else
        result FAIL throttle-real "vgpu-bench throttle --driver real failed (see run.log)"
    fi
fi
