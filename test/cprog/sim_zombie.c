/*
 * sim_zombie — a killed process's memory is returned even before it is reaped.
 *
 * The real driver frees a process's memory when the process exits (its device files
 * close), not when its parent waits for it. A child allocates, is SIGKILLed and left
 * unreaped (a zombie); NVML in the parent must already report the memory free and
 * the process gone. Prints "OK".
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sim_util.h"

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t, unsigned int *, void *);

int main(void)
{
    int fds[2];
    EXPECT(pipe(fds) == 0, "pipe");
    pid_t child = fork();
    if (child == 0) {
        CHECK(cuInit(0));
        CUcontext c;
        CHECK(cuDevicePrimaryCtxRetain(&c, 0));
        CHECK(cuCtxSetCurrent(c));
        CUdeviceptr p;
        CHECK(cuMemAlloc_v2(&p, 100 * MiB));
        EXPECT(write(fds[1], "x", 1) == 1, "write");
        pause();
        _exit(0);
    }
    char b;
    EXPECT(read(fds[0], &b, 1) == 1, "child never got ready");
    NVCHECK(nvmlInit_v2());
    nvmlDevice_t d;
    NVCHECK(nvmlDeviceGetHandleByIndex_v2(0, &d));
    nvmlMemory_t m;
    NVCHECK(nvmlDeviceGetMemoryInfo(d, &m));
    EXPECT(m.used >= 100 * MiB, "child's memory not charged: %llu", m.used);

    kill(child, SIGKILL);
    /* Wait until it is a zombie, without reaping it. */
    siginfo_t si;
    EXPECT(waitid(P_PID, (id_t)child, &si, WEXITED | WNOWAIT) == 0, "waitid");
    NVCHECK(nvmlDeviceGetMemoryInfo(d, &m));
    EXPECT(m.used == 0, "zombie still holds %llu bytes", m.used);
    unsigned n = 0;
    NVCHECK(nvmlDeviceGetComputeRunningProcesses_v3(d, &n, NULL));
    EXPECT(n == 0, "zombie still listed");
    EXPECT(waitpid(child, NULL, 0) == child, "reap");
    printf("OK\n");
    return 0;
}
