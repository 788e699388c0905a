/*
 * init.c — finding and validating the slice, resolving the real driver, the
 * process slot, the device map, fork and exit, logging.
 *
 * The modules' own initialization and fork handling is theirs: init.c runs the
 * handlers of the module registry (struct vgpu_module in vgpu_internal.h, the list
 * in modules.c) and names no module.
 *
 * Initialization is lazy: the first hooked call runs vgpu_init_slow() under
 * pthread_once. It costs a dlopen of the driver (already loaded in practice), two
 * opens + mmaps of the region files and one mmap for the allocation table; nothing
 * in it depends on how many other processes share the slice, and nothing is
 * serialized across processes (no lock exists in the region files).
 *
 * Where the slice is (a fixed decision, README "libvgpu"):
 *   /run/vgpu/slice/{budget,usage} when /run/vgpu/slice exists: container mode. The
 *       runtime mounts it there; the budget is mounted read-only, so a container
 *       cannot raise its own limit. A missing or bad region then ALWAYS refuses:
 *       the container's environment cannot loosen enforcement.
 *   $VGPU_SLICE_DIR/{budget,usage} otherwise (bare metal, tests).
 * VGPU_FAIL_MODE=passthrough|refuse (default passthrough) chooses, on bare metal
 * only, what happens without a usable slice: behave as if libvgpu were absent, or
 * make cuInit return CUDA_ERROR_NOT_PERMITTED and every hooked allocation
 * CUDA_ERROR_OUT_OF_MEMORY. Either way one "vgpu: ..." line says why, once.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vgpu_glibc.h"

#include "vgpu_internal.h"

struct vgpu_global vgpu_g;

/* stat / fstat without their GLIBC_2.33 symbols (vgpu_glibc.h): the system calls
 * themselves, into glibc's struct stat, which is the kernel's on these architectures. */
#ifdef VGPU_GLIBC_BASE
static int vgpu_stat(const char *path, struct stat *st)
{
    return (int)syscall(SYS_newfstatat, AT_FDCWD, path, st, 0);
}
static int vgpu_fstat(int fd, struct stat *st) { return (int)syscall(SYS_fstat, fd, st); }
#else
static int vgpu_stat(const char *path, struct stat *st) { return stat(path, st); }
static int vgpu_fstat(int fd, struct stat *st) { return fstat(fd, st); }
#endif
struct vgpu_real vgpu_real;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static pthread_once_t nvml_once = PTHREAD_ONCE_INIT;
/* Slow paths only: slot claim and device-map construction (both make syscalls or
 * driver calls, so a spinlock would be wrong). Re-initialized in a fork child. */
static pthread_mutex_t slot_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t devmap_mu = PTHREAD_MUTEX_INITIALIZER;
static char slice_dir[256];

/* ------------------------------------------------------------------- logging */

_Atomic int vgpu_log_level = VGPU_LOG_INFO;

/* VGPU_LOG_LEVEL, read once by init_once_fn: never on a hot path. */
static void read_log_level(void)
{
    const char *s = getenv("VGPU_LOG_LEVEL");
    if (!s || !*s)
        return;
    static const struct {
        const char *name;
        int level;
    } names[] = {
        {"off", VGPU_LOG_OFF},     {"none", VGPU_LOG_OFF},     {"error", VGPU_LOG_ERROR},
        {"warn", VGPU_LOG_WARN},   {"warning", VGPU_LOG_WARN}, {"info", VGPU_LOG_INFO},
        {"debug", VGPU_LOG_DEBUG},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            atomic_store_explicit(&vgpu_log_level, names[i].level, memory_order_relaxed);
            return;
        }
    }
    VGPU_LOG(VGPU_LOG_WARN, "VGPU_LOG_LEVEL=%s is not off, error, warn, info or debug; using info",
             s);
}

void vgpu_log(const char *fmt, ...)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "vgpu: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if (n > (int)sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    /* One write(2): the line stays whole even when several processes share stderr. */
    ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
    (void)w;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

