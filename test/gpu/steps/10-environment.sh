# shellcheck shell=bash disable=SC2034  # globals the later steps read
# test/gpu/steps/10-environment.sh — the machine: env.txt, the card, driver, CUDA and torch versions
# Sourced by test/gpu/run.sh (see its header): runs in its shell, with test/gpu/lib.sh's
# variables and functions; a step reports through result/note and never exits
# unless the run cannot go on.

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
