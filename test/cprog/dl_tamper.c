/*
 * dl_tamper — what a container sees of its slice, and what a malicious one can do
 * about it (driven by test/e2e). Not linked to the driver (dl_*: it dlopen()s
 * libcuda.so.1), so it also runs in a container without a slice, where there is no
 * driver library at all.
 *
 *   dl_tamper inspect        INSPECT preload=<content|-errno> vgpu_dir=0|1
 *                                    slice_id=<VGPU_SLICE_ID> libvgpu=0|1
 *   dl_tamper attack         tries to raise its own limit, one "ATTACK name=... result=..."
 *                            line per attempt (result OK means it worked), then unsets
 *                            LD_PRELOAD and re-executes itself as "alloc 64MiB"
 *   dl_tamper alloc CHUNK    allocates CHUNK-sized blocks until the first error:
 *                            RESULT admitted=N err=E name=... total=<cuMemGetInfo total> libvgpu=0|1
 *   dl_tamper hold CHUNK N   allocates N blocks, prints HELD admitted=..., sleeps until killed
 *   dl_tamper bypass SIZE    allocates SIZE through the driver's own cuMemAlloc_v2 (found in
 *                            the ELF, past every interposer: libvgpu never sees it), prints
 *                            BYPASSED err=E name=..., sleeps until killed (by the backstop)
 *   dl_tamper sleep          sleeps until killed
 */
#include "testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>

typedef CUresult (*init_fn)(unsigned int);
typedef CUresult (*retain_fn)(CUcontext *, CUdevice);
typedef CUresult (*setcur_fn)(CUcontext);
typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t);
typedef CUresult (*meminfo_fn)(size_t *, size_t *);

/* 1 when libvgpu.so is mapped into this process. */
static int libvgpu_loaded(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "libvgpu.so"))
            found = 1;
    fclose(f);
    return found;
}

static const char *err_name(int e)
{
    switch (e) {
    case 0: return "OK";
    case EROFS: return "EROFS";
    case EBUSY: return "EBUSY";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    case EXDEV: return "EXDEV";
    case EINVAL: return "EINVAL";
    default: return "EOTHER";
    }
}

static void report(const char *name, int rc)
{
    say("ATTACK name=%s result=%s", name, err_name(rc < 0 ? errno : 0));
}

static int inspect(void)
{
    char buf[256] = "";
    int fd = open("/etc/ld.so.preload", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        buf[n > 0 ? n : 0] = 0;
        char *nl = strchr(buf, '\n');
        if (nl)
            *nl = 0;
    } else {
        snprintf(buf, sizeof buf, "-%s", err_name(errno));
    }
    struct stat st;
    const char *id = getenv("VGPU_SLICE_ID");
    say("INSPECT preload=%s vgpu_dir=%d slice_id=%s libvgpu=%d", buf[0] ? buf : "-empty",
        stat("/run/vgpu", &st) == 0, id ? id : "-", libvgpu_loaded());
    return 0;
}

static int attack(const char *self)
{
    /* Raise the limit in place. */
    report("open_budget_rw", open("/run/vgpu/slice/budget", O_RDWR));
    report("chmod_budget", chmod("/run/vgpu/slice/budget", 0666));
    report("unlink_budget", unlink("/run/vgpu/slice/budget"));
    /* Plant a forged slice: move the real one away, or create next to it. */
    report("rename_vgpu_dir", rename("/run/vgpu", "/run/vgpu.old"));
    report("rename_slice_dir", rename("/run/vgpu/slice", "/run/vgpu/old"));
    report("create_in_slice_dir", open("/run/vgpu/slice/forged", O_CREAT | O_WRONLY, 0644));
    report("umount_budget", umount2("/run/vgpu/slice/budget", MNT_DETACH));
    /* Stop libvgpu from being loaded. */
    report("unlink_preload", unlink("/etc/ld.so.preload"));
    report("truncate_preload", open("/etc/ld.so.preload", O_WRONLY | O_TRUNC));
    report("umount_preload", umount2("/etc/ld.so.preload", MNT_DETACH));
    report("rename_preload", rename("/etc/ld.so.preload", "/etc/ld.so.preload.old"));
    unsetenv("LD_PRELOAD");
    setenv("VGPU_SLICE_DIR", "/tmp", 1);
    setenv("VGPU_FAIL_MODE", "passthrough", 1);
    say("ATTACK name=reexec_without_ld_preload result=%s", "TRYING");
    fflush(stdout);
    char *argv[] = {(char *)self, "alloc", "64MiB", NULL};
    execv(self, argv);
    fail("execv %s: %s", self, strerror(errno));
}

