/*
 * sim_event — the simulated driver's events (test/simgpu/cuda_event.c).
 *
 *   sim_event NS_PER_BLOCK SMS
 *
 * Checks the driver-API semantics the completion markers of libvgpu rely on: an
 * unfinished event reads CUDA_ERROR_NOT_READY, a finished one CUDA_SUCCESS; the
 * elapsed time of a begin / end pair around a launch is the launch's duration, and
 * includes the time it queued behind work already on the device; bad handles,
 * unrecorded events and CU_EVENT_DISABLE_TIMING are CUDA_ERROR_INVALID_HANDLE; an
 * event cannot be recorded on another context's stream; cuStreamWaitEvent makes a
 * stream's synchronize wait for the event; cuGetProcAddress resolves every entry
 * point. Prints "OK".
 */
#include <time.h>

#include "sim_util.h"

CUresult cuEventCreate(CUevent *, unsigned int);
CUresult cuEventDestroy_v2(CUevent);
CUresult cuEventRecord(CUevent, CUstream);
CUresult cuEventRecordWithFlags(CUevent, CUstream, unsigned int);
CUresult cuEventQuery(CUevent);
CUresult cuEventSynchronize(CUevent);
CUresult cuEventElapsedTime(float *, CUevent, CUevent);
CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned int);

static unsigned long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

static CUfunction fn;

static void launch(CUstream s, unsigned grid)
{
    CHECK(cuLaunchKernel(fn, grid, 1, 1, 128, 1, 1, 0, s, NULL, NULL));
}

/* One wave costs nspb: a begin / end pair around a launch of `waves` waves, queued
 * behind `ahead` waves on another stream, spans exactly `waves` waves on a stream
 * of its own and (ahead + waves) on the stream that waits for the queue. */
static void check_span(CUstream s, unsigned long long nspb, unsigned sms)
{
    CUevent a, b;
    CHECK(cuEventCreate(&a, 0));
    CHECK(cuEventCreate(&b, 0));
    CHECK(cuEventRecord(a, s));
    launch(s, 20 * sms);
    CHECK(cuEventRecord(b, s));
    float ms = -1;
    EXPECT_RES(cuEventElapsedTime(&ms, a, b), CUDA_ERROR_NOT_READY);
    EXPECT_RES(cuEventQuery(b), CUDA_ERROR_NOT_READY);
    CHECK(cuEventSynchronize(b));
    CHECK(cuEventQuery(b));
    CHECK(cuEventElapsedTime(&ms, a, b));
    double want = 20.0 * (double)nspb / 1e6;
    EXPECT(ms > want * 0.99 && ms < want * 1.01, "elapsed %.4f ms, want %.4f", ms, want);

    /* Queued behind 30 waves of another stream: the span includes the wait. */
    CUstream other;
    CHECK(cuStreamCreate(&other, 0));
    CHECK(cuEventRecord(a, s)); /* s is idle: completes now */
    launch(other, 30 * sms);
    launch(s, 10 * sms);
    CHECK(cuEventRecordWithFlags(b, s, 0));
    CHECK(cuEventSynchronize(b));
    CHECK(cuEventElapsedTime(&ms, a, b));
    want = 40.0 * (double)nspb / 1e6;
    EXPECT(ms > want * 0.95 && ms < want * 1.05, "elapsed behind a queue %.4f ms, want %.4f", ms,
           want);
    CHECK(cuStreamDestroy_v2(other));
    CHECK(cuEventDestroy_v2(a));
    CHECK(cuEventDestroy_v2(b));
}

