/*
 * sim_nvml — NVML's figures are the driver's figures.
 *
 * In one process: allocate through the driver API and check that NVML's device
 * memory, process list (v1, v2, v3 layouts; INSUFFICIENT_SIZE protocol) and process
 * utilization agree with cuMemGetInfo_v2 and with what this process did (the
 * sampling itself: sim_nvsample.c). Assumes a
 * fresh node (nothing else on device 0). Prints "OK".
 */
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "sim_util.h"

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
} procinfo_v1;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} procinfo_v2;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} pciinfo;
typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} utilsample;
typedef struct {
    unsigned int gpu, memory;
} utilization;

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t, unsigned int *, procinfo_v1 *);
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t, unsigned int *, procinfo_v2 *);
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t, unsigned int *, procinfo_v2 *);
nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t, pciinfo *);
nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t, utilsample *, unsigned int *,
                                             unsigned long long);
nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t, utilization *);
nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t, char *, unsigned int);
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t, unsigned int *);
nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *);

#define NVEXPECT(call, want)                                                                 \
    do {                                                                                     \
        nvmlReturn_t r_ = (call);                                                            \
        if (r_ != (want)) {                                                                  \
            fprintf(stderr, "FAIL %s:%d: %s = %d, want %d\n", __FILE__, __LINE__, #call, r_, \
                    want);                                                                   \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

int main(void)
{
    unsigned cnt = 0;
    NVEXPECT(nvmlDeviceGetCount_v2(&cnt), NVML_ERROR_UNINITIALIZED);
    NVCHECK(nvmlInit_v2());
    NVCHECK(nvmlDeviceGetCount_v2(&cnt));
    CHECK(cuInit(0));
    int ccnt = 0;
    CHECK(cuDeviceGetCount(&ccnt));
    EXPECT((int)cnt == ccnt, "nvml sees %u devices, cuda %d", cnt, ccnt);
    int cver = 0;
    NVCHECK(nvmlSystemGetCudaDriverVersion(&cver));
    EXPECT(cver == 12040, "cuda driver version %d", cver);

    nvmlDevice_t nd;
    NVCHECK(nvmlDeviceGetHandleByIndex_v2(0, &nd));
    NVEXPECT(nvmlDeviceGetHandleByIndex_v2(cnt, &nd), NVML_ERROR_INVALID_ARGUMENT);
    NVCHECK(nvmlDeviceGetHandleByIndex_v2(0, &nd));

    /* Identity agrees with the driver API. */
    char uuid[96], name[96], cname[96];
    NVCHECK(nvmlDeviceGetUUID(nd, uuid, sizeof uuid));
    NVEXPECT(nvmlDeviceGetUUID(nd, uuid, 10), NVML_ERROR_INSUFFICIENT_SIZE);
    NVCHECK(nvmlDeviceGetName(nd, name, sizeof name));
    CHECK(cuDeviceGetName(cname, sizeof cname, 0));
    EXPECT(strcmp(name, cname) == 0, "names %s / %s", name, cname);
    CUuuid cu;
    CHECK(cuDeviceGetUuid_v2(&cu, 0));
    char hex[64];
    const unsigned char *b = (const unsigned char *)cu.bytes;
    snprintf(hex, sizeof hex,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    EXPECT(strcmp(hex, uuid) == 0, "cuda uuid %s, nvml %s", hex, uuid);
    nvmlDevice_t byuuid;
    NVCHECK(nvmlDeviceGetHandleByUUID(uuid, &byuuid));
    EXPECT(byuuid == nd, "handle by uuid differs");
    NVEXPECT(nvmlDeviceGetHandleByUUID("GPU-nope", &byuuid), NVML_ERROR_NOT_FOUND);
    pciinfo pci;
    NVCHECK(nvmlDeviceGetPciInfo_v3(nd, &pci));
    char cbus[32];
    CHECK(cuDeviceGetPCIBusId(cbus, sizeof cbus, 0));
    EXPECT(strcmp(pci.busIdLegacy, cbus) == 0 && strcmp(pci.busId + 4, cbus) == 0,
           "pci %s / %s / cuda %s", pci.busIdLegacy, pci.busId, cbus);
    EXPECT((pci.pciDeviceId & 0xffff) == 0x10de, "vendor %x", pci.pciDeviceId);
    unsigned minor = 99;
    NVCHECK(nvmlDeviceGetMinorNumber(nd, &minor));
    EXPECT(minor == 0, "minor %u", minor);

    /* No process yet. */
    unsigned n = 0;
    NVCHECK(nvmlDeviceGetComputeRunningProcesses_v3(nd, &n, NULL));
    EXPECT(n == 0, "%u processes before any context", n);

    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CHECK(cuCtxSetCurrent(ctx));
    CUdeviceptr p;
    CHECK(cuMemAlloc_v2(&p, 100 * MiB));
    size_t cfree, ctotal;
    CHECK(cuMemGetInfo_v2(&cfree, &ctotal));

    nvmlMemory_t m1;
    NVCHECK(nvmlDeviceGetMemoryInfo(nd, &m1));
    EXPECT(m1.total == ctotal && m1.free == cfree && m1.used == ctotal - cfree,
           "nvml v1 %llu/%llu/%llu cuda %zu/%zu", m1.total, m1.free, m1.used, cfree, ctotal);
    nvmlMemory_v2_t m2;
    memset(&m2, 0, sizeof m2);
    NVEXPECT(nvmlDeviceGetMemoryInfo_v2(nd, &m2), NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    m2.version = nvmlMemory_v2;
    NVCHECK(nvmlDeviceGetMemoryInfo_v2(nd, &m2));
    EXPECT(m2.total == ctotal && m2.free == cfree && m2.used == ctotal - cfree,
           "nvml v2 %llu/%llu/%llu", m2.total, m2.free, m2.used);

    /* The process list: our pid with every byte we hold (context + allocation). */
    n = 0;
    NVEXPECT(nvmlDeviceGetComputeRunningProcesses_v3(nd, &n, NULL), NVML_ERROR_INSUFFICIENT_SIZE);
    EXPECT(n == 1, "needed %u entries", n);
    procinfo_v2 v3[4];
    n = 4;
    NVCHECK(nvmlDeviceGetComputeRunningProcesses_v3(nd, &n, v3));
    EXPECT(n == 1 && v3[0].pid == (unsigned)getpid() && v3[0].usedGpuMemory == ctotal - cfree &&
               v3[0].gpuInstanceId == 0xFFFFFFFFu,
           "v3: n %u pid %u used %llu (want pid %d used %zu)", n, v3[0].pid, v3[0].usedGpuMemory,
           getpid(), ctotal - cfree);
    procinfo_v2 v2[1];
    n = 1;
    NVCHECK(nvmlDeviceGetComputeRunningProcesses_v2(nd, &n, v2));
    EXPECT(n == 1 && v2[0].pid == v3[0].pid && v2[0].usedGpuMemory == v3[0].usedGpuMemory,
           "v2 differs");
    procinfo_v1 v1[2];
    n = 2;
    NVCHECK(nvmlDeviceGetComputeRunningProcesses(nd, &n, v1));
    EXPECT(n == 1 && v1[0].pid == v3[0].pid && v1[0].usedGpuMemory == v3[0].usedGpuMemory,
           "v1 differs");

    /* Utilization: keep the device busy ~300 ms, then read the last second. */
    CUmodule mod;
    CUfunction fn;
    CHECK(cuModuleLoadData(&mod, "x"));
    CHECK(cuModuleGetFunction(&fn, mod, "k"));
    int sms = 1;
    CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 0));
    struct timeval tv;
    gettimeofday(&tv, NULL);
    unsigned long long start_us =
        (unsigned long long)tv.tv_sec * 1000000ull + (unsigned long long)tv.tv_usec;
    for (int i = 0; i < 30; i++)
        CHECK(cuLaunchKernel(fn, (unsigned)sms * 1000, 1, 1, 32, 1, 1, 0, NULL, NULL,
                             NULL)); /* 1000 waves */
    CHECK(cuCtxSynchronize());
    /* Device utilization is the last complete sample period's (1/6 s on this node):
     * right after 300 ms of work it overlaps the work. */
    utilization ur;
    NVCHECK(nvmlDeviceGetUtilizationRates(nd, &ur));
    EXPECT(ur.gpu > 0 && ur.gpu <= 100, "device utilization %u", ur.gpu);
    usleep(250000); /* let the periods holding that work complete */
    unsigned ns = 0;
    NVEXPECT(nvmlDeviceGetProcessUtilization(nd, NULL, &ns, 0), NVML_ERROR_INSUFFICIENT_SIZE);
    EXPECT(ns == 1, "%u samples", ns);
    utilsample smp[4];
    ns = 4;
    NVCHECK(nvmlDeviceGetProcessUtilization(nd, smp, &ns, start_us - 2000000));
    EXPECT(ns == 1 && smp[0].pid == (unsigned)getpid() && smp[0].smUtil > 0 &&
               smp[0].smUtil <= 100 && smp[0].timeStamp > start_us - 1000000,
           "sample n %u pid %u sm %u ts %llu (start %llu)", ns, smp[0].pid, smp[0].smUtil,
           smp[0].timeStamp, start_us);
    ns = 4;
    NVEXPECT(nvmlDeviceGetProcessUtilization(nd, smp, &ns, smp[0].timeStamp + 5000000),
             NVML_ERROR_NOT_FOUND);

    /* Freeing shows in NVML at once. */
    CHECK(cuMemFree_v2(p));
    NVCHECK(nvmlDeviceGetMemoryInfo(nd, &m1));
    EXPECT(m1.used == ctotal - cfree - 100 * MiB, "after free nvml used %llu", m1.used);
    NVCHECK(nvmlShutdown());
    NVEXPECT(nvmlShutdown(), NVML_ERROR_UNINITIALIZED);
    printf("OK\n");
    return 0;
}
