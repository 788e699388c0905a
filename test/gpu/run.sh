#!/usr/bin/env bash
# shellcheck disable=SC2317  # cleanup and write_summary run from traps
# test/gpu/run.sh — vgpu on a machine with a real NVIDIA GPU.
#
# Needs: the NVIDIA driver (libcuda.so.1, libnvidia-ml.so.1, nvidia-smi), gcc, make,
# python3 with PyTorch (CUDA build). No network. Go is optional: when bin/vgpuctl and
# bin/vgpu-bench are already built (carried over from a build machine) they are used;
# otherwise `make go` builds them if `go` is present; otherwise the steps that need them
# are reported as skipped.
#
# What it does (every step under `timeout`; the whole run takes a few minutes):
#   1. $OUT/env.txt: nvidia-smi -L, driver and CUDA versions, nvcc, gcc, go, torch.
#   2. builds libvgpu and the test programs with gcc (`make clib`), and
#      test/gpu/driver_check.c against the machine's real libcuda.so.1.
#   3. measures a CUDA context's device-memory footprint (a process holding only a
#      primary context, as nvidia-smi sees it) and uses it as the slice's per-context
#      charge.
#   4. driver API: driver_check through every interception path (linked symbol, dlsym,
#      cuGetProcAddress, cuMemCreate, cuMemAllocAsync) with LD_PRELOAD=build/libvgpu.so in
#      a 2 GiB slice: the queries show the slice, 64 MiB allocations stop with exactly
#      CUDA_ERROR_OUT_OF_MEMORY having been admitted no more than the slice, and the
#      driver's per-process figure agrees. Then the libvgpu test programs of test/cprog
#      that take no simulator (alloc until OOM, four processes sharing one slice).
#   5. PyTorch (test/gpu/torch_check.py) with the default allocator,
#      PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True and backend:cudaMallocAsync:
#      mem_get_info shows the slice, allocating past it raises torch.OutOfMemoryError.
#      Also build/test/alloc --path gpaself under libvgpu: its HOOKS line must show every
#      entry point libvgpu hooks resolved (through the real cuGetProcAddress) to the
#      hook, proving the pointer matching on this driver -> $OUT/hooks-gpaself.txt.
#   6. `bin/vgpu-bench overhead --driver real` -> $OUT/overhead-real.json and .md.
#   7. `bin/vgpu-bench throttle --driver real` (about a minute): compute shares with a
#      real kernel (test/cprog/throttle_real.c, a PTX busy loop, built here against the
#      real libcuda), one tenant alone at 50% and two at 30/70, with and without CUDA
#      graphs -> $OUT/throttle-real.json and .md. Goals are reported, not asserted.
#   8. $OUT/summary.md naming the card, one line per check.
# Exit status: 0 when every check passed, 1 otherwise. Whatever was gathered is
# always written to $OUT.
#
# Usage: OUT=/some/dir test/gpu/run.sh      (default OUT: ./gpu-results)
# Optional environment:
#   BENCH_ARGS="--iters 500"   extra flags for vgpu-bench overhead
#   THROTTLE_ARGS="--window 5s"   extra flags for vgpu-bench throttle --driver real
#   GPU_RUN_LIBCUDA=PATH, GPU_RUN_LIBNVML=PATH   the driver libraries to link
#       driver_check against, when the loader's cache does not know them
#   GPU_RUN_FORCE_BUILD=0   do not rebuild build/ from scratch (make without -B)
# test/gpu/rehearsal/run_test.go runs this script on the simulated node (a stand-in nvidia-smi,
# LD_LIBRARY_PATH=build/simgpu) so that it keeps working between GPU runs.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
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

