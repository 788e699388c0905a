/*
 * sim_nvwatch — a long-lived NVML observer, like vgpud.
 *
 * Initializes NVML once, then answers one line per stdin line ("q"): for device 0,
 *   USED <bytes> PROCS <pid>:<bytes> ...
 * from nvmlDeviceGetMemoryInfo and nvmlDeviceGetComputeRunningProcesses_v3. Staying
 * one process matters: the simulated NVML caches pid translations per process, as
 * vgpud would hold the real driver open. Used by the pid namespace tests.
 */
#include "sim_util.h"

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} procinfo_v2;

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t, unsigned int *, procinfo_v2 *);

int main(void)
{
    NVCHECK(nvmlInit_v2());
    nvmlDevice_t nd;
    NVCHECK(nvmlDeviceGetHandleByIndex_v2(0, &nd));
    printf("READY\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin) != NULL) {
        nvmlMemory_t m;
        NVCHECK(nvmlDeviceGetMemoryInfo(nd, &m));
        procinfo_v2 pi[256];
        unsigned n = 256;
        NVCHECK(nvmlDeviceGetComputeRunningProcesses_v3(nd, &n, pi));
        printf("USED %llu PROCS", (unsigned long long)m.used);
        for (unsigned i = 0; i < n; i++)
            printf(" %u:%llu", pi[i].pid, pi[i].usedGpuMemory);
        printf("\n");
        fflush(stdout);
    }
    NVCHECK(nvmlShutdown());
    return 0;
}
