/*
 * bench_overhead — the measuring half of `vgpu-bench overhead`.
 *
 * The same binary runs on the simulated node and on a real GPU: it is linked to
 * libcuda.so.1 by soname and the run-time LD_LIBRARY_PATH picks the driver. It is run
 * twice for every configuration, once bare and once with LD_PRELOAD=libvgpu.so; the Go
 * side (bench/) subtracts the two. All statistics are computed in Go so they can be
 * unit-tested; this program only prints raw samples as one JSON object on stdout.
 *
 * Modes:
 *   calls --op launch|alloc|getinfo [--threads T] [--iters N] [--batch B] [--warmup W]
 *         [--pin] [--expect-libvgpu]
 *       Each thread times B calls per batch with CLOCK_MONOTONIC around the batch (so
 *       the ~20 ns cost of reading the clock is amortised over B calls) and records
 *       ns/call for N batches after W warm-up batches. Threads start together (barrier).
 *       launch  = cuLaunchKernel of an empty 1-block kernel on the thread's own stream;
 *                 the stream is synchronized after every batch, outside the timed part,
 *                 so the launch queue never fills and never blocks a launch.
 *       alloc   = one cuMemAlloc_v2 + cuMemFree_v2 pair of 1 MiB (one "call").
 *       getinfo = cuMemGetInfo_v2.
 *   init --start-at NS [--expect-libvgpu]
 *       Sleeps until the absolute CLOCK_MONOTONIC time NS (so many processes start at
 *       once), then times cuInit + cuDeviceGet + cuDevicePrimaryCtxRetain +
 *       cuCtxSetCurrent + one 1 MiB cuMemAlloc_v2/cuMemFree_v2 (the first allocation is
 *       where libvgpu must have attached to its slice). If VGPU_BENCH_SPAWN_NS is set
 *       (CLOCK_MONOTONIC just before the parent spawned us), also reports load_ns: time
 *       from spawn to main(), which includes dynamic loading and library constructors.
 *   info
 *       Prints the driver version, device name and total memory of device 0.
 *   hold --ready-file PATH [--seconds S]
 *       Creates the primary context of device 0, writes PATH, then sleeps S seconds
 *       (default 30) or until killed: lets a script measure a context's footprint.
 *
 * --device D selects the CUDA ordinal (default 0) in every mode.
 * --expect-libvgpu fails (exit 3) unless libvgpu.so is mapped into the process: a
 * preload that silently failed would otherwise be measured as "zero overhead".
 *
 * Exit status: 0 ok, 1 a driver call failed, 2 usage error, 3 libvgpu not loaded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vgpu_cuda.h"

/* Driver-API prototypes (vgpu_cuda.h declares types only). */
CUresult cuInit(unsigned int flags);
CUresult cuDriverGetVersion(int *version);
CUresult cuDeviceGet(CUdevice *dev, int ordinal);
CUresult cuDeviceGetName(char *name, int len, CUdevice dev);
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev);
CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev);
CUresult cuCtxSetCurrent(CUcontext ctx);
CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes);
CUresult cuMemFree_v2(CUdeviceptr dptr);
CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes);
CUresult cuModuleLoadData(CUmodule *mod, const void *image);
CUresult cuModuleGetFunction(CUfunction *fn, CUmodule mod, const char *name);
CUresult cuStreamCreate(CUstream *stream, unsigned int flags);
CUresult cuStreamSynchronize(CUstream stream);
CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                        unsigned int bx, unsigned int by, unsigned int bz,
                        unsigned int shared_bytes, CUstream stream, void **params, void **extra);
CUresult cuGetErrorName(CUresult err, const char **name);

#define CU_STREAM_NON_BLOCKING_FLAG 0x1u
#define ALLOC_BYTES ((size_t)1 << 20)

/* An empty kernel as PTX: the real driver JIT-compiles it for whatever GPU it runs
 * on (PTX 6.0 / sm_50 is accepted by every driver since CUDA 9); the simulated
 * driver only needs the entry name. */
// clang-format off: one PTX line per source line
static const char noop_ptx[] = ".version 6.0\n"
                               ".target sm_50\n"
                               ".address_size 64\n"
                               "\n"
                               ".visible .entry vgpu_bench_noop()\n"
                               "{\n"
                               "\tret;\n"
                               "}\n";
// clang-format on
static const char noop_name[] = "vgpu_bench_noop";

static const char *prog = "bench_overhead";

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const char *err_name(CUresult r)
{
    const char *name = NULL;
    if (cuGetErrorName(r, &name) != CUDA_SUCCESS || name == NULL)
        return "?";
    return name;
}

/* Every driver call outside the timed loops goes through CHECK: a failure ends the
 * program with the call named, so the Go side can show why a run failed. */