cleanup() {
    if [ -n "$HOLD_PID" ]; then kill "$HOLD_PID" 2>/dev/null; fi
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
        for md in overhead-real.md throttle-real.md; do
            if [ -s "$OUT/$md" ]; then
                echo
                echo "---"
                echo
                sed 's/^#/##/' "$OUT/$md"
            fi
        done
        echo
        echo "Raw results: env.txt, run.log, driver_check-*.json, cprog-*.txt, hooks-gpaself.txt, torch-*.json, overhead-real.json, throttle-real.json."
    } >"$OUT/summary.md"
}
trap 'write_summary; cleanup' EXIT

# ---------------------------------------------------------------- 1. environment
log "vgpu GPU run: root $ROOT, results in $OUT"
{
    echo "## date"; date -u
    echo "## uname"; uname -a
    echo "## nvidia-smi -L"; timeout 30 nvidia-smi -L
    echo "## nvidia-smi --query-gpu"
    timeout 30 nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.total,memory.used,compute_cap --format=csv
    echo "## nvidia-smi"; timeout 30 nvidia-smi
    echo "## /proc/driver/nvidia/version"; cat /proc/driver/nvidia/version
    echo "## libraries"; ldconfig -p | grep -E 'libcuda\.so|libnvidia-ml\.so'
    echo "## nvcc"; if command -v nvcc >/dev/null; then timeout 30 nvcc --version; else echo "nvcc: not found"; fi
    echo "## gcc"; gcc --version | head -n 1
    echo "## go"; if command -v go >/dev/null; then go version; else echo "go: not found"; fi
    echo "## python / torch"
    timeout 120 python3 -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
} >"$OUT/env.txt" 2>&1

if ! timeout 30 nvidia-smi -L >/dev/null 2>&1; then
    result FAIL environment "nvidia-smi -L failed: no usable NVIDIA GPU (see env.txt)"
    exit 1
fi
GPU_NAME=$(timeout 30 nvidia-smi --query-gpu=name --format=csv,noheader -i 0 2>/dev/null | head -n 1)
DRIVER_VERSION=$(timeout 30 nvidia-smi --query-gpu=driver_version --format=csv,noheader -i 0 2>/dev/null | head -n 1)
CUDA_VERSION=$(timeout 30 nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n 1)
TORCH_VERSION=$(timeout 120 python3 -c 'import torch; print(torch.__version__)' 2>/dev/null || echo "not installed")
result PASS environment "$GPU_NAME, driver $DRIVER_VERSION, CUDA $CUDA_VERSION, torch $TORCH_VERSION"

# ---------------------------------------------------------------------- 2. build
# Rebuilt from scratch (-B) with this machine's gcc and glibc, whatever build/ was
# carried along; without -Werror, so that a newer compiler's new warning (kept in
# run.log) cannot stop a rare GPU run. GPU_RUN_FORCE_BUILD=0 (the rehearsal, which
# runs beside other tests using build/) only brings build/ up to date.
MAKE_FORCE=-B
if [ "${GPU_RUN_FORCE_BUILD:-1}" = 0 ]; then MAKE_FORCE=; fi
if ! step make-clib 300 make $MAKE_FORCE -j"$(nproc)" clib CWARN="-Wall -Wextra"; then
    result FAIL build "make clib failed (see run.log)"
    exit 1
fi
result PASS build "make $MAKE_FORCE clib: build/libvgpu.so and the test programs, with $(gcc --version | head -n 1)"

HAVE_GO_BINS=1
if [ ! -x bin/vgpuctl ] || [ ! -x bin/vgpu-bench ]; then
    if command -v go >/dev/null && step make-go 300 make go; then
        :
    else
        HAVE_GO_BINS=0
        note "bin/vgpuctl or bin/vgpu-bench missing and no Go toolchain: build them elsewhere (make go) and bring bin/ along"
    fi
fi

