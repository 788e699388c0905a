# shellcheck shell=bash disable=SC2034  # globals the later steps read
# test/gpu/steps/60-vgpud.sh — the daemon path: a real vgpud on the real NVML
# Sourced by test/gpu/run.sh (see its header): runs in its shell, with test/gpu/lib.sh's
# variables and functions; a step reports through result/note and never exits
# unless the run cannot go on.
#
# Starts bin/vgpud on this machine's NVML (--nvml-lib, the library driver_check was
# linked against), with a temporary state dir and socket (on /dev/shm when there is
# one: elastic grants are durable writes) and the slices' CDI specs kept in that
# temporary dir; the node's GPU CDI spec is generated there first when a generator is
# at hand (nvidia-ctk, or GPU_RUN_CDI_GENERATE), for step 65's container. Then:
#   vgpud-torch      torch_check.py under `vgpuctl run --memory 2GiB`: mem_get_info
#                    shows the slice, allocating past it raises torch.OutOfMemoryError
#   elastic-grant    torch_alloc.py 3 GiB under `vgpuctl run --memory 2GiB
#                    --memory-max 4GiB --qos burstable`: vgpud grants, torch.empty succeeds
#   elastic-no-max   the same 3 GiB under `vgpuctl run --memory 2GiB`: OutOfMemoryError
# vgpud keeps running for the container step; it is stopped at exit (log: vgpud.log).

VGPUD_PID=
VGPUD_DIR=
VGPUD_SOCK=
GPU_CDI_DIR=
GPU_CDI_NOTE=

stop_vgpud() {
    [ -n "$VGPUD_PID" ] || return 0
    kill -TERM "$VGPUD_PID" 2>/dev/null
    for _ in $(seq 1 100); do
        kill -0 "$VGPUD_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$VGPUD_PID" 2>/dev/null
    wait "$VGPUD_PID" 2>/dev/null
    VGPUD_PID=
}

