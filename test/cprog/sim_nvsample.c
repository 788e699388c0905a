/*
 * sim_nvsample PERIOD_NS — NVML's utilization samples come per sample period of the
 * device timeline, and work counts when it executes, not when it is queued.
 *
 * A forked child (its own process slot) launches 4 periods of device work just after
 * a period boundary; this process then launches half a period of work, which the
 * device queue runs behind the child's. Polling nvmlDeviceGetProcessUtilization
 * every tenth of a period with lastSeenTimeStamp = the newest timeStamp seen (as
 * vgpud does), it checks:
 *   - the child's samples are its 5 periods (first + last ~ 100%, 3 x 100% between),
 *     one new sample per period, each timeStamp exactly one period after the last,
 *     none before its period ended, none twice;
 *   - this process has one sample, of the period its kernel ran in (the child's
 *     last), at 50%: nothing while its kernel sat in the queue;
 *   - nvmlDeviceGetUtilizationRates reads 100% for a period the child filled;
 *   - afterwards, a query with lastSeenTimeStamp = the child's 2nd timeStamp reports
 *     only the 3 periods after it, and with its last timeStamp nothing.
 * Assumes a fresh node (nothing else on device 0). Prints "OK".
 */
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sim_util.h"

typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} utilsample;
typedef struct {
    unsigned int gpu, memory;
} utilization;

nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t, utilsample *, unsigned int *,
                                             unsigned long long);
nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t, utilization *);

static unsigned long long clk(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

static void sleep_until_mono(unsigned long long t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000ull),
                          .tv_nsec = (long)(t % 1000000000ull)};
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

/* Launches `ns` of device time on the current context (default stream). */
static void launch_ns(CUfunction fn, unsigned long long ns, unsigned long long ns_per_block,
                      int sms)
{
    unsigned long long waves = ns / ns_per_block;
    CHECK(cuLaunchKernel(fn, (unsigned)(waves * (unsigned long long)sms), 1, 1, 32, 1, 1, 0, NULL,
                         NULL, NULL));
}

