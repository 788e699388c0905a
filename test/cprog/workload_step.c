/*
 * workload_step — the measuring half of `vgpu-bench workload`: what a training or
 * inference step does through the driver API, timed per step.
 *
 * Set-up (untimed): a context, one non-blocking stream, pinned host buffers, a
 * "cache" of --blocks device blocks (1..--blocks MiB, as a caching allocator keeps
 * them) and a graph of --graph-nodes kernel nodes (built with cuGraphAddKernelNode:
 * the simulator has no stream capture), instantiated once.
 *
 * One step (timed with CLOCK_MONOTONIC from its first call to the end of its sync):
 *   - every --realloc-every steps the cache gives one block back and allocates it
 *     again (cuMemFree_v2 + cuMemAlloc_v2: the allocator's occasional trim/grow);
 *   - cuMemcpyHtoDAsync_v2 of --copy-bytes (the input batch) into cache block 0;
 *   - --launches cuLaunchKernel of --grid blocks on the stream (the layers);
 *   - cuGraphLaunch of the graph (a captured decode/optimizer part);
 *   - cuMemcpyDtoHAsync_v2 of 4 KiB (the loss / logits) and cuStreamSynchronize.
 *
 * Usage: workload_step [--steps N] [--warmup W] [--launches K] [--grid B]
 *                      [--graph-nodes G] [--blocks M] [--copy-bytes C]
 *                      [--realloc-every R] [--device D] [--expect-lib SUBSTR]
 * --expect-lib fails (exit 3) unless a mapped file's path contains SUBSTR: a preload
 * that silently failed would otherwise be measured as "no overhead".
 *
 * Prints one JSON object: {"steps":N,"kernels_per_step":K+G,"calls_per_step":...,
 * "step_ns":[...]}.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <time.h>

#include "testutil.h"

CUresult cuGraphAddKernelNode_v2(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                                 const CUDA_KERNEL_NODE_PARAMS_v2 *);
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr, const void *, size_t, CUstream);
CUresult cuMemcpyDtoHAsync_v2(void *, CUdeviceptr, size_t, CUstream);
CUresult cuMemHostAlloc(void **, size_t, unsigned int);
CUresult cuMemFreeHost(void *);

#define MIB ((size_t)1 << 20)
#define OUT_BYTES 4096

static long arg_long(const char *flag, const char *v, long min, long max)
{
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (end == v || *end != '\0' || n < min || n > max) {
        fprintf(stderr, "workload_step: bad value for %s: %s (want %ld..%ld)\n", flag, v, min, max);
        exit(2);
    }
    return n;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int mapped(const char *substr)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == NULL)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f) != NULL)
        found = strstr(line, substr) != NULL;
    fclose(f);
    return found;
}

int main(int argc, char **argv)
{
    long steps = 200, warmup = 20, launches = 48, grid = 132, nodes = 8, blocks = 8;
    long copy = 256 * 1024, realloc_every = 8, device = 0;
    const char *expect = NULL;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "workload_step: %s needs a value\n", f);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(f, "--steps"))
            steps = arg_long(f, v, 1, 10000000);
        else if (!strcmp(f, "--warmup"))
            warmup = arg_long(f, v, 0, 10000000);
        else if (!strcmp(f, "--launches"))
            launches = arg_long(f, v, 0, 100000);
        else if (!strcmp(f, "--grid"))
            grid = arg_long(f, v, 1, 1 << 30);
        else if (!strcmp(f, "--graph-nodes"))
            nodes = arg_long(f, v, 0, 10000);
        else if (!strcmp(f, "--blocks"))
            blocks = arg_long(f, v, 1, 1024);
        else if (!strcmp(f, "--copy-bytes"))
            copy = arg_long(f, v, 0, 1L << 30);
        else if (!strcmp(f, "--realloc-every"))
            realloc_every = arg_long(f, v, 0, 10000000);
        else if (!strcmp(f, "--device"))
            device = arg_long(f, v, 0, 63);
        else if (!strcmp(f, "--expect-lib"))
            expect = v;
        else {
            fprintf(stderr, "workload_step: unknown flag %s\n", f);
            return 2;
        }
    }
    if ((size_t)copy > MIB) {
        fprintf(stderr,
                "workload_step: --copy-bytes must be <= 1 MiB (the smallest cache block)\n");
        return 2;
    }
    if (expect != NULL && !mapped(expect)) {
        fprintf(stderr, "workload_step: no mapped file matches %s (LD_PRELOAD failed?)\n", expect);
        return 3;
    }

    CUdevice dev;
    CUcontext ctx;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, (int)device));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CUstream s;
    CHECK(cuStreamCreate(&s, 0x1 /* CU_STREAM_NON_BLOCKING */));
    CUmodule mod;
    CUfunction fn;
    CHECK(cuModuleLoadData(&mod, ".version 8.0\n"));
    CHECK(cuModuleGetFunction(&fn, mod, "layer"));

    void *in = NULL, *out = NULL;
    CHECK(cuMemHostAlloc(&in, copy ? (size_t)copy : 1, 0));
    CHECK(cuMemHostAlloc(&out, OUT_BYTES, 0));
    memset(in, 7, copy ? (size_t)copy : 1);

    CUdeviceptr *cache = calloc((size_t)blocks, sizeof *cache);
    if (cache == NULL)
        fail("calloc");
    for (long i = 0; i < blocks; i++)
        CHECK(cuMemAlloc_v2(&cache[i], (size_t)(i + 1) * MIB));

    CUgraphExec exec = NULL;
    if (nodes > 0) {
        CUgraph g;
        CHECK(cuGraphCreate(&g, 0));
        CUgraphNode prev = NULL;
        for (long i = 0; i < nodes; i++) {
            CUDA_KERNEL_NODE_PARAMS_v2 np;
            memset(&np, 0, sizeof np);
            np.func = fn;
            np.gridDimX = (unsigned)grid;
            np.gridDimY = np.gridDimZ = 1;
            np.blockDimX = 128;
            np.blockDimY = np.blockDimZ = 1;
            CUgraphNode node;
            CHECK(cuGraphAddKernelNode_v2(&node, g, prev ? &prev : NULL, prev ? 1 : 0, &np));
            prev = node;
        }
        CHECK(cuGraphInstantiateWithFlags(&exec, g, 0));
        CHECK(cuGraphDestroy(g));
    }

    uint64_t *ns = calloc((size_t)steps, sizeof *ns);
    if (ns == NULL)
        fail("calloc");
    long victim = 0;
    for (long i = -warmup; i < steps; i++) {
        uint64_t t0 = mono_ns();
        if (realloc_every > 0 && (i + warmup) % realloc_every == realloc_every - 1) {
            victim = 1 + (victim % (blocks > 1 ? blocks - 1 : 1));
            long v = blocks > 1 ? victim : 0;
            CHECK(cuMemFree_v2(cache[v]));
            CHECK(cuMemAlloc_v2(&cache[v], (size_t)(v + 1) * MIB));
        }
        if (copy > 0)
            CHECK(cuMemcpyHtoDAsync_v2(cache[0], in, (size_t)copy, s));
        for (long k = 0; k < launches; k++) {
            void *params[] = {&cache[k % blocks]};
            CHECK(cuLaunchKernel(fn, (unsigned)grid, 1, 1, 128, 1, 1, 0, s, params, NULL));
        }
        if (exec != NULL)
            CHECK(cuGraphLaunch(exec, s));
        CHECK(cuMemcpyDtoHAsync_v2(out, cache[0], OUT_BYTES, s));
        CHECK(cuStreamSynchronize(s));
        uint64_t t1 = mono_ns();
        if (i >= 0)
            ns[i] = t1 - t0;
    }

    long calls = (copy > 0) + launches + (exec != NULL) + 2;
    printf("{\"steps\":%ld,\"kernels_per_step\":%ld,\"calls_per_step\":%ld,\"step_ns\":[", steps,
           launches + nodes, calls);
    for (long i = 0; i < steps; i++)
        printf("%s%" PRIu64, i ? "," : "", ns[i]);
    printf("]}\n");

    if (exec != NULL)
        CHECK(cuGraphExecDestroy(exec));
    for (long i = 0; i < blocks; i++)
        CHECK(cuMemFree_v2(cache[i]));
    CHECK(cuMemFreeHost(in));
    CHECK(cuMemFreeHost(out));
    free(cache);
    free(ns);
    return 0;
}
