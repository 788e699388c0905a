"""Debian's python3-pycuda in a vgpu slice (LD_PRELOAD=libvgpu.so): memory
queries and allocations are the slice's, data round-trips, events, streams,
modules and context push/pop/detach work. Prints KEY=VALUE lines
(pycuda_test.go asserts on them)."""
import gc
import sys

import numpy as np
import pycuda.driver as cuda


def out(key, value):
    print(f"{key}={value}", flush=True)


chunk = int(sys.argv[1])  # the allocation loop's step

cuda.init()
dev = cuda.Device(0)
ctx = dev.make_context()  # cuCtxCreate_v2: pushed, current
free, total = cuda.mem_get_info()
out("MEM_FREE", free)
out("MEM_TOTAL", total)
out("TOTAL_MEM", dev.total_memory())

# --- data: htod / dtoh / dtod / memset round-trip real bytes
rng = np.random.default_rng(13)
x = rng.standard_normal(1 << 18).astype(np.float32)  # 1 MiB
g = cuda.mem_alloc(x.nbytes)
cuda.memcpy_htod(g, x)
y = np.empty_like(x)
cuda.memcpy_dtoh(y, g)
out("HTOD_DTOH_EQUAL", int(np.array_equal(x, y)))
g2 = cuda.mem_alloc(x.nbytes)
cuda.memcpy_dtod(g2, g, x.nbytes)
z = np.empty_like(x)
cuda.memcpy_dtoh(z, g2)
out("DTOD_EQUAL", int(np.array_equal(x, z)))
cuda.memset_d8(g, 0xAB, x.nbytes)
b = np.empty(x.nbytes, dtype=np.uint8)
cuda.memcpy_dtoh(b, g)
out("MEMSET_D8_OK", int((b == 0xAB).all()))
cuda.memset_d32(g2, 0xDEADBEEF, x.size)
w = np.empty(x.size, dtype=np.uint32)
cuda.memcpy_dtoh(w, g2)
out("MEMSET_D32_OK", int((w == 0xDEADBEEF).all()))
# part of an allocation, at an offset
cuda.memcpy_htod(int(g) + 4096, x[:1024])
part = np.empty(1024, dtype=np.float32)
cuda.memcpy_dtoh(part, int(g) + 4096)
out("OFFSET_EQUAL", int(np.array_equal(part, x[:1024])))

# --- streams, page-locked memory, async copies, events
s = cuda.Stream()
hx = cuda.pagelocked_empty(x.shape, x.dtype)
hx[:] = x[::-1]
start, end = cuda.Event(), cuda.Event()
start.record(s)
cuda.memcpy_htod_async(g, hx, s)
hy = cuda.pagelocked_zeros(x.shape, x.dtype)
cuda.memcpy_dtoh_async(hy, g, s)
end.record(s)
end.synchronize()
s.synchronize()
out("ASYNC_EQUAL", int(np.array_equal(hy, x[::-1])))
out("EVENT_QUERY", int(end.query()))
out("STREAM_DONE", int(s.is_done()))
out("ELAPSED_OK", int(end.time_since(start) >= 0.0))

# --- a module from PTX text and a kernel launch (the simulator runs no code; the
# launch occupies simulated device time, which the events measure)
ptx = b"""
.version 7.8
.target sm_90
.address_size 64
.visible .entry noop(.param .u64 p) { ret; }
"""
mod = cuda.module_from_buffer(ptx)
fn = mod.get_function("noop")
out("FUNC_REGS", fn.num_regs)
k0, k1 = cuda.Event(), cuda.Event()
k0.record()
for _ in range(10):
    fn(g, block=(128, 1, 1), grid=(1024, 1))
k1.record()
k1.synchronize()
out("KERNEL_MS_POSITIVE", int(k1.time_since(k0) > 0.0))
out("CTX_SYNC", int(cuda.Context.synchronize() is None))

g.free()
g2.free()

# --- allocate until the slice is full: pycuda's MemoryError, never the card's
held = []
err = ""
try:
    while len(held) < 100000:
        held.append(cuda.mem_alloc(chunk))
except cuda.MemoryError as e:
    err = type(e).__module__ + "." + type(e).__name__
out("OOM_ERROR", err)
out("OOM_ALLOCS", len(held))
free_full, _ = cuda.mem_get_info()
out("MEM_FREE_FULL", free_full)
for h in held:
    h.free()
del held
gc.collect()
out("MEM_FREE_AFTER", cuda.mem_get_info()[0])

# --- contexts: a second context costs its footprint; detach gives it back
ctx2 = dev.make_context()  # pushed on top of ctx
out("CTX2_CURRENT", int(cuda.Context.get_current() == ctx2))
out("MEM_FREE_CTX2", cuda.mem_get_info()[0])
cuda.Context.pop()  # ctx2 off the stack
out("CTX1_CURRENT", int(cuda.Context.get_current() == ctx))
ctx2.push()
out("CTX2_PUSHED", int(cuda.Context.get_current() == ctx2))
ctx2.pop()
ctx2.detach()  # its last usage: destroyed (pycuda never calls cuCtxDestroy)
out("MEM_FREE_DETACHED", cuda.mem_get_info()[0])
# OpenGL interop on a headless node: cuGLCtxCreate fails, and a context's charge
# that libvgpu took for it comes back.
import pycuda.gl  # noqa: E402

try:
    pycuda.gl.make_context(dev)
    out("GL_CTX_ERROR", "none")
except cuda.LogicError as e:
    out("GL_CTX_ERROR", type(e).__name__)
out("MEM_FREE_GL", cuda.mem_get_info()[0])
try:
    ctx.enable_peer_access(ctx)
    out("PEER_ERROR", "none")
except cuda.LogicError as e:
    out("PEER_ERROR", type(e).__name__)
ctx.pop()
out("NO_CONTEXT", int(cuda.Context.get_current() is None))
ctx.detach()
out("DONE", 1)