# gen_gpu_cdi DIR: the node's GPU CDI spec into DIR (0), or why not in GPU_CDI_NOTE (1).
gen_gpu_cdi() {
    local dir=$1 gen=()
    if [ -n "${GPU_RUN_CDI_GENERATE:-}" ]; then
        read -ra gen <<<"$GPU_RUN_CDI_GENERATE"
        gen+=("$dir")
    elif command -v nvidia-ctk >/dev/null; then
        gen=(nvidia-ctk cdi generate "--output=$dir/nvidia.yaml")
    else
        GPU_CDI_NOTE="no nvidia-ctk on this machine to generate the NVIDIA CDI spec"
        return 1
    fi
    if ! timeout 60 "${gen[@]}" >"$OUT/cdi-generate.txt" 2>&1; then
        GPU_CDI_NOTE="${gen[*]} failed (see cdi-generate.txt)"
        return 1
    fi
    local f
    for f in "$dir"/*; do
        [ -f "$f" ] && cp "$f" "$OUT/cdi-spec-$(basename "$f")"
    done
    return 0
}

start_vgpud() {
    local base=$WORK
    if [ -d /dev/shm ] && [ -w /dev/shm ]; then base=/dev/shm; fi
    VGPUD_DIR=$(mktemp -d "$base/vgpu-gpu-vgpud.XXXXXX") || return 1
    CLEANUPS+=("rm -rf '$VGPUD_DIR'")
    VGPUD_SOCK=$VGPUD_DIR/vgpud.sock
    GPU_CDI_DIR=$VGPUD_DIR/gpu-cdi
    mkdir -p "$GPU_CDI_DIR" "$VGPUD_DIR/cdi"
    if gen_gpu_cdi "$GPU_CDI_DIR"; then GPU_CDI_NOTE=; else log "no GPU CDI spec: $GPU_CDI_NOTE"; fi
    printf '{"cdi_dir": "%s", "cdi_spec_dirs": ["%s"], "libvgpu": "%s"}\n' \
        "$VGPUD_DIR/cdi" "$GPU_CDI_DIR" "$LIBVGPU" >"$VGPUD_DIR/vgpud.json"
    log "vgpud: state in $VGPUD_DIR, NVML $REAL_LIBNVML, context charge $CTX_BYTES"
    bin/vgpud --config "$VGPUD_DIR/vgpud.json" --state-dir "$VGPUD_DIR/state" --socket "$VGPUD_SOCK" \
        --metrics-addr "" --nvml-lib "$REAL_LIBNVML" --context-overhead "$CTX_BYTES" \
        --enforcer-mode report --log-format console --log-level info >"$OUT/vgpud.log" 2>&1 &
    VGPUD_PID=$!
    CLEANUPS+=("stop_vgpud")
    for _ in $(seq 1 300); do
        if VGPU_SOCKET=$VGPUD_SOCK timeout 5 bin/vgpuctl slices >/dev/null 2>&1; then return 0; fi
        kill -0 "$VGPUD_PID" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

# vgpuctl_run ARGS...: bin/vgpuctl run against this step's vgpud, libvgpu from build/.
vgpuctl_run() {
    env VGPU_SOCKET="$VGPUD_SOCK" VGPU_LIBVGPU="$LIBVGPU" bin/vgpuctl run "$@"
}

vgpud_checks() {
    local out=$OUT/torch-vgpuctl.json rc detail
    log "vgpuctl run --memory $SLICE_LIMIT -- torch_check.py"
    vgpuctl_run --memory "$SLICE_LIMIT" --id gpu-run-torch -- timeout 240 python3 test/gpu/torch_check.py \
        --limit "$SLICE_LIMIT" --context-overhead "$CTX_BYTES" --chunk-mib $((CHUNK >> 20)) \
        --label vgpuctl >"$out" 2>>"$LOG"
    rc=$?
    detail="exit $rc, total $(python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1]))["mem_get_info"]["total"])
except Exception: print("?")' "$out" 2>/dev/null), admitted $(json_field "$out" admitted) bytes, stop: $(json_field "$out" oom_message | cut -c1-120)"
    if [ $rc = 0 ]; then result PASS vgpud-torch "$detail"; else result FAIL vgpud-torch "$detail; error: $(json_field "$out" error)"; fi

    # Elastic memory: 3 GiB in a 2 GiB slice with a 4 GiB ceiling. The tenant waits up
    # to VGPU_ELASTIC_WAIT_MS for vgpud's answer (100 ms by default; 2 s here, so that
    # a loaded machine's slow fsync is not taken for a refusal: this checks the grant,
    # not its latency, which bin/vgpu-bench elastic measures).
    local want=$((3 << 30)) txt=$OUT/elastic-grant.txt granted
    log "vgpuctl run --memory 2GiB --memory-max 4GiB --qos burstable -- torch_alloc.py $want"
    VGPU_ELASTIC_WAIT_MS=2000 vgpuctl_run --memory 2GiB --memory-max 4GiB --qos burstable --id gpu-run-elastic -- \
        timeout 180 python3 test/gpu/torch_alloc.py "$want" >"$txt" 2>&1
    rc=$?
    VGPU_SOCKET=$VGPUD_SOCK timeout 10 bin/vgpuctl events >"$OUT/elastic-events.txt" 2>&1
    granted=$(grep -c 'granted' "$OUT/vgpud.log")
    detail="3 GiB torch.empty with --memory 2GiB --memory-max 4GiB --qos burstable: exit $rc, $(grep -m1 -E '^(OK|OOM|ERROR)' "$txt" | cut -c1-200); vgpud log lines naming a grant: $granted"
    if [ $rc = 0 ] && grep -q '^OK ' "$txt"; then result PASS elastic-grant "$detail"; else result FAIL elastic-grant "$detail (see elastic-grant.txt, vgpud.log)"; fi

    txt=$OUT/elastic-no-max.txt
    log "vgpuctl run --memory 2GiB -- torch_alloc.py $want"
    vgpuctl_run --memory 2GiB --id gpu-run-nomax -- timeout 180 python3 test/gpu/torch_alloc.py "$want" >"$txt" 2>&1
    rc=$?
    detail="3 GiB torch.empty with --memory 2GiB alone: exit $rc, $(grep -m1 -E '^(OK|OOM|ERROR)' "$txt" | cut -c1-200)"
    if [ $rc = 3 ] && grep -q '^OOM ' "$txt"; then result PASS elastic-no-max "$detail"; else result FAIL elastic-no-max "$detail (want torch.OutOfMemoryError, exit 3)"; fi
}

if [ "$HAVE_GO_BINS" = 0 ] || [ ! -x bin/vgpud ]; then
    result SKIP vgpud "no bin/vgpud (make go)"
elif [ -z "$REAL_LIBNVML" ]; then
    result FAIL vgpud "no libnvidia-ml.so.1 found for vgpud's --nvml-lib"
elif ! start_vgpud; then
    result FAIL vgpud "vgpud did not answer on $VGPUD_SOCK within 30 s: $(tail -n 3 "$OUT/vgpud.log" | tr '\n' ' ')"
    stop_vgpud
elif ! timeout 120 python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >>"$LOG" 2>&1; then
    result PASS vgpud "vgpud up on the real NVML ($REAL_LIBNVML)"
    result FAIL vgpud-torch "PyTorch with CUDA is not usable here (see env.txt)"
else
    result PASS vgpud "vgpud up on the real NVML ($REAL_LIBNVML)"
    vgpud_checks
fi
