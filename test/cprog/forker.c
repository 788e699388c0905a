/*
 * forker — a forked child is a process of its own for libvgpu.
 *
 * The parent takes the primary context and allocates --parent bytes, then forks.
 * The child (which, like with the real driver, must initialize CUDA again) takes
 * its own context and allocates --child bytes; it also frees the parent's pointer,
 * which it does not own: libvgpu must hand that to the driver untouched (the
 * driver refuses it) and credit nothing. Both then stop at a phase so the test can
 * look at the slots:
 *   "CHILD pid=P free_parent_err=E" then "PHASE child"      (child, waits on a pipe)
 *   "PARENT pid=P child=C"          then "PHASE both"       (parent, waits on stdin)
 * After the parent's line on stdin the child frees, releases and exits cleanly;
 * the parent reports "PHASE child_gone" and waits again, then frees and exits.
 */
#include <sys/wait.h>

#include "testutil.h"

int main(int argc, char **argv)
{
    uint64_t psize = 64 * MiB, csize = 128 * MiB;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--parent"))
            psize = parse_size(argv[i + 1]);
        else if (!strcmp(argv[i], "--child"))
            csize = parse_size(argv[i + 1]);
        else
            fail("unknown argument %s", argv[i]);
    }
    CHECK(cuInit(0));
    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CHECK(cuCtxSetCurrent(ctx));
    CUdeviceptr pp;
    CHECK(cuMemAlloc_v2(&pp, psize));

    int go[2], ready[2];
    if (pipe(go) || pipe(ready))
        fail("pipe");
    fflush(stdout);
    pid_t child = fork();
    if (child < 0)
        fail("fork");
    if (child == 0) {
        close(go[1]);
        close(ready[0]);
        CHECK(cuInit(0));
        CUcontext cctx;
        CHECK(cuDevicePrimaryCtxRetain(&cctx, 0));
        CHECK(cuCtxSetCurrent(cctx));
        CUdeviceptr cp;
        CHECK(cuMemAlloc_v2(&cp, csize));
        CUresult fr = cuMemFree_v2(pp); /* the parent's: not ours */
        say("CHILD pid=%d free_parent_err=%d name=%s", (int)getpid(), (int)fr, cu_name(fr));
        say("PHASE child");
        if (write(ready[1], "r", 1) != 1)
            fail("write");
        char c;
        if (read(go[0], &c, 1) != 1)
            fail("child: parent went away");
        CHECK(cuMemFree_v2(cp));
        CHECK(cuDevicePrimaryCtxRelease_v2(0));
        exit(0);
    }
    close(go[0]);
    close(ready[1]);
    char c;
    if (read(ready[0], &c, 1) != 1)
        fail("parent: child died before it was ready");
    say("PARENT pid=%d child=%d", (int)getpid(), (int)child);
    phase(1, "both");
    if (write(go[1], "g", 1) != 1)
        fail("write");
    int status;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail("child exited with status %d", status);
    phase(1, "child_gone");
    CHECK(cuMemFree_v2(pp));
    CHECK(cuDevicePrimaryCtxRelease_v2(0));
    say("DONE");
    return 0;
}
