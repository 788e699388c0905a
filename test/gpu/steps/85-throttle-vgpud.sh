# shellcheck shell=bash disable=SC2034  # globals the later steps read
# test/gpu/steps/85-throttle-vgpud.sh — the vgpud-mode throttle benchmark on the real GPU
# Sourced by test/gpu/run.sh (see its header): runs in its shell, with test/gpu/lib.sh's
# variables and functions; a step reports through result/note and never exits
# unless the run cannot go on.
#
# Issue 10's open item: compute shares with vgpud's controller in the loop on a real GPU
# (throttle-vgpud-real.{json,md}). `vgpu-bench throttle` runs its vgpud mode only on
# simulated nodes: every cell is a fresh simulated node, its tenants are throttle_load
# (a simulated-driver workload) and its sampler reads the simulated NVML's per-period
# busy time; `--driver real` runs the in-process controller (step 80). A real-GPU vgpud
# mode needs the cells to run throttle_real under `vgpuctl run` against a vgpud on the
# real NVML and a sampler of the real NVML's per-process utilization: more than a
# flag. Until vgpu-bench has it (it would be `--driver real --controller vgpud`, writing
# throttle-vgpud-real.{json,md}), this step reports it as not covered.

result SKIP throttle-vgpud-real "not covered: vgpu-bench throttle's vgpud mode runs only on simulated nodes (--driver real uses the in-process controller, step throttle-real); a real-GPU vgpud mode needs more than a flag (tenants running throttle_real under vgpuctl run against a vgpud on the real NVML, a sampler of the real NVML)"