#define CHECK(call)                                                                          \
    do {                                                                                     \
        CUresult r_ = (call);                                                                \
        if (r_ != CUDA_SUCCESS) {                                                            \
            fprintf(stderr, "%s: %s failed: %d (%s)\n", prog, #call, (int)r_, err_name(r_)); \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

static void usage(void)
{
    fprintf(stderr,
            "usage: %s calls --op launch|alloc|getinfo [--threads T] [--iters N] [--batch B]\n"
            "                 [--warmup W] [--pin] [--device D] [--expect-libvgpu]\n"
            "       %s init --start-at NS [--device D] [--expect-libvgpu]\n"
            "       %s info [--device D]\n"
            "       %s hold --ready-file PATH [--seconds S] [--device D]\n",
            prog, prog, prog, prog);
    exit(2);
}

static long parse_long(const char *flag, const char *v, long min, long max)
{
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < min || n > max) {
        fprintf(stderr, "%s: bad value for %s: %s (want %ld..%ld)\n", prog, flag, v, min, max);
        exit(2);
    }
    return n;
}

/* True when libvgpu.so is mapped into this process. */
static int libvgpu_loaded(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == NULL)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f) != NULL)
        found = strstr(line, "/libvgpu.so") != NULL;
    fclose(f);
    return found;
}

static void expect_libvgpu(void)
{
    if (!libvgpu_loaded()) {
        fprintf(stderr, "%s: libvgpu.so is not loaded (LD_PRELOAD failed?)\n", prog);
        exit(3);
    }
}

/* ------------------------------------------------------------------ calls mode */

enum op { OP_LAUNCH, OP_ALLOC, OP_GETINFO };

struct calls_cfg {
    enum op op;
    int threads, iters, batch, warmup, pin;
    CUcontext ctx;
    CUfunction fn;
    pthread_barrier_t start;
};

struct worker {
    struct calls_cfg *cfg;
    int index;
    double *ns_per_call; /* iters entries */
    CUresult err;        /* first failure inside the timed loop */
    const char *failed;  /* name of the call that failed */
};

/* One batch of B calls. Failures are recorded, not printed, so the timed loop does
 * nothing but the calls. Returns 0 on success. */
static int run_batch(struct worker *w, CUstream stream)
{
    const struct calls_cfg *c = w->cfg;
    CUresult r = CUDA_SUCCESS;
    switch (c->op) {
    case OP_LAUNCH:
        for (int i = 0; i < c->batch && r == CUDA_SUCCESS; i++)
            r = cuLaunchKernel(c->fn, 1, 1, 1, 1, 1, 1, 0, stream, NULL, NULL);
        if (r != CUDA_SUCCESS)
            w->failed = "cuLaunchKernel";
        break;
    case OP_ALLOC:
        for (int i = 0; i < c->batch && r == CUDA_SUCCESS; i++) {
            CUdeviceptr p = 0;
            r = cuMemAlloc_v2(&p, ALLOC_BYTES);
            if (r != CUDA_SUCCESS) {
                w->failed = "cuMemAlloc_v2";
                break;
            }
            r = cuMemFree_v2(p);
            if (r != CUDA_SUCCESS)
                w->failed = "cuMemFree_v2";
        }
        break;
    case OP_GETINFO:
        for (int i = 0; i < c->batch && r == CUDA_SUCCESS; i++) {
            size_t fr = 0, total = 0;
            r = cuMemGetInfo_v2(&fr, &total);
        }
        if (r != CUDA_SUCCESS)
            w->failed = "cuMemGetInfo_v2";
        break;
    }
    w->err = r;
    return r == CUDA_SUCCESS ? 0 : -1;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct calls_cfg *c = w->cfg;
    CUstream stream = NULL;
    int ok = 1;

    if (c->pin) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        if (ncpu > 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET((int)(w->index % ncpu), &set);
            /* Best effort: a container may forbid some CPUs; timing still works. */
            (void)pthread_setaffinity_np(pthread_self(), sizeof set, &set);
        }
    }
    /* Each thread makes the context current itself, as a real multi-threaded
     * program must; launch threads get their own non-blocking stream. */
    CUresult r = cuCtxSetCurrent(c->ctx);
    w->failed = "cuCtxSetCurrent";
    if (r == CUDA_SUCCESS && c->op == OP_LAUNCH) {
        r = cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING_FLAG);
        w->failed = "cuStreamCreate";
    }
    if (r != CUDA_SUCCESS) {
        w->err = r;
        ok = 0;
    } else {
        w->failed = NULL;
    }

    /* Every thread reaches the barrier, even a failed one, or the others would hang. */
    pthread_barrier_wait(&c->start);
    for (int i = 0; ok && i < c->warmup; i++) {
        if (run_batch(w, stream) != 0)
            ok = 0;
        else if (stream != NULL && (w->err = cuStreamSynchronize(stream)) != CUDA_SUCCESS) {
            w->failed = "cuStreamSynchronize";
            ok = 0;
        }
    }
    pthread_barrier_wait(&c->start);
    for (int i = 0; ok && i < c->iters; i++) {
        uint64_t t0 = now_ns();
        int rc = run_batch(w, stream);
        uint64_t t1 = now_ns();
        if (rc != 0) {
            ok = 0;
            break;
        }
        w->ns_per_call[i] = (double)(t1 - t0) / (double)c->batch;
        if (stream != NULL && (w->err = cuStreamSynchronize(stream)) != CUDA_SUCCESS) {
            w->failed = "cuStreamSynchronize";
            ok = 0;
        }
    }
    return NULL;
}

