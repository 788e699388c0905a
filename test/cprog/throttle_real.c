/*
 * throttle_real — a real kernel for the launch-throttle benchmark on a real GPU
 * (`vgpu-bench throttle --driver real`, run by test/gpu/run.sh).
 *
 *   throttle_real calibrate [--grid N] [--block N] [--kernel-ms MS] [--seconds S]
 *   throttle_real kernel|graph SECONDS --iters L --kernel-ns T [--grid N] [--block N]
 *                 [--sync-every K] [--nodes N] [--report-ms MS]
 *
 * The kernel is PTX embedded below, loaded with cuModuleLoadData (the driver JIT-
 * compiles it for the card: no nvcc at build time). Every thread runs L iterations
 * of a dependent 64-bit multiply-add chain and stores the result: a fixed amount
 * of work, so a kernel takes the same device time whether or not another process
 * shares the GPU. (A kernel spinning on %clock64 would not: the SM clock keeps
 * counting while the context is switched out under time-slicing, so a preempted
 * spin ends early and "known busy cycles" would overstate its device time.)
 *
 * calibrate (no throttle expected: run it bare): finds L such that one kernel of
 * --grid blocks (default: one block per SM) takes about --kernel-ms (default 2 ms)
 * by timing batches of back-to-back kernels with CLOCK_MONOTONIC, then prints
 *   "CALIBRATE iters=L kernel_ns=T sms=S grid=G block=B"
 * where T is the measured device time of one kernel alone. With --seconds S it then
 * keeps launching for S seconds (so NVML can be seen to attribute the process) and
 * prints "DONE ...". On the simulated node a kernel's time does not depend on L;
 * the search stops at an iteration cap and T is still the measured time.
 *
 * kernel: cuLaunchKernel back to back, cuStreamSynchronize every --sync-every K
 *         launches (default 4);
 * graph:  cuGraphLaunch of a graph of --nodes N kernel nodes in a chain (default 4,
 *         built with cuGraphAddKernelNode + cuGraphInstantiateWithFlags), synchronizing
 *         every max(1, K / N) graph launches, so that both modes queue the same work
 *         between synchronizations.
 * Both run for SECONDS of wall time and print "READY pid=P ..." before the first
 * launch, "BUSY kernels=K busy_ns=B" at most every --report-ms (default 20) after a
 * synchronization, and finally
 *   "DONE launches=N kernels=K seconds=S busy_ns=B share=X"
 * busy_ns = completed kernels x T (the calibrated device time of one kernel, which
 * does not change under contention: see above); share = busy_ns / wall ns, the
 * program's own estimate of the share of the device it achieved.
 * Exit status: 0 ok, 1 a driver call failed or bad usage.
 */
#include <time.h>

#include "testutil.h"

CUresult cuDeviceGetAttribute(int *, CUdevice_attribute, CUdevice);
CUresult cuStreamCreate(CUstream *, unsigned int);
CUresult cuGraphCreate(CUgraph *, unsigned int);
/* The original (v1) entry point: every driver since CUDA 10 exports it, while
 * cuGraphAddKernelNode_v2 needs a 12.3 driver. */
CUresult cuGraphAddKernelNode(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                              const CUDA_KERNEL_NODE_PARAMS *);
CUresult cuGraphInstantiateWithFlags(CUgraphExec *, CUgraph, unsigned long long);
CUresult cuGraphExecDestroy(CUgraphExec);
CUresult cuGraphDestroy(CUgraph);
CUresult cuModuleUnload(CUmodule);

/*
 * vgpu_busy(iters, sink): x = tid + ctaid (not a constant, so nothing folds);
 * iters times x = x * A + C (64-bit LCG: each step depends on the last); every
 * thread stores x to *sink (a benign race on one word), so the loop is live.
 * PTX ISA 6.4 (CUDA 10.1) for sm_70: any driver of the last years JIT-compiles it
 * for newer GPUs.
 */
