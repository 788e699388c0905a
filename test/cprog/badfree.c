/*
 * badfree — frees libvgpu must pass to the driver untouched.
 *
 * 1. Allocates --size bytes with the REAL cuMemAlloc_v2, found in libcuda's own
 *    symbol table (not through dlsym), so libvgpu never sees the allocation; then
 *    frees it with the ordinary (hooked) cuMemFree_v2. libvgpu must let the driver
 *    free it and credit nothing.
 * 2. Frees an address nobody allocated: the driver's own error must come back (no
 *    crash, no credit).
 * Prints "BYPASS ..." after step 1's allocation and waits for a line on stdin, so
 * the test can see the driver charged and the slice did not; then
 *   "RESULT bypass_free=E invalid_free=E name=..."
 */
#include "testutil.h"

typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t);

int main(int argc, char **argv)
{
    uint64_t size = 64 * MiB;
    if (argc == 3 && !strcmp(argv[1], "--size"))
        size = parse_size(argv[2]);
    CHECK(cuInit(0));
    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CHECK(cuCtxSetCurrent(ctx));
    alloc_fn real_alloc = (alloc_fn)real_symbol("libcuda.so", "cuMemAlloc_v2");
    CUdeviceptr p;
    CHECK(real_alloc(&p, size));
    say("BYPASS ptr=0x%llx", (unsigned long long)p);
    phase(1, "bypassed");
    CUresult r1 = cuMemFree_v2(p);
    CUresult r2 = cuMemFree_v2((CUdeviceptr)0xdead0000ull);
    say("RESULT bypass_free=%d invalid_free=%d name=%s", (int)r1, (int)r2, cu_name(r2));
    phase(1, "freed");
    CHECK(cuDevicePrimaryCtxRelease_v2(0));
    return 0;
}
