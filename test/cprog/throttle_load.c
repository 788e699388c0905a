/*
 * throttle_load — a GPU workload for the launch-throttle tests and benchmark.
 *
 *   throttle_load MODE SECONDS [--grid N] [--nodes N] [--threads N] [--ptsz] [--seed N]
 *
 * Launches kernels for SECONDS of wall time, then synchronizes and prints
 * "DONE launches=N kernels=K seconds=S". "READY pid=P" is printed once the context,
 * module and graph are set up (before the first launch).
 *
 * MODE (every launch path the throttle must cover):
 *   flood      cuLaunchKernel back to back (the queue fills until the driver blocks)
 *   sync       cuLaunchKernel, cuStreamSynchronize, repeat (launch-sync-launch)
 *   ex         cuLaunchKernelEx back to back, on a created stream
 *   coop       cuLaunchCooperativeKernel back to back (grid capped to what can be
 *              co-resident: SMs x 32 blocks on the simulated node)
 *   graph      cuGraphLaunch of a graph of --nodes kernel nodes, back to back
 *   graphsync  cuGraphLaunch, cuStreamSynchronize, repeat (vLLM decode style)
 *   legacy     cuLaunch back to back (pre-4.0 API: a grid of one block; the block
 *              shape from cuFuncSetBlockShape)
 *   grid       cuLaunchGrid (--grid x 1 blocks) back to back, the legacy stream
 *   gridasync  cuLaunchGridAsync back to back, on a created stream
 *   multidev   cuLaunchCooperativeKernelMultiDevice with one device, back to back,
 *              on a created stream (grid capped like coop)
 *   mix        each step picks kernel / Ex / cooperative / graph at random, with a
 *              random grid (1/4 .. 2x --grid), and synchronizes one step in three
 * --grid is the blocks of one kernel (default 100 waves of the device's SMs); a
 * graph's nodes split it evenly, so one graph launch is about one kernel's work.
 * --ptsz uses the per-thread-default-stream entry points. --threads N runs N
 * launching threads (each with its own stream).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "testutil.h"

CUresult cuDeviceGetAttribute(int *, CUdevice_attribute, CUdevice);
CUresult cuGraphAddKernelNode_v2(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                                 const CUDA_KERNEL_NODE_PARAMS_v2 *);

enum mode {
    M_FLOOD,
    M_SYNC,
    M_EX,
    M_COOP,
    M_GRAPH,
    M_GRAPHSYNC,
    M_MIX,
    M_LEGACY,
    M_GRID,
    M_GRIDASYNC,
    M_MULTIDEV
};

static struct {
    enum mode mode;
    double seconds;
    unsigned grid, nodes, coop_grid;
    int ptsz;
    CUcontext ctx;
    CUfunction fn;
    CUgraphExec graph;
    _Atomic unsigned long long launches, kernels;
} W;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: a per-thread deterministic stream. */
static unsigned long long rnd(unsigned long long *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void launch_kernel(CUstream s, unsigned grid)
{
    if (W.ptsz)
        CHECK(cuLaunchKernel_ptsz(W.fn, grid, 1, 1, 128, 1, 1, 0, s, NULL, NULL));
    else
        CHECK(cuLaunchKernel(W.fn, grid, 1, 1, 128, 1, 1, 0, s, NULL, NULL));
}

static void launch_ex(CUstream s, unsigned grid)
{
    CUlaunchConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDimX = grid;
    cfg.gridDimY = cfg.gridDimZ = 1;
    cfg.blockDimX = 128;
    cfg.blockDimY = cfg.blockDimZ = 1;
    cfg.hStream = s;
    if (W.ptsz)
        CHECK(cuLaunchKernelEx_ptsz(&cfg, W.fn, NULL, NULL));
    else
        CHECK(cuLaunchKernelEx(&cfg, W.fn, NULL, NULL));
}

static void launch_coop(CUstream s, unsigned grid)
{
    if (grid > W.coop_grid)
        grid = W.coop_grid;
    if (W.ptsz)
        CHECK(cuLaunchCooperativeKernel_ptsz(W.fn, grid, 1, 1, 128, 1, 1, 0, s, NULL));
    else
        CHECK(cuLaunchCooperativeKernel(W.fn, grid, 1, 1, 128, 1, 1, 0, s, NULL));
}

static void launch_graph(CUstream s)
{
    if (W.ptsz)
        CHECK(cuGraphLaunch_ptsz(W.graph, s));
    else
        CHECK(cuGraphLaunch(W.graph, s));
}

static void launch_multi(CUstream s, unsigned grid)
{
    if (grid > W.coop_grid)
        grid = W.coop_grid;
    CUDA_LAUNCH_PARAMS p = {.function = W.fn,
                            .gridDimX = grid,
                            .gridDimY = 1,
                            .gridDimZ = 1,
                            .blockDimX = 128,
                            .blockDimY = 1,
                            .blockDimZ = 1,
                            .hStream = s};
    CHECK(cuLaunchCooperativeKernelMultiDevice(&p, 1, 0));
}

static void sync_stream(CUstream s)
{
    if (W.ptsz)
        CHECK(cuStreamSynchronize_ptsz(s));
    else
        CHECK(cuStreamSynchronize(s));
}

static void *worker(void *arg)
{
    unsigned long long seed = 0x9E3779B97F4A7C15ull ^ (unsigned long long)(uintptr_t)arg;
    CHECK(cuCtxSetCurrent(W.ctx));
    CUstream s = NULL; /* the default stream (legacy, or per-thread with --ptsz) */
    if (W.mode == M_EX || W.mode == M_COOP || W.mode == M_GRAPH || W.mode == M_MIX ||
        W.mode == M_GRIDASYNC || W.mode == M_MULTIDEV)
        CHECK(cuStreamCreate(&s, 0));
    double end = now_s() + W.seconds;
    unsigned long long n = 0, k = 0;
    while (now_s() < end) {
        switch (W.mode) {
        case M_FLOOD:
            launch_kernel(s, W.grid);
            k++;
            break;
        case M_SYNC:
            launch_kernel(s, W.grid);
            sync_stream(s);
            k++;
            break;
        case M_EX:
            launch_ex(s, W.grid);
            k++;
            break;
        case M_COOP:
            launch_coop(s, W.grid);
            k++;
            break;
        case M_GRAPH:
            launch_graph(s);
            k += W.nodes;
            break;
        case M_GRAPHSYNC:
            launch_graph(s);
            sync_stream(s);
            k += W.nodes;
            break;
        case M_LEGACY:
            CHECK(cuLaunch(W.fn));
            k++;
            break;
        case M_GRID:
            CHECK(cuLaunchGrid(W.fn, (int)W.grid, 1));
            k++;
            break;
        case M_GRIDASYNC:
            CHECK(cuLaunchGridAsync(W.fn, (int)W.grid, 1, s));
            k++;
            break;
        case M_MULTIDEV:
            launch_multi(s, W.grid);
            k++;
            break;
        case M_MIX: {
            unsigned long long r = rnd(&seed);
            unsigned grid = W.grid / 4 + (unsigned)(r % (W.grid * 7ull / 4 + 1));
            if (grid == 0)
                grid = 1;
            switch ((r >> 32) % 4) {
            case 0:
                launch_kernel(s, grid);
                k++;
                break;
            case 1:
                launch_ex(s, grid);
                k++;
                break;
            case 2:
                launch_coop(s, grid);
                k++;
                break;
            default:
                launch_graph(s);
                k += W.nodes;
                break;
            }
            if ((r >> 40) % 3 == 0)
                sync_stream(s);
            break;
        }
        }
        n++;
    }
    sync_stream(s);
    atomic_fetch_add(&W.launches, n);
    atomic_fetch_add(&W.kernels, k);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        fail("usage: throttle_load flood|sync|ex|coop|graph|graphsync|mix|legacy|grid|gridasync|"
             "multidev SECONDS [--grid N] [--nodes N] [--threads N] [--ptsz] [--seed N]");
    static const char *names[] = {"flood", "sync",   "ex",   "coop",      "graph",   "graphsync",
                                  "mix",   "legacy", "grid", "gridasync", "multidev"};
    int m = -1;
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (strcmp(argv[1], names[i]) == 0)
            m = i;
    if (m < 0)
        fail("unknown mode %s", argv[1]);
    W.mode = (enum mode)m;
    W.seconds = atof(argv[2]);
    W.nodes = 4;
    int threads = 1;
    unsigned long long seed = 1;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--grid") == 0 && i + 1 < argc)
            W.grid = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--nodes") == 0 && i + 1 < argc)
            W.nodes = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--ptsz") == 0)
            W.ptsz = 1;
        else
            fail("bad argument %s", argv[i]);
    }
    if (W.nodes == 0 || threads < 1 || threads > 64 || !(W.seconds > 0))
        fail("bad --nodes, --threads or SECONDS");

    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    int sms = 0;
    CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    if (sms <= 0)
        fail("device reports %d SMs", sms);
    if (W.grid == 0)
        W.grid = (unsigned)sms * 100;
    W.coop_grid = (unsigned)sms * 32;
    CHECK(cuDevicePrimaryCtxRetain(&W.ctx, dev));
    CHECK(cuCtxSetCurrent(W.ctx));
    CUmodule mod;
    CHECK(cuModuleLoadData(&mod, ".version 8.0\n"));
    CHECK(cuModuleGetFunction(&W.fn, mod, "busy"));
    CHECK(cuFuncSetBlockShape(W.fn, 128, 1, 1)); /* for the legacy launches */

    /* A chain of kernel nodes sharing one kernel's worth of blocks. */
    CUgraph g;
    CHECK(cuGraphCreate(&g, 0));
    CUgraphNode prev = NULL;
    for (unsigned i = 0; i < W.nodes; i++) {
        CUDA_KERNEL_NODE_PARAMS_v2 np;
        memset(&np, 0, sizeof np);
        np.func = W.fn;
        np.gridDimX = W.grid / W.nodes ? W.grid / W.nodes : 1;
        np.gridDimY = np.gridDimZ = 1;
        np.blockDimX = 128;
        np.blockDimY = np.blockDimZ = 1;
        CUgraphNode node;
        CHECK(cuGraphAddKernelNode_v2(&node, g, prev ? &prev : NULL, prev ? 1 : 0, &np));
        prev = node;
    }
    CHECK(cuGraphInstantiateWithFlags(&W.graph, g, 0));

    say("READY pid=%d sms=%d grid=%u", (int)getpid(), sms, W.grid);
    double t0 = now_s();
    pthread_t th[64];
    for (int i = 0; i < threads; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)(seed * 1000 + (unsigned)i)))
            fail("pthread_create");
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    CHECK(cuCtxSynchronize());
    say("DONE launches=%llu kernels=%llu seconds=%.3f", (unsigned long long)W.launches,
        (unsigned long long)W.kernels, now_s() - t0);
    CHECK(cuGraphExecDestroy(W.graph));
    return 0;
}