// clang-format off: one PTX line per source line
static const char busy_ptx[] = ".version 6.4\n"
                               ".target sm_70\n"
                               ".address_size 64\n"
                               "\n"
                               ".visible .entry vgpu_busy(\n"
                               "    .param .u64 vgpu_busy_iters,\n"
                               "    .param .u64 vgpu_busy_sink\n"
                               ")\n"
                               "{\n"
                               "    .reg .pred %p<2>;\n"
                               "    .reg .b32 %r<3>;\n"
                               "    .reg .b64 %rd<10>;\n"
                               "\n"
                               "    ld.param.u64 %rd1, [vgpu_busy_iters];\n"
                               "    ld.param.u64 %rd2, [vgpu_busy_sink];\n"
                               "    mov.u32 %r1, %tid.x;\n"
                               "    mov.u32 %r2, %ctaid.x;\n"
                               "    cvt.u64.u32 %rd3, %r1;\n"
                               "    cvt.u64.u32 %rd4, %r2;\n"
                               "    add.u64 %rd5, %rd3, %rd4;\n"
                               "    mov.u64 %rd6, 0;\n"
                               "    mov.u64 %rd7, 6364136223846793005;\n"
                               "    mov.u64 %rd8, 1442695040888963407;\n"
                               "    setp.eq.u64 %p1, %rd1, 0;\n"
                               "    @%p1 bra $L_done;\n"
                               "$L_loop:\n"
                               "    mad.lo.u64 %rd5, %rd5, %rd7, %rd8;\n"
                               "    add.u64 %rd6, %rd6, 1;\n"
                               "    setp.lt.u64 %p1, %rd6, %rd1;\n"
                               "    @%p1 bra $L_loop;\n"
                               "$L_done:\n"
                               "    cvta.to.global.u64 %rd9, %rd2;\n"
                               "    st.global.u64 [%rd9], %rd5;\n"
                               "    ret;\n"
                               "}\n";
// clang-format on

#define ITERS_START 1024ull
#define ITERS_CAP (1ull << 30) /* ~30 s per kernel on any real GPU: never reached there */

static struct {
    CUfunction fn;
    CUstream stream;
    unsigned grid, block;
    unsigned long long iters;
    CUdeviceptr sink;
    void *params[2];
} K;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void launch(void)
{
    CHECK(cuLaunchKernel(K.fn, K.grid, 1, 1, K.block, 1, 1, 0, K.stream, K.params, NULL));
}

/* Mean wall time of one kernel over a batch of n back-to-back launches (the queue
 * hides the launch cost once a kernel takes more than a few microseconds). */
static double time_batch(int n)
{
    CHECK(cuStreamSynchronize(K.stream));
    double t0 = now_s();
    for (int i = 0; i < n; i++)
        launch();
    CHECK(cuStreamSynchronize(K.stream));
    return (now_s() - t0) / n;
}

