# shellcheck shell=bash disable=SC2034  # globals the later steps read
# test/gpu/steps/85-throttle-vgpud.sh — the vgpud-mode throttle benchmark on the real GPU
# Sourced by test/gpu/run.sh (see its header): runs in its shell, with test/gpu/lib.sh's
# variables and functions; a step reports through result/note and never exits
# unless the run cannot go on.
#
# Compute shares with vgpud's controller in the loop, on the real GPU: `vgpu-bench
# throttle --driver real` (the vgpud controller, its default) starts a bin/vgpud per
# cell on this machine's NVML, runs every tenant as `vgpuctl run --compute P --
# throttle_real kernel ...` with two real kernels of very different lengths (calibrated
# alone: 0.2 ms and 20 ms by default), and measures them itself from NVML's
# per-process utilization, as on the simulated node: alone (short, long), side by side
# (short 30% next to long 60%), and a join and a leave. About 80 s.
# -> $OUT/throttle-vgpud-real.json and .md. Goals are reported, not asserted.
# Needs step 80's throttle_real (built against the real libcuda).
if [ "$HAVE_GO_BINS" = 0 ] || [ ! -x bin/vgpud ]; then
    result SKIP throttle-vgpud-real "no bin/vgpu-bench or bin/vgpud (make go)"
elif [ ! -x "${THROTTLE_PROG:-}" ]; then
    result FAIL throttle-vgpud-real "no throttle_real built against the real libcuda (step 80)"
else
    # shellcheck disable=SC2086
    if step throttle-vgpud-real 300 bin/vgpu-bench throttle --driver real --controller vgpud \
        --prog "$THROTTLE_PROG" --nvml-lib "$REAL_LIBNVML" --out "$OUT/throttle-vgpud-real.json" \
        ${THROTTLE_VGPUD_ARGS:-}; then
        tsum=$(python3 -c 'import json,sys
try:
    r = json.load(open(sys.argv[1])); ts = [t for c in r["cells"] for t in c["tenants"]]
    k = r["config"]["kernels"]
    print("%d of %d tenants met every goal; worst steady error %.2f pts; kernels %.3f ms and %.3f ms" % (
        sum(t["met"] for t in ts), len(ts), max(abs(t["steady_error_pts"]) for t in ts),
        k["short"]["kernel_ns"] / 1e6, k["long"]["kernel_ns"] / 1e6))
except Exception as e:
    print("unreadable report: %s" % e)' "$OUT/throttle-vgpud-real.json" 2>/dev/null)
        # Goals are reported, not asserted: a missed share is a finding, not a failure.
        result PASS throttle-vgpud-real "recorded throttle-vgpud-real.json / .md: $tsum"
    else
        result FAIL throttle-vgpud-real "vgpu-bench throttle --driver real --controller vgpud failed (see run.log)"
    fi
fi
