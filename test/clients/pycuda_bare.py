"""Debian's python3-pycuda on the simulated node, no libvgpu: the driver as a
real client sees it. Prints KEY=VALUE lines (pycuda_test.go asserts on them)."""
import sys

import numpy as np
import pycuda
import pycuda.autoinit  # noqa: F401  (cuInit, a context on device 0, popped at exit)
import pycuda.driver as cuda


def out(key, value):
    print(f"{key}={value}", flush=True)


dev = pycuda.autoinit.device
out("PYCUDA_VERSION", pycuda.VERSION_TEXT)
out("DRIVER_VERSION", cuda.get_driver_version())
out("DEVICE_COUNT", cuda.Device.count())
out("NAME", dev.name().replace(" ", "_"))
out("CC", "%d.%d" % dev.compute_capability())
out("TOTAL_MEM", dev.total_memory())
out("PCI_BUS_ID", dev.pci_bus_id())
attrs = dev.get_attributes()
out("ATTRS", len(attrs))
A = cuda.device_attribute
out("SMS", attrs[A.MULTIPROCESSOR_COUNT])
out("WARP_SIZE", attrs[A.WARP_SIZE])
out("MAX_THREADS_PER_BLOCK", attrs[A.MAX_THREADS_PER_BLOCK])
free, total = cuda.mem_get_info()
out("MEM_FREE", free)
out("MEM_TOTAL", total)
out("API_VERSION", pycuda.autoinit.context.get_api_version())

# A large allocation costs nothing until touched: write and read back its last
# page only.
big = int(sys.argv[1]) if len(sys.argv) > 1 else 0
if big:
    g = cuda.mem_alloc(big)
    page = 4096
    cuda.memset_d8(int(g) + big - page, 0x5A, page)
    h = np.zeros(page, dtype=np.uint8)
    cuda.memcpy_dtoh(h, int(g) + big - page)
    out("BIG_TAIL_OK", int((h == 0x5A).all()))
    g.free()

# Allocate until the (simulated) device is full: pycuda's MemoryError.
chunk = 256 << 20
held = []
try:
    while True:
        held.append(cuda.mem_alloc(chunk))
except cuda.MemoryError as e:
    out("OOM_ERROR", type(e).__module__ + "." + type(e).__name__)
    out("OOM_MSG", str(e).replace(" ", "_"))
out("OOM_ALLOCS", len(held))
out("DONE", 1)
