/*
 * driver_check — libvgpu's memory cap seen through the CUDA driver API, on a real GPU.
 *
 * Built by test/gpu/run.sh with gcc against the machine's real libcuda.so.1 and run
 * with LD_PRELOAD=build/libvgpu.so VGPU_SLICE_DIR=<slice>. It builds and runs on the
 * simulated node too (link against build/simgpu), which is how it is checked on
 * machines without a GPU.
 *
 *   driver_check --limit BYTES --context-overhead BYTES
 *                [--path linked|dlsym|procaddr|vmm|async] [--chunk BYTES]
 *                [--device D] [--driver-slack BYTES] [--expect-libvgpu]
 *
 * Checks, each reported by name in one JSON line on stdout:
 *   meminfo_total    cuMemGetInfo total == the slice limit, free <= limit
 *   devtotal         cuDeviceTotalMem == the slice limit
 *   nvml_total       nvmlDeviceGetMemoryInfo total == limit, used <= limit
 *   oom_code         allocating CHUNK-sized blocks (default 64 MiB) through PATH ends
 *                    with exactly CUDA_ERROR_OUT_OF_MEMORY
 *   admitted_le_cap  bytes admitted <= limit - context overhead (the context is charged)
 *   admitted_fills   bytes admitted > limit - context overhead - chunk (the cap is not
 *                    tighter than the slice)
 *   driver_agrees    the driver's own per-process figure (NVML compute processes)
 *                    is within --driver-slack of admitted + context overhead, and never
 *                    above limit + slack; skipped (reported) when NVML does not list this
 *                    process (e.g. in a pid namespace with several GPU processes)
 *   freed            after freeing everything, cuMemGetInfo free is back to at least
 *                    limit - context overhead - chunk
 * Exit status: 0 all checks passed, 1 a check failed, 2 usage or setup error,
 * 3 --expect-libvgpu and libvgpu.so is not loaded.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vgpu_cuda.h"

/* Driver-API and NVML prototypes (vgpu_cuda.h declares types only). */
CUresult cuInit(unsigned int flags);
CUresult cuDeviceGet(CUdevice *dev, int ordinal);
CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev);
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev);
CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev);
CUresult cuCtxSetCurrent(CUcontext ctx);
CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes);
CUresult cuMemFree_v2(CUdeviceptr dptr);
CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes);
CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *prop,
                     unsigned long long flags);
CUresult cuMemRelease(CUmemGenericAllocationHandle h);
CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytes, CUstream stream);
CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream stream);
CUresult cuStreamCreate(CUstream *stream, unsigned int flags);
CUresult cuStreamSynchronize(CUstream stream);
CUresult cuGetProcAddress(const char *symbol, void **pfn, int cuda_version, cuuint64_t flags);
CUresult cuGetErrorName(CUresult err, const char **name);
nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlShutdown(void);
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *dev);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t dev, nvmlMemory_t *mem);

#define MIB ((size_t)1 << 20)
#define MAX_BLOCKS 65536
#define GRANULARITY_MINIMUM 0

typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t);
typedef CUresult (*free_fn)(CUdeviceptr);
typedef CUresult (*granularity_fn)(size_t *, const CUmemAllocationProp *, int);

/* nvmlProcessInfo_v2_t: what nvmlDeviceGetComputeRunningProcesses_v2/_v3 fill. */
struct proc_info_v2 {
    unsigned int pid;
    unsigned long long used;
    unsigned int gpu_instance_id;
    unsigned int compute_instance_id;
};
/* nvmlProcessInfo_v1_t: what the unversioned nvmlDeviceGetComputeRunningProcesses fills. */
struct proc_info_v1 {
    unsigned int pid;
    unsigned long long used;
};

static const char *prog = "driver_check";

struct check {
    const char *name;
    int ran, ok;
    char detail[200];
};
static struct check checks[16];
static int nchecks;

