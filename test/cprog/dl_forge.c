/*
 * dl_forge — a tenant forging what it can write: its slice's usage region (driven
 * by test/e2e, from inside a container, and usable on bare metal). Not linked to
 * the driver (dl_*: it dlopen()s libcuda.so.1 when it allocates).
 *
 * The usage region is /run/vgpu/slice/usage when that exists (a container), else
 * $VGPU_SLICE_DIR/usage.
 *
 *   dl_forge overfill CHUNK N   N times: zero the device counter (dev[0].used_bytes),
 *                               then allocate CHUNK through the driver as the program
 *                               sees it (libvgpu's hooks: its own slot stays honest);
 *                               prints OVERFILLED admitted=BYTES, sleeps until killed
 *   dl_forge plant N ID...      claims N slots as LIVE, cycling over the identities
 *                               ID = PID:PIDNS_INO:START_TIME (processes that are not
 *                               its own), bumps attach_count so a reader rescans;
 *                               prints PLANTED n=N, sleeps until killed
 *   dl_forge refill PROG ARGS   runs PROG (a workload of the same slice) and, while it
 *                               runs, keeps every device's token_refilled far ahead of
 *                               token_spent so libvgpu never holds a launch back;
 *                               prints FORGING pid=CHILD, exits with the child
 *   dl_forge markers PROG ARGS  the same, but forging libvgpu's completion markers:
 *                               every device's token_done runs far ahead of what ran
 *                               and its sampled launch timings claim a token costs
 *                               nothing (the controller would lift the rate)
 */
#include "testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "vgpu_shm.h"

typedef CUresult (*init_fn)(unsigned int);
typedef CUresult (*retain_fn)(CUcontext *, CUdevice);
typedef CUresult (*setcur_fn)(CUcontext);
typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t);

/* map_usage maps the slice's usage region read-write. */
static struct vgpu_usage *map_usage(void)
{
    char path[512];
    struct stat st;
    if (stat(VGPU_CONTAINER_SLICE_DIR, &st) == 0) {
        snprintf(path, sizeof path, "%s/%s", VGPU_CONTAINER_SLICE_DIR, VGPU_USAGE_FILE);
    } else {
        const char *dir = getenv("VGPU_SLICE_DIR");
        if (!dir)
            fail("no slice: neither %s nor VGPU_SLICE_DIR", VGPU_CONTAINER_SLICE_DIR);
        snprintf(path, sizeof path, "%s/%s", dir, VGPU_USAGE_FILE);
    }
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0)
        fail("open %s: %s", path, strerror(errno));
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        fail("mmap %s: %s", path, strerror(errno));
    return p;
}

static alloc_fn load_driver(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    if (!h)
        fail("dlopen libcuda.so.1: %s", dlerror());
    init_fn init = (init_fn)dlsym(h, "cuInit");
    retain_fn retain = (retain_fn)dlsym(h, "cuDevicePrimaryCtxRetain");
    setcur_fn setcur = (setcur_fn)dlsym(h, "cuCtxSetCurrent");
    alloc_fn alloc = (alloc_fn)dlsym(h, "cuMemAlloc_v2");
    if (!init || !retain || !setcur || !alloc)
        fail("dlsym: a driver entry point is missing");
    CHECK(init(0));
    CUcontext ctx;
    CHECK(retain(&ctx, 0));
    CHECK(setcur(ctx));
    return alloc;
}

__attribute__((noreturn)) static void overfill(uint64_t chunk, long n)
{
    alloc_fn alloc = load_driver(); /* attaches to the slice: its slot is claimed */
    struct vgpu_usage *u = map_usage();
    uint64_t admitted = 0;
    for (long i = 0; i < n; i++) {
        __atomic_store_n(&u->dev[0].used_bytes, 0, __ATOMIC_SEQ_CST); /* the forgery */
        CUdeviceptr p;
        CUresult r = alloc(&p, chunk);
        if (r != CUDA_SUCCESS) {
            say("REFUSED after=%llu err=%d name=%s", (unsigned long long)admitted, (int)r,
                cu_name(r));
            break;
        }
        admitted += chunk;
    }
    say("OVERFILLED admitted=%llu", (unsigned long long)admitted);
    for (;;)
        pause();
}

