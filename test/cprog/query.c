/*
 * query — what a program sees of the device's memory.
 *
 * Takes the primary context, allocates --alloc bytes (0: none), then prints one
 * line per query round and waits for a line on stdin before the next (EOF ends):
 *   QUERY cu_free= cu_total= totalmem= nvml_total= nvml_free= nvml_used=
 *         nvml2_total= nvml2_free= nvml2_used= nvml2_reserved=
 * With --nvml-dlsym the NVML entry points come from dlsym on a dlopen'ed
 * libnvidia-ml (as go-nvml gets them) instead of the linked symbols.
 */
#include "testutil.h"

typedef nvmlReturn_t (*mi_fn)(nvmlDevice_t, nvmlMemory_t *);
typedef nvmlReturn_t (*mi2_fn)(nvmlDevice_t, nvmlMemory_v2_t *);

int main(int argc, char **argv)
{
    uint64_t alloc = 0;
    int nvml_dlsym = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--alloc") && i + 1 < argc)
            alloc = parse_size(argv[++i]);
        else if (!strcmp(argv[i], "--nvml-dlsym"))
            nvml_dlsym = 1;
        else
            fail("unknown argument %s", argv[i]);
    }
    mi_fn mi = nvmlDeviceGetMemoryInfo;
    mi2_fn mi2 = nvmlDeviceGetMemoryInfo_v2;
    if (nvml_dlsym) {
        void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW);
        if (!h)
            fail("dlopen libnvidia-ml.so.1: %s", dlerror());
        mi = (mi_fn)dlsym(h, "nvmlDeviceGetMemoryInfo");
        mi2 = (mi2_fn)dlsym(h, "nvmlDeviceGetMemoryInfo_v2");
        if (!mi || !mi2)
            fail("dlsym nvmlDeviceGetMemoryInfo(_v2)");
    }
    CHECK(cuInit(0));
    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CHECK(cuCtxSetCurrent(ctx));
    CUdeviceptr p = 0;
    if (alloc)
        CHECK(cuMemAlloc_v2(&p, alloc));
    NVCHECK(nvmlInit_v2());
    nvmlDevice_t dev;
    NVCHECK(nvmlDeviceGetHandleByIndex_v2(0, &dev));
    char line[64];
    do {
        size_t fr = 0, tot = 0, tm = 0;
        CHECK(cuMemGetInfo_v2(&fr, &tot));
        CHECK(cuDeviceTotalMem_v2(&tm, 0));
        nvmlMemory_t m;
        NVCHECK(mi(dev, &m));
        nvmlMemory_v2_t m2;
        memset(&m2, 0, sizeof m2);
        m2.version = nvmlMemory_v2;
        NVCHECK(mi2(dev, &m2));
        say("QUERY cu_free=%zu cu_total=%zu totalmem=%zu nvml_total=%llu nvml_free=%llu "
            "nvml_used=%llu nvml2_total=%llu nvml2_free=%llu nvml2_used=%llu nvml2_reserved=%llu",
            fr, tot, tm, m.total, m.free, m.used, m2.total, m2.free, m2.used, m2.reserved);
    } while (fgets(line, sizeof line, stdin));
    if (p)
        CHECK(cuMemFree_v2(p));
    NVCHECK(nvmlShutdown());
    CHECK(cuDevicePrimaryCtxRelease_v2(0));
    return 0;
}