static void record(const char *name, int ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void record(const char *name, int ok, const char *fmt, ...)
{
    if (nchecks >= (int)(sizeof checks / sizeof checks[0]))
        return;
    struct check *c = &checks[nchecks++];
    c->name = name;
    c->ran = 1;
    c->ok = ok;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    va_end(ap);
}

static void skip(const char *name, const char *why)
{
    if (nchecks >= (int)(sizeof checks / sizeof checks[0]))
        return;
    struct check *c = &checks[nchecks++];
    c->name = name;
    c->ran = 0;
    c->ok = 1;
    snprintf(c->detail, sizeof c->detail, "skipped: %s", why);
}

static const char *err_name(CUresult r)
{
    const char *n = NULL;
    if (cuGetErrorName(r, &n) != CUDA_SUCCESS || n == NULL)
        return "?";
    return n;
}

#define SETUP(call)                                                                          \
    do {                                                                                     \
        CUresult r_ = (call);                                                                \
        if (r_ != CUDA_SUCCESS) {                                                            \
            fprintf(stderr, "%s: %s failed: %d (%s)\n", prog, #call, (int)r_, err_name(r_)); \
            exit(2);                                                                         \
        }                                                                                    \
    } while (0)

static unsigned long long parse_u64(const char *flag, const char *v)
{
    char *end = NULL;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || v[0] == '-') {
        fprintf(stderr, "%s: bad value for %s: %s (want bytes)\n", prog, flag, v);
        exit(2);
    }
    return n;
}

static int libvgpu_loaded(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == NULL)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f) != NULL)
        found = strstr(line, "/libvgpu.so") != NULL;
    fclose(f);
    return found;
}

