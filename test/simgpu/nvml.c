//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * nvml.c — the simulated NVML (build/simgpu/libnvidia-ml.so.1).
 *
 * Reads the same state file as the simulated libcuda, so NVML figures are the
 * driver's figures: device memory in use, per-process used memory (under the pid
 * each process has in the CALLER's pid namespace, as the kernel driver reports it:
 * see pidview.c), and utilization in samples of the node's sample period, counted
 * when the work executes on the device timeline (see "utilization" below). Queries
 * that report processes or memory first reclaim dead processes, as the real driver
 * frees a process's memory on exit.
 *
 * Struct layouts follow nvml.h (checked against the copy in go-nvml).
 */
#define _GNU_SOURCE
#include "state.h"
#include "vgpu_cuda.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

#define SIM_NVML_DRIVER_VERSION "550.54.15"
#define SIM_NVML_VERSION "12.550.54.15"
#define SIM_CUDA_DRIVER_VERSION 12040

/* nvml.h structs the shared header does not declare. */
typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} sim_nvmlPciInfo_t;

/* The original (v1) nvmlPciInfo_t: busId[16] then the ids and four reserved words. */
typedef struct {
    char busId[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    unsigned int reserved0, reserved1, reserved2, reserved3;
} sim_nvmlPciInfo_v1_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
} sim_nvmlProcessInfo_v1_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} sim_nvmlProcessInfo_v2_t;

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} sim_nvmlUtilization_t;

typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil;
    unsigned int memUtil;
    unsigned int encUtil;
    unsigned int decUtil;
} sim_nvmlProcessUtilizationSample_t;

struct nvmlDevice_st {
    int index;
};

static struct {
    pthread_mutex_t lock;
    int refcount;
    struct sim_state *st;
    struct nvmlDevice_st dev[SIM_MAX_DEVICES];
} N = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int initialized(void)
{
    pthread_mutex_lock(&N.lock);
    int ok = N.refcount > 0;
    pthread_mutex_unlock(&N.lock);
    return ok;
}

#define CHECK_INIT()                         \
    do {                                     \
        if (!initialized())                  \
            return NVML_ERROR_UNINITIALIZED; \
    } while (0)

static int dev_of(nvmlDevice_t h)
{
    if (h == NULL || h < &N.dev[0] || h >= &N.dev[N.st->hdr.device_count])
        return -1;
    return h->index;
}

#define DEV_OR_INVALID(h, d) \
    int d = dev_of(h);       \
    if (d < 0)               \
    return NVML_ERROR_INVALID_ARGUMENT

static nvmlReturn_t copy_str(char *out, unsigned int len, const char *s)
{
    if (out == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(s) + 1 > len)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, s, strlen(s) + 1);
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ init */

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    (void)flags;
    pthread_mutex_lock(&N.lock);
    nvmlReturn_t r = NVML_SUCCESS;
    if (N.st == NULL) {
        const char *why = NULL;
        N.st = sim_map(&why);
        if (N.st == NULL) {
            fprintf(stderr, "%s\n", why);
            r = NVML_ERROR_DRIVER_NOT_LOADED;
            goto out;
        }
        for (int i = 0; i < SIM_MAX_DEVICES; i++)
            N.dev[i].index = i;
    }
    N.refcount++;
out:
    pthread_mutex_unlock(&N.lock);
    return r;
}

EXPORT nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
EXPORT nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

