/*
 * elastic — one allocation that may need an elastic grant, timed.
 *
 * Takes the primary context of device 0, allocates --base bytes (0: none; must
 * fit), prints "PHASE ready" (and waits for a line on stdin with --step), then
 * allocates --alloc bytes through --api (alloc: cuMemAlloc_v2; async:
 * cuMemAllocAsync on the device's default pool) and prints
 *   RESULT err=<code> name=<name> ns=<wall ns of the call>
 * and "PHASE allocated" (waiting again with --step), then frees everything and
 * exits 0 (whatever the result).
 *
 * --forge plays a tenant that tries to grant itself memory through what libvgpu
 * mapped (found in /proc/self/maps under $VGPU_SLICE_DIR), before the allocation:
 * it scribbles over its usage region's request words (writable: they are only
 * requests), tries to store a huge memory_limit and elastic_grant_seq in the
 * budget mapping (each in a forked child, which must die of SIGSEGV: the mapping
 * is read-only) and to make that mapping writable (mprotect must fail), and prints
 *   FORGE limit_sig=<signal> grant_sig=<signal> mprotect_errno=<errno> limit=<bytes>
 *
 * --no-futex makes every futex call fail with ENOSYS (a seccomp filter, installed
 * just before the allocation: the program is single-threaded, so nothing else
 * needs futexes then), as on a kernel without them: libvgpu must fall back to
 * short sleeps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "vgpu_shm.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Start and length of the mapping of file `path` in this process, or NULL. */
static void *find_mapping(const char *path, size_t *len)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        fail("open /proc/self/maps: %s", strerror(errno));
    char line[PATH_MAX + 256];
    void *found = NULL;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        int off = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &off) < 2 || !off)
            continue;
        char *name = line + off;
        name[strcspn(name, "\n")] = '\0';
        if (!strcmp(name, path)) {
            found = (void *)lo;
            *len = hi - lo;
            break;
        }
    }
    fclose(f);
    return found;
}

/* Runs store(p, v) in a child; returns the signal that killed it (0: it survived). */
static int try_store(uint64_t *p, uint64_t v)
{
    pid_t pid = fork();
    if (pid < 0)
        fail("fork: %s", strerror(errno));
    if (pid == 0) {
        /* The default action, whatever a sanitizer runtime installed: the test
         * wants to see the kernel's verdict on the write. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(SIGSEGV, &sa, NULL);
        sigaction(SIGBUS, &sa, NULL);
        __atomic_store_n(p, v, __ATOMIC_RELAXED);
        _exit(0);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid)
        fail("waitpid: %s", strerror(errno));
    return WIFSIGNALED(st) ? WTERMSIG(st) : 0;
}

static void forge(void)
{
    const char *dir = getenv("VGPU_SLICE_DIR");
    if (!dir)
        fail("--forge needs VGPU_SLICE_DIR");
    char real[PATH_MAX], path[PATH_MAX + 16];
    if (!realpath(dir, real))
        fail("realpath %s: %s", dir, strerror(errno));
    size_t blen = 0, ulen = 0;
    snprintf(path, sizeof path, "%s/%s", real, VGPU_BUDGET_FILE);
    struct vgpu_budget *b = find_mapping(path, &blen);
    snprintf(path, sizeof path, "%s/%s", real, VGPU_USAGE_FILE);
    struct vgpu_usage *u = find_mapping(path, &ulen);
    if (!b || !u)
        fail("libvgpu's mappings of %s not found", real);
    /* The usage region is the tenant's to write: ask for everything, claim that
     * every request was long answered. */
    __atomic_store_n(&u->dev[0].elastic_request_bytes, UINT64_MAX, __ATOMIC_RELAXED);
    __atomic_store_n(&u->dev[0].elastic_request_seq, 0, __ATOMIC_RELAXED);
    int limit_sig = try_store(&b->dev[0].memory_limit, UINT64_MAX / 2);
    int grant_sig = try_store(&b->dev[0].elastic_grant_seq, UINT64_MAX / 2);
    int merr = 0;
    if (mprotect(b, blen, PROT_READ | PROT_WRITE) != 0)
        merr = errno;
    say("FORGE limit_sig=%d grant_sig=%d mprotect_errno=%d limit=%llu", limit_sig, grant_sig, merr,
        (unsigned long long)__atomic_load_n(&b->dev[0].memory_limit, __ATOMIC_RELAXED));
}

static void no_futex(void)
{
#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#endif
#ifdef ARCH
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_futex, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        fail("seccomp: %s", strerror(errno));
    if (syscall(SYS_futex, &f[0].k, 1 /* FUTEX_WAKE */, 1, NULL, NULL, 0) != -1 || errno != ENOSYS)
        fail("the futex filter is not in force");
#else
    fail("--no-futex: unknown architecture");
#endif
}

int main(int argc, char **argv)
{
    uint64_t base = 0, size = 0;
    const char *api = "alloc";
    int step = 0, forging = 0, nofutex = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--base") && i + 1 < argc)
            base = parse_size(argv[++i]);
        else if (!strcmp(argv[i], "--alloc") && i + 1 < argc)
            size = parse_size(argv[++i]);
        else if (!strcmp(argv[i], "--api") && i + 1 < argc)
            api = argv[++i];
        else if (!strcmp(argv[i], "--step"))
            step = 1;
        else if (!strcmp(argv[i], "--forge"))
            forging = 1;
        else if (!strcmp(argv[i], "--no-futex"))
            nofutex = 1;
        else
            fail("unknown argument %s", argv[i]);
    }
    int async = !strcmp(api, "async");
    if (!async && strcmp(api, "alloc"))
        fail("--api alloc|async, not %s", api);
    CHECK(cuInit(0));
    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CHECK(cuCtxSetCurrent(ctx));
    CUdeviceptr pb = 0, p = 0;
    if (base)
        CHECK(cuMemAlloc_v2(&pb, base));
    if (forging)
        forge();
    if (!phase(step, "ready"))
        return 0;
    if (nofutex)
        no_futex();
    uint64_t t0 = now_ns();
    CUresult r = async ? cuMemAllocAsync(&p, size, 0) : cuMemAlloc_v2(&p, size);
    uint64_t t1 = now_ns();
    say("RESULT err=%d name=%s ns=%llu", (int)r, cu_name(r), (unsigned long long)(t1 - t0));
    if (!phase(step, "allocated"))
        step = 0; /* stdin closed: free and exit */
    if (r == CUDA_SUCCESS) {
        if (async) {
            CHECK(cuMemFreeAsync(p, 0));
            CHECK(cuStreamSynchronize(0));
        } else {
            CHECK(cuMemFree_v2(p));
        }
    }
    if (pb)
        CHECK(cuMemFree_v2(pb));
    return 0;
}
