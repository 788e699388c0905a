/*
 * sim_procaddr — cuGetProcAddress / cuGetProcAddress_v2 resolve base names by
 * version and per-thread flag the way the real driver does.
 *
 * The symbols returned must be the very functions the library exports under the
 * variant names (compared with dlsym on the same handle), so a versioned lookup and
 * a linked call reach the same code.
 */
#include <dlfcn.h>

#include "sim_util.h"

static void *lib;

static void expect_variant(const char *name, int ver, cuuint64_t flags, const char *variant)
{
    void *fn = NULL;
    CUdriverProcAddressQueryResult st = (CUdriverProcAddressQueryResult)99;
    CUresult r = cuGetProcAddress_v2(name, &fn, ver, flags, &st);
    if (r != CUDA_SUCCESS || st != CU_GET_PROC_ADDRESS_SUCCESS) {
        fprintf(stderr, "FAIL: cuGetProcAddress_v2(%s, %d, %llu) = %d status %d\n", name, ver,
                flags, r, st);
        exit(1);
    }
    void *want = dlsym(lib, variant);
    EXPECT(want != NULL, "libcuda does not export %s", variant);
    EXPECT(fn == want, "%s@%d flags %llu resolved to %p, want %s (%p)", name, ver, flags, fn,
           variant, want);
    /* The 11.3 entry point agrees. */
    void *fn1 = NULL;
    CHECK(cuGetProcAddress(name, &fn1, ver, flags));
    EXPECT(fn1 == fn, "cuGetProcAddress and _v2 disagree for %s@%d", name, ver);
}

static void expect_missing(const char *name, int ver, CUdriverProcAddressQueryResult want_status)
{
    void *fn = (void *)0x1;
    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SUCCESS;
    EXPECT_RES(cuGetProcAddress_v2(name, &fn, ver, 0, &st), CUDA_ERROR_NOT_FOUND);
    EXPECT(st == want_status, "%s@%d status %d, want %d", name, ver, st, want_status);
    EXPECT(fn == NULL, "%s@%d left a pointer", name, ver);
    fn = (void *)0x1;
    EXPECT_RES(cuGetProcAddress(name, &fn, ver, 0), CUDA_ERROR_NOT_FOUND);
    EXPECT(fn == NULL, "%s@%d (v1) left a pointer", name, ver);
}

