#!/usr/bin/env bash
# make run — vgpud and a capped workload, on the real GPUs when there are any,
# otherwise on a simulated two-GPU node.
#
# `make run` builds everything first. This script then starts bin/vgpud (a temporary
# state dir and socket, enforce mode, metrics on a free loopback port), shows the
# devices, runs a program that allocates until the driver says no inside a 2 GiB
# slice with `vgpuctl run` (it stops at 2 GiB), holds a second workload while
# showing slices, top and the metrics, and stops vgpud with SIGTERM. The temp dir is
# removed on exit, Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")/../.."

for f in bin/vgpud bin/vgpuctl bin/vgpu-sim build/libvgpu.so build/test/alloc; do
    [ -e "$f" ] || { echo "run.sh: $f is missing: run 'make run' (it builds first)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/vgpu-demo.XXXXXX)
vgpud_pid=""
hold=""
cleanup() {
    trap - EXIT INT TERM
    if [ -n "$hold" ] && kill -0 "$hold" 2>/dev/null; then
        kill -TERM "$hold" 2>/dev/null || true # vgpuctl passes it on and releases the slice
        wait "$hold" 2>/dev/null || true
    fi
    if [ -n "$vgpud_pid" ] && kill -0 "$vgpud_pid" 2>/dev/null; then
        kill -TERM "$vgpud_pid" 2>/dev/null || true
        wait "$vgpud_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "interrupted"; cleanup; exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

export VGPU_SOCKET=$work/vgpud.sock
vgpuctl() { bin/vgpuctl "$@"; }

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    say "real GPUs (nvidia-smi -L)"
    nvidia-smi -L
    unset VGPU_SIM_STATE
else
    say "no NVIDIA GPU here: a simulated node of two 16 GiB GPUs with 132 SMs"
    bin/vgpu-sim init --state "$work/node" --devices 2 --memory 16GiB --sms 132
    export LD_LIBRARY_PATH=$PWD/build/simgpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export VGPU_SIM_STATE=$work/node
fi

say "starting vgpud (enforce mode; log: console format below, prefixed 'vgpud |')"
bin/vgpud --state-dir "$work/state" --socket "$VGPU_SOCKET" --metrics-addr 127.0.0.1:0 \
    --enforcer-mode enforce --log-format console >"$work/vgpud.log" 2>&1 &
vgpud_pid=$!
for _ in $(seq 300); do
    grep -q 'vgpud ready' "$work/vgpud.log" && break
    kill -0 "$vgpud_pid" 2>/dev/null || { cat "$work/vgpud.log"; echo "run.sh: vgpud exited" >&2; exit 1; }
    sleep 0.1
done
grep -q 'vgpud ready' "$work/vgpud.log" || { cat "$work/vgpud.log"; echo "run.sh: vgpud not ready" >&2; exit 1; }
metrics=$(grep -o '"metrics_addr": "[^"]*"' "$work/vgpud.log" | head -1 | cut -d'"' -f4)
sed 's/^/vgpud | /' "$work/vgpud.log" | cut -c1-200

say "vgpuctl devices"
vgpuctl devices

say "vgpuctl run --memory 2GiB -- build/test/alloc --api alloc --chunk 64MiB --until-oom"
echo "(64 MiB chunks until CUDA says no: 2 GiB = the chunks + the CUDA context's footprint)"
vgpuctl run --memory 2GiB -- build/test/alloc --api alloc --chunk 64MiB --until-oom >"$work/oom.out" 2>&1 ||
    echo "(exit status $?)"
grep -v '^HOOKS\|^PHASE' "$work/oom.out"
awk '/^RESULT/ { split($2, a, "="); printf "stopped at %d MiB of allocations + 256 MiB of CUDA context = %d MiB: the 2 GiB slice\n", a[2] / 1048576, a[2] / 1048576 + 256 }' "$work/oom.out"

say "a workload holding 1 GiB in a 3 GiB slice at half a GPU's compute, while we look"
# --step holds the program at each phase until a line arrives on its stdin: it takes
# its context, allocates, then holds what it got until the lines below come.
{ sleep 1; echo; sleep 3; printf '\n\n\n'; } |
    vgpuctl run --memory 3GiB --compute 50 --id demo-hold -- \
        build/test/alloc --api alloc --chunk 512MiB --count 2 --step >"$work/hold.out" 2>&1 &
hold=$!
sleep 2.5

say "vgpuctl slices"
vgpuctl slices
say "vgpuctl top"
vgpuctl top
say "curl http://$metrics/metrics (a few of the slice lines)"
curl -s "http://$metrics/metrics" | grep -E '^vgpu_(slice_memory_(limit|used)_bytes|slice_processes|slices|enforcer_ticks_total)' || true

wait "$hold" || true
hold=""
echo "[the held workload]"
grep -v '^HOOKS\|^PHASE' "$work/hold.out"

say "after it exited: the slice is released"
vgpuctl slices

say "stopping vgpud (SIGTERM)"
kill -TERM "$vgpud_pid"
wait "$vgpud_pid" && echo "vgpud stopped cleanly"
vgpud_pid=""
tail -n 4 "$work/vgpud.log" | sed 's/^/vgpud | /' | cut -c1-200