struct api {
    init_fn init;
    retain_fn retain;
    setcur_fn setcur;
    alloc_fn alloc;
    meminfo_fn meminfo;
};

static void load(struct api *a)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    if (!h)
        fail("dlopen libcuda.so.1: %s", dlerror());
    a->init = (init_fn)dlsym(h, "cuInit");
    a->retain = (retain_fn)dlsym(h, "cuDevicePrimaryCtxRetain");
    a->setcur = (setcur_fn)dlsym(h, "cuCtxSetCurrent");
    a->alloc = (alloc_fn)dlsym(h, "cuMemAlloc_v2");
    a->meminfo = (meminfo_fn)dlsym(h, "cuMemGetInfo_v2");
    if (!a->init || !a->retain || !a->setcur || !a->alloc || !a->meminfo)
        fail("dlsym: a driver entry point is missing");
    CUresult r = a->init(0);
    if (r != CUDA_SUCCESS) {
        say("INIT err=%d name=%s libvgpu=%d", (int)r, cu_name(r), libvgpu_loaded());
        exit(4);
    }
    CUcontext ctx;
    CHECK(a->retain(&ctx, 0));
    CHECK(a->setcur(ctx));
}

static uint64_t alloc_n(struct api *a, uint64_t chunk, long max, CUresult *last)
{
    uint64_t admitted = 0;
    CUdeviceptr p;
    *last = CUDA_SUCCESS;
    for (long n = 0; max < 0 || n < max; n++) {
        *last = a->alloc(&p, chunk);
        if (*last != CUDA_SUCCESS)
            break;
        admitted += chunk;
    }
    return admitted;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        fail("usage: dl_tamper inspect|attack|alloc CHUNK|hold CHUNK N|sleep");
    const char *mode = argv[1];
    if (!strcmp(mode, "inspect"))
        return inspect();
    if (!strcmp(mode, "attack"))
        return attack(argv[0][0] == '/' ? argv[0] : "/proc/self/exe");
    if (!strcmp(mode, "sleep")) {
        say("SLEEPING");
        for (;;)
            pause();
    }
    if (!strcmp(mode, "alloc") && argc == 3) {
        struct api a;
        load(&a);
        CUresult r;
        uint64_t admitted = alloc_n(&a, parse_size(argv[2]), -1, &r);
        size_t fr = 0, tot = 0;
        CHECK(a.meminfo(&fr, &tot));
        say("RESULT admitted=%llu err=%d name=%s total=%zu libvgpu=%d",
            (unsigned long long)admitted, (int)r, cu_name(r), tot, libvgpu_loaded());
        return r == CUDA_ERROR_OUT_OF_MEMORY ? 0 : 3;
    }
    if (!strcmp(mode, "hold") && argc == 4) {
        struct api a;
        load(&a);
        CUresult r;
        long n = atol(argv[3]);
        uint64_t admitted = alloc_n(&a, parse_size(argv[2]), n, &r);
        say("HELD admitted=%llu err=%d name=%s", (unsigned long long)admitted, (int)r, cu_name(r));
        for (;;)
            pause();
    }
    if (!strcmp(mode, "bypass") && argc == 3) {
        struct api a;
        load(&a);
        alloc_fn real_alloc = (alloc_fn)real_symbol("libcuda.so", "cuMemAlloc_v2");
        CUdeviceptr p;
        CUresult r = real_alloc(&p, parse_size(argv[2]));
        say("BYPASSED err=%d name=%s", (int)r, cu_name(r));
        for (;;)
            pause();
    }
    fail("unknown mode %s", mode);
}