/* Contended: spin briefly (holders keep the lock for a few instructions), then
 * yield so a preempted holder can finish. */
void vgpu_lock_slow(vgpu_lock_t *l)
{
    for (unsigned spins = 0;; spins++) {
        if (!atomic_load_explicit(&l->v, memory_order_relaxed) &&
            !atomic_exchange_explicit(&l->v, 1, memory_order_acquire))
            return;
        if (spins < 128)
            cpu_relax();
        else
            sched_yield();
    }
}

/* ------------------------------------------------------------------ real dlsym */

static _Atomic(dlsym_fn) real_dlsym_ptr;

/* glibc >= 2.34 versions dlsym GLIBC_2.34 (in libc); older ones have only the
 * architecture's first version, VGPU_GLIBC_BASE (GLIBC_2.2.5 on x86_64, GLIBC_2.17
 * on aarch64; in libdl, see vgpu_glibc.h). dlvsym is not interposed, so this
 * cannot recurse into our dlsym. */
VGPU_NO_ASAN dlsym_fn vgpu_real_dlsym(void)
{
    dlsym_fn f = atomic_load_explicit(&real_dlsym_ptr, memory_order_acquire);
    if (VGPU_LIKELY(f != NULL))
        return f;
    f = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
#ifdef VGPU_GLIBC_BASE
    if (!f)
        f = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", VGPU_GLIBC_BASE);
#endif
    if (!f) {
        /* Without the real dlsym nothing can be resolved; fail loudly, never loop. */
        VGPU_LOG(VGPU_LOG_ERROR, "cannot find the real dlsym (GLIBC_2.34 or the oldest version)");
        abort();
    }
    atomic_store_explicit(&real_dlsym_ptr, f, memory_order_release);
    return f;
}

/* ------------------------------------------------------------ region validation */

/* Opens and maps one region file after checking its header against the contract.
 * On failure returns NULL with a reason in why. */