struct identity {
    unsigned long long pid, ns, start;
};

__attribute__((noreturn)) static void plant(long n, int nids, char **ids)
{
    struct identity id[64];
    if (nids < 1 || nids > 64)
        fail("plant: 1..64 identities");
    for (int i = 0; i < nids; i++)
        if (sscanf(ids[i], "%llu:%llu:%llu", &id[i].pid, &id[i].ns, &id[i].start) != 3)
            fail("plant: identity %s: want PID:PIDNS_INO:START_TIME", ids[i]);
    struct vgpu_usage *u = map_usage();
    long planted = 0;
    for (uint32_t s = 0; s < u->hdr.slot_count && planted < n; s++) {
        struct vgpu_slot *slot = &u->slots[s];
        uint64_t free_word = VGPU_SLOT_FREE;
        const struct identity *who = &id[planted % nids];
        if (!__atomic_compare_exchange_n(&slot->owner, &free_word,
                                         (who->pid << VGPU_SLOT_PID_SHIFT) | VGPU_SLOT_CLAIMING,
                                         false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            continue;
        __atomic_store_n(&slot->pid, who->pid, __ATOMIC_RELAXED);
        __atomic_store_n(&slot->pidns_ino, who->ns, __ATOMIC_RELAXED);
        __atomic_store_n(&slot->start_time, who->start, __ATOMIC_RELAXED);
        __atomic_store_n(&slot->owner, (who->pid << VGPU_SLOT_PID_SHIFT) | VGPU_SLOT_LIVE,
                         __ATOMIC_RELEASE);
        planted++;
    }
    __atomic_add_fetch(&u->attach_count, 1, __ATOMIC_RELEASE);
    say("PLANTED n=%ld", planted);
    for (;;)
        pause();
}

/* The forgeries a workload's companion keeps up while the workload runs. */
static void forge_refill(struct vgpu_usage_device *ud)
{
    uint64_t spent = __atomic_load_n(&ud->token_spent, __ATOMIC_RELAXED);
    __atomic_store_n(&ud->token_refilled, spent + (1ull << 40), __ATOMIC_RELAXED);
}

static void forge_markers(struct vgpu_usage_device *ud)
{
    __atomic_fetch_add(&ud->token_done, 1ull << 32, __ATOMIC_RELAXED);
    __atomic_store_n(&ud->sampled_tokens, 1ull << 62, __ATOMIC_RELAXED);
    __atomic_store_n(&ud->sampled_ns, 1, __ATOMIC_RELAXED);
}

__attribute__((noreturn)) static void forge_while(char **argv,
                                                  void (*forge)(struct vgpu_usage_device *))
{
    struct vgpu_usage *u = map_usage();
    pid_t child = fork();
    if (child < 0)
        fail("fork: %s", strerror(errno));
    if (child == 0) {
        execv(argv[0], argv);
        fail("exec %s: %s", argv[0], strerror(errno));
    }
    say("FORGING pid=%d", (int)child);
    for (;;) {
        int status;
        if (waitpid(child, &status, WNOHANG) == child)
            exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        for (uint32_t d = 0; d < u->hdr.device_count; d++)
            forge(&u->dev[d]);
        usleep(100);
    }
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "overfill"))
        overfill(parse_size(argv[2]), atol(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "refill"))
        forge_while(argv + 2, forge_refill);
    if (argc >= 3 && !strcmp(argv[1], "markers"))
        forge_while(argv + 2, forge_markers);
    if (argc >= 4 && !strcmp(argv[1], "plant"))
        plant(atol(argv[2]), argc - 3, argv + 3);
    fail("usage: dl_forge overfill CHUNK N | plant N PID:PIDNS_INO:START_TIME... | refill PROG "
         "ARGS... | markers PROG ARGS...");
}