int main(void)
{
    lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    EXPECT(lib != NULL, "libcuda.so.1 not loaded: %s", dlerror());

    /* Works before cuInit: the runtime resolves cuInit itself this way. */
    expect_variant("cuInit", 12000, 0, "cuInit");
    CHECK(cuInit(0));

    const cuuint64_t PT = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
    expect_variant("cuMemAlloc", 3020, 0, "cuMemAlloc_v2");
    expect_variant("cuMemAlloc", 12040, 0, "cuMemAlloc_v2");
    expect_variant("cuMemFree", 12000, 0, "cuMemFree_v2");
    expect_variant("cuMemGetInfo", 12000, 0, "cuMemGetInfo_v2");
    expect_variant("cuCtxCreate", 3020, 0, "cuCtxCreate_v2");
    expect_variant("cuCtxCreate", 11040, 0, "cuCtxCreate_v3");
    expect_variant("cuCtxCreate", 2000, 0, "cuCtxCreate");
    expect_variant("cuDevicePrimaryCtxRelease", 10020, 0, "cuDevicePrimaryCtxRelease");
    expect_variant("cuDevicePrimaryCtxRelease", 11000, 0, "cuDevicePrimaryCtxRelease_v2");
    expect_variant("cuDeviceGetUuid", 11030, 0, "cuDeviceGetUuid");
    expect_variant("cuDeviceGetUuid", 11040, 0, "cuDeviceGetUuid_v2");
    expect_variant("cuGetProcAddress", 11030, 0, "cuGetProcAddress");
    expect_variant("cuGetProcAddress", 12000, 0, "cuGetProcAddress_v2");
    expect_variant("cuGraphInstantiate", 10000, 0, "cuGraphInstantiate");
    expect_variant("cuGraphInstantiate", 11000, 0, "cuGraphInstantiate_v2");
    expect_variant("cuGraphInstantiate", 12000, 0, "cuGraphInstantiateWithFlags");
    expect_variant("cuGraphAddKernelNode", 11080, 0, "cuGraphAddKernelNode");
    expect_variant("cuGraphAddKernelNode", 12000, 0, "cuGraphAddKernelNode_v2");
    expect_variant("cuStreamDestroy", 12000, 0, "cuStreamDestroy_v2");

    /* Per-thread default stream variants. */
    expect_variant("cuLaunchKernel", 12000, 0, "cuLaunchKernel");
    expect_variant("cuLaunchKernel", 12000, PT, "cuLaunchKernel_ptsz");
    expect_variant("cuLaunchKernel", 12000, CU_GET_PROC_ADDRESS_LEGACY_STREAM, "cuLaunchKernel");
    expect_variant("cuLaunchKernelEx", 12000, PT, "cuLaunchKernelEx_ptsz");
    expect_variant("cuLaunchCooperativeKernel", 12000, PT, "cuLaunchCooperativeKernel_ptsz");
    expect_variant("cuGraphLaunch", 12000, PT, "cuGraphLaunch_ptsz");
    expect_variant("cuMemAllocAsync", 12000, PT, "cuMemAllocAsync_ptsz");
    expect_variant("cuMemFreeAsync", 12000, PT, "cuMemFreeAsync_ptsz");
    expect_variant("cuMemAllocFromPoolAsync", 12000, PT, "cuMemAllocFromPoolAsync_ptsz");
    expect_variant("cuStreamSynchronize", 12000, PT, "cuStreamSynchronize_ptsz");
    expect_variant("cuMemAlloc", 12000, PT,
                   "cuMemAlloc_v2"); /* no per-thread form: the plain one */
    expect_variant("cuLaunchKernel", 6050, PT, "cuLaunchKernel"); /* _ptsz exists only since 7000 */
    expect_variant("cuArray3DCreate", 12000, 0, "cuArray3DCreate_v2");
    expect_variant("cuMipmappedArrayCreate", 12000, 0, "cuMipmappedArrayCreate");
    expect_variant("cuCtxDetach", 12000, 0, "cuCtxDetach");
    expect_variant("cuLaunchGridAsync", 12000, PT, "cuLaunchGridAsync"); /* no _ptsz form */
    expect_variant("cuLaunchCooperativeKernelMultiDevice", 12000, 0,
                   "cuLaunchCooperativeKernelMultiDevice");
    expect_variant("cuGraphAddMemAllocNode", 12000, 0, "cuGraphAddMemAllocNode");

    /* Exists, but only in a later version than the caller asks for. */
    expect_missing("cuMemAllocAsync", 11010, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
    expect_missing("cuLaunchKernelEx", 11000, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
    expect_missing("cuGetProcAddress", 11020, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
    expect_missing("cuGraphAddMemAllocNode", 11030, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
    expect_missing("cuArray3DCreate", 3010, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
    /* Unknown names, including variant names (callers pass base names). */
    expect_missing("cuNoSuchFunction", 12000, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
    expect_missing("cuMemAlloc_v2", 12000, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);

    void *fn;
    EXPECT_RES(cuGetProcAddress_v2(NULL, &fn, 12000, 0, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RES(cuGetProcAddress_v2("cuInit", NULL, 12000, 0, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RES(cuGetProcAddress_v2("cuInit", &fn, 12000, 1ull << 7, NULL),
               CUDA_ERROR_INVALID_VALUE);

    /* A resolved pointer is callable and behaves as the linked function. */
    CUresult (*alloc)(CUdeviceptr *, size_t) = NULL;
    CHECK(cuGetProcAddress_v2("cuMemAlloc", (void **)&alloc, 12000, 0, NULL));
    CUdeviceptr p;
    EXPECT_RES(alloc(&p, 1024), CUDA_ERROR_INVALID_CONTEXT);
    printf("OK\n");
    return 0;
}
