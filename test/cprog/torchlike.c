/*
 * torchlike — a tenant that manages device memory the way PyTorch's caching
 * allocator does, for the elastic-memory tests.
 *
 *   torchlike TOTAL BLOCK [HOLD]
 *
 * Grows its live tensors by BLOCK bytes per step until it holds TOTAL bytes.
 * Each step also takes a BLOCK-sized temporary (an activation) and, like the
 * caching allocator, keeps it in its cache instead of freeing it. When an
 * allocation fails with CUDA_ERROR_OUT_OF_MEMORY it empties its cache
 * (torch.cuda.empty_cache()) and retries once; a second failure is the
 * tenant's OutOfMemoryError. It prints
 *   STEP live=<bytes> cache=<bytes>            after every step
 *   FLUSH freed=<bytes>                        when it emptied its cache
 *   DONE live=<bytes> flushes=<n>              and exits 0, or
 *   OOM live=<bytes> asked=<bytes>             and exits 3 (cleanly: all freed)
 * With HOLD (any third argument) it prints "HOLDING" after DONE and keeps its
 * memory until stdin closes.
 */
#include <unistd.h>

#include "sim_util.h"

#define MAX_BLOCKS 4096

static CUdeviceptr live[MAX_BLOCKS], cache[MAX_BLOCKS];
static int nlive, ncache;

static void flush_cache(unsigned long long block)
{
    for (int i = 0; i < ncache; i++)
        CHECK(cuMemFree_v2(cache[i]));
    printf("FLUSH freed=%llu\n", (unsigned long long)ncache * block);
    fflush(stdout);
    ncache = 0;
}

/* alloc takes block bytes, emptying the cache and retrying once on OOM. */
static CUresult alloc(CUdeviceptr *p, unsigned long long block, int *flushes)
{
    CUresult r = cuMemAlloc_v2(p, block);
    if (r == CUDA_ERROR_OUT_OF_MEMORY && ncache > 0) {
        flush_cache(block);
        (*flushes)++;
        r = cuMemAlloc_v2(p, block);
    }
    return r;
}

static void free_all(void)
{
    for (int i = 0; i < nlive; i++)
        CHECK(cuMemFree_v2(live[i]));
    for (int i = 0; i < ncache; i++)
        CHECK(cuMemFree_v2(cache[i]));
    nlive = ncache = 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: torchlike TOTAL BLOCK [HOLD]\n");
        return 2;
    }
    unsigned long long total = strtoull(argv[1], NULL, 0), block = strtoull(argv[2], NULL, 0);
    if (block == 0 || total / block >= MAX_BLOCKS) {
        fprintf(stderr, "torchlike: want 0 < BLOCK and TOTAL/BLOCK < %d\n", MAX_BLOCKS);
        return 2;
    }
    CHECK(cuInit(0));
    CUdevice d;
    CHECK(cuDeviceGet(&d, 0));
    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, d));
    CHECK(cuCtxSetCurrent(ctx));
    int flushes = 0;
    while ((unsigned long long)nlive * block < total) {
        CUdeviceptr p;
        CUresult r = alloc(&p, block, &flushes);
        if (r == CUDA_ERROR_OUT_OF_MEMORY) {
            printf("OOM live=%llu asked=%llu\n", (unsigned long long)nlive * block, block);
            fflush(stdout);
            free_all();
            return 3;
        }
        CHECK(r);
        live[nlive++] = p;
        CUdeviceptr tmp;
        r = alloc(&tmp, block, &flushes);
        if (r == CUDA_SUCCESS) {
            cache[ncache++] = tmp; /* the caching allocator keeps it */
        } else if (r != CUDA_ERROR_OUT_OF_MEMORY) {
            CHECK(r);
        } /* no room for the activation even after a flush: skip it */
        printf("STEP live=%llu cache=%llu\n", (unsigned long long)nlive * block,
               (unsigned long long)ncache * block);
        fflush(stdout);
    }
    printf("DONE live=%llu flushes=%d\n", (unsigned long long)nlive * block, flushes);
    fflush(stdout);
    if (argc > 3) {
        printf("HOLDING\n");
        fflush(stdout);
        char buf[64];
        while (read(0, buf, sizeof buf) > 0) {
        }
    }
    free_all();
    return 0;
}