static void *map_region(const char *dir, const char *file, uint64_t magic, bool writable,
                        struct vgpu_header *out, char *why, size_t whylen)
{
    char path[320];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whylen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (vgpu_fstat(fd, &st) != 0) {
        snprintf(why, whylen, "%s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    struct vgpu_header h;
    if (fsize < sizeof h || pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
        snprintf(why, whylen, "%s: truncated: %llu bytes, smaller than the %zu-byte header", path,
                 (unsigned long long)fsize, sizeof h);
        close(fd);
        return NULL;
    }
    uint64_t want = 0;
    if (h.magic != magic) {
        snprintf(why, whylen, "%s: bad magic 0x%016llx (want 0x%016llx)", path,
                 (unsigned long long)h.magic, (unsigned long long)magic);
    } else if (h.abi_major != VGPU_ABI_MAJOR) {
        snprintf(why, whylen, "%s: ABI version %u.%u, this libvgpu understands major %u", path,
                 h.abi_major, h.abi_minor, VGPU_ABI_MAJOR);
    } else if (h.header_size != sizeof(struct vgpu_header)) {
        snprintf(why, whylen, "%s: header size %u, want %zu", path, h.header_size,
                 sizeof(struct vgpu_header));
    } else if (h.total_size != fsize) {
        snprintf(why, whylen, "%s: %s: file has %llu bytes, header says %llu", path,
                 fsize < h.total_size ? "truncated" : "oversized", (unsigned long long)fsize,
                 (unsigned long long)h.total_size);
    } else if (h.max_devices != VGPU_MAX_DEVICES) {
        snprintf(why, whylen, "%s: max_devices %u, want %u", path, h.max_devices, VGPU_MAX_DEVICES);
    } else if (h.device_count == 0 || h.device_count > h.max_devices) {
        snprintf(why, whylen, "%s: device_count %u, want 1..%u", path, h.device_count,
                 h.max_devices);
    } else if (magic == VGPU_BUDGET_MAGIC && h.slot_count != 0) {
        snprintf(why, whylen, "%s: slot_count %u, a budget has none", path, h.slot_count);
    } else if (magic == VGPU_USAGE_MAGIC && (h.slot_count == 0 || h.slot_count > VGPU_MAX_SLOTS)) {
        snprintf(why, whylen, "%s: slot_count %u, want 1..%u", path, h.slot_count, VGPU_MAX_SLOTS);
    } else {
        want = magic == VGPU_BUDGET_MAGIC ? VGPU_BUDGET_SIZE : VGPU_USAGE_SIZE(h.slot_count);
        if (want != h.total_size)
            snprintf(why, whylen, "%s: total_size %llu, but %u devices / %u slots make %llu", path,
                     (unsigned long long)h.total_size, h.device_count, h.slot_count,
                     (unsigned long long)want);
    }
    if (want == 0 || want != h.total_size) {
        close(fd);
        return NULL;
    }
    void *p =
        mmap(NULL, (size_t)fsize, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(why, whylen, "%s: mmap: %s", path, strerror(errno));
        return NULL;
    }
    *out = h;
    return p;
}

/* Decides the mode. Returns VGPU_MODE_ENFORCE with vgpu_g.budget/usage set, or the
 * fallback mode after logging why. */
static int open_slice(void)
{
    bool container = false;
    const char *dir = NULL;
    struct stat st;
    if (vgpu_stat(VGPU_CONTAINER_SLICE_DIR, &st) == 0 && S_ISDIR(st.st_mode)) {
        container = true;
        dir = VGPU_CONTAINER_SLICE_DIR;
    } else {
        dir = getenv("VGPU_SLICE_DIR");
        if (dir && !*dir)
            dir = NULL;
    }

    int fallback = VGPU_MODE_PASSTHROUGH;
    const char *fallback_what = "passing through (VGPU_FAIL_MODE=passthrough)";
    if (container) {
        fallback = VGPU_MODE_REFUSE;
        fallback_what = "refusing CUDA (container slice: VGPU_FAIL_MODE does not apply)";
    } else {
        const char *fm = getenv("VGPU_FAIL_MODE");
        if (fm && *fm && strcmp(fm, "passthrough") != 0) {
            fallback = VGPU_MODE_REFUSE;
            fallback_what = strcmp(fm, "refuse") == 0
                                ? "refusing CUDA (VGPU_FAIL_MODE=refuse)"
                                : "refusing CUDA (VGPU_FAIL_MODE has an unknown value; "
                                  "failing closed)";
        }
    }
    /* Refusing CUDA is an error for whoever runs the program; passing through is a
     * warning (the program runs, unenforced). */
    int fallback_level = fallback == VGPU_MODE_REFUSE ? VGPU_LOG_ERROR : VGPU_LOG_WARN;

    if (!dir) {
        VGPU_LOG(fallback_level, "no slice (%s absent, VGPU_SLICE_DIR unset); %s",
                 VGPU_CONTAINER_SLICE_DIR, fallback_what);
        return fallback;
    }
    snprintf(slice_dir, sizeof slice_dir, "%s", dir);

    char why[400];
    struct vgpu_header bh, uh;
    void *b = map_region(dir, VGPU_BUDGET_FILE, VGPU_BUDGET_MAGIC, false, &bh, why, sizeof why);
    if (!b) {
        VGPU_LOG(fallback_level, "bad slice region %s; %s", why, fallback_what);
        return fallback;
    }
    void *u = map_region(dir, VGPU_USAGE_FILE, VGPU_USAGE_MAGIC, true, &uh, why, sizeof why);
    if (!u) {
        munmap(b, (size_t)bh.total_size);
        VGPU_LOG(fallback_level, "bad slice region %s; %s", why, fallback_what);
        return fallback;
    }
    if (uh.device_count != bh.device_count) {
        munmap(b, (size_t)bh.total_size);
        munmap(u, (size_t)uh.total_size);
        VGPU_LOG(fallback_level, "bad slice region %s: budget has %u devices, usage %u; %s", dir,
                 bh.device_count, uh.device_count, fallback_what);
        return fallback;
    }
    vgpu_g.budget = b;
    vgpu_g.usage = u;
    vgpu_g.ndev = bh.device_count;
    vgpu_g.nslots = uh.slot_count;
    return VGPU_MODE_ENFORCE;
}

/* ----------------------------------------------------------------------- fork */

/* Each module's handlers come from the registry (vgpu_internal.h, modules.c). */
static void atfork_prepare(void)
{
    for (size_t i = vgpu_nmodules; i-- > 0;)
        if (vgpu_modules[i]->fork_prepare)
            vgpu_modules[i]->fork_prepare();
}

static void atfork_parent(void)
{
    for (size_t i = 0; i < vgpu_nmodules; i++)
        if (vgpu_modules[i]->fork_parent)
            vgpu_modules[i]->fork_parent();
}

/* The child does not own the parent's device memory, contexts or pools: it starts
 * with empty tables and claims its own slot on its first charge. Only resets here —
 * no allocation (another thread may have held malloc's lock at fork time). */
static void atfork_child(void)
{
    atomic_store_explicit(&vgpu_g.slot, NULL, memory_order_relaxed);
    vgpu_g.slot_pid = 0;
    pthread_mutex_init(&slot_mu, NULL);
    pthread_mutex_init(&devmap_mu, NULL);
    int mode = atomic_load_explicit(&vgpu_g.mode, memory_order_relaxed);
    for (size_t i = 0; i < vgpu_nmodules; i++)
        if (vgpu_modules[i]->fork_child)
            vgpu_modules[i]->fork_child(mode);
}

/* ------------------------------------------------------------------------ init */

static void init_once_fn(void)
{
    read_log_level();
    /* The driver: RTLD_NOW so a broken driver fails here, not inside a hook;
     * RTLD_LOCAL so we add nothing to the global scope (if the program loaded it
     * already, this is the same handle). */
    vgpu_g.libcuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (vgpu_g.libcuda)
        vgpu_resolve_reals('C', vgpu_g.libcuda);

    int mode = open_slice();
    for (size_t i = 0; i < vgpu_nmodules; i++)
        if (vgpu_modules[i]->init)
            vgpu_modules[i]->init(mode);
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    if (VGPU_LOG_ENABLED(VGPU_LOG_DEBUG)) {
        static const char *const mode_names[] = {"uninit", "enforce", "passthrough", "refuse"};
        vgpu_log("pid %d: %s%s%s, %u slice devices, %u process slots, libcuda %s", (int)getpid(),
                 mode_names[mode], mode == VGPU_MODE_ENFORCE ? " slice " : "",
                 mode == VGPU_MODE_ENFORCE ? slice_dir : "", vgpu_g.ndev, vgpu_g.nslots,
                 vgpu_g.libcuda ? "loaded" : "not found");
    }
    atomic_store_explicit(&vgpu_g.mode, mode, memory_order_release);
}

int vgpu_init_slow(void)
{
    pthread_once(&init_once, init_once_fn);
    return atomic_load_explicit(&vgpu_g.mode, memory_order_acquire);
}

static void nvml_once_fn(void)
{
    vgpu_g.libnvml = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (vgpu_g.libnvml)
        vgpu_resolve_reals('N', vgpu_g.libnvml);
}

int vgpu_nvml_init(void)
{
    pthread_once(&nvml_once, nvml_once_fn);
    return vgpu_g.libnvml ? 0 : -1;
}

/* ------------------------------------------------------------------ device map */

/* "GPU-0123abcd-..." and "0123ABCD-..." name the same device. */
static const char *uuid_body(const char *s)
{
    if (strncasecmp(s, "GPU-", 4) == 0)
        return s + 4;
    return s;
}

static bool uuid_equal(const char *budget_uuid, const char *drv)
{
    char b[VGPU_UUID_LEN + 1];
    memcpy(b, budget_uuid, VGPU_UUID_LEN);
    b[VGPU_UUID_LEN] = 0;
    return strcasecmp(uuid_body(b), uuid_body(drv)) == 0;
}

static void format_uuid(const CUuuid *u, char *out, size_t n)
{
    const unsigned char *b = (const unsigned char *)u->bytes;
    snprintf(out, n, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* Index of the budget device naming this device, or -1. uuid may be NULL when the
 * driver could not say (then only index-matched entries can match). */
static int match_budget(unsigned int index, const char *uuid)
{
    for (uint32_t i = 0; i < vgpu_g.ndev; i++) {
        const struct vgpu_budget_device *bd = &vgpu_g.budget->dev[i];
        if (bd->uuid[0]) {
            if (uuid && uuid_equal(bd->uuid, uuid))
                return (int)i;
        } else if (bd->index == index) {
            return (int)i;
        }
    }
    return -1;
}

int vgpu_match_nvml_device(unsigned int index, const char *uuid)
{
    return match_budget(index, uuid);
}

static CUresult build_devmap(void)
{
    pthread_mutex_lock(&devmap_mu);
    CUresult r = CUDA_SUCCESS;
    if (atomic_load_explicit(&vgpu_g.devmap_ready, memory_order_acquire))
        goto out;
    int n = 0;
    if (!vgpu_real.cuDeviceGetCount) {
        r = CUDA_ERROR_NOT_INITIALIZED;
        goto out;
    }
    r = vgpu_real.cuDeviceGetCount(&n);
    if (r != CUDA_SUCCESS)
        goto out;
    if (n > VGPU_MAX_ORDINALS)
        n = VGPU_MAX_ORDINALS;
    for (int o = 0; o < n; o++) {
        CUuuid u;
        char s[48];
        const char *us = NULL;
        CUresult ur = CUDA_ERROR_NOT_FOUND;
        if (vgpu_real.cuDeviceGetUuid_v2)
            ur = vgpu_real.cuDeviceGetUuid_v2(&u, o);
        else if (vgpu_real.cuDeviceGetUuid)
            ur = vgpu_real.cuDeviceGetUuid(&u, o);
        if (ur == CUDA_SUCCESS) {
            format_uuid(&u, s, sizeof s);
            us = s;
        }
        int sd = match_budget((unsigned int)o, us);
        vgpu_g.devmap[o] = (int8_t)sd;
        /* The throttle's cost unit is a wave of blocks over the device's SMs. */
        int sms = 0;
        if (sd >= 0 && vgpu_real.cuDeviceGetAttribute &&
            vgpu_real.cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, o) ==
                CUDA_SUCCESS &&
            sms > 0)
            atomic_store_explicit(&vgpu_g.sms[sd], (uint32_t)sms, memory_order_relaxed);
    }
    /* A slice device this process cannot see (or whose SM count the driver would not
     * tell) still needs a unit: a typical large GPU's. vgpud's feedback corrects the
     * scale; only a daemonless static rate depends on it. */
    for (uint32_t d = 0; d < vgpu_g.ndev; d++)
        if (!atomic_load_explicit(&vgpu_g.sms[d], memory_order_relaxed))
            atomic_store_explicit(&vgpu_g.sms[d], VGPU_FALLBACK_SMS, memory_order_relaxed);
    vgpu_g.ndevmap = n;
    atomic_store_explicit(&vgpu_g.devmap_ready, 1, memory_order_release);
out:
    pthread_mutex_unlock(&devmap_mu);
    return r;
}

int vgpu_slice_dev_of_ordinal(CUdevice dev, CUresult *err)
{
    if (VGPU_UNLIKELY(!atomic_load_explicit(&vgpu_g.devmap_ready, memory_order_acquire))) {
        CUresult r = build_devmap();
        if (r != CUDA_SUCCESS) {
            *err = r;
            return -2;
        }
    }
    if (dev < 0 || dev >= vgpu_g.ndevmap) {
        *err = CUDA_ERROR_INVALID_DEVICE;
        return -2;
    }
    int sd = vgpu_g.devmap[dev];
    if (VGPU_UNLIKELY(sd < 0)) {
        VGPU_LOG_ONCE(logged_foreign, VGPU_LOG_WARN,
                      "CUDA device %d is not part of slice %s; allocations on it are refused", dev,
                      slice_dir);
        *err = CUDA_ERROR_OUT_OF_MEMORY;
        return -1;
    }
    return sd;
}

uint32_t vgpu_sms_of(int sd)
{
    uint32_t sms = atomic_load_explicit(&vgpu_g.sms[sd], memory_order_relaxed);
    if (VGPU_LIKELY(sms))
        return sms;
    if (!atomic_load_explicit(&vgpu_g.devmap_ready, memory_order_acquire))
        build_devmap();
    sms = atomic_load_explicit(&vgpu_g.sms[sd], memory_order_relaxed);
    return sms ? sms : VGPU_FALLBACK_SMS; /* driver not ready: try again next time */
}

/* ------------------------------------------------------------------- the slot */

static uint64_t read_start_time(void)
{
    /* /proc/self/stat field 22; comm (field 2) may contain spaces and ')' so parse
     * after the last ')'. Stack buffer only. */
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    p++;
    /* After ')' come fields 3.. separated by single spaces; field 22 is the 20th. */
    for (int field = 3; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            return 0;
    }
    return strtoull(p + 1, NULL, 10);
}

static uint64_t read_pidns(void)
{
    struct stat st;
    if (vgpu_stat("/proc/self/ns/pid", &st) != 0)
        return 0;
    return (uint64_t)st.st_ino;
}

/* A slot left LIVE by an earlier image of this very process (exec does not run
 * destructors and keeps pid and start time): its driver memory died with that
 * image, so its charges are returned before the slot is reused. */
static void adopt_stale(struct vgpu_slot *s)
{
    struct vgpu_usage *u = vgpu_g.usage;
    for (uint32_t d = 0; d < vgpu_g.ndev; d++) {
        uint64_t b = __atomic_exchange_n(&s->used_bytes[d], 0, __ATOMIC_RELAXED);
        uint64_t cur = __atomic_load_n(&u->dev[d].used_bytes, __ATOMIC_RELAXED);
        uint64_t t;
        do {
            t = cur < b ? cur : b;
        } while (!__atomic_compare_exchange_n(&u->dev[d].used_bytes, &cur, cur - t, true,
                                              __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    }
    __atomic_store_n(&s->contexts, 0, __ATOMIC_RELAXED);
}

static struct vgpu_slot *claim_slot(void)
{
    pthread_mutex_lock(&slot_mu);
    struct vgpu_slot *s = atomic_load_explicit(&vgpu_g.slot, memory_order_acquire);
    if (s || atomic_load_explicit(&vgpu_g.released, memory_order_relaxed))
        goto out;

    /* Identity first, so the CLAIMING window is a few stores long. */
    pid_t pid = getpid();
    uint64_t pidns = read_pidns();
    uint64_t start = read_start_time();
    uint64_t mine = ((uint64_t)(uint32_t)pid << VGPU_SLOT_PID_SHIFT);
    struct vgpu_usage *u = vgpu_g.usage;
    uint32_t n = vgpu_g.nslots;
    /* Start at a pid hash: with few processes the first probe succeeds, so the
     * claim stays O(1) no matter how large the slot table is. */
    uint32_t start_idx = (uint32_t)(((uint64_t)(uint32_t)pid * 0x9E3779B97F4A7C15ULL) >> 32) % n;
    for (uint32_t i = 0; i < n; i++) {
        struct vgpu_slot *c = &u->slots[(start_idx + i) % n];
        uint64_t owner = __atomic_load_n(&c->owner, __ATOMIC_ACQUIRE);
        bool stale = false;
        if (owner != VGPU_SLOT_FREE) {
            if ((owner & ~(uint64_t)VGPU_SLOT_STATE_MASK) != mine ||
                (owner & VGPU_SLOT_STATE_MASK) != VGPU_SLOT_LIVE ||
                __atomic_load_n(&c->pid, __ATOMIC_RELAXED) != (uint64_t)pid ||
                __atomic_load_n(&c->pidns_ino, __ATOMIC_RELAXED) != pidns ||
                __atomic_load_n(&c->start_time, __ATOMIC_RELAXED) != start)
                continue;
            stale = true;
        }
        if (!__atomic_compare_exchange_n(&c->owner, &owner, mine | VGPU_SLOT_CLAIMING, false,
                                         __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            continue;
        if (stale)
            adopt_stale(c);
        __atomic_store_n(&c->pid, (uint64_t)pid, __ATOMIC_RELAXED);
        __atomic_store_n(&c->pidns_ino, pidns, __ATOMIC_RELAXED);
        __atomic_store_n(&c->start_time, start, __ATOMIC_RELAXED);
        __atomic_store_n(&c->host_pid, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&c->contexts, 0, __ATOMIC_RELAXED);
        for (int d = 0; d < VGPU_MAX_DEVICES; d++)
            __atomic_store_n(&c->used_bytes[d], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&c->owner, mine | VGPU_SLOT_LIVE, __ATOMIC_RELEASE);
        if (!stale)
            __atomic_fetch_add(&u->attach_count, 1, __ATOMIC_RELAXED);
        vgpu_g.slot_pid = pid;
        s = c;
        atomic_store_explicit(&vgpu_g.slot, c, memory_order_release);
        goto out;
    }
    VGPU_LOG_ONCE(logged_full, VGPU_LOG_ERROR,
                  "no free process slot in %s/%s (%u slots); allocations refused", slice_dir,
                  VGPU_USAGE_FILE, n);
out:
    pthread_mutex_unlock(&slot_mu);
    return s;
}

struct vgpu_slot *vgpu_slot_get(void)
{
    struct vgpu_slot *s = atomic_load_explicit(&vgpu_g.slot, memory_order_acquire);
    if (VGPU_LIKELY(s != NULL))
        return s;
    return claim_slot();
}

/* Clean exit: the driver frees everything the process holds, so the slot's charges
 * go back and the slot is freed. Slot first, then the device counters (a kill
 * between the two leaves an over-count, never an under-count). */
__attribute__((destructor)) static void vgpu_fini(void)
{
    if (atomic_load_explicit(&vgpu_g.mode, memory_order_acquire) != VGPU_MODE_ENFORCE)
        return;
    pthread_mutex_lock(&slot_mu);
    struct vgpu_slot *s = atomic_load_explicit(&vgpu_g.slot, memory_order_acquire);
    atomic_store_explicit(&vgpu_g.released, 1, memory_order_relaxed);
    /* A child made by clone() without our atfork handler shares the parent's
     * globals: only the process that claimed the slot returns it. */
    if (!s || vgpu_g.slot_pid != getpid()) {
        pthread_mutex_unlock(&slot_mu);
        return;
    }
    atomic_store_explicit(&vgpu_g.slot, NULL, memory_order_release);
    pthread_mutex_unlock(&slot_mu);

    struct vgpu_usage *u = vgpu_g.usage;
    for (uint32_t d = 0; d < vgpu_g.ndev; d++) {
        uint64_t b = __atomic_exchange_n(&s->used_bytes[d], 0, __ATOMIC_RELAXED);
        if (!b)
            continue;
        uint64_t cur = __atomic_load_n(&u->dev[d].used_bytes, __ATOMIC_RELAXED);
        uint64_t t;
        do {
            t = cur < b ? cur : b;
        } while (!__atomic_compare_exchange_n(&u->dev[d].used_bytes, &cur, cur - t, true,
                                              __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    }
    __atomic_store_n(&s->contexts, 0, __ATOMIC_RELAXED);
    uint64_t mine = ((uint64_t)(uint32_t)vgpu_g.slot_pid << VGPU_SLOT_PID_SHIFT) | VGPU_SLOT_LIVE;
    __atomic_compare_exchange_n(&s->owner, &mine, VGPU_SLOT_FREE, false, __ATOMIC_RELEASE,
                                __ATOMIC_RELAXED);
}

const char *vgpu_slice_dir(void) { return slice_dir; }
