/*
 * isolation_load — a tenant of the noisy-neighbour isolation benchmark.
 *
 *   isolation_load MODE SECONDS [--grid N] [--warmup S] [--alloc BYTES]
 *
 * MODE:
 *   latency  inference-like: cuLaunchKernel of --grid blocks, cuStreamSynchronize,
 *            repeat; every step (launch to the end of the synchronize) is timed
 *   flood    training-like: cuLaunchKernel back to back (the queue fills until the
 *            driver blocks); a step is one kernel
 *   churn    an allocation-churn aggressor: each step cuMemAlloc + cuMemFree of
 *            --alloc bytes (default 64 MiB) and a kernel launch, back to back
 * Prints "READY pid=P" once set up (before the first launch). Runs for SECONDS of
 * wall time; steps in the first --warmup seconds (default 0) are not counted. At
 * the end it synchronizes and prints "DONE steps=N seconds=S" (N and S over the
 * counted part; for flood and churn S ends at the last launch, when the device
 * queue is as full as at the start, so N / S is the rate the device ran them) and,
 * for latency, the counted step times in microseconds as lines "LAT t1 t2 ...".
 */
#include <time.h>

#include "testutil.h"

CUresult cuDeviceGetAttribute(int *, CUdevice_attribute, CUdevice);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        fail("usage: isolation_load latency|flood|churn SECONDS [--grid N] [--warmup S] [--alloc "
             "BYTES]");
    int mode;
    if (strcmp(argv[1], "latency") == 0)
        mode = 0;
    else if (strcmp(argv[1], "flood") == 0)
        mode = 1;
    else if (strcmp(argv[1], "churn") == 0)
        mode = 2;
    else
        fail("unknown mode %s", argv[1]);
    double seconds = atof(argv[2]), warmup = 0;
    unsigned grid = 0;
    size_t alloc = 64u << 20;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--grid") == 0 && i + 1 < argc)
            grid = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc)
            warmup = atof(argv[++i]);
        else if (strcmp(argv[i], "--alloc") == 0 && i + 1 < argc)
            alloc = (size_t)strtoull(argv[++i], NULL, 10);
        else
            fail("bad argument %s", argv[i]);
    }
    if (!(seconds > 0) || warmup < 0 || warmup >= seconds || alloc == 0)
        fail("bad SECONDS, --warmup or --alloc");

    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    int sms = 0;
    CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    if (sms <= 0)
        fail("device reports %d SMs", sms);
    if (grid == 0)
        grid = (unsigned)sms * 100;
    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CUmodule mod;
    CUfunction fn;
    CHECK(cuModuleLoadData(&mod, ".version 8.0\n"));
    CHECK(cuModuleGetFunction(&fn, mod, "busy"));
    size_t cap = 1 << 20, nlat = 0;
    unsigned *lat = malloc(cap * sizeof *lat);
    if (!lat)
        fail("malloc");

    say("READY pid=%d sms=%d grid=%u", (int)getpid(), sms, grid);
    double t0 = now_s(), counted = t0 + warmup, end = t0 + seconds, last = counted;
    unsigned long long steps = 0;
    for (;;) {
        double a = now_s();
        if (a >= end)
            break;
        if (mode == 2) {
            CUdeviceptr p;
            CHECK(cuMemAlloc_v2(&p, alloc));
            CHECK(cuMemFree_v2(p));
        }
        CHECK(cuLaunchKernel(fn, grid, 1, 1, 128, 1, 1, 0, NULL, NULL, NULL));
        if (mode == 0)
            CHECK(cuStreamSynchronize(NULL));
        double b = now_s();
        if (a >= counted) {
            steps++;
            last = b;
            if (mode == 0 && nlat < cap)
                lat[nlat++] = (unsigned)((b - a) * 1e6 + 0.5);
        }
    }
    CHECK(cuCtxSynchronize());
    say("DONE steps=%llu seconds=%.6f", steps, last - counted);
    for (size_t i = 0; i < nlat; i += 200) {
        char line[200 * 12 + 8];
        int n = snprintf(line, sizeof line, "LAT");
        for (size_t j = i; j < nlat && j < i + 200; j++)
            n += snprintf(line + n, sizeof line - (size_t)n, " %u", lat[j]);
        say("%s", line);
    }
    free(lat);
    return 0;
}
