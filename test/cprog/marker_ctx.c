/*
 * marker_ctx — libvgpu's completion markers across contexts (libvgpu/src/marker.c).
 *
 *   marker_ctx
 *
 * Run in a throttled slice on a 4-SM node: every launch here (800 blocks, 200
 * waves, the nominal 2^21-token marker stride) is a marker launch. The markers'
 * events belong to one context at a time, so this walks the cases where the
 * launch's context is not the ring's:
 *   1. launches in the primary context A, left running;
 *   2. launches in a created context B while A's markers are pending (untimed until
 *      A's drain, then the ring moves to B, destroying A's events);
 *   3. B destroyed with its markers pending (the driver took the events with it);
 *   4. launches in A again; 5. A released (destroyed) and retained again, launches.
 * Each phase synchronizes at its end except 1 and 3. Prints "DONE"; a crash, a
 * driver error or a sanitizer report (make sanitize) fails the Go test.
 */
#include "testutil.h"

static CUfunction fn;

static void launches(int n)
{
    for (int i = 0; i < n; i++)
        CHECK(cuLaunchKernel(fn, 800, 1, 1, 128, 1, 1, 0, NULL, NULL, NULL));
}

static void load_module(void)
{
    CUmodule mod;
    CHECK(cuModuleLoadData(&mod, ".version 8.0\n"));
    CHECK(cuModuleGetFunction(&fn, mod, "busy"));
}

int main(void)
{
    CHECK(cuInit(0));
    CUdevice d;
    CHECK(cuDeviceGet(&d, 0));
    CUcontext a, b;
    CHECK(cuDevicePrimaryCtxRetain(&a, d));
    CHECK(cuCtxSetCurrent(a));
    load_module();
    launches(30); /* 1 */

    CHECK(cuCtxCreate_v2(&b, 0, d)); /* 2: B is current */
    load_module();
    launches(30);
    CHECK(cuCtxSynchronize());
    launches(30);

    CHECK(cuCtxDestroy_v2(b)); /* 3: with markers pending */
    CHECK(cuCtxSetCurrent(a));
    load_module();
    launches(30); /* 4 */
    CHECK(cuCtxSynchronize());

    CHECK(cuCtxSetCurrent(NULL)); /* 5 */
    CHECK(cuDevicePrimaryCtxRelease_v2(d));
    CHECK(cuDevicePrimaryCtxRetain(&a, d));
    CHECK(cuCtxSetCurrent(a));
    load_module();
    launches(30);
    CHECK(cuCtxSynchronize());
    launches(2); /* retires the markers of the last phase */
    CHECK(cuCtxSynchronize());
    printf("DONE\n");
    CHECK(cuDevicePrimaryCtxRelease_v2(d));
    return 0;
}
