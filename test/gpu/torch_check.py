#!/usr/bin/env python3
"""PyTorch sees a vgpu slice and cannot allocate past it.

Run by test/gpu/run.sh on a machine with a real GPU, under
LD_PRELOAD=build/libvgpu.so VGPU_SLICE_DIR=<slice>, once per allocator setting
(default, PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True, backend:cudaMallocAsync).

Checks:
  libvgpu     libvgpu.so is mapped into this process (unless --no-expect-libvgpu)
  total       torch.cuda.mem_get_info() total == the slice limit
  free        free <= the slice limit
  oom         allocating --chunk-mib tensors ends in torch.OutOfMemoryError
              (torch.cuda.OutOfMemoryError on older releases), not another error
  admitted    bytes admitted <= the slice limit (minus the context overhead when given)
  fills       something was admitted at all: more than half of what the slice leaves
              after the context (an allocator that fails early is also a bug)
Prints one JSON object on stdout; exit status 0 when every check passed, 1 when a check
failed, 2 when PyTorch or CUDA is unusable.
"""

import argparse
import json
import os
import sys
import time


def libvgpu_loaded():
    try:
        with open("/proc/self/maps") as f:
            return any("/libvgpu.so" in line for line in f)
    except OSError:
        return False


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, required=True, help="the slice's memory limit in bytes")
    p.add_argument("--context-overhead", type=int, default=0,
                   help="bytes the slice charges for the CUDA context (default 0)")
    p.add_argument("--chunk-mib", type=int, default=64, help="tensor size in MiB (default 64)")
    p.add_argument("--label", default=os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "") or "default",
                   help="name of this run in the output (default: the allocator setting)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    p.add_argument("--max-chunks", type=int, default=100000, help="safety stop")
    p.add_argument("--no-expect-libvgpu", action="store_true",
                   help="do not require libvgpu.so to be loaded (to try the script bare)")
    a = p.parse_args(argv)
    if a.limit <= 0 or a.chunk_mib <= 0 or a.context_overhead < 0 or a.context_overhead >= a.limit:
        p.error("need --limit > 0, --chunk-mib > 0 and 0 <= --context-overhead < --limit")
    return a


def main(argv):
    args = parse_args(argv)
    result = {
        "program": "torch_check",
        "label": args.label,
        "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
        "limit": args.limit,
        "context_overhead": args.context_overhead,
        "chunk_bytes": args.chunk_mib << 20,
        "checks": [],
    }

    def check(name, ok, detail):
        result["checks"].append({"name": name, "ok": bool(ok), "detail": detail})
        if not ok:
            print("torch_check[%s]: %s FAILED: %s" % (args.label, name, detail), file=sys.stderr)

    def finish(code):
        result["ok"] = code == 0 and all(c["ok"] for c in result["checks"])
        print(json.dumps(result))
        sys.stdout.flush()
        return code if code != 0 else (0 if result["ok"] else 1)

    if not args.no_expect_libvgpu:
        check("libvgpu", libvgpu_loaded(), "libvgpu.so mapped into the process")

    try:
        import torch
    except Exception as e:  # ImportError, or a broken install
        result["error"] = "import torch: %r" % (e,)
        return finish(2)
    result["torch"] = torch.__version__
    result["torch_cuda"] = torch.version.cuda
    if not torch.cuda.is_available():
        result["error"] = "torch.cuda.is_available() is False"
        return finish(2)
    # OutOfMemoryError moved to the top level in PyTorch 2.1; older ones have it in cuda.
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError")
    dev = torch.device("cuda", args.device)
    torch.cuda.set_device(dev)
    result["device_name"] = torch.cuda.get_device_name(dev)

    free, total = torch.cuda.mem_get_info(dev)
    result["mem_get_info"] = {"free": free, "total": total}
    check("total", total == args.limit, "total %d, slice limit %d" % (total, args.limit))
    check("free", free <= args.limit, "free %d <= limit %d" % (free, args.limit))

    chunk = args.chunk_mib << 20
    tensors = []
    stop = None
    t0 = time.monotonic()
    try:
        while len(tensors) < args.max_chunks:
            tensors.append(torch.empty(chunk, dtype=torch.uint8, device=dev))
    except oom_type as e:
        stop = "OutOfMemoryError"
        result["oom_message"] = str(e).splitlines()[0][:300] if str(e) else ""
    except Exception as e:  # anything else is a failure of the cap
        stop = "%s: %s" % (type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")
    result["alloc_seconds"] = round(time.monotonic() - t0, 3)
    admitted = len(tensors) * chunk
    cap = args.limit - args.context_overhead
    result["tensors"] = len(tensors)
    result["admitted"] = admitted
    result["memory_reserved"] = torch.cuda.memory_reserved(dev)
    free_oom, _ = torch.cuda.mem_get_info(dev)
    result["free_at_oom"] = free_oom

    check("oom", stop == "OutOfMemoryError", "stopped by %s after %d tensors" % (stop or "the safety stop", len(tensors)))
    check("admitted", admitted <= cap, "admitted %d <= limit - context %d" % (admitted, cap))
    check("fills", admitted > cap // 2, "admitted %d > half of %d" % (admitted, cap))

    # Everything must come back: PyTorch keeps freed blocks cached until empty_cache.
    del tensors
    torch.cuda.synchronize(dev)
    torch.cuda.empty_cache()
    free_after, _ = torch.cuda.mem_get_info(dev)
    result["free_after_empty_cache"] = free_after
    return finish(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
