/*
 * execer — a process that exec()s while holding device memory.
 *
 * exec runs no destructor, so libvgpu's slot of the first image stays owned with
 * the same pid and start time; the driver drops the old image's memory with its
 * address space. The new image must take that slot over (returning its stale
 * charge) rather than leave a "live" slot nobody will ever release.
 *   first image:  "FIRST pid=P" after allocating 2 chunks, then exec
 *   second image: "SECOND pid=P" after allocating 1 chunk, then "PHASE second"
 *                 (waits for stdin), frees, exits
 */
#include "testutil.h"

int main(int argc, char **argv)
{
    int second = argc > 1 && !strcmp(argv[1], "--second");
    CHECK(cuInit(0));
    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CHECK(cuCtxSetCurrent(ctx));
    CUdeviceptr p[2];
    if (!second) {
        CHECK(cuMemAlloc_v2(&p[0], 64 * MiB));
        CHECK(cuMemAlloc_v2(&p[1], 64 * MiB));
        say("FIRST pid=%d", (int)getpid());
        char *const av[] = {argv[0], "--second", NULL};
        execv("/proc/self/exe", av);
        fail("execv: %s", strerror(errno));
    }
    CHECK(cuMemAlloc_v2(&p[0], 64 * MiB));
    say("SECOND pid=%d", (int)getpid());
    phase(1, "second");
    CHECK(cuMemFree_v2(p[0]));
    CHECK(cuDevicePrimaryCtxRelease_v2(0));
    return 0;
}