static CUfunction setup(int *sms)
{
    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuDeviceGetAttribute(sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    CUmodule mod;
    CUfunction fn;
    CHECK(cuModuleLoadData(&mod, "x"));
    CHECK(cuModuleGetFunction(&fn, mod, "k"));
    return fn;
}

#define MAXS 64

int main(int argc, char **argv)
{
    EXPECT(argc == 3, "usage: sim_nvsample PERIOD_NS NS_PER_BLOCK");
    const unsigned long long P = strtoull(argv[1], NULL, 10);
    const unsigned long long nspb = strtoull(argv[2], NULL, 10);
    const unsigned long long P_us = P / 1000;

    int go[2], done[2];
    EXPECT(pipe(go) == 0 && pipe(done) == 0, "pipe");
    pid_t child = fork();
    EXPECT(child >= 0, "fork");
    if (child == 0) {
        /* Only the parent holds done's write end: the child ends with it. */
        close(done[1]);
        close(go[0]);
        int sms;
        CUfunction fn = setup(&sms);
        /* Just after a period boundary: 4 periods of work, [L, L + 4P). */
        unsigned long long e = clk(CLOCK_MONOTONIC) / P + 1;
        sleep_until_mono(e * P + 1000000ull);
        unsigned long long L = clk(CLOCK_MONOTONIC);
        launch_ns(fn, 4 * P, nspb, sms);
        EXPECT(write(go[1], &e, sizeof e) == sizeof e && write(go[1], &L, sizeof L) == sizeof L,
               "write");
        CHECK(cuCtxSynchronize());
        char c;
        _exit(read(done[0], &c, 1) == 1 ? 0 : 1);
    }
    close(done[0]);
    close(go[1]);
    unsigned long long e0, L;
    EXPECT(read(go[0], &e0, sizeof e0) == sizeof e0 && read(go[0], &L, sizeof L) == sizeof L,
           "child did not start");
    int sms;
    CUfunction fn = setup(&sms);
    /* Half a period, queued behind the child's 4: it runs in period e0 + 4. */
    launch_ns(fn, P / 2, nspb, sms);
    unsigned long long launched = clk(CLOCK_MONOTONIC);
    EXPECT(launched < (e0 + 1) * P, "this launch came %llu ns after the child's period",
           launched - e0 * P);

    NVCHECK(nvmlInit_v2());
    nvmlDevice_t nd;
    NVCHECK(nvmlDeviceGetHandleByIndex_v2(0, &nd));
    /* Right after the launch: no sample of this process (its kernel is queued). */
    utilsample s[8];
    unsigned n = 8;
    nvmlReturn_t r = nvmlDeviceGetProcessUtilization(nd, s, &n, 0);
    EXPECT(r == NVML_SUCCESS || r == NVML_ERROR_NOT_FOUND, "process utilization r %d", r);
    for (unsigned i = 0; r == NVML_SUCCESS && i < n; i++)
        EXPECT(s[i].pid != (unsigned)getpid(),
               "a sample of this process while its kernel is queued");

    unsigned long long cts[MAXS], pts[MAXS];
    unsigned cutil[MAXS], putil[MAXS], nc = 0, np = 0, dev_full = 0;
    /* Start between the ends of periods e0 - 1 and e0 (lastSeenTimeStamp 0 would fold
     * every sample NVML holds into the first answer). */
    unsigned long long rt_off = clk(CLOCK_REALTIME) - clk(CLOCK_MONOTONIC);
    unsigned long long last_seen = (e0 * P + P / 2 + rt_off) / 1000;
    while (clk(CLOCK_MONOTONIC) < (e0 + 6) * P + P / 5) {
        n = 8;
        r = nvmlDeviceGetProcessUtilization(nd, s, &n, last_seen);
        unsigned long long now_us = clk(CLOCK_REALTIME) / 1000;
        EXPECT(r == NVML_SUCCESS || r == NVML_ERROR_NOT_FOUND, "process utilization r %d", r);
        for (unsigned i = 0; r == NVML_SUCCESS && i < n; i++) {
            EXPECT(s[i].timeStamp > last_seen && s[i].timeStamp <= now_us + 1000,
                   "sample at %llu: last seen %llu, now %llu", s[i].timeStamp, last_seen, now_us);
            if (s[i].pid == (unsigned)child && nc < MAXS) {
                cts[nc] = s[i].timeStamp;
                cutil[nc++] = s[i].smUtil;
            } else if (s[i].pid == (unsigned)getpid() && np < MAXS) {
                pts[np] = s[i].timeStamp;
                putil[np++] = s[i].smUtil;
            } else {
                EXPECT(0, "sample of unknown pid %u", s[i].pid);
            }
        }
        for (unsigned i = 0; r == NVML_SUCCESS && i < n; i++)
            if (s[i].timeStamp > last_seen)
                last_seen = s[i].timeStamp;
        utilization u;
        NVCHECK(nvmlDeviceGetUtilizationRates(nd, &u));
        if (u.gpu == 100)
            dev_full = 1;
        usleep((useconds_t)(P_us / 10));
    }

    /* The child: one sample per period of its work, a period apart, 400% in all. */
    EXPECT(nc == 5, "child has %u samples, want 5", nc);
    for (unsigned i = 1; i < nc; i++)
        EXPECT(cts[i] - cts[i - 1] + 1 >= P_us && cts[i] - cts[i - 1] <= P_us + 1,
               "child samples %u and %u are %llu us apart (period %llu us)", i - 1, i,
               cts[i] - cts[i - 1], P_us);
    EXPECT(cutil[1] == 100 && cutil[2] == 100 && cutil[3] == 100, "child's full periods: %u %u %u",
           cutil[1], cutil[2], cutil[3]);
    EXPECT(cutil[0] + cutil[4] >= 99 && cutil[0] + cutil[4] <= 101,
           "child's first and last periods: %u + %u", cutil[0], cutil[4]);
    /* This process: nothing while queued, then the period its kernel ran in. */
    EXPECT(np == 1, "this process has %u samples, want 1 (first at %llu, child's last %llu)", np,
           np ? pts[0] : 0, cts[4]);
    EXPECT(pts[0] == cts[4], "this process's sample at %llu, want the child's last period %llu",
           pts[0], cts[4]);
    EXPECT(putil[0] >= 49 && putil[0] <= 51, "this process's period: %u%%, want 50", putil[0]);
    EXPECT(dev_full, "device utilization never read 100%%");

    /* Newer than a timeStamp: only the samples after it. */
    n = 8;
    NVCHECK(nvmlDeviceGetProcessUtilization(nd, s, &n, cts[1]));
    EXPECT(n == 2, "%u entries newer than the child's 2nd sample", n);
    for (unsigned i = 0; i < n; i++) {
        EXPECT(s[i].timeStamp == cts[4], "pid %u at %llu, want %llu", s[i].pid, s[i].timeStamp,
               cts[4]);
        unsigned want = s[i].pid == (unsigned)child ? (cutil[2] + cutil[3] + cutil[4] + 1) / 3 : 17;
        EXPECT(s[i].smUtil + 1 >= want && s[i].smUtil <= want + 1,
               "pid %u: %u%% over 3 periods, want %u", s[i].pid, s[i].smUtil, want);
    }
    n = 8;
    r = nvmlDeviceGetProcessUtilization(nd, s, &n, cts[4]);
    EXPECT(r == NVML_ERROR_NOT_FOUND, "newer than the last busy period: r %d n %u", r, n);
    /* The period after the work is idle. */
    utilization u;
    NVCHECK(nvmlDeviceGetUtilizationRates(nd, &u));
    EXPECT(u.gpu == 0, "device utilization %u after the work", u.gpu);

    EXPECT(write(done[1], "x", 1) == 1, "write");
    int st;
    EXPECT(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0,
           "child failed");
    NVCHECK(nvmlShutdown());
    printf("OK\n");
    return 0;
}