static int mode_calls(int argc, char **argv, int device)
{
    struct calls_cfg cfg = {
        .op = OP_LAUNCH, .threads = 1, .iters = 2000, .batch = 100, .warmup = 100};
    const char *op = NULL;
    int want_libvgpu = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--pin") == 0) {
            cfg.pin = 1;
            continue;
        }
        if (strcmp(a, "--expect-libvgpu") == 0) {
            want_libvgpu = 1;
            continue;
        }
        if (v == NULL)
            usage();
        if (strcmp(a, "--op") == 0)
            op = v;
        else if (strcmp(a, "--threads") == 0)
            cfg.threads = (int)parse_long(a, v, 1, 256);
        else if (strcmp(a, "--iters") == 0)
            cfg.iters = (int)parse_long(a, v, 1, 10000000);
        else if (strcmp(a, "--batch") == 0)
            cfg.batch = (int)parse_long(a, v, 1, 1000000);
        else if (strcmp(a, "--warmup") == 0)
            cfg.warmup = (int)parse_long(a, v, 0, 10000000);
        else if (strcmp(a, "--device") == 0)
            ; /* parsed by main */
        else
            usage();
        i++;
    }
    if (op == NULL)
        usage();
    if (strcmp(op, "launch") == 0)
        cfg.op = OP_LAUNCH;
    else if (strcmp(op, "alloc") == 0)
        cfg.op = OP_ALLOC;
    else if (strcmp(op, "getinfo") == 0)
        cfg.op = OP_GETINFO;
    else {
        fprintf(stderr, "%s: unknown --op %s (want launch, alloc or getinfo)\n", prog, op);
        return 2;
    }
    if (want_libvgpu)
        expect_libvgpu();

    CUdevice dev;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, device));
    CHECK(cuDevicePrimaryCtxRetain(&cfg.ctx, dev));
    CHECK(cuCtxSetCurrent(cfg.ctx));
    if (cfg.op == OP_LAUNCH) {
        CUmodule mod;
        CHECK(cuModuleLoadData(&mod, noop_ptx));
        CHECK(cuModuleGetFunction(&cfg.fn, mod, noop_name));
    }

    struct worker *w = calloc((size_t)cfg.threads, sizeof *w);
    pthread_t *tid = calloc((size_t)cfg.threads, sizeof *tid);
    if (w == NULL || tid == NULL) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return 1;
    }
    if (pthread_barrier_init(&cfg.start, NULL, (unsigned)cfg.threads) != 0) {
        fprintf(stderr, "%s: pthread_barrier_init failed\n", prog);
        return 1;
    }
    for (int t = 0; t < cfg.threads; t++) {
        w[t].cfg = &cfg;
        w[t].index = t;
        w[t].ns_per_call = calloc((size_t)cfg.iters, sizeof(double));
        if (w[t].ns_per_call == NULL) {
            fprintf(stderr, "%s: out of memory\n", prog);
            return 1;
        }
    }
    for (int t = 0; t < cfg.threads; t++) {
        int rc = pthread_create(&tid[t], NULL, worker_main, &w[t]);
        if (rc != 0) {
            fprintf(stderr, "%s: pthread_create: %s\n", prog, strerror(rc));
            return 1;
        }
    }
    for (int t = 0; t < cfg.threads; t++)
        pthread_join(tid[t], NULL);
    for (int t = 0; t < cfg.threads; t++) {
        if (w[t].err != CUDA_SUCCESS) {
            fprintf(stderr, "%s: thread %d: %s failed: %d (%s)\n", prog, t,
                    w[t].failed ? w[t].failed : "?", (int)w[t].err, err_name(w[t].err));
            return 1;
        }
    }

    /* One JSON object: samples of all threads, thread after thread. */
    printf("{\"mode\":\"calls\",\"op\":\"%s\",\"threads\":%d,\"iters\":%d,\"batch\":%d,"
           "\"warmup\":%d,\"libvgpu\":%s,\"ns_per_call\":[",
           op, cfg.threads, cfg.iters, cfg.batch, cfg.warmup, libvgpu_loaded() ? "true" : "false");
    for (int t = 0; t < cfg.threads; t++)
        for (int i = 0; i < cfg.iters; i++)
            printf("%s%.3f", t == 0 && i == 0 ? "" : ",", w[t].ns_per_call[i]);
    printf("]}\n");
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------- init mode */