/* Renders a CUDA UUID the way NVML names devices: GPU-8-4-4-4-12 hex. */
static void uuid_string(const CUuuid *u, char *out, size_t len)
{
    const unsigned char *b = (const unsigned char *)u->bytes;
    snprintf(out, len, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* The driver's own per-process figure for this process, or -1 when NVML cannot say.
 * NVML reports host pids: inside a pid namespace our getpid() differs, so a lone
 * listed process is taken to be us. */
static long long driver_used(nvmlDevice_t dev)
{
    static const char *const names[] = {"nvmlDeviceGetComputeRunningProcesses_v2",
                                        "nvmlDeviceGetComputeRunningProcesses_v3",
                                        "nvmlDeviceGetComputeRunningProcesses"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *sym = dlsym(RTLD_DEFAULT, names[i]);
        if (sym == NULL)
            continue;
        unsigned int n = 64;
        unsigned int pids[64];
        unsigned long long used[64];
        nvmlReturn_t r;
        if (i < 2) {
            struct proc_info_v2 info[64];
            memset(info, 0, sizeof info);
            r = ((nvmlReturn_t(*)(nvmlDevice_t, unsigned int *, struct proc_info_v2 *))sym)(dev, &n,
                                                                                            info);
            for (unsigned int k = 0; r == NVML_SUCCESS && k < n && k < 64; k++) {
                pids[k] = info[k].pid;
                used[k] = info[k].used;
            }
        } else {
            struct proc_info_v1 info[64];
            memset(info, 0, sizeof info);
            r = ((nvmlReturn_t(*)(nvmlDevice_t, unsigned int *, struct proc_info_v1 *))sym)(dev, &n,
                                                                                            info);
            for (unsigned int k = 0; r == NVML_SUCCESS && k < n && k < 64; k++) {
                pids[k] = info[k].pid;
                used[k] = info[k].used;
            }
        }
        if (r != NVML_SUCCESS)
            continue;
        if (n > 64)
            n = 64;
        for (unsigned int k = 0; k < n; k++)
            if (pids[k] == (unsigned int)getpid())
                return (long long)used[k];
        if (n == 1)
            return (long long)used[0];
        return -1;
    }
    return -1;
}

int main(int argc, char **argv)
{
    const char *path = "linked";
    unsigned long long limit = 0, overhead = 0, chunk = 64 * MIB, slack = 0;
    int have_limit = 0, have_overhead = 0, device = 0, want_libvgpu = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--expect-libvgpu") == 0) {
            want_libvgpu = 1;
            continue;
        }
        if (i + 1 >= argc)
            goto usage;
        const char *v = argv[++i];
        if (strcmp(a, "--limit") == 0)
            limit = parse_u64(a, v), have_limit = 1;
        else if (strcmp(a, "--context-overhead") == 0)
            overhead = parse_u64(a, v), have_overhead = 1;
        else if (strcmp(a, "--chunk") == 0)
            chunk = parse_u64(a, v);
        else if (strcmp(a, "--driver-slack") == 0)
            slack = parse_u64(a, v);
        else if (strcmp(a, "--device") == 0)
            device = (int)parse_u64(a, v);
        else if (strcmp(a, "--path") == 0)
            path = v;
        else
            goto usage;
    }
    if (!have_limit || !have_overhead || chunk == 0 || overhead >= limit)
        goto usage;
    if (want_libvgpu && !libvgpu_loaded()) {
        fprintf(stderr, "%s: libvgpu.so is not loaded (LD_PRELOAD failed?)\n", prog);
        return 3;
    }

    CUdevice dev;
    CUcontext ctx;
    CUuuid uuid;
    char uuid_str[64];
    SETUP(cuInit(0));
    SETUP(cuDeviceGet(&dev, device));
    SETUP(cuDevicePrimaryCtxRetain(&ctx, dev));
    SETUP(cuCtxSetCurrent(ctx));
    SETUP(cuDeviceGetUuid(&uuid, dev));
    uuid_string(&uuid, uuid_str, sizeof uuid_str);

    /* ---- the queries show the slice */
    size_t fr = 0, total = 0, devtotal = 0;
    SETUP(cuMemGetInfo_v2(&fr, &total));
    record("meminfo_total", total == limit && fr <= limit, "total %zu free %zu limit %llu", total,
           fr, limit);
    SETUP(cuDeviceTotalMem_v2(&devtotal, dev));
    record("devtotal", devtotal == limit, "cuDeviceTotalMem %zu limit %llu", devtotal, limit);

    nvmlDevice_t ndev = NULL;
    nvmlReturn_t nr = nvmlInit_v2();
    if (nr == NVML_SUCCESS)
        nr = nvmlDeviceGetHandleByUUID(uuid_str, &ndev);
    if (nr == NVML_SUCCESS) {
        nvmlMemory_t mem;
        memset(&mem, 0, sizeof mem);
        nr = nvmlDeviceGetMemoryInfo(ndev, &mem);
        if (nr == NVML_SUCCESS)
            record("nvml_total", mem.total == limit && mem.used <= limit && mem.free <= limit,
                   "total %llu used %llu free %llu", mem.total, mem.used, mem.free);
        else
            record("nvml_total", 0, "nvmlDeviceGetMemoryInfo: %d", (int)nr);
    } else {
        record("nvml_total", 0, "NVML init / handle of %s: %d", uuid_str, (int)nr);
        ndev = NULL;
    }

    /* ---- allocate chunks through the chosen path until the driver says no */
    alloc_fn do_alloc = cuMemAlloc_v2;
    free_fn do_free = cuMemFree_v2;
    CUstream stream = NULL;
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = dev;
    if (strcmp(path, "dlsym") == 0) {
        void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        if (h == NULL) {
            fprintf(stderr, "%s: dlopen libcuda.so.1: %s\n", prog, dlerror());
            return 2;
        }
        do_alloc = (alloc_fn)dlsym(h, "cuMemAlloc_v2");
        do_free = (free_fn)dlsym(h, "cuMemFree_v2");
    } else if (strcmp(path, "procaddr") == 0) {
        void *a = NULL, *f = NULL;
        /* The way libcudart asks: base name plus the CUDA version it was built for. */
        SETUP(cuGetProcAddress("cuMemAlloc", &a, 12000, 0));
        SETUP(cuGetProcAddress("cuMemFree", &f, 12000, 0));
        do_alloc = (alloc_fn)a;
        do_free = (free_fn)f;
    } else if (strcmp(path, "vmm") == 0) {
        /* Looked up at run time: a driver without it (the simulated one) gets the
         * 2 MiB granularity every current GPU has. */
        size_t gran = 2 * MIB;
        granularity_fn get_gran =
            (granularity_fn)dlsym(RTLD_DEFAULT, "cuMemGetAllocationGranularity");
        if (get_gran != NULL)
            SETUP(get_gran(&gran, &prop, GRANULARITY_MINIMUM));
        if (gran == 0 || chunk % gran != 0) {
            fprintf(stderr, "%s: chunk %llu is not a multiple of the granularity %zu\n", prog,
                    chunk, gran);
            return 2;
        }
    } else if (strcmp(path, "async") == 0) {
        SETUP(cuStreamCreate(&stream, 0x1));
    } else if (strcmp(path, "linked") != 0) {
        goto usage;
    }
    if (do_alloc == NULL || do_free == NULL) {
        fprintf(stderr, "%s: %s path resolved no allocation entry points\n", prog, path);
        return 2;
    }

    static unsigned long long blocks[MAX_BLOCKS];
    int n = 0;
    CUresult stop = CUDA_SUCCESS;
    while (n < MAX_BLOCKS) {
        CUresult r;
        if (strcmp(path, "vmm") == 0) {
            CUmemGenericAllocationHandle hnd = 0;
            r = cuMemCreate(&hnd, chunk, &prop, 0);
            blocks[n] = hnd;
        } else if (strcmp(path, "async") == 0) {
            CUdeviceptr p = 0;
            r = cuMemAllocAsync(&p, chunk, stream);
            if (r == CUDA_SUCCESS)
                r = cuStreamSynchronize(stream);
            blocks[n] = p;
        } else {
            CUdeviceptr p = 0;
            r = do_alloc(&p, chunk);
            blocks[n] = p;
        }
        if (r != CUDA_SUCCESS) {
            stop = r;
            break;
        }
        n++;
    }
    unsigned long long admitted = (unsigned long long)n * chunk;
    unsigned long long cap = limit - overhead;
    record("oom_code", stop == CUDA_ERROR_OUT_OF_MEMORY, "stopped with %d (%s) after %d blocks",
           (int)stop, err_name(stop), n);
    record("admitted_le_cap", admitted <= cap, "admitted %llu, limit %llu - context %llu = %llu",
           admitted, limit, overhead, cap);
    record("admitted_fills", admitted + chunk > cap, "admitted %llu + chunk %llu vs %llu", admitted,
           chunk, cap);

    size_t fr_oom = 0;
    SETUP(cuMemGetInfo_v2(&fr_oom, &total));
    long long drv = ndev != NULL ? driver_used(ndev) : -1;
    if (drv < 0) {
        skip("driver_agrees", "NVML does not list this process");
    } else {
        long long want = (long long)(admitted + overhead);
        long long diff = drv > want ? drv - want : want - drv;
        record("driver_agrees",
               diff <= (long long)slack && (unsigned long long)drv <= limit + slack,
               "driver per-process %lld, admitted+context %lld, slack %llu", drv, want, slack);
    }

    /* ---- give everything back */
    for (int i = 0; i < n; i++) {
        CUresult r;
        if (strcmp(path, "vmm") == 0)
            r = cuMemRelease(blocks[i]);
        else if (strcmp(path, "async") == 0)
            r = cuMemFreeAsync(blocks[i], stream);
        else
            r = do_free(blocks[i]);
        if (r != CUDA_SUCCESS) {
            fprintf(stderr, "%s: freeing block %d: %d (%s)\n", prog, i, (int)r, err_name(r));
            return 2;
        }
    }
    if (stream != NULL)
        SETUP(cuStreamSynchronize(stream));
    size_t fr_after = 0;
    SETUP(cuMemGetInfo_v2(&fr_after, &total));
    record("freed", fr_after + chunk > cap && fr_after <= limit,
           "free after release %zu, want > %llu", fr_after, cap - chunk);
    if (ndev != NULL)
        nvmlShutdown();

    int ok = 1;
    printf("{\"program\":\"driver_check\",\"path\":\"%s\",\"device\":%d,\"uuid\":\"%s\","
           "\"limit\":%llu,\"context_overhead\":%llu,\"chunk\":%llu,\"blocks\":%d,"
           "\"admitted\":%llu,\"free_at_oom\":%zu,\"driver_used\":%lld,\"libvgpu\":%s,\"checks\":[",
           path, device, uuid_str, limit, overhead, chunk, n, admitted, fr_oom, drv,
           libvgpu_loaded() ? "true" : "false");
    for (int i = 0; i < nchecks; i++) {
        ok = ok && checks[i].ok;
        printf("%s{\"name\":\"%s\",\"ran\":%s,\"ok\":%s,\"detail\":\"%s\"}", i ? "," : "",
               checks[i].name, checks[i].ran ? "true" : "false", checks[i].ok ? "true" : "false",
               checks[i].detail);
        if (!checks[i].ok)
            fprintf(stderr, "%s: %s FAILED: %s\n", prog, checks[i].name, checks[i].detail);
    }
    printf("],\"ok\":%s}\n", ok ? "true" : "false");
    return ok ? 0 : 1;

usage:
    fprintf(stderr,
            "usage: %s --limit BYTES --context-overhead BYTES [--path "
            "linked|dlsym|procaddr|vmm|async]\n"
            "       [--chunk BYTES] [--device D] [--driver-slack BYTES] [--expect-libvgpu]\n",
            prog);
    return 2;
}
