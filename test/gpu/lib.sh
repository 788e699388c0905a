# shellcheck shell=bash
# shellcheck disable=SC2034,SC2317  # variables read by the steps; cleanup and write_summary run from traps
# test/gpu/lib.sh — the state and helpers of test/gpu/run.sh, sourced by it from the
# repository root before the steps (test/gpu/steps/*.sh).

OUT=${OUT:-$ROOT/gpu-results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/vgpu-gpu.XXXXXX)
GPUBUILD=$ROOT/build/gpu
mkdir -p "$GPUBUILD"
LOG=$OUT/run.log
: >"$LOG"

SLICE_LIMIT=$((2 << 30))          # 2 GiB slices
CHUNK=$((64 << 20))               # 64 MiB allocations
DRIVER_SLACK=$((64 << 20))        # tolerance on the driver's own per-process figure
CTX_FALLBACK_MIB=512              # context charge if it cannot be measured
LIBVGPU=$ROOT/build/libvgpu.so
FAILED=0
SUMMARY_ROWS=()
NOTES=()
HOLD_PID=
STEP_TIMES=()                     # "| step | seconds |" rows, in run order
CLEANUPS=()                       # commands the steps register: run at exit, last first

cleanup() {
    local i
    if [ -n "$HOLD_PID" ]; then kill "$HOLD_PID" 2>/dev/null; fi
    for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do eval "${CLEANUPS[$i]}" >>"$LOG" 2>&1; done
    CLEANUPS=()
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$LOG" >&2; }

# result STATUS NAME DETAIL: STATUS is PASS, FAIL or SKIP; FAIL makes the run fail.
result() {
    local status=$1 name=$2 detail=${3:-}
    detail=${detail//|/\\|}
    SUMMARY_ROWS+=("| $name | $status | ${detail//$'\n'/ } |")
    log "$status $name: $detail"
    if [ "$status" = FAIL ]; then FAILED=1; fi
}

note() { NOTES+=("$*"); log "note: $*"; }

# step NAME SECONDS CMD...: runs CMD under timeout, output appended to the log.
step() {
    local name=$1 secs=$2
    shift 2
    log "step $name: $*"
    timeout --kill-after=10 "$secs" "$@" >>"$LOG" 2>&1
    local rc=$?
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then log "step $name: timed out after ${secs}s"; fi
    return $rc
}

# A fresh slice per check: a charge one check leaves behind never skews the next.
make_slice() { # make_slice DIR [LIMIT]
    local dir=$1 limit=${2:-$SLICE_LIMIT}
    rm -rf "$dir"
    mkdir -p "$dir"
    timeout 30 "$ROOT/bin/vgpuctl" slice create --dir "$dir" --memory "$limit" \
        --device 0 --context-overhead "$CTX_BYTES" >>"$LOG" 2>&1
}

# The environment a checked program runs in: libvgpu preloaded, the slice named, and
# refuse mode so a slice libvgpu cannot use fails loudly instead of passing through.
with_vgpu() {
    local slice=$1
    shift
    env LD_PRELOAD="$LIBVGPU" VGPU_SLICE_DIR="$slice" VGPU_FAIL_MODE=refuse "$@"
}

json_field() { # json_field FILE KEY: a top-level scalar of a one-line JSON file
    python3 -c 'import json,sys
try:
    print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))
except Exception:
    print("")' "$1" "$2" 2>/dev/null
}

write_summary() {
    local card=${GPU_NAME:-unknown GPU}
    {
        echo "# vgpu on a real GPU: $card"
        echo
        echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), host: $(hostname)"
        echo "- driver: ${DRIVER_VERSION:-?}, CUDA (driver): ${CUDA_VERSION:-?}, torch: ${TORCH_VERSION:-?}"
        echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
        echo "- slices: $SLICE_LIMIT bytes, context charge ${CTX_BYTES:-?} bytes (${CTX_SOURCE:-not measured})"
        echo
        echo "| check | result | detail |"
        echo "|---|---|---|"
        printf '%s\n' "${SUMMARY_ROWS[@]}"
        echo
        if [ "$FAILED" = 0 ]; then echo "**All checks passed.**"; else echo "**Some checks FAILED.**"; fi
        for n in "${NOTES[@]}"; do
            echo
            echo "> note: $n"
        done
        if [ "${#STEP_TIMES[@]}" -gt 0 ]; then
            echo
            echo "| step | seconds |"
            echo "|---|---|"
            printf '%s\n' "${STEP_TIMES[@]}"
        fi
        for md in overhead-real.md throttle-real.md throttle-vgpud-real.md; do
            if [ -s "$OUT/$md" ]; then
                echo
                echo "---"
                echo
                sed 's/^#/##/' "$OUT/$md"
            fi
        done
        echo
        echo "Raw results: env.txt, run.log, driver_check-*.json, cprog-*.txt, hooks-gpaself.txt, torch-*.json, nvidia-smi-*.txt, vgpud.log, torch-vgpuctl.json, elastic-*.txt, container-*.txt, overhead-real.json, throttle-real.json, throttle-vgpud-real.json."
    } >"$OUT/summary.md"
}
trap 'write_summary; cleanup' EXIT