EXPORT nvmlReturn_t nvmlShutdown(void)
{
    pthread_mutex_lock(&N.lock);
    nvmlReturn_t r = NVML_SUCCESS;
    if (N.refcount == 0)
        r = NVML_ERROR_UNINITIALIZED;
    else
        N.refcount--;
    pthread_mutex_unlock(&N.lock);
    return r;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t r)
{
    switch ((int)r) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 6: return "Not Found";
    case 7: return "Insufficient Size";
    case 9: return "Driver Not Loaded";
    case 13: return "Function Not Found";
    case 15: return "GPU is lost";
    case 25: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

/* ------------------------------------------------------------------ system */

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    CHECK_INIT();
    return copy_str(version, length, SIM_NVML_DRIVER_VERSION);
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    CHECK_INIT();
    return copy_str(version, length, SIM_NVML_VERSION);
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v)
{
    CHECK_INIT();
    if (v == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *v = SIM_CUDA_DRIVER_VERSION;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v)
{
    return nvmlSystemGetCudaDriverVersion(v);
}

EXPORT nvmlReturn_t nvmlSystemGetProcessName(unsigned int pid, char *name, unsigned int length)
{
    CHECK_INIT();
    if (name == NULL || length == 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%u/comm", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NVML_ERROR_NOT_FOUND;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return NVML_ERROR_NOT_FOUND;
    buf[n] = '\0';
    if (buf[n - 1] == '\n')
        buf[n - 1] = '\0';
    snprintf(name, length, "%s", buf);
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ devices */

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    CHECK_INIT();
    if (count == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *count = N.st->hdr.device_count;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    CHECK_INIT();
    if (device == NULL || index >= N.st->hdr.device_count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &N.dev[index];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    CHECK_INIT();
    if (uuid == NULL || device == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned i = 0; i < N.st->hdr.device_count; i++) {
        if (strcmp(N.st->hdr.dev[i].uuid, uuid) == 0) {
            *device = &N.dev[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *busId, nvmlDevice_t *device)
{
    CHECK_INIT();
    if (busId == NULL || device == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned dom = 0, bus = 0, dv = 0, fn = 0;
    if (sscanf(busId, "%x:%x:%x.%x", &dom, &bus, &dv, &fn) != 4) {
        dom = 0;
        if (sscanf(busId, "%x:%x.%x", &bus, &dv, &fn) != 3)
            return NVML_ERROR_INVALID_ARGUMENT;
    }
    for (unsigned i = 0; i < N.st->hdr.device_count; i++) {
        const struct sim_devcfg *c = &N.st->hdr.dev[i];
        if (c->pci_domain == dom && c->pci_bus == bus && c->pci_device == dv) {
            *device = &N.dev[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *busId, nvmlDevice_t *device)
{
    return nvmlDeviceGetHandleByPciBusId_v2(busId, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t h, unsigned int *index)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    if (index == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *index = (unsigned)d;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t h, char *name, unsigned int length)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    return copy_str(name, length, N.st->hdr.dev[d].name);
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t h, char *uuid, unsigned int length)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    return copy_str(uuid, length, N.st->hdr.dev[d].uuid);
}

EXPORT nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t h, char *serial, unsigned int length)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    char buf[32];
    snprintf(buf, sizeof buf, "SIM%010d", d);
    return copy_str(serial, length, buf);
}

EXPORT nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t h, unsigned int *minor)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    if (minor == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *minor = N.st->hdr.dev[d].minor;
    return NVML_SUCCESS;
}

static void fill_pci(int d, sim_nvmlPciInfo_t *p)
{
    const struct sim_devcfg *c = &N.st->hdr.dev[d];
    memset(p, 0, sizeof *p);
    snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "%04X:%02X:%02X.0", c->pci_domain & 0xffff,
             c->pci_bus, c->pci_device);
    snprintf(p->busId, sizeof p->busId, "%08X:%02X:%02X.0", c->pci_domain, c->pci_bus,
             c->pci_device);
    p->domain = c->pci_domain;
    p->bus = c->pci_bus;
    p->device = c->pci_device;
    p->pciDeviceId = c->pci_device_id;
    p->pciSubSystemId = c->pci_subsys_id;
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t h, sim_nvmlPciInfo_t *pci)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    if (pci == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    fill_pci(d, pci);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t h, sim_nvmlPciInfo_t *pci)
{
    return nvmlDeviceGetPciInfo_v3(h, pci);
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t h, sim_nvmlPciInfo_v1_t *pci)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    if (pci == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    sim_nvmlPciInfo_t full;
    fill_pci(d, &full);
    memset(pci, 0, sizeof *pci);
    memcpy(pci->busId, full.busIdLegacy, sizeof pci->busId);
    pci->domain = full.domain;
    pci->bus = full.bus;
    pci->device = full.device;
    pci->pciDeviceId = full.pciDeviceId;
    pci->pciSubSystemId = full.pciSubSystemId;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t h, int *major, int *minor)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    if (major == NULL || minor == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *major = (int)N.st->hdr.dev[d].cc_major;
    *minor = (int)N.st->hdr.dev[d].cc_minor;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNumaNodeId(nvmlDevice_t h, unsigned int *node)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    (void)d;
    if (node == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_ERROR_NOT_SUPPORTED;
}

EXPORT nvmlReturn_t nvmlDeviceGetMultiGpuBoard(nvmlDevice_t h, unsigned int *multi)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    (void)d;
    if (multi == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *multi = 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t h, unsigned int *current,
                                         unsigned int *pending)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    (void)d;
    if (current == NULL || pending == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_ERROR_NOT_SUPPORTED; /* the simulated device has no MIG */
}

EXPORT nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t h, unsigned int *arch)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    if (arch == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *arch = N.st->hdr.dev[d].cc_major >= 9 ? 9u /* NVML_DEVICE_ARCH_HOPPER */ : 7u /* AMPERE */;
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ memory & processes */

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t h, nvmlMemory_t *mem)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    if (mem == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    sim_reclaim_dead(N.st);
    uint64_t total = N.st->hdr.dev[d].total_mem;
    uint64_t used = atomic_load(&N.st->dev[d].used);
    if (used > total)
        used = total;
    mem->total = total;
    mem->used = used;
    mem->free = total - used;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t h, nvmlMemory_v2_t *mem)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    if (mem == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (mem->version != nvmlMemory_v2)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    nvmlMemory_t m;
    nvmlReturn_t r = nvmlDeviceGetMemoryInfo(h, &m);
    if (r != NVML_SUCCESS)
        return r;
    mem->total = m.total;
    mem->reserved = 0; /* no driver-reserved memory on the simulated device */
    mem->used = m.used;
    mem->free = m.free;
    return NVML_SUCCESS;
}

/* The pid NVML reports for a live slot: as the real driver, the pid in the
 * caller's pid namespace (a container's process seen from the host: its host pid).
 * -1 when the process is dead (it is left for the next reclaim). */
static int reported_pid(struct sim_proc *p, uint64_t w, uint64_t my_ns)
{
    int pid;
    if (sim_proc_view(N.st, p, w, my_ns, &pid) == SIM_VIEW_DEAD)
        return -1;
    return pid;
}

/* Live slots with a context or memory on device d, in slot order. */
static unsigned collect_procs(int d, unsigned max, unsigned *pids, unsigned long long *used)
{
    uint64_t my_ns = sim_pidns_of(0);
    unsigned n = 0;
    for (int i = 0; i < SIM_MAX_PROCS; i++) {
        struct sim_proc *p = &N.st->proc[i];
        uint64_t w = atomic_load(&p->state);
        if (SIM_SLOT_PHASE(w) != SIM_PHASE_LIVE)
            continue;
        uint64_t u = atomic_load(&p->dev[d].used);
        if (atomic_load(&p->dev[d].contexts) == 0 && u == 0)
            continue;
        int pid = reported_pid(p, w, my_ns);
        if (pid < 0)
            continue;
        if (n < max) {
            pids[n] = (unsigned)pid;
            used[n] = u;
        }
        n++;
    }
    return n;
}

/* The real call's contract: *infoCount in = capacity, out = count (or the size needed
 * with NVML_ERROR_INSUFFICIENT_SIZE); infos may be NULL only when *infoCount is 0. */
static nvmlReturn_t running_procs(nvmlDevice_t h, unsigned int *infoCount, void *infos, int version)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    if (infoCount == NULL || (infos == NULL && *infoCount != 0))
        return NVML_ERROR_INVALID_ARGUMENT;
    sim_reclaim_dead(N.st);
    unsigned pids[SIM_MAX_PROCS];
    unsigned long long used[SIM_MAX_PROCS];
    unsigned n = collect_procs(d, SIM_MAX_PROCS, pids, used);
    if (n > *infoCount) {
        *infoCount = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned i = 0; i < n; i++) {
        if (version == 1) {
            sim_nvmlProcessInfo_v1_t *pi = (sim_nvmlProcessInfo_v1_t *)infos + i;
            pi->pid = pids[i];
            pi->usedGpuMemory = used[i];
        } else {
            sim_nvmlProcessInfo_v2_t *pi = (sim_nvmlProcessInfo_v2_t *)infos + i;
            pi->pid = pids[i];
            pi->usedGpuMemory = used[i];
            pi->gpuInstanceId = 0xFFFFFFFFu; /* no MIG */
            pi->computeInstanceId = 0xFFFFFFFFu;
        }
    }
    *infoCount = n;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t h, unsigned int *c,
                                                         sim_nvmlProcessInfo_v1_t *i)
{
    return running_procs(h, c, i, 1);
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t h, unsigned int *c,
                                                            sim_nvmlProcessInfo_v2_t *i)
{
    return running_procs(h, c, i, 2);
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t h, unsigned int *c,
                                                            sim_nvmlProcessInfo_v2_t *i)
{
    return running_procs(h, c, i, 3);
}

/* No graphics or MPS clients exist on the simulated node. */
static nvmlReturn_t no_procs(nvmlDevice_t h, unsigned int *infoCount)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    (void)d;
    if (infoCount == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *infoCount = 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses(nvmlDevice_t h, unsigned int *c, void *i)
{
    (void)i;
    return no_procs(h, c);
}
EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t h, unsigned int *c,
                                                             void *i)
{
    (void)i;
    return no_procs(h, c);
}
EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t h, unsigned int *c,
                                                             void *i)
{
    (void)i;
    return no_procs(h, c);
}
EXPORT nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses(nvmlDevice_t h, unsigned int *c,
                                                            void *i)
{
    (void)i;
    return no_procs(h, c);
}
EXPORT nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v2(nvmlDevice_t h, unsigned int *c,
                                                               void *i)
{
    (void)i;
    return no_procs(h, c);
}
EXPORT nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v3(nvmlDevice_t h, unsigned int *c,
                                                               void *i)
{
    (void)i;
    return no_procs(h, c);
}

/* ------------------------------------------------------------------ utilization */

/* Utilization comes in samples, one per sample period of the node (hdr.bucket_ns,
 * default 1/6 s: see state.h): period e is [e*P, (e+1)*P) on CLOCK_MONOTONIC, the
 * launch queue's clock, and holds the busy ns that executed in it. NVML sees the last
 * SIM_HISTORY_SAMPLES complete periods; the current one is not a sample yet. */
static int held_samples(uint64_t now, uint64_t *first, uint64_t *last)
{
    uint64_t now_e = now / N.st->hdr.bucket_ns;
    if (now_e == 0)
        return 0;
    *last = now_e - 1;
    *first = now_e > SIM_HISTORY_SAMPLES ? now_e - SIM_HISTORY_SAMPLES : 0;
    return 1;
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* realtime = monotonic + rt_offset, taken once per process (see sample_stamp). */
static uint64_t rt_offset;
static pthread_once_t rt_once = PTHREAD_ONCE_INIT;

static void take_rt_offset(void)
{
    rt_offset = clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC);
}

/* A sample's timeStamp: the end of its period as CPU time in microseconds
 * (CLOCK_REALTIME, like the real driver). The monotonic-to-realtime offset is taken
 * once per process, so a stamp handed out is the same in every later call and
 * lastSeenTimeStamp = that stamp excludes exactly that sample and those before it. */
static uint64_t sample_stamp(uint64_t e)
{
    pthread_once(&rt_once, take_rt_offset);
    return ((e + 1) * N.st->hdr.bucket_ns + rt_offset) / 1000ull;
}

/* As the real nvmlUtilization_t: "percent of time over the past sample period during
 * which one or more kernels was executing" — the last complete period. */
EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t h, sim_nvmlUtilization_t *u)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    if (u == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    uint64_t first, last, busy = 0;
    if (held_samples(sim_now_ns(), &first, &last))
        busy = sim_ring_sample(N.st->dev[d].buckets, last);
    unsigned pct = (unsigned)((busy * 100 + N.st->hdr.bucket_ns / 2) / N.st->hdr.bucket_ns);
    u->gpu = pct > 100 ? 100 : pct;
    u->memory = 0; /* no memory traffic is simulated */
    return NVML_SUCCESS;
}

/* As the real call (nvml.h): "One utilization sample structure is returned per
 * process running, that had some non-zero utilization", from the samples newer than
 * lastSeenTimeStamp (0: every sample NVML holds). A process's entry covers those
 * samples up to its newest busy one: timeStamp is that sample's, smUtil the busy time
 * it executed in them over their span, to the nearest percent and at least 1 (so a
 * caller that queries every period reads each period's figure, and one that queries
 * less often reads their average, with the newest busy sample's time). No such
 * process: NVML_ERROR_NOT_FOUND. */
EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t h,
                                                    sim_nvmlProcessUtilizationSample_t *samples,
                                                    unsigned int *count,
                                                    unsigned long long lastSeenTimeStamp)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    if (count == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    sim_reclaim_dead(N.st);
    uint64_t period = N.st->hdr.bucket_ns;
    uint64_t first = 0, last = 0;
    int held = held_samples(sim_now_ns(), &first, &last);
    /* The oldest sample newer than lastSeenTimeStamp. */
    while (held && first <= last && sample_stamp(first) <= lastSeenTimeStamp)
        first++;
    uint64_t my_ns = sim_pidns_of(0);
    unsigned n = 0;
    for (int i = 0; held && first <= last && i < SIM_MAX_PROCS; i++) {
        struct sim_proc *p = &N.st->proc[i];
        uint64_t w = atomic_load(&p->state);
        if (SIM_SLOT_PHASE(w) != SIM_PHASE_LIVE)
            continue;
        uint64_t busy = 0, newest = 0;
        int any = 0;
        for (uint64_t e = first; e <= last; e++) {
            uint64_t b = sim_ring_sample(p->dev[d].buckets, e);
            if (b == 0)
                continue;
            busy += b;
            newest = e;
            any = 1;
        }
        if (!any)
            continue;
        int pid = reported_pid(p, w, my_ns);
        if (pid < 0)
            continue;
        if (samples != NULL && n < *count) {
            uint64_t span = (newest - first + 1) * period;
            unsigned pct = (unsigned)((busy * 100 + span / 2) / span);
            if (pct == 0)
                pct = 1; /* listed: it had some non-zero utilization */
            samples[n].pid = (unsigned)pid;
            samples[n].timeStamp = sample_stamp(newest);
            samples[n].smUtil = pct > 100 ? 100 : pct;
            samples[n].memUtil = 0;
            samples[n].encUtil = 0;
            samples[n].decUtil = 0;
        }
        n++;
    }
    if (n == 0) {
        *count = 0;
        return NVML_ERROR_NOT_FOUND;
    }
    if (samples == NULL || n > *count) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = n;
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ sensors, clocks, PCIe
 *
 * What monitors such as nvtop read besides memory and utilization. The simulated card
 * is a data-center part (an H100 SXM5 by default), so the answers are those of one:
 * a PCIe Gen5 x16 link, no fan (NVML_ERROR_NOT_SUPPORTED, as on the real card), no
 * video engines at work. Figures that move on a real card move with the simulated
 * load: temperature, power and the graphics/SM clocks follow the last complete sample
 * period's utilization (idle .. full), so a busy device looks busy everywhere. */

#define SIM_PCIE_GEN 5u
#define SIM_PCIE_WIDTH 16u
#define SIM_TEMP_IDLE_C 30u
#define SIM_TEMP_FULL_C 70u
#define SIM_TEMP_SLOWDOWN_C 87u
#define SIM_TEMP_SHUTDOWN_C 92u
#define SIM_TEMP_MEM_MAX_C 95u
#define SIM_POWER_IDLE_MW 70000u
#define SIM_POWER_LIMIT_MW 700000u
#define SIM_CLOCK_GR_IDLE_MHZ 345u
#define SIM_CLOCK_GR_MAX_MHZ 1980u
#define SIM_CLOCK_MEM_MHZ 2619u
#define SIM_CLOCK_VIDEO_IDLE_MHZ 765u
#define SIM_CLOCK_VIDEO_MAX_MHZ 1755u

/* nvml.h's nvmlTemperatureThresholds_t, nvmlClockType_t, nvmlPcieUtilCounter_t,
 * nvmlTemperatureSensors_t (passed as plain ints). */
enum {
    SIM_TEMP_THRESHOLD_SHUTDOWN = 0,
    SIM_TEMP_THRESHOLD_SLOWDOWN = 1,
    SIM_TEMP_THRESHOLD_MEM_MAX = 2,
    SIM_TEMP_THRESHOLD_GPU_MAX = 3,
};
enum { SIM_CLOCK_GRAPHICS = 0, SIM_CLOCK_SM = 1, SIM_CLOCK_MEM = 2, SIM_CLOCK_VIDEO = 3 };
enum { SIM_PCIE_UTIL_TX_BYTES = 0, SIM_PCIE_UTIL_RX_BYTES = 1 };
enum { SIM_TEMPERATURE_GPU = 0 };

/* The device's utilization in the last complete sample period, 0..100. */
static unsigned device_util(int d)
{
    sim_nvmlUtilization_t u;
    if (nvmlDeviceGetUtilizationRates(&N.dev[d], &u) != NVML_SUCCESS)
        return 0;
    return u.gpu;
}

static unsigned scale(unsigned idle, unsigned full, unsigned pct)
{
    return idle + (full - idle) * pct / 100u;
}

static nvmlReturn_t dev_uint(nvmlDevice_t h, unsigned int *out, unsigned int v)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    (void)d;
    if (out == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *out = v;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxPcieLinkGeneration(nvmlDevice_t h, unsigned int *gen)
{
    return dev_uint(h, gen, SIM_PCIE_GEN);
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxPcieLinkWidth(nvmlDevice_t h, unsigned int *width)
{
    return dev_uint(h, width, SIM_PCIE_WIDTH);
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrPcieLinkGeneration(nvmlDevice_t h, unsigned int *gen)
{
    return dev_uint(h, gen, SIM_PCIE_GEN);
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(nvmlDevice_t h, unsigned int *width)
{
    return dev_uint(h, width, SIM_PCIE_WIDTH);
}

/* KB/s over the last 20 ms: no host transfers are simulated. */
EXPORT nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t h, int counter, unsigned int *value)
{
    if (counter != SIM_PCIE_UTIL_TX_BYTES && counter != SIM_PCIE_UTIL_RX_BYTES)
        return NVML_ERROR_INVALID_ARGUMENT;
    return dev_uint(h, value, 0);
}

/* Data-center cards are passively cooled: the real call is not supported there. */
EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t h, unsigned int *speed)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    (void)d;
    if (speed == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_ERROR_NOT_SUPPORTED;
}

EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed_v2(nvmlDevice_t h, unsigned int fan, unsigned int *speed)
{
    (void)fan;
    return nvmlDeviceGetFanSpeed(h, speed);
}

EXPORT nvmlReturn_t nvmlDeviceGetNumFans(nvmlDevice_t h, unsigned int *fans)
{
    return dev_uint(h, fans, 0);
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t h, int sensor, unsigned int *temp)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    if (temp == NULL || sensor != SIM_TEMPERATURE_GPU)
        return NVML_ERROR_INVALID_ARGUMENT;
    *temp = scale(SIM_TEMP_IDLE_C, SIM_TEMP_FULL_C, device_util(d));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t h, int type, unsigned int *temp)
{
    switch (type) {
    case SIM_TEMP_THRESHOLD_SHUTDOWN: return dev_uint(h, temp, SIM_TEMP_SHUTDOWN_C);
    case SIM_TEMP_THRESHOLD_SLOWDOWN: return dev_uint(h, temp, SIM_TEMP_SLOWDOWN_C);
    case SIM_TEMP_THRESHOLD_MEM_MAX: return dev_uint(h, temp, SIM_TEMP_MEM_MAX_C);
    case SIM_TEMP_THRESHOLD_GPU_MAX: return dev_uint(h, temp, SIM_TEMP_SLOWDOWN_C);
    default: { /* acoustic thresholds: no fan to be quiet */
        CHECK_INIT();
        DEV_OR_INVALID(h, d);
        (void)d;
        if (temp == NULL)
            return NVML_ERROR_INVALID_ARGUMENT;
        return NVML_ERROR_NOT_SUPPORTED;
    }
    }
}

/* Milliwatts. */
EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t h, unsigned int *power)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    if (power == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *power = scale(SIM_POWER_IDLE_MW, SIM_POWER_LIMIT_MW, device_util(d));
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t h, unsigned int *limit)
{
    return dev_uint(h, limit, SIM_POWER_LIMIT_MW);
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t h, unsigned int *limit)
{
    return dev_uint(h, limit, SIM_POWER_LIMIT_MW);
}

static nvmlReturn_t clock_of(nvmlDevice_t h, int type, unsigned int *clock, int max)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    if (clock == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned pct = max ? 100u : device_util(d);
    switch (type) {
    case SIM_CLOCK_GRAPHICS:
    case SIM_CLOCK_SM:
        *clock = max || pct > 0 ? SIM_CLOCK_GR_MAX_MHZ : SIM_CLOCK_GR_IDLE_MHZ;
        return NVML_SUCCESS;
    case SIM_CLOCK_MEM: *clock = SIM_CLOCK_MEM_MHZ; return NVML_SUCCESS;
    case SIM_CLOCK_VIDEO:
        *clock = max || pct > 0 ? SIM_CLOCK_VIDEO_MAX_MHZ : SIM_CLOCK_VIDEO_IDLE_MHZ;
        return NVML_SUCCESS;
    default: return NVML_ERROR_INVALID_ARGUMENT;
    }
}

/* MHz: the graphics and SM clocks boost while the device works, as on the real card. */
EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t h, int type, unsigned int *clock)
{
    return clock_of(h, type, clock, 0);
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t h, int type, unsigned int *clock)
{
    return clock_of(h, type, clock, 1);
}

/* No video engines at work: 0 %, over one sample period (in µs). */
static nvmlReturn_t codec_util(nvmlDevice_t h, unsigned int *util, unsigned int *period_us)
{
    CHECK_INIT();
    DEV_OR_INVALID(h, d);
    (void)d;
    if (util == NULL || period_us == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *util = 0;
    *period_us = (unsigned)(N.st->hdr.bucket_ns / 1000u);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetEncoderUtilization(nvmlDevice_t h, unsigned int *util,
                                                    unsigned int *period_us)
{
    return codec_util(h, util, period_us);
}

EXPORT nvmlReturn_t nvmlDeviceGetDecoderUtilization(nvmlDevice_t h, unsigned int *util,
                                                    unsigned int *period_us)
{
    return codec_util(h, util, period_us);
}
