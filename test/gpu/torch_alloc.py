#!/usr/bin/env python3
"""Allocates one tensor of BYTES bytes on CUDA device 0 with torch.empty.

Run by test/gpu/run.sh (steps/60-vgpud.sh) under `vgpuctl run`, to check elastic
memory: with --memory 2GiB --memory-max 4GiB a 3 GiB tensor is granted; with
--memory 2GiB alone it raises torch.OutOfMemoryError.
Prints one line: "OK allocated=N total=T free=F" (mem_get_info after the
allocation), "OOM <message>" or "ERROR <message>".
Exit status: 0 allocated, 3 torch.OutOfMemoryError, 1 another error.
"""

import sys


def main(argv):
    n = int(argv[1])
    try:
        import torch
        oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    except Exception as e:  # noqa: BLE001 (report whatever broke)
        print("ERROR torch unusable: %s" % e)
        return 1
    try:
        t = torch.empty(n, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info(0)
        print("OK allocated=%d total=%d free=%d" % (n, total, free))
        del t
        return 0
    except oom as e:
        print("OOM " + " ".join(str(e).split())[:300])
        return 3
    except Exception as e:  # noqa: BLE001
        print("ERROR %s: %s" % (type(e).__name__, " ".join(str(e).split())[:300]))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