static void check_errors(CUcontext ctx, CUstream s)
{
    CUevent a, b, nt;
    CHECK(cuEventCreate(&a, 0));
    CHECK(cuEventCreate(&b, 0));
    CHECK(cuEventCreate(&nt, 2 /* CU_EVENT_DISABLE_TIMING */));
    EXPECT_RES(cuEventCreate(NULL, 0), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RES(cuEventCreate(&a, 0x80), CUDA_ERROR_INVALID_VALUE);
    /* Never recorded: complete, but without a time. */
    CHECK(cuEventQuery(a));
    CHECK(cuEventSynchronize(a));
    float ms;
    EXPECT_RES(cuEventElapsedTime(&ms, a, b), CUDA_ERROR_INVALID_HANDLE);
    CHECK(cuEventRecord(a, s));
    CHECK(cuEventRecord(b, s));
    CHECK(cuEventRecord(nt, s));
    CHECK(cuEventSynchronize(b));
    EXPECT_RES(cuEventElapsedTime(NULL, a, b), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RES(cuEventElapsedTime(&ms, a, nt), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_RES(cuEventElapsedTime(&ms, nt, b), CUDA_ERROR_INVALID_HANDLE);
    CHECK(cuEventElapsedTime(&ms, a, b));
    EXPECT(ms >= 0 && ms < 1, "two records on an idle stream: %.4f ms", ms);
    EXPECT_RES(cuEventRecordWithFlags(a, s, 0x10), CUDA_ERROR_INVALID_VALUE);

    /* Another context's event on this context's stream. */
    CUdevice d;
    CHECK(cuDeviceGet(&d, 0));
    CUcontext c2;
    CHECK(cuCtxCreate_v2(&c2, 0, d));
    CUevent foreign;
    CHECK(cuEventCreate(&foreign, 0));
    CHECK(cuCtxSetCurrent(ctx));
    EXPECT_RES(cuEventRecord(foreign, s), CUDA_ERROR_INVALID_HANDLE);
    CHECK(cuCtxDestroy_v2(c2));
    CHECK(cuCtxSetCurrent(ctx));
    EXPECT_RES(cuEventQuery(foreign), CUDA_ERROR_INVALID_HANDLE); /* gone with c2 */

    CHECK(cuEventDestroy_v2(a));
    EXPECT_RES(cuEventQuery(a), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_RES(cuEventRecord(a, s), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_RES(cuEventSynchronize(a), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_RES(cuEventElapsedTime(&ms, a, b), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_RES(cuEventDestroy_v2(a), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_RES(cuEventDestroy_v2(NULL), CUDA_ERROR_INVALID_HANDLE);
    CHECK(cuEventDestroy_v2(b));
    CHECK(cuEventDestroy_v2(nt));
}

/* A stream made to wait for an event synchronizes no earlier than the event. */
static void check_wait(unsigned long long nspb, unsigned sms)
{
    CUstream s1, s2;
    CHECK(cuStreamCreate(&s1, 0));
    CHECK(cuStreamCreate(&s2, 0));
    CUevent e;
    CHECK(cuEventCreate(&e, 0));
    unsigned long long t0 = now_ns();
    launch(s1, 30 * sms);
    CHECK(cuEventRecord(e, s1));
    CHECK(cuStreamWaitEvent(s2, e, 0));
    EXPECT_RES(cuStreamQuery(s2), CUDA_ERROR_NOT_READY);
    CHECK(cuStreamSynchronize(s2));
    EXPECT(now_ns() - t0 >= 30 * nspb, "s2 synchronized before the event it waits for");
    CHECK(cuEventDestroy_v2(e));
    CHECK(cuStreamDestroy_v2(s1));
    CHECK(cuStreamDestroy_v2(s2));
}

static void check_procaddr(void)
{
    static const char *const names[] = {
        "cuEventCreate", "cuEventDestroy",     "cuEventRecord",      "cuEventRecordWithFlags",
        "cuEventQuery",  "cuEventSynchronize", "cuEventElapsedTime", "cuStreamWaitEvent"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *p = NULL;
        CHECK(cuGetProcAddress(names[i], &p, 12040, 0));
        EXPECT(p != NULL, "cuGetProcAddress(%s) gave NULL", names[i]);
    }
    void *p = NULL, *q = NULL;
    CHECK(cuGetProcAddress("cuEventQuery", &p, 12040, 0));
    EXPECT(p == (void *)cuEventQuery, "cuGetProcAddress(cuEventQuery) is not cuEventQuery");
    CHECK(cuGetProcAddress("cuEventDestroy", &q, 12040, 0));
    EXPECT(q == (void *)cuEventDestroy_v2, "cuEventDestroy at 12.4 is the _v2 entry point");
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: sim_event NS_PER_BLOCK SMS\n");
        return 2;
    }
    unsigned long long nspb = strtoull(argv[1], NULL, 10);
    unsigned sms = (unsigned)strtoul(argv[2], NULL, 10);
    CUevent e;
    EXPECT_RES(cuEventCreate(&e, 0), CUDA_ERROR_NOT_INITIALIZED);
    CHECK(cuInit(0));
    EXPECT_RES(cuEventCreate(&e, 0), CUDA_ERROR_INVALID_CONTEXT);
    CUdevice d;
    CHECK(cuDeviceGet(&d, 0));
    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, d));
    CHECK(cuCtxSetCurrent(ctx));
    CUmodule mod;
    CHECK(cuModuleLoadData(&mod, ".version 8.0\n"));
    CHECK(cuModuleGetFunction(&fn, mod, "busy"));
    CUstream s;
    CHECK(cuStreamCreate(&s, 0));

    check_span(s, nspb, sms);
    check_span(NULL, nspb, sms);
    check_errors(ctx, s);
    check_wait(nspb, sms);
    check_procaddr();
    printf("OK\n");
    return 0;
}