static unsigned long long parse_ull(const char *flag, const char *v)
{
    char *end = NULL;
    unsigned long long n = strtoull(v, &end, 10);
    if (end == v || *end != '\0' || v[0] == '-')
        fail("bad value for %s: %s", flag, v);
    return n;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        fail(
            "usage: throttle_real calibrate|kernel|graph [SECONDS] [--iters L] [--kernel-ns T] "
            "[--grid N] [--block N] [--kernel-ms MS] [--sync-every K] [--nodes N] [--report-ms MS] "
            "[--seconds S]");
    const char *mode = argv[1];
    int calibrate = strcmp(mode, "calibrate") == 0;
    int graph = strcmp(mode, "graph") == 0;
    if (!calibrate && !graph && strcmp(mode, "kernel") != 0)
        fail("unknown mode %s (want calibrate, kernel or graph)", mode);
    int a = 2;
    double seconds = 0;
    if (!calibrate) {
        if (argc < 3)
            fail("%s needs SECONDS", mode);
        seconds = atof(argv[2]);
        if (!(seconds > 0))
            fail("bad SECONDS %s", argv[2]);
        a = 3;
    }
    unsigned long long kernel_ns = 0, sync_every = 4, nodes = 4, report_ms = 20;
    double kernel_ms = 2;
    for (int i = a; i < argc; i++) {
        const char *f = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            fail("%s needs a value", f);
        i++;
        if (!strcmp(f, "--iters"))
            K.iters = parse_ull(f, v);
        else if (!strcmp(f, "--kernel-ns"))
            kernel_ns = parse_ull(f, v);
        else if (!strcmp(f, "--grid"))
            K.grid = (unsigned)parse_ull(f, v);
        else if (!strcmp(f, "--block"))
            K.block = (unsigned)parse_ull(f, v);
        else if (!strcmp(f, "--sync-every"))
            sync_every = parse_ull(f, v);
        else if (!strcmp(f, "--nodes"))
            nodes = parse_ull(f, v);
        else if (!strcmp(f, "--report-ms"))
            report_ms = parse_ull(f, v);
        else if (!strcmp(f, "--kernel-ms"))
            kernel_ms = atof(v);
        else if (!strcmp(f, "--seconds"))
            seconds = atof(v);
        else
            fail("unknown flag %s", f);
    }
    if (!calibrate && (K.iters == 0 || kernel_ns == 0))
        fail("%s needs --iters and --kernel-ns (from calibrate)", mode);
    if (sync_every == 0 || nodes == 0 || nodes > 64 || !(kernel_ms > 0) || seconds < 0)
        fail("bad --sync-every, --nodes, --kernel-ms or --seconds");
    if (K.block == 0)
        K.block = 128;

    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    int sms = 0;
    CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    if (sms <= 0)
        fail("device reports %d SMs", sms);
    if (K.grid == 0)
        K.grid = (unsigned)sms;
    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CUmodule mod;
    CHECK(cuModuleLoadData(&mod, busy_ptx));
    CHECK(cuModuleGetFunction(&K.fn, mod, "vgpu_busy"));
    CHECK(cuMemAlloc_v2(&K.sink, 256));
    CHECK(cuStreamCreate(&K.stream, 0));
    K.params[0] = &K.iters;
    K.params[1] = &K.sink;

    if (calibrate) {
        /* Grow L 4x at a time until a kernel takes a quarter of the target (well
         * above launch costs, so time is linear in L from there), then scale. */
        double target = kernel_ms / 1e3, t = 0;
        K.iters = ITERS_START;
        time_batch(2); /* first launches pay for lazy module and context setup */
        for (;;) {
            t = time_batch(5);
            if (t >= target / 4 || K.iters * 4 > ITERS_CAP)
                break;
            K.iters *= 4;
        }
        if (t >= target / 4) {
            double scaled = (double)K.iters * target / t;
            K.iters = scaled < 1 ? 1 : (unsigned long long)scaled;
        }
        t = time_batch(20);
        kernel_ns = (unsigned long long)(t * 1e9);
        say("CALIBRATE iters=%llu kernel_ns=%llu sms=%d grid=%u block=%u", K.iters, kernel_ns, sms,
            K.grid, K.block);
        if (seconds <= 0)
            return 0;
    }

    CUgraphExec exec = NULL;
    CUgraph g = NULL;
    unsigned long long per_launch = 1, launches_per_sync = sync_every;
    if (graph) {
        CHECK(cuGraphCreate(&g, 0));
        CUgraphNode prev = NULL;
        for (unsigned long long i = 0; i < nodes; i++) {
            CUDA_KERNEL_NODE_PARAMS np;
            memset(&np, 0, sizeof np);
            np.func = K.fn;
            np.gridDimX = K.grid;
            np.gridDimY = np.gridDimZ = 1;
            np.blockDimX = K.block;
            np.blockDimY = np.blockDimZ = 1;
            np.kernelParams = K.params;
            CUgraphNode node;
            CHECK(cuGraphAddKernelNode(&node, g, prev ? &prev : NULL, prev ? 1 : 0, &np));
            prev = node;
        }
        CHECK(cuGraphInstantiateWithFlags(&exec, g, 0));
        per_launch = nodes;
        launches_per_sync = sync_every / nodes ? sync_every / nodes : 1;
    }

    say("READY pid=%d sms=%d grid=%u block=%u iters=%llu kernel_ns=%llu mode=%s", (int)getpid(),
        sms, K.grid, K.block, K.iters, kernel_ns, mode);
    double t0 = now_s(), end = t0 + seconds, last_report = t0;
    unsigned long long launches = 0, done_kernels = 0;
    while (now_s() < end) {
        for (unsigned long long i = 0; i < launches_per_sync; i++) {
            if (graph)
                CHECK(cuGraphLaunch(exec, K.stream));
            else
                launch();
        }
        CHECK(cuStreamSynchronize(K.stream));
        launches += launches_per_sync;
        done_kernels += launches_per_sync * per_launch;
        double now = now_s();
        if ((now - last_report) * 1e3 >= (double)report_ms) {
            say("BUSY kernels=%llu busy_ns=%llu", done_kernels, done_kernels * kernel_ns);
            last_report = now;
        }
    }
    double wall = now_s() - t0;
    unsigned long long busy = done_kernels * kernel_ns;
    say("BUSY kernels=%llu busy_ns=%llu", done_kernels, busy);
    say("DONE launches=%llu kernels=%llu seconds=%.3f busy_ns=%llu share=%.4f", launches,
        done_kernels, wall, busy, (double)busy / (wall * 1e9));
    if (exec)
        CHECK(cuGraphExecDestroy(exec));
    if (g)
        CHECK(cuGraphDestroy(g));
    CHECK(cuModuleUnload(mod));
    return 0;
}
