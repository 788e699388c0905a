/*
 * sim_fill — allocates CHUNK-byte blocks with cuMemAlloc_v2 until the device says
 * CUDA_ERROR_OUT_OF_MEMORY, prints "FILLED <pid> <chunks> <chunk>", then holds the
 * memory until stdin closes. Several at once show that the node admits no more than
 * the device holds, whoever asks.
 *
 *   sim_fill CHUNK [DEVICE]
 */
#include <unistd.h>

#include "sim_util.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: sim_fill CHUNK [DEVICE]\n");
        return 2;
    }
    unsigned long long chunk = strtoull(argv[1], NULL, 0);
    int dev = argc > 2 ? atoi(argv[2]) : 0;
    CHECK(cuInit(0));
    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    unsigned long long n = 0;
    CUdeviceptr p;
    CUresult r;
    while ((r = cuMemAlloc_v2(&p, chunk)) == CUDA_SUCCESS)
        n++;
    EXPECT_RES(r, CUDA_ERROR_OUT_OF_MEMORY);
    printf("FILLED %d %llu %llu\n", (int)getpid(), n, chunk);
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    return 0;
}
