# shellcheck shell=bash disable=SC2034  # globals the later steps read
# test/gpu/steps/45-cprog.sh — the test/cprog programs under libvgpu: OOM at the slice, HOOKS, four processes
# Sourced by test/gpu/run.sh (see its header): runs in its shell, with test/gpu/lib.sh's
# variables and functions; a step reports through result/note and never exits
# unless the run cannot go on.

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
