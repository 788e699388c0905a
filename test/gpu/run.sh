#!/usr/bin/env bash
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
#   7. `bin/vgpu-bench throttle --driver real --controller inproc` (about a minute): compute shares with a
#      real kernel (test/cprog/throttle_real.c, a PTX busy loop, built here against the
#      real libcuda), one tenant alone at 50% and two at 30/70, with and without CUDA
#      graphs -> $OUT/throttle-real.json and .md. Goals are reported, not asserted.
#   8. nvidia-smi inside a 2 GiB slice (LD_PRELOAD=libvgpu.so): memory.total must be the
#      slice's; what it shows and how it binds NVML (LD_DEBUG=bindings, LD_DEBUG=libs)
#      -> $OUT/nvidia-smi-*.txt.
#   9. the daemon path: a real bin/vgpud (the real NVML, a temporary state dir and
#      socket); torch_check.py under `vgpuctl run --memory 2GiB`; elastic memory:
#      3 GiB with torch.empty under `--memory 2GiB --memory-max 4GiB --qos burstable`
#      is granted, and without --memory-max raises torch.OutOfMemoryError.
#  10. a container through vgpu-runtime with the node's NVIDIA CDI spec (nvidia-ctk cdi
#      generate), running driver_check capped at its slice, where containerd, ctr and
#      runc and nvidia-ctk are present; otherwise skipped, saying what is missing.
#  11. `bin/vgpu-bench throttle --driver real --controller vgpud` (about 80 s): the same
#      under a real vgpud per cell on the real NVML, tenants under `vgpuctl run` with two
#      real kernels of very different lengths (0.2 ms and 20 ms), alone, side by side,
#      joining and leaving -> $OUT/throttle-vgpud-real.json and .md.
#  12. `bin/vgpu-bench suite --driver real --quick` -> $OUT/suite/ (every benchmark's
#      report, the plots, index.md; commit it under bench/results/ naming the card).
#  13. $OUT/summary.md naming the card, one line per check, and the seconds each step took.
# The steps are test/gpu/steps/NN-*.sh, sourced in order (lib.sh holds the helpers).
# Exit status: 0 when every check passed, 1 otherwise. Whatever was gathered is
# always written to $OUT.
#
# Usage: OUT=/some/dir test/gpu/run.sh      (default OUT: ./gpu-results)
# Optional environment:
#   BENCH_ARGS="--iters 500"   extra flags for vgpu-bench overhead
#   THROTTLE_ARGS="--window 5s"   extra flags for vgpu-bench throttle --driver real (step 7)
#   THROTTLE_VGPUD_ARGS="--quick"   extra flags for the vgpud-mode throttle (step 11)
#   GPU_RUN_LIBCUDA=PATH, GPU_RUN_LIBNVML=PATH   the driver libraries to link
#       driver_check against, when the loader's cache does not know them
#   GPU_RUN_FORCE_BUILD=0   do not rebuild build/ from scratch (make without -B)
#   GPU_RUN_STEPS="10 20 50"   run only the steps whose file names start so (a quick look;
#       steps after 30 need 10-30)
#   GPU_RUN_SUITE=0   skip the benchmark suite (step 90; the rehearsal)
#   GPU_RUN_SMI_STANDIN=1   nvidia-smi is a stand-in that does not use NVML (the rehearsal):
#       the nvidia-smi step records what it shows but cannot judge it
#   GPU_RUN_CDI_GENERATE="CMD ARGS"   writes the node's GPU CDI spec into the directory
#       appended as the last argument (default: nvidia-ctk cdi generate --output DIR/nvidia.yaml)
# test/gpu/rehearsal/run_test.go runs this script on the simulated node (a stand-in nvidia-smi,
# LD_LIBRARY_PATH=build/simgpu) so that it keeps working between GPU runs.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
# shellcheck source=test/gpu/lib.sh
. "$ROOT/test/gpu/lib.sh"

for step_file in "$ROOT"/test/gpu/steps/[0-9]*.sh; do
    step_name=$(basename "$step_file" .sh)
    if [ -n "${GPU_RUN_STEPS:-}" ]; then
        case " $GPU_RUN_STEPS " in *" ${step_name%%-*} "*) ;; *) continue ;; esac
    fi
    step_start=$SECONDS
    log "=== $step_name"
    # shellcheck source=/dev/null
    . "$step_file"
    STEP_TIMES+=("| $step_name | $((SECONDS - step_start)) |")
    log "=== $step_name took $((SECONDS - step_start)) s"
done

log "done: $([ "$FAILED" = 0 ] && echo 'all checks passed' || echo 'some checks FAILED'); see $OUT/summary.md"
exit "$FAILED"
