# shellcheck shell=bash disable=SC2034  # globals the later steps read
# test/gpu/steps/90-suite.sh — vgpu-bench suite --driver real --quick
# Sourced by test/gpu/run.sh (see its header). The whole benchmark suite, short,
# against the real driver: its reports, plots and index under $OUT/suite, to be
# committed under bench/results/ naming the card. GPU_RUN_SUITE=0 skips it (the
# rehearsal: the suite has its own tests, and it would take minutes there).

if [ "$HAVE_GO_BINS" = 0 ]; then
    result SKIP suite "no bin/vgpu-bench"
elif [ "${GPU_RUN_SUITE:-1}" = 0 ]; then
    result SKIP suite "disabled (GPU_RUN_SUITE=0)"
elif step suite 420 bin/vgpu-bench suite --driver real --quick --out "$OUT/suite"; then
    result PASS suite "reports, plots and index.md under suite/ (goals reported, not asserted)"
else
    # The suite exits 1 when a benchmark failed to run; the index says which.
    result FAIL suite "vgpu-bench suite --driver real --quick failed (see run.log and suite/index.md)"
fi
