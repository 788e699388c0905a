/*
 * sim_launch — launches occupy simulated device time and synchronize waits for it.
 *
 *   sim_launch NS_PER_BLOCK SMS GRID LAUNCHES MAX_BACKLOG_NS
 *
 * Queues LAUNCHES kernels of GRID blocks through cuLaunchKernel, cuLaunchKernelEx, a
 * graph, the pre-4.0 cuLaunch / cuLaunchGrid / cuLaunchGridAsync and
 * cuLaunchCooperativeKernelMultiDevice, and checks (lower bounds only: a loaded machine may be slower, never
 * faster) that each synchronize returned no earlier than the simulated duration and
 * that a queue fuller than MAX_BACKLOG_NS blocked the launching thread. Prints
 * "BUSY <ns>": the device time this process queued, for the Go test to compare with
 * the node's per-process figure.
 */
#include <time.h>

#include "sim_util.h"

static unsigned long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: sim_launch NS_PER_BLOCK SMS GRID LAUNCHES MAX_BACKLOG_NS\n");
        return 2;
    }
    unsigned long long nspb = strtoull(argv[1], NULL, 10);
    unsigned long long sms = strtoull(argv[2], NULL, 10);
    unsigned grid = (unsigned)strtoul(argv[3], NULL, 10);
    int launches = atoi(argv[4]);
    unsigned long long backlog = strtoull(argv[5], NULL, 10);
    unsigned long long per = (grid + sms - 1) / sms * nspb; /* one launch */
    unsigned long long busy = 0;

    CHECK(cuInit(0));
    CUdevice d;
    CHECK(cuDeviceGet(&d, 0));
    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, d));
    CHECK(cuCtxSetCurrent(ctx));
    CUmodule mod;
    CUfunction fn;
    CHECK(cuModuleLoadData(&mod, ".version 8.0\n"));
    CHECK(cuModuleGetFunction(&fn, mod, "busy"));

    /* 1. cuLaunchKernel on the NULL stream; the loop itself must block once the queue
     *    is more than MAX_BACKLOG_NS ahead. */
    unsigned long long t0 = now_ns();
    for (int i = 0; i < launches; i++)
        CHECK(cuLaunchKernel(fn, grid, 1, 1, 256, 1, 1, 0, NULL, NULL, NULL));
    unsigned long long t1 = now_ns();
    unsigned long long want = (unsigned long long)launches * per;
    if (want > backlog)
        EXPECT(t1 - t0 >= want - backlog - per,
               "launch loop took %llu ns; a %llu ns backlog cap should block it for %llu", t1 - t0,
               backlog, want - backlog - per);
    /* Unfinished work reads NOT_READY; SUCCESS is only allowed once it can be done
     * (the thread may have been descheduled past the end). */
    CUresult q = cuStreamQuery(NULL);
    unsigned long long tq = now_ns();
    EXPECT(q == CUDA_ERROR_NOT_READY || (q == CUDA_SUCCESS && tq - t0 >= want),
           "cuStreamQuery = %d after %llu ns of %llu ns of work", (int)q, tq - t0, want);
    CHECK(cuStreamSynchronize(NULL));
    unsigned long long t2 = now_ns();
    EXPECT(t2 - t0 >= want, "synchronize returned after %llu ns, simulated work is %llu ns",
           t2 - t0, want);
    CHECK(cuStreamQuery(NULL));
    busy += want;

    /* 2. cuLaunchKernelEx on a created stream, context synchronize. */
    CUstream s;
    CHECK(cuStreamCreate(&s, 0));
    CUlaunchConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDimX = grid;
    cfg.gridDimY = cfg.gridDimZ = 1;
    cfg.blockDimX = 128;
    cfg.blockDimY = cfg.blockDimZ = 1;
    cfg.hStream = s;
    t0 = now_ns();
    CHECK(cuLaunchKernelEx(&cfg, fn, NULL, NULL));
    CHECK(cuLaunchKernelEx(&cfg, fn, NULL, NULL));
    CHECK(cuCtxSynchronize());
    t1 = now_ns();
    EXPECT(t1 - t0 >= 2 * per, "ctx synchronize after %llu ns, want >= %llu", t1 - t0, 2 * per);
    busy += 2 * per;

    /* 3. A graph of three kernel nodes (grid, 2*grid, 3*grid blocks), run twice. */
    CUgraph g;
    CHECK(cuGraphCreate(&g, 0));
    CUgraphNode prev = NULL;
    unsigned long long gdur = 0;
    for (unsigned k = 1; k <= 3; k++) {
        CUDA_KERNEL_NODE_PARAMS_v2 np;
        memset(&np, 0, sizeof np);
        np.func = fn;
        np.gridDimX = grid * k;
        np.gridDimY = np.gridDimZ = 1;
        np.blockDimX = 64;
        np.blockDimY = np.blockDimZ = 1;
        CUgraphNode node;
        CHECK(cuGraphAddKernelNode_v2(&node, g, prev ? &prev : NULL, prev ? 1 : 0, &np));
        prev = node;
        gdur += (grid * k + sms - 1) / sms * nspb;
    }
    CUgraphExec ge;
    CHECK(cuGraphInstantiateWithFlags(&ge, g, 0));
    t0 = now_ns();
    CHECK(cuGraphLaunch(ge, s));
    CHECK(cuGraphLaunch(ge, s));
    CHECK(cuStreamSynchronize(s));
    t1 = now_ns();
    EXPECT(t1 - t0 >= 2 * gdur, "graph synchronize after %llu ns, want >= %llu", t1 - t0, 2 * gdur);
    busy += 2 * gdur;
    CHECK(cuGraphExecDestroy(ge));
    CHECK(cuGraphDestroy(g));

    /* 4. The pre-4.0 launches (block shape from cuFuncSetBlockShape) and a one-device
     *    multi-device cooperative launch occupy the device like cuLaunchKernel. */
    CHECK(cuFuncSetBlockShape(fn, 128, 1, 1));
    unsigned cgrid = grid < sms * 32 ? grid : (unsigned)(sms * 32);
    unsigned long long cper = (cgrid + sms - 1) / sms * nspb;
    CUDA_LAUNCH_PARAMS lp = {.function = fn,
                             .gridDimX = cgrid,
                             .gridDimY = 1,
                             .gridDimZ = 1,
                             .blockDimX = 128,
                             .blockDimY = 1,
                             .blockDimZ = 1,
                             .hStream = s};
    t0 = now_ns();
    CHECK(cuLaunch(fn)); /* one block: one wave */
    CHECK(cuLaunchGrid(fn, (int)grid, 1));
    CHECK(cuLaunchGridAsync(fn, (int)grid, 1, s));
    CHECK(cuLaunchCooperativeKernelMultiDevice(&lp, 1, 0));
    CHECK(cuCtxSynchronize());
    t1 = now_ns();
    unsigned long long lwant = nspb + 2 * per + cper;
    EXPECT(t1 - t0 >= lwant, "legacy launches synchronized after %llu ns, want >= %llu", t1 - t0,
           lwant);
    busy += lwant;
    CHECK(cuStreamDestroy_v2(s));

    printf("BUSY %llu\n", busy);
    return 0;
}
