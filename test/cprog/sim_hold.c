/*
 * sim_hold — holds memory on the simulated node until stdin closes (or it is killed).
 *
 *   sim_hold BYTES [DEVICE [LAUNCHES [GRID]]]
 *
 * Retains the primary context of DEVICE (default 0), allocates BYTES with cuMemAlloc
 * (0: context only), optionally queues LAUNCHES kernels of GRID blocks and waits for
 * them, then prints "READY <pid> <bytes>" and blocks reading stdin. Used by the Go
 * tests for multi-process, SIGKILL-reclaim, status and NVML checks.
 */
#include <unistd.h>

#include "sim_util.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: sim_hold BYTES [DEVICE [LAUNCHES [GRID]]]\n");
        return 2;
    }
    unsigned long long bytes = strtoull(argv[1], NULL, 0);
    int dev = argc > 2 ? atoi(argv[2]) : 0;
    int launches = argc > 3 ? atoi(argv[3]) : 0;
    unsigned grid = argc > 4 ? (unsigned)atoi(argv[4]) : 1;

    CHECK(cuInit(0));
    CUdevice d;
    CHECK(cuDeviceGet(&d, dev));
    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, d));
    CHECK(cuCtxSetCurrent(ctx));
    if (bytes > 0) {
        CUdeviceptr p;
        CHECK(cuMemAlloc_v2(&p, bytes));
    }
    if (launches > 0) {
        CUmodule mod;
        CUfunction fn;
        CHECK(cuModuleLoadData(&mod, ".version 8.0\n.target sm_90\n"));
        CHECK(cuModuleGetFunction(&fn, mod, "spin"));
        for (int i = 0; i < launches; i++)
            CHECK(cuLaunchKernel(fn, grid, 1, 1, 128, 1, 1, 0, NULL, NULL, NULL));
        CHECK(cuCtxSynchronize());
    }
    printf("READY %d %llu\n", (int)getpid(), bytes);
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    return 0;
}
