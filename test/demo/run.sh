#!/usr/bin/env bash
# make run — the capped-workload demo on the embedded default, a simulated GPU node.
#
# Without vgpud (issue 3) a slice is made directly with `vgpuctl slice create`; the
# same workload then runs twice on one simulated 16 GiB GPU: bare, where it takes
# whatever the device has, and under libvgpu in a 2 GiB slice, where it stops with
# CUDA_ERROR_OUT_OF_MEMORY at the slice. Everything lives in a temp dir removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

work=$(mktemp -d /tmp/vgpu-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
node=$work/node
slice=$work/slice

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "a simulated node: one 16 GiB GPU with 132 SMs"
bin/vgpu-sim init --state "$node" --devices 1 --memory 16GiB --sms 132
bin/vgpu-sim status --state "$node"

export LD_LIBRARY_PATH=$PWD/build/simgpu VGPU_SIM_STATE=$node

say "bare: allocate 1 GiB chunks until the driver says no"
build/test/alloc --api alloc --chunk 1GiB --until-oom || true

say "a 2 GiB slice (256 MiB per CUDA context, like the simulated driver)"
bin/vgpuctl slice create --dir "$slice" --memory 2GiB --device 0 --context-overhead 256MiB --id demo

say "under libvgpu: allocate 64 MiB chunks until the slice says no"
LD_PRELOAD=$PWD/build/libvgpu.so VGPU_SLICE_DIR=$slice \
    build/test/alloc --api alloc --chunk 64MiB --until-oom || true

say "four processes at once in the same slice, through four interception paths"
paths=("--path linked --api alloc" "--path dlsym --api managed" "--path gpa:11030 --api vmm" "--path gpa2:12000 --api async")
for i in "${!paths[@]}"; do
    # --step holds each process at its phases: all four take their context, then
    # allocate at once and hold what they got for two seconds, so they really
    # compete for the slice; together they never get past it.
    # shellcheck disable=SC2086
    { sleep 1; echo; sleep 2; printf '\n\n\n\n\n'; } | LD_PRELOAD=$PWD/build/libvgpu.so VGPU_SLICE_DIR=$slice \
        build/test/alloc ${paths[$i]} --chunk 64MiB --until-oom --step >"$work/out.$i" 2>&1 &
done
sleep 2
bin/vgpuctl slice show --dir "$slice"
wait || true
for i in "${!paths[@]}"; do echo "[${paths[$i]}]"; grep -v "^HOOKS\|^PHASE" "$work/out.$i"; done

say "the slice after everyone exited (usage back to 0)"
bin/vgpuctl slice show --dir "$slice"