# The real driver libraries: found through the dynamic linker's cache, else the
# places drivers and container runtimes put them.
find_lib() {
    local name=$1 p
    p=$(ldconfig -p 2>/dev/null | awk -v n="$name" '$1 == n && /x86-64|64bit|AArch64/ {print $NF; exit}')
    if [ -z "$p" ]; then
        for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/aarch64-linux-gnu /usr/local/nvidia/lib64 /usr/lib/wsl/lib; do
            if [ -e "$d/$name" ]; then p=$d/$name; break; fi
        done
    fi
    echo "$p"
}
REAL_LIBCUDA=${GPU_RUN_LIBCUDA:-$(find_lib libcuda.so.1)}
REAL_LIBNVML=${GPU_RUN_LIBNVML:-$(find_lib libnvidia-ml.so.1)}
echo "## real driver libraries used for linking" >>"$OUT/env.txt"
echo "libcuda: ${REAL_LIBCUDA:-not found}, libnvidia-ml: ${REAL_LIBNVML:-not found}" >>"$OUT/env.txt"
DRIVER_CHECK=$GPUBUILD/driver_check
if [ -n "$REAL_LIBCUDA" ] && [ -n "$REAL_LIBNVML" ] &&
    step build-driver-check 120 gcc -std=gnu11 -O2 -g -Wall -Wextra -Ilibvgpu/include \
        -o "$DRIVER_CHECK" test/gpu/driver_check.c "$REAL_LIBCUDA" "$REAL_LIBNVML" -ldl; then
    result PASS build-driver-check "gcc test/gpu/driver_check.c against $REAL_LIBCUDA"
else
    result FAIL build-driver-check "could not build against the real libcuda (${REAL_LIBCUDA:-not found})"
    DRIVER_CHECK=
fi

# ------------------------------------------------------ 3. the context footprint
# A process holding only a primary context; nvidia-smi's per-process figure for it
# (or, when pids are not visible, the device's used-memory delta) is what one context
# costs on this card and driver.
CTX_MIB=
used_before=$(timeout 30 nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -n 1 | tr -d ' ')
rm -f "$WORK/ready"
timeout 120 build/test/bench_overhead hold --ready-file "$WORK/ready" --seconds 90 >>"$LOG" 2>&1 &
HOLD_PID=$!
for _ in $(seq 1 600); do
    [ -s "$WORK/ready" ] && break
    kill -0 "$HOLD_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -s "$WORK/ready" ]; then
    sleep 1 # let nvidia-smi's accounting catch up
    apps=$(timeout 30 nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null)
    used_during=$(timeout 30 nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -n 1 | tr -d ' ')
    hold_pid_inner=$(awk '{print $1}' "$WORK/ready")
    is_num() { case "$1" in '' | *[!0-9]*) return 1 ;; esac; }
    per_pid=$(echo "$apps" | awk -F', *' -v p="$hold_pid_inner" -v q="$HOLD_PID" '$1 == p || $1 == q {print $2; exit}')
    only_app=
    if [ "$(echo "$apps" | grep -c .)" = 1 ]; then only_app=$(echo "$apps" | awk -F', *' '{print $2}'); fi
    if is_num "$per_pid" && [ "$per_pid" -gt 0 ]; then
        CTX_MIB=$per_pid
        CTX_SOURCE="nvidia-smi per-process used memory of a process holding one context"
    elif is_num "$only_app" && [ "$only_app" -gt 0 ]; then
        CTX_MIB=$only_app
        CTX_SOURCE="nvidia-smi used memory of the only compute process (pid namespace hides ours)"
    elif is_num "$used_before" && is_num "$used_during" && [ "$used_during" -gt "$used_before" ]; then
        CTX_MIB=$((used_during - used_before))
        CTX_SOURCE="device used-memory delta around a process holding one context"
    fi
    echo "## context footprint: apps [$apps] used before $used_before MiB, during $used_during MiB" >>"$OUT/env.txt"