static int mode_init(int argc, char **argv, int device)
{
    uint64_t main_ns = now_ns();
    long long start_at = -1;
    int want_libvgpu = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--expect-libvgpu") == 0) {
            want_libvgpu = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        if (strcmp(argv[i], "--start-at") == 0)
            start_at = parse_long(argv[i], argv[i + 1], 0, LONG_MAX);
        else if (strcmp(argv[i], "--device") != 0)
            usage();
        i++;
    }
    if (start_at < 0)
        usage();
    if (want_libvgpu)
        expect_libvgpu();

    long long load_ns = -1;
    const char *spawn = getenv("VGPU_BENCH_SPAWN_NS");
    if (spawn != NULL && *spawn != '\0') {
        long long s = parse_long("VGPU_BENCH_SPAWN_NS", spawn, 0, LONG_MAX);
        load_ns = (long long)main_ns - s;
    }

    struct timespec at = {.tv_sec = (time_t)(start_at / 1000000000LL),
                          .tv_nsec = (long)(start_at % 1000000000LL)};
    int rc;
    while ((rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL)) == EINTR)
        ;
    uint64_t t0 = now_ns();

    CUdevice dev;
    CUcontext ctx;
    CUdeviceptr p = 0;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, device));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuMemAlloc_v2(&p, ALLOC_BYTES));
    CHECK(cuMemFree_v2(p));
    uint64_t t1 = now_ns();

    printf("{\"mode\":\"init\",\"pid\":%d,\"init_ns\":%" PRIu64 ",\"late_ns\":%lld,"
           "\"load_ns\":%lld,\"libvgpu\":%s}\n",
           (int)getpid(), t1 - t0, (long long)t0 - start_at, load_ns,
           libvgpu_loaded() ? "true" : "false");
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ------------------------------------------------------------ info, hold modes */

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static int mode_info(int device)
{
    int version = 0;
    CUdevice dev;
    char name[256] = {0};
    size_t total = 0;
    CHECK(cuInit(0));
    CHECK(cuDriverGetVersion(&version));
    CHECK(cuDeviceGet(&dev, device));
    CHECK(cuDeviceGetName(name, (int)sizeof name - 1, dev));
    CHECK(cuDeviceTotalMem_v2(&total, dev));
    printf("{\"mode\":\"info\",\"cuda_driver_version\":%d,\"device\":%d,\"name\":", version,
           device);
    json_string(name);
    printf(",\"total_bytes\":%zu,\"libvgpu\":%s}\n", total, libvgpu_loaded() ? "true" : "false");
    return fflush(stdout) == 0 ? 0 : 1;
}

static int mode_hold(int argc, char **argv, int device)
{
    const char *ready = NULL;
    long seconds = 30;
    for (int i = 0; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--ready-file") == 0)
            ready = argv[i + 1];
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = parse_long(argv[i], argv[i + 1], 0, 86400);
        else if (strcmp(argv[i], "--device") != 0)
            usage();
    }
    if (ready == NULL || argc % 2 != 0)
        usage();
    CUdevice dev;
    CUcontext ctx;
    size_t fr = 0, total = 0;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, device));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuMemGetInfo_v2(&fr, &total));
    FILE *f = fopen(ready, "w");
    if (f == NULL) {
        fprintf(stderr, "%s: %s: %s\n", prog, ready, strerror(errno));
        return 1;
    }
    fprintf(f, "%d %zu %zu\n", (int)getpid(), fr, total);
    if (fclose(f) != 0) {
        fprintf(stderr, "%s: %s: %s\n", prog, ready, strerror(errno));
        return 1;
    }
    struct timespec ts = {.tv_sec = seconds, .tv_nsec = 0};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    int device = 0;
    for (int i = 2; i + 1 < argc; i++)
        if (strcmp(argv[i], "--device") == 0)
            device = (int)parse_long(argv[i], argv[i + 1], 0, 1023);
    const char *mode = argv[1];
    if (strcmp(mode, "calls") == 0)
        return mode_calls(argc - 2, argv + 2, device);
    if (strcmp(mode, "init") == 0)
        return mode_init(argc - 2, argv + 2, device);
    if (strcmp(mode, "info") == 0)
        return mode_info(device);
    if (strcmp(mode, "hold") == 0)
        return mode_hold(argc - 2, argv + 2, device);
    usage();
    return 2;
}
