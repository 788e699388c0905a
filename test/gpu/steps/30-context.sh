# shellcheck shell=bash disable=SC2034  # globals the later steps read
# test/gpu/steps/30-context.sh — a CUDA context's device-memory footprint: the slices' per-context charge
# Sourced by test/gpu/run.sh (see its header): runs in its shell, with test/gpu/lib.sh's
# variables and functions; a step reports through result/note and never exits
# unless the run cannot go on.

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