fi
kill "$HOLD_PID" 2>/dev/null
wait "$HOLD_PID" 2>/dev/null
HOLD_PID=
case "$CTX_MIB" in
'' | *[!0-9]*)
    CTX_MIB=$CTX_FALLBACK_MIB
    CTX_SOURCE="fixed ${CTX_FALLBACK_MIB} MiB: the footprint could not be measured"
    result SKIP context-footprint "could not measure; using ${CTX_FALLBACK_MIB} MiB (see run.log): the checks below that compare with the driver may be off by the difference"
    ;;
*)
    result PASS context-footprint "$CTX_MIB MiB ($CTX_SOURCE)"
    ;;
esac
CTX_BYTES=$((CTX_MIB << 20))

# ------------------------------------------------------------------ 4. driver API
if [ "$HAVE_GO_BINS" = 0 ]; then
    result SKIP driver-api "no bin/vgpuctl to create slices"
elif [ -n "$DRIVER_CHECK" ]; then
    for path in linked dlsym procaddr vmm async; do
        slice=$WORK/slice-driver-$path
        if ! make_slice "$slice"; then
            result FAIL "driver-$path" "vgpuctl slice create failed (see run.log)"
            continue
        fi
        out=$OUT/driver_check-$path.json
        log "driver_check --path $path"
        with_vgpu "$slice" timeout 120 "$DRIVER_CHECK" --limit "$SLICE_LIMIT" --context-overhead "$CTX_BYTES" \
            --chunk "$CHUNK" --path "$path" --driver-slack "$DRIVER_SLACK" --expect-libvgpu \
            >"$out" 2>>"$LOG"
        rc=$?
        detail="exit $rc, admitted $(json_field "$out" admitted) bytes in $(json_field "$out" blocks) blocks, driver per-process $(json_field "$out" driver_used)"
        failed=$(python3 -c 'import json,sys
try:
    r = json.load(open(sys.argv[1]))
    print(", ".join(c["name"] + " (" + c["detail"] + ")" for c in r["checks"] if not c["ok"]))
except Exception as e:
    print("no result: %s" % e)' "$out" 2>/dev/null)
        if [ $rc = 0 ]; then result PASS "driver-$path" "$detail"; else result FAIL "driver-$path" "$detail; failed: $failed"; fi
    done
fi

# The workload programs of test/cprog (alloc: linked to libcuda; dl_alloc: dlopen
# only) on the real driver: they are linked by soname, so with no LD_LIBRARY_PATH
# they load the machine's libcuda.so.1. Each allocates 64 MiB chunks through one
# interception path and one allocation API until the first error, and prints
# "RESULT admitted=N count=N err=N name=NAME".
result_field() { # result_field FILE KEY: KEY=value of the RESULT line
    sed -n "s/^RESULT .*\b$2=\([^ ]*\).*/\1/p" "$1" | head -n 1
}

cprog_oom() { # cprog_oom NAME PROGRAM ARGS...
    local name=$1 prog=$2
    shift 2
    if [ ! -x "$prog" ]; then
        result SKIP "$name" "$prog not built"
        return
    fi
    local slice=$WORK/slice-$name txt=$OUT/$name.txt
    if ! make_slice "$slice" "$SLICE_LIMIT"; then
        result FAIL "$name" "vgpuctl slice create failed"
        return
    fi
    log "$name: $prog $*"
    with_vgpu "$slice" timeout 120 "$prog" "$@" --chunk $((CHUNK >> 20))MiB --until-oom >"$txt" 2>&1
    local rc=$? admitted err cap=$((SLICE_LIMIT - CTX_BYTES))
    admitted=$(result_field "$txt" admitted)
    err=$(result_field "$txt" name)
    local detail
    detail="$(basename "$prog") $*: exit $rc, admitted ${admitted:-?} of $cap, stopped by ${err:-?}"
    if [ "$rc" = 0 ] && [ "$err" = CUDA_ERROR_OUT_OF_MEMORY ] && [ -n "$admitted" ] &&
        [ "$admitted" -le "$cap" ] && [ "$admitted" -gt $((cap - 2 * CHUNK)) ]; then
        result PASS "$name" "$detail"
    else
        result FAIL "$name" "$detail (want OUT_OF_MEMORY with cap - 2 chunks < admitted <= cap); $(grep -m1 FAIL "$txt")"
    fi
}

# cudart's way to the driver: cuGetProcAddress("cuGetProcAddress", 12000) -> _v2,
# then every entry point by base name. The real driver returns its own pointers;
# libvgpu must recognize each hooked one and hand back its hook. The program's
# HOOKS line ("HOOKS vgpu=field:symbol,... driver=field,...", testutil.h) says
# where each resolved pointer lives; the expected hooks are those of
# test/integration/memory_test.go (hookOf, notHooked).
hooks_gpaself() {
    local name=hooks-gpaself prog=build/test/alloc txt=$OUT/hooks-gpaself.txt
    if [ ! -x "$prog" ]; then
        result SKIP "$name" "$prog not built"
        return
    fi
    local slice=$WORK/slice-$name
    if ! make_slice "$slice"; then
        result FAIL "$name" "vgpuctl slice create failed"
        return
    fi
    log "$name: $prog --path gpaself --api alloc --count 1"
    with_vgpu "$slice" timeout 120 "$prog" --path gpaself --api alloc --count 1 --chunk $((CHUNK >> 20))MiB >"$txt" 2>&1
    local rc=$? verdict
    verdict=$(python3 - "$txt" <<'PYEOF'
import sys
hook_of = {
    "init": "cuInit", "retain": "cuDevicePrimaryCtxRetain",
    "release": "cuDevicePrimaryCtxRelease_v2", "ctx_create": "cuCtxCreate_v2",
    "ctx_create3": "cuCtxCreate_v3", "ctx_destroy": "cuCtxDestroy_v2",
    "alloc": "cuMemAlloc_v2", "pitch": "cuMemAllocPitch_v2", "managed": "cuMemAllocManaged",
    "mfree": "cuMemFree_v2", "create": "cuMemCreate", "mrelease": "cuMemRelease",
    "map": "cuMemMap", "unmap": "cuMemUnmap",
    "array_create": "cuArrayCreate_v2", "array_destroy": "cuArrayDestroy",
    "alloc_async": "cuMemAllocAsync", "free_async": "cuMemFreeAsync",
    "alloc_pool": "cuMemAllocFromPoolAsync", "pool_create": "cuMemPoolCreate",
    "pool_destroy": "cuMemPoolDestroy", "pool_trim": "cuMemPoolTrimTo",
    "pool_set": "cuMemPoolSetAttribute", "stream_sync": "cuStreamSynchronize",
    "ctx_sync": "cuCtxSynchronize", "mem_info": "cuMemGetInfo_v2",
    "total_mem": "cuDeviceTotalMem_v2", "launch": "cuLaunchKernel",
    "launch_ex": "cuLaunchKernelEx", "launch_coop": "cuLaunchCooperativeKernel",
    "graph_launch": "cuGraphLaunch",
}
not_hooked = ["set_current", "reserve", "addr_free", "set_access", "pool_get",
              "module_load", "get_function"]
must = ["init", "alloc", "mfree", "launch", "graph_launch"]
line = next((l.strip() for l in open(sys.argv[1]) if l.startswith("HOOKS ")), None)
if line is None:
    print("FAIL no HOOKS line")
    sys.exit()
parts = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
vg = dict(e.split(":", 1) for e in parts.get("vgpu", "").split(",") if ":" in e)
drv = set(e for e in parts.get("driver", "").split(",") if e)
bad = []
for f, sym in hook_of.items():
    if f in vg and vg[f] != sym:
        bad.append("%s -> %s (want %s)" % (f, vg[f], sym))
    if f in drv:
        bad.append("%s -> the driver (escapes libvgpu)" % f)
bad += ["%s not hooked" % f for f in must if f not in vg]
bad += ["%s hooked (want the driver's own)" % f for f in not_hooked if f not in drv]
print(("FAIL " + "; ".join(bad)) if bad else "OK %d entry points hooked, %d the driver's own" % (len(vg), len(drv)))
PYEOF
)
    local detail="alloc --path gpaself: exit $rc, ${verdict:-no verdict} (HOOKS line in hooks-gpaself.txt)"
    if [ "$rc" = 0 ] && [ "${verdict%% *}" = OK ]; then
        result PASS "$name" "$detail"
    else
        result FAIL "$name" "$detail"
    fi
}

# Four processes allocate at once in one slice with room for their four contexts
# plus SLICE_LIMIT bytes: together they must never be admitted more, and the driver
# must agree, while all four hold what they got.
four_processes() {
    local name=four-processes prog=build/test/alloc
    if [ ! -x "$prog" ]; then
        result SKIP "$name" "$prog not built"
        return
    fi
    local limit=$((SLICE_LIMIT + 4 * CTX_BYTES)) slice=$WORK/slice-four i
    if ! make_slice "$slice" "$limit"; then
        result FAIL "$name" "vgpuctl slice create failed"
        return
    fi
    local used_before
    used_before=$(timeout 30 nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -n 1 | tr -d ' ')
    local pids=() fds=() fd
    for i in 1 2 3 4; do
        mkfifo "$WORK/four-in-$i"
        with_vgpu "$slice" timeout 180 "$prog" --path linked --api alloc --chunk $((CHUNK >> 20))MiB \
            --until-oom --step <"$WORK/four-in-$i" >"$OUT/cprog-four-$i.txt" 2>&1 &
        pids+=($!)
        exec {fd}>"$WORK/four-in-$i"
        fds+=("$fd")
    done
    # wait_phase PHASE: until all four printed it (1) or one exited or 120 s passed (0).
    wait_phase() {
        local k all
        for _ in $(seq 1 1200); do
            all=1
            for k in 0 1 2 3; do
                if ! grep -q "^PHASE $1" "$OUT/cprog-four-$((k + 1)).txt" 2>/dev/null; then
                    all=0
                    kill -0 "${pids[$k]}" 2>/dev/null || return 1
                fi
            done
            [ "$all" = 1 ] && return 0
            sleep 0.1
        done
        return 1
    }
    # Every process holds its context before any allocates; then all start at once.
    # Writes go through a subshell: if a program died, SIGPIPE ends the subshell,
    # not this script.
    local all=0
    if wait_phase ready; then
        for fd in "${fds[@]}"; do (echo go) 1>&"$fd" 2>/dev/null; done
        wait_phase allocated && all=1
    fi
    local sum=0 oom=0 a e detail drv="?"
    for i in 1 2 3 4; do
        a=$(result_field "$OUT/cprog-four-$i.txt" admitted)
        e=$(result_field "$OUT/cprog-four-$i.txt" name)
        sum=$((sum + ${a:-0}))
        [ "$e" = CUDA_ERROR_OUT_OF_MEMORY ] && oom=$((oom + 1))
    done
    if [ "$all" = 1 ]; then
        local used_during
        used_during=$(timeout 30 nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -n 1 | tr -d ' ')
        if [ -n "$used_before" ] && [ -n "$used_during" ]; then drv=$(((used_during - used_before) << 20)); fi
    fi
    # Let them free, release and exit: one line per remaining phase, then EOF.
    for fd in "${fds[@]}"; do
        (printf 'go\ngo\ngo\n') 1>&"$fd" 2>/dev/null
        exec {fd}>&-
    done
    local rcs=""
    for i in 0 1 2 3; do
        wait "${pids[$i]}"
        rcs="$rcs $?"
    done
    detail="4 processes in a slice of $limit (4 contexts + $SLICE_LIMIT): admitted together $sum, $oom stopped by OUT_OF_MEMORY, exits:$rcs, driver device-used delta while held: $drv"
    if [ "$all" = 1 ] && [ "$oom" = 4 ] && [ "$sum" -le "$SLICE_LIMIT" ] && [ "$sum" -gt $((SLICE_LIMIT - 2 * CHUNK)) ] &&
        [ "$rcs" = " 0 0 0 0" ] && { [ "$drv" = "?" ] || [ "$drv" -le $((limit + DRIVER_SLACK)) ]; }; then
        result PASS "$name" "$detail"
    else
        result FAIL "$name" "$detail (want all 4 stopped by OUT_OF_MEMORY, $((SLICE_LIMIT - 2 * CHUNK)) < sum <= $SLICE_LIMIT, driver <= limit + slack)"
    fi
}

if [ "$HAVE_GO_BINS" = 1 ]; then
    cprog_oom cprog-linked-alloc build/test/alloc --path linked --api alloc
    cprog_oom cprog-linked-pitch build/test/alloc --path linked --api pitch
    cprog_oom cprog-linked-array build/test/alloc --path linked --api array
    cprog_oom cprog-linked-vmm build/test/alloc --path linked --api vmm
    cprog_oom cprog-linked-async build/test/alloc --path linked --api async
    cprog_oom cprog-linked-pool build/test/alloc --path linked --api pool
    cprog_oom cprog-dlsym-alloc build/test/dl_alloc --path dlsym --api alloc
    cprog_oom cprog-gpa-alloc build/test/dl_alloc --path gpa:12000 --api alloc
    cprog_oom cprog-gpa2-vmm build/test/dl_alloc --path gpa2:12000 --api vmm
    cprog_oom cprog-gpaself-async build/test/dl_alloc --path gpaself --api async
    hooks_gpaself
    four_processes
else
    result SKIP cprog "no bin/vgpuctl to create slices"
fi

# --------------------------------------------------------------------- 5. PyTorch
if [ "$HAVE_GO_BINS" = 0 ]; then
    result SKIP torch "no bin/vgpuctl to create slices"
elif ! timeout 120 python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >>"$LOG" 2>&1; then
    result FAIL torch "PyTorch with CUDA is not usable here (see env.txt)"
else
    for conf in default expandable_segments:True backend:cudaMallocAsync; do
        label=${conf%%:*}
        slice=$WORK/slice-torch-$label
        if ! make_slice "$slice"; then
            result FAIL "torch-$label" "vgpuctl slice create failed"
            continue
        fi
        out=$OUT/torch-$label.json
        if [ "$conf" = default ]; then
            confenv=(-u PYTORCH_CUDA_ALLOC_CONF)
        else
            confenv=(PYTORCH_CUDA_ALLOC_CONF="$conf")
        fi
        log "torch_check ($conf)"
        with_vgpu "$slice" env "${confenv[@]}" timeout 240 python3 test/gpu/torch_check.py \
            --limit "$SLICE_LIMIT" --context-overhead "$CTX_BYTES" --chunk-mib $((CHUNK >> 20)) \
            --label "$conf" >"$out" 2>>"$LOG"
        rc=$?
        detail="exit $rc, total $(python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1]))["mem_get_info"]["total"])
except Exception: print("?")' "$out" 2>/dev/null), admitted $(json_field "$out" admitted) bytes, stop: $(json_field "$out" oom_message | cut -c1-120)"
        if [ $rc = 0 ]; then result PASS "torch-$label" "$detail"; else result FAIL "torch-$label" "$detail; error: $(json_field "$out" error)"; fi
    done
fi

# ---------------------------------------------------------------- 6. the overhead
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

# ------------------------------------------------------- 7. compute shares (throttle)
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
    if step throttle-real 240 bin/vgpu-bench throttle --driver real --prog "$THROTTLE_PROG" \
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

log "done: $([ "$FAILED" = 0 ] && echo 'all checks passed' || echo 'some checks FAILED'); see $OUT/summary.md"
exit "$FAILED"
