/*
 * hammer — random allocation churn against one slice.
 *
 * Every thread allocates and frees random sizes (cuMemAlloc_v2 / cuMemFree_v2,
 * linked; with --async the stream-ordered cuMemAllocAsync_ptsz / cuMemFreeAsync_ptsz
 * on the thread's default stream, synchronizing every 16 operations, so the
 * threads grow and shrink the device's default pool concurrently) keeping at most
 * --live blocks, for --iters operations. Any error other
 * than CUDA_ERROR_OUT_OF_MEMORY fails the run; refusals are counted. At the end
 * everything is freed and the primary context released, so a clean exit must leave
 * the slice at zero. Several of these run at once in the integration test while Go
 * samples the usage counter.
 *
 *   hammer [--iters N] [--live K] [--min SIZE] [--max SIZE] [--threads T] [--seed S] [--async]
 *   prints: RESULT allocs=A frees=F refused=R
 */
#include <pthread.h>

#include "testutil.h"

static int use_async;

static CUresult do_alloc(CUdeviceptr *p, size_t size)
{
    return use_async ? cuMemAllocAsync_ptsz(p, size, NULL) : cuMemAlloc_v2(p, size);
}

static CUresult do_free(CUdeviceptr p)
{
    return use_async ? cuMemFreeAsync_ptsz(p, NULL) : cuMemFree_v2(p);
}

struct args {
    long iters;
    int live;
    uint64_t min, max;
    unsigned seed;
    CUcontext ctx;
    long allocs, frees, refused;
};

static void *run(void *p)
{
    struct args *a = p;
    CHECK(cuCtxSetCurrent(a->ctx));
    CUdeviceptr *blk = calloc((size_t)a->live, sizeof *blk);
    int n = 0;
    unsigned s = a->seed;
    for (long i = 0; i < a->iters; i++) {
        int r = rand_r(&s);
        if (n < a->live && (n == 0 || r % 100 < 55)) {
            uint64_t steps = (a->max - a->min) / MiB + 1;
            uint64_t size = a->min + (uint64_t)(rand_r(&s) % steps) * MiB;
            CUresult res = do_alloc(&blk[n], size);
            if (res == CUDA_SUCCESS) {
                n++;
                a->allocs++;
            } else if (res == CUDA_ERROR_OUT_OF_MEMORY) {
                a->refused++;
            } else {
                fail("cuMemAlloc_v2(%llu) = %d (%s)", (unsigned long long)size, (int)res,
                     cu_name(res));
            }
        } else if (n > 0) {
            int k = rand_r(&s) % n;
            CHECK(do_free(blk[k]));
            blk[k] = blk[--n];
            a->frees++;
        }
        if (use_async && i % 16 == 15)
            CHECK(cuStreamSynchronize_ptsz(NULL)); /* the pool gives memory back */
    }
    while (n > 0) {
        CHECK(do_free(blk[--n]));
        a->frees++;
    }
    if (use_async)
        CHECK(cuStreamSynchronize_ptsz(NULL));
    free(blk);
    return NULL;
}

int main(int argc, char **argv)
{
    long iters = 2000;
    int live = 8, threads = 2;
    uint64_t min = 1 * MiB, max = 256 * MiB;
    unsigned seed = (unsigned)getpid();
    for (int i = 1; i < argc; i += 2) {
        if (!strcmp(argv[i], "--async")) {
            use_async = 1;
            i--;
            continue;
        }
        if (i + 1 >= argc)
            fail("missing value for %s", argv[i]);
        if (!strcmp(argv[i], "--iters"))
            iters = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--live"))
            live = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--min"))
            min = parse_size(argv[i + 1]);
        else if (!strcmp(argv[i], "--max"))
            max = parse_size(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seed"))
            seed = (unsigned)atol(argv[i + 1]);
        else
            fail("unknown argument %s", argv[i]);
    }
    if (threads < 1 || threads > 64 || live < 1 || min == 0 || max < min)
        fail("bad arguments");
    CHECK(cuInit(0));
    /* The context's footprint is admitted like any allocation: while the other
     * processes fill the slice it can be refused. Retry for a while, as a job
     * launcher would. */
    CUcontext ctx;
    CUresult rr;
    for (int tries = 0;
         (rr = cuDevicePrimaryCtxRetain(&ctx, 0)) == CUDA_ERROR_OUT_OF_MEMORY && tries < 30000;
         tries++)
        usleep(1000);
    if (rr != CUDA_SUCCESS)
        fail("cuDevicePrimaryCtxRetain = %d (%s)", (int)rr, cu_name(rr));
    struct args a[64];
    pthread_t t[64];
    for (int i = 0; i < threads; i++) {
        a[i] = (struct args){.iters = iters,
                             .live = live,
                             .min = min,
                             .max = max,
                             .seed = seed * 31u + (unsigned)i,
                             .ctx = ctx};
        pthread_create(&t[i], NULL, run, &a[i]);
    }
    long allocs = 0, frees = 0, refused = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        allocs += a[i].allocs;
        frees += a[i].frees;
        refused += a[i].refused;
    }
    CHECK(cuDevicePrimaryCtxRelease_v2(0));
    say("RESULT allocs=%ld frees=%ld refused=%ld", allocs, frees, refused);
    return 0;
}
