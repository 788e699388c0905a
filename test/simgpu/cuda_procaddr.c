//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * cuda_procaddr.c — cuGetProcAddress / _v2: base names resolved by version from one
 * table.
 */
#define _GNU_SOURCE
#include "cuda_internal.h"

/* One row per (base name, variant): the variant a caller asking for `name` at
 * cudaVersion >= since gets, the newest qualifying row winning; per_thread rows are
 * the _ptsz/_ptds variants chosen by CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM. */
struct proc_ent {
    const char *name;
    const char *variant;
    int since;
    bool per_thread;
    void *fn;
};

// clang-format off: initializers, not blocks
#define PE(n, v, s, f)              \
    {                               \
        n, v, s, false, (void *)(f) \
    }
#define PT(n, v, s, f)             \
    {                              \
        n, v, s, true, (void *)(f) \
    }
// clang-format on

static const struct proc_ent k_procs[] = {
    PE("cuGetErrorString", "cuGetErrorString", 6000, cuGetErrorString),
    PE("cuGetErrorName", "cuGetErrorName", 6000, cuGetErrorName),
    PE("cuInit", "cuInit", 2000, cuInit),
    PE("cuDriverGetVersion", "cuDriverGetVersion", 2020, cuDriverGetVersion),
    PE("cuDeviceGet", "cuDeviceGet", 2000, cuDeviceGet),
    PE("cuDeviceGetCount", "cuDeviceGetCount", 2000, cuDeviceGetCount),
    PE("cuDeviceGetName", "cuDeviceGetName", 2000, cuDeviceGetName),
    PE("cuDeviceGetUuid", "cuDeviceGetUuid", 9020, cuDeviceGetUuid),
    PE("cuDeviceGetUuid", "cuDeviceGetUuid_v2", 11040, cuDeviceGetUuid_v2),
    PE("cuDeviceTotalMem", "cuDeviceTotalMem_v2", 3020, cuDeviceTotalMem_v2),
    PE("cuDeviceGetAttribute", "cuDeviceGetAttribute", 2000, cuDeviceGetAttribute),
    PE("cuDeviceComputeCapability", "cuDeviceComputeCapability", 2000, cuDeviceComputeCapability),
    PE("cuDeviceGetPCIBusId", "cuDeviceGetPCIBusId", 4010, cuDeviceGetPCIBusId),
    PE("cuDeviceGetByPCIBusId", "cuDeviceGetByPCIBusId", 4010, cuDeviceGetByPCIBusId),
    PE("cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRetain", 7000, cuDevicePrimaryCtxRetain),
    PE("cuDevicePrimaryCtxRelease", "cuDevicePrimaryCtxRelease", 7000, cuDevicePrimaryCtxRelease),
    PE("cuDevicePrimaryCtxRelease", "cuDevicePrimaryCtxRelease_v2", 11000,
       cuDevicePrimaryCtxRelease_v2),
    PE("cuDevicePrimaryCtxReset", "cuDevicePrimaryCtxReset", 7000, cuDevicePrimaryCtxReset),
    PE("cuDevicePrimaryCtxReset", "cuDevicePrimaryCtxReset_v2", 11000, cuDevicePrimaryCtxReset_v2),
    PE("cuDevicePrimaryCtxSetFlags", "cuDevicePrimaryCtxSetFlags", 7000,
       cuDevicePrimaryCtxSetFlags),
    PE("cuDevicePrimaryCtxSetFlags", "cuDevicePrimaryCtxSetFlags_v2", 11000,
       cuDevicePrimaryCtxSetFlags_v2),
    PE("cuDevicePrimaryCtxGetState", "cuDevicePrimaryCtxGetState", 7000,
       cuDevicePrimaryCtxGetState),
    PE("cuCtxCreate", "cuCtxCreate", 2000, cuCtxCreate),
    PE("cuCtxCreate", "cuCtxCreate_v2", 3020, cuCtxCreate_v2),
    PE("cuCtxCreate", "cuCtxCreate_v3", 11040, cuCtxCreate_v3),
    PE("cuCtxDestroy", "cuCtxDestroy", 2000, cuCtxDestroy),
    PE("cuCtxDestroy", "cuCtxDestroy_v2", 4000, cuCtxDestroy_v2),
    PE("cuCtxAttach", "cuCtxAttach", 2000, cuCtxAttach),
    PE("cuCtxDetach", "cuCtxDetach", 2000, cuCtxDetach),
    PE("cuCtxPushCurrent", "cuCtxPushCurrent", 2000, cuCtxPushCurrent),
    PE("cuCtxPushCurrent", "cuCtxPushCurrent_v2", 4000, cuCtxPushCurrent_v2),
    PE("cuCtxPopCurrent", "cuCtxPopCurrent", 2000, cuCtxPopCurrent),
    PE("cuCtxPopCurrent", "cuCtxPopCurrent_v2", 4000, cuCtxPopCurrent_v2),
    PE("cuCtxGetCurrent", "cuCtxGetCurrent", 4000, cuCtxGetCurrent),
    PE("cuCtxSetCurrent", "cuCtxSetCurrent", 4000, cuCtxSetCurrent),
    PE("cuCtxGetDevice", "cuCtxGetDevice", 2000, cuCtxGetDevice),
    PE("cuCtxSynchronize", "cuCtxSynchronize", 2000, cuCtxSynchronize),
    PE("cuMemGetInfo", "cuMemGetInfo_v2", 3020, cuMemGetInfo_v2),
    PE("cuMemAlloc", "cuMemAlloc_v2", 3020, cuMemAlloc_v2),
    PE("cuMemAllocPitch", "cuMemAllocPitch_v2", 3020, cuMemAllocPitch_v2),
    PE("cuMemAllocManaged", "cuMemAllocManaged", 6000, cuMemAllocManaged),
    PE("cuMemFree", "cuMemFree_v2", 3020, cuMemFree_v2),
    PE("cuMemGetAddressRange", "cuMemGetAddressRange_v2", 3020, cuMemGetAddressRange_v2),
    PE("cuArrayCreate", "cuArrayCreate_v2", 3020, cuArrayCreate_v2),
    PE("cuArrayDestroy", "cuArrayDestroy", 2000, cuArrayDestroy),
    PE("cuArray3DCreate", "cuArray3DCreate_v2", 3020, cuArray3DCreate_v2),
    PE("cuMipmappedArrayCreate", "cuMipmappedArrayCreate", 5000, cuMipmappedArrayCreate),
    PE("cuMipmappedArrayDestroy", "cuMipmappedArrayDestroy", 5000, cuMipmappedArrayDestroy),
    PE("cuMemAddressReserve", "cuMemAddressReserve", 10020, cuMemAddressReserve),
    PE("cuMemAddressFree", "cuMemAddressFree", 10020, cuMemAddressFree),
    PE("cuMemCreate", "cuMemCreate", 10020, cuMemCreate),
    PE("cuMemRelease", "cuMemRelease", 10020, cuMemRelease),
    PE("cuMemMap", "cuMemMap", 10020, cuMemMap),
    PE("cuMemUnmap", "cuMemUnmap", 10020, cuMemUnmap),
    PE("cuMemSetAccess", "cuMemSetAccess", 10020, cuMemSetAccess),
    PE("cuMemGetAllocationGranularity", "cuMemGetAllocationGranularity", 10020,
       cuMemGetAllocationGranularity),
    PE("cuMemAllocAsync", "cuMemAllocAsync", 11020, cuMemAllocAsync),
    PT("cuMemAllocAsync", "cuMemAllocAsync_ptsz", 11020, cuMemAllocAsync_ptsz),
    PE("cuMemFreeAsync", "cuMemFreeAsync", 11020, cuMemFreeAsync),
    PT("cuMemFreeAsync", "cuMemFreeAsync_ptsz", 11020, cuMemFreeAsync_ptsz),
    PE("cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync", 11020, cuMemAllocFromPoolAsync),
    PT("cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync_ptsz", 11020,
       cuMemAllocFromPoolAsync_ptsz),
    PE("cuMemPoolCreate", "cuMemPoolCreate", 11020, cuMemPoolCreate),
    PE("cuMemPoolDestroy", "cuMemPoolDestroy", 11020, cuMemPoolDestroy),
    PE("cuMemPoolTrimTo", "cuMemPoolTrimTo", 11020, cuMemPoolTrimTo),
    PE("cuMemPoolSetAttribute", "cuMemPoolSetAttribute", 11020, cuMemPoolSetAttribute),
    PE("cuMemPoolGetAttribute", "cuMemPoolGetAttribute", 11020, cuMemPoolGetAttribute),
    PE("cuDeviceGetDefaultMemPool", "cuDeviceGetDefaultMemPool", 11020, cuDeviceGetDefaultMemPool),
    PE("cuDeviceGetMemPool", "cuDeviceGetMemPool", 11020, cuDeviceGetMemPool),
    PE("cuDeviceSetMemPool", "cuDeviceSetMemPool", 11020, cuDeviceSetMemPool),
    PE("cuStreamCreate", "cuStreamCreate", 2000, cuStreamCreate),
    PE("cuStreamCreateWithPriority", "cuStreamCreateWithPriority", 5050,
       cuStreamCreateWithPriority),
    PE("cuStreamDestroy", "cuStreamDestroy", 2000, cuStreamDestroy),
    PE("cuStreamDestroy", "cuStreamDestroy_v2", 4000, cuStreamDestroy_v2),
    PE("cuStreamSynchronize", "cuStreamSynchronize", 2000, cuStreamSynchronize),
    PT("cuStreamSynchronize", "cuStreamSynchronize_ptsz", 7000, cuStreamSynchronize_ptsz),
    PE("cuStreamQuery", "cuStreamQuery", 2000, cuStreamQuery),
    PT("cuStreamQuery", "cuStreamQuery_ptsz", 7000, cuStreamQuery_ptsz),
    PE("cuModuleLoadData", "cuModuleLoadData", 2000, cuModuleLoadData),
    PE("cuModuleUnload", "cuModuleUnload", 2000, cuModuleUnload),
    PE("cuModuleGetFunction", "cuModuleGetFunction", 2000, cuModuleGetFunction),
    PE("cuLaunchKernel", "cuLaunchKernel", 4000, cuLaunchKernel),
    PT("cuLaunchKernel", "cuLaunchKernel_ptsz", 7000, cuLaunchKernel_ptsz),
    PE("cuLaunchKernelEx", "cuLaunchKernelEx", 11060, cuLaunchKernelEx),
    PT("cuLaunchKernelEx", "cuLaunchKernelEx_ptsz", 11060, cuLaunchKernelEx_ptsz),
    PE("cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel", 9000, cuLaunchCooperativeKernel),
    PT("cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel_ptsz", 9000,
       cuLaunchCooperativeKernel_ptsz),
    PE("cuFuncSetBlockShape", "cuFuncSetBlockShape", 2000, cuFuncSetBlockShape),
    PE("cuLaunch", "cuLaunch", 2000, cuLaunch),
    PE("cuLaunchGrid", "cuLaunchGrid", 2000, cuLaunchGrid),
    PE("cuLaunchGridAsync", "cuLaunchGridAsync", 2000, cuLaunchGridAsync),
    PE("cuLaunchCooperativeKernelMultiDevice", "cuLaunchCooperativeKernelMultiDevice", 9000,
       cuLaunchCooperativeKernelMultiDevice),
    PE("cuEventCreate", "cuEventCreate", 2000, cuEventCreate),
    PE("cuEventDestroy", "cuEventDestroy", 2000, cuEventDestroy),
    PE("cuEventDestroy", "cuEventDestroy_v2", 4000, cuEventDestroy_v2),
    PE("cuEventRecord", "cuEventRecord", 2000, cuEventRecord),
    PT("cuEventRecord", "cuEventRecord_ptsz", 7000, cuEventRecord_ptsz),
    PE("cuEventRecordWithFlags", "cuEventRecordWithFlags", 11010, cuEventRecordWithFlags),
    PT("cuEventRecordWithFlags", "cuEventRecordWithFlags_ptsz", 11010, cuEventRecordWithFlags_ptsz),
    PE("cuEventQuery", "cuEventQuery", 2000, cuEventQuery),
    PE("cuEventSynchronize", "cuEventSynchronize", 2000, cuEventSynchronize),
    PE("cuEventElapsedTime", "cuEventElapsedTime", 2000, cuEventElapsedTime),
    PE("cuEventElapsedTime", "cuEventElapsedTime_v2", 12080, cuEventElapsedTime_v2),
    PE("cuStreamWaitEvent", "cuStreamWaitEvent", 3020, cuStreamWaitEvent),
    PT("cuStreamWaitEvent", "cuStreamWaitEvent_ptsz", 7000, cuStreamWaitEvent_ptsz),
    PE("cuGraphCreate", "cuGraphCreate", 10000, cuGraphCreate),
    PE("cuGraphAddKernelNode", "cuGraphAddKernelNode", 10000, cuGraphAddKernelNode),
    PE("cuGraphAddKernelNode", "cuGraphAddKernelNode_v2", 12000, cuGraphAddKernelNode_v2),
    PE("cuGraphAddMemAllocNode", "cuGraphAddMemAllocNode", 11040, cuGraphAddMemAllocNode),
    PE("cuGraphAddMemFreeNode", "cuGraphAddMemFreeNode", 11040, cuGraphAddMemFreeNode),
    PE("cuGraphMemAllocNodeGetParams", "cuGraphMemAllocNodeGetParams", 11040,
       cuGraphMemAllocNodeGetParams),
    PE("cuDeviceGraphMemTrim", "cuDeviceGraphMemTrim", 11040, cuDeviceGraphMemTrim),
    PE("cuGraphGetNodes", "cuGraphGetNodes", 10000, cuGraphGetNodes),
    PE("cuGraphNodeGetType", "cuGraphNodeGetType", 10000, cuGraphNodeGetType),
    PE("cuGraphKernelNodeGetParams", "cuGraphKernelNodeGetParams", 10000,
       cuGraphKernelNodeGetParams),
    PE("cuGraphKernelNodeGetParams", "cuGraphKernelNodeGetParams_v2", 12000,
       cuGraphKernelNodeGetParams_v2),
    PE("cuGraphInstantiate", "cuGraphInstantiate", 10000, cuGraphInstantiate),
    PE("cuGraphInstantiate", "cuGraphInstantiate_v2", 11000, cuGraphInstantiate_v2),
    PE("cuGraphInstantiate", "cuGraphInstantiateWithFlags", 12000, cuGraphInstantiateWithFlags),
    PE("cuGraphInstantiateWithFlags", "cuGraphInstantiateWithFlags", 11040,
       cuGraphInstantiateWithFlags),
    PE("cuGraphLaunch", "cuGraphLaunch", 10000, cuGraphLaunch),
    PT("cuGraphLaunch", "cuGraphLaunch_ptsz", 10000, cuGraphLaunch_ptsz),
    PE("cuGraphDestroy", "cuGraphDestroy", 10000, cuGraphDestroy),
    PE("cuGraphExecDestroy", "cuGraphExecDestroy", 10000, cuGraphExecDestroy),
    /* cuda_copy.c, cuda_misc.c and the module/function calls of cuda_launch.c (the
     * entry points PyCUDA links; their _ptds/_ptsz forms are not provided: a per-thread
     * caller gets the plain one) */
    PE("cuMemcpy", "cuMemcpy", 4000, cuMemcpy),
    PE("cuMemcpyHtoD", "cuMemcpyHtoD_v2", 3020, cuMemcpyHtoD_v2),
    PE("cuMemcpyDtoH", "cuMemcpyDtoH_v2", 3020, cuMemcpyDtoH_v2),
    PE("cuMemcpyDtoD", "cuMemcpyDtoD_v2", 3020, cuMemcpyDtoD_v2),
    PE("cuMemcpyHtoDAsync", "cuMemcpyHtoDAsync_v2", 3020, cuMemcpyHtoDAsync_v2),
    PE("cuMemcpyDtoHAsync", "cuMemcpyDtoHAsync_v2", 3020, cuMemcpyDtoHAsync_v2),
    PE("cuMemcpyDtoDAsync", "cuMemcpyDtoDAsync_v2", 3020, cuMemcpyDtoDAsync_v2),
    PE("cuMemcpyPeer", "cuMemcpyPeer", 4000, cuMemcpyPeer),
    PE("cuMemcpyPeerAsync", "cuMemcpyPeerAsync", 4000, cuMemcpyPeerAsync),
    PE("cuMemcpy2D", "cuMemcpy2D_v2", 3020, cuMemcpy2D_v2),
    PE("cuMemcpy2DUnaligned", "cuMemcpy2DUnaligned_v2", 3020, cuMemcpy2DUnaligned_v2),
    PE("cuMemcpy2DAsync", "cuMemcpy2DAsync_v2", 3020, cuMemcpy2DAsync_v2),
    PE("cuMemcpy3D", "cuMemcpy3D_v2", 3020, cuMemcpy3D_v2),
    PE("cuMemcpy3DAsync", "cuMemcpy3DAsync_v2", 3020, cuMemcpy3DAsync_v2),
    PE("cuMemcpy3DPeer", "cuMemcpy3DPeer", 4000, cuMemcpy3DPeer),
    PE("cuMemcpy3DPeerAsync", "cuMemcpy3DPeerAsync", 4000, cuMemcpy3DPeerAsync),
    PE("cuMemcpyHtoA", "cuMemcpyHtoA_v2", 3020, cuMemcpyHtoA_v2),
    PE("cuMemcpyAtoH", "cuMemcpyAtoH_v2", 3020, cuMemcpyAtoH_v2),
    PE("cuMemcpyDtoA", "cuMemcpyDtoA_v2", 3020, cuMemcpyDtoA_v2),
    PE("cuMemcpyAtoD", "cuMemcpyAtoD_v2", 3020, cuMemcpyAtoD_v2),
    PE("cuMemcpyAtoA", "cuMemcpyAtoA_v2", 3020, cuMemcpyAtoA_v2),
    PE("cuMemsetD8", "cuMemsetD8_v2", 3020, cuMemsetD8_v2),
    PE("cuMemsetD16", "cuMemsetD16_v2", 3020, cuMemsetD16_v2),
    PE("cuMemsetD32", "cuMemsetD32_v2", 3020, cuMemsetD32_v2),
    PE("cuMemsetD8Async", "cuMemsetD8Async", 3020, cuMemsetD8Async),
    PE("cuMemsetD16Async", "cuMemsetD16Async", 3020, cuMemsetD16Async),
    PE("cuMemsetD32Async", "cuMemsetD32Async", 3020, cuMemsetD32Async),
    PE("cuMemsetD2D8", "cuMemsetD2D8_v2", 3020, cuMemsetD2D8_v2),
    PE("cuMemsetD2D16", "cuMemsetD2D16_v2", 3020, cuMemsetD2D16_v2),
    PE("cuMemsetD2D32", "cuMemsetD2D32_v2", 3020, cuMemsetD2D32_v2),
    PE("cuMemsetD2D8Async", "cuMemsetD2D8Async", 3020, cuMemsetD2D8Async),
    PE("cuMemsetD2D16Async", "cuMemsetD2D16Async", 3020, cuMemsetD2D16Async),
    PE("cuMemsetD2D32Async", "cuMemsetD2D32Async", 3020, cuMemsetD2D32Async),
    PE("cuMemHostAlloc", "cuMemHostAlloc", 2020, cuMemHostAlloc),
    PE("cuMemAllocHost", "cuMemAllocHost_v2", 3020, cuMemAllocHost_v2),
    PE("cuMemFreeHost", "cuMemFreeHost", 2000, cuMemFreeHost),
    PE("cuMemHostRegister", "cuMemHostRegister_v2", 6050, cuMemHostRegister_v2),
    PE("cuMemHostUnregister", "cuMemHostUnregister", 4000, cuMemHostUnregister),
    PE("cuMemHostGetDevicePointer", "cuMemHostGetDevicePointer_v2", 3020,
       cuMemHostGetDevicePointer_v2),
    PE("cuMemHostGetFlags", "cuMemHostGetFlags", 2030, cuMemHostGetFlags),
    PE("cuStreamAttachMemAsync", "cuStreamAttachMemAsync", 6000, cuStreamAttachMemAsync),
    PE("cuArrayGetDescriptor", "cuArrayGetDescriptor_v2", 3020, cuArrayGetDescriptor_v2),
    PE("cuArray3DGetDescriptor", "cuArray3DGetDescriptor_v2", 3020, cuArray3DGetDescriptor_v2),
    PE("cuCtxGetApiVersion", "cuCtxGetApiVersion", 3020, cuCtxGetApiVersion),
    PE("cuCtxGetCacheConfig", "cuCtxGetCacheConfig", 3020, cuCtxGetCacheConfig),
    PE("cuCtxSetCacheConfig", "cuCtxSetCacheConfig", 3020, cuCtxSetCacheConfig),
    PE("cuCtxGetSharedMemConfig", "cuCtxGetSharedMemConfig", 4020, cuCtxGetSharedMemConfig),
    PE("cuCtxSetSharedMemConfig", "cuCtxSetSharedMemConfig", 4020, cuCtxSetSharedMemConfig),
    PE("cuCtxGetLimit", "cuCtxGetLimit", 3010, cuCtxGetLimit),
    PE("cuCtxSetLimit", "cuCtxSetLimit", 3010, cuCtxSetLimit),
    PE("cuDeviceCanAccessPeer", "cuDeviceCanAccessPeer", 4000, cuDeviceCanAccessPeer),
    PE("cuCtxEnablePeerAccess", "cuCtxEnablePeerAccess", 4000, cuCtxEnablePeerAccess),
    PE("cuCtxDisablePeerAccess", "cuCtxDisablePeerAccess", 4000, cuCtxDisablePeerAccess),
    PE("cuModuleLoad", "cuModuleLoad", 2000, cuModuleLoad),
    PE("cuModuleLoadDataEx", "cuModuleLoadDataEx", 2010, cuModuleLoadDataEx),
    PE("cuModuleGetGlobal", "cuModuleGetGlobal_v2", 3020, cuModuleGetGlobal_v2),
    PE("cuModuleGetTexRef", "cuModuleGetTexRef", 2000, cuModuleGetTexRef),
    PE("cuModuleGetSurfRef", "cuModuleGetSurfRef", 3000, cuModuleGetSurfRef),
    PE("cuFuncGetAttribute", "cuFuncGetAttribute", 2020, cuFuncGetAttribute),
    PE("cuFuncSetAttribute", "cuFuncSetAttribute", 9000, cuFuncSetAttribute),
    PE("cuFuncSetCacheConfig", "cuFuncSetCacheConfig", 3000, cuFuncSetCacheConfig),
    PE("cuFuncSetSharedSize", "cuFuncSetSharedSize", 2000, cuFuncSetSharedSize),
    PE("cuParamSetSize", "cuParamSetSize", 2000, cuParamSetSize),
    PE("cuParamSeti", "cuParamSeti", 2000, cuParamSeti),
    PE("cuParamSetf", "cuParamSetf", 2000, cuParamSetf),
    PE("cuParamSetv", "cuParamSetv", 2000, cuParamSetv),
    PE("cuParamSetTexRef", "cuParamSetTexRef", 2000, cuParamSetTexRef),
    PE("cuLinkCreate", "cuLinkCreate_v2", 6050, cuLinkCreate_v2),
    PE("cuLinkAddData", "cuLinkAddData_v2", 6050, cuLinkAddData_v2),
    PE("cuLinkAddFile", "cuLinkAddFile_v2", 6050, cuLinkAddFile_v2),
    PE("cuLinkComplete", "cuLinkComplete", 5050, cuLinkComplete),
    PE("cuLinkDestroy", "cuLinkDestroy", 5050, cuLinkDestroy),
    PE("cuIpcGetMemHandle", "cuIpcGetMemHandle", 4010, cuIpcGetMemHandle),
    PE("cuIpcOpenMemHandle", "cuIpcOpenMemHandle_v2", 11000, cuIpcOpenMemHandle_v2),
    PE("cuIpcCloseMemHandle", "cuIpcCloseMemHandle", 4010, cuIpcCloseMemHandle),
    PE("cuIpcGetEventHandle", "cuIpcGetEventHandle", 4010, cuIpcGetEventHandle),
    PE("cuIpcOpenEventHandle", "cuIpcOpenEventHandle", 4010, cuIpcOpenEventHandle),
    PE("cuProfilerInitialize", "cuProfilerInitialize", 4000, cuProfilerInitialize),
    PE("cuProfilerStart", "cuProfilerStart", 4000, cuProfilerStart),
    PE("cuProfilerStop", "cuProfilerStop", 4000, cuProfilerStop),
    PE("cuGLCtxCreate", "cuGLCtxCreate_v2", 3020, cuGLCtxCreate_v2),
    PE("cuGetProcAddress", "cuGetProcAddress", 11030, cuGetProcAddress),
    PE("cuGetProcAddress", "cuGetProcAddress_v2", 12000, cuGetProcAddress_v2),
};

static CUresult proc_lookup(const char *symbol, void **pfn, int ver, cuuint64_t flags,
                            CUdriverProcAddressQueryResult *status)
{
    if (symbol == NULL || pfn == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if ((flags & ~(cuuint64_t)(CU_GET_PROC_ADDRESS_LEGACY_STREAM |
                               CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    bool want_pt = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
    const struct proc_ent *best = NULL, *best_pt = NULL;
    bool exists = false;
    for (size_t i = 0; i < sizeof k_procs / sizeof k_procs[0]; i++) {
        const struct proc_ent *e = &k_procs[i];
        if (strcmp(e->name, symbol) != 0)
            continue;
        exists = true;
        if (e->since > ver)
            continue;
        if (e->per_thread) {
            if (best_pt == NULL || e->since > best_pt->since)
                best_pt = e;
        } else if (best == NULL || e->since > best->since) {
            best = e;
        }
    }
    /* Per-thread callers get the _ptsz variant where one exists, the plain one otherwise. */
    const struct proc_ent *hit = (want_pt && best_pt != NULL) ? best_pt : best;
    *pfn = hit ? hit->fn : NULL;
    if (status != NULL)
        *status = hit ? CU_GET_PROC_ADDRESS_SUCCESS
                      : (exists ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
                                : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
    return hit ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags)
{
    return proc_lookup(symbol, pfn, cudaVersion, flags, NULL);
}

EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion,
                                    cuuint64_t flags, CUdriverProcAddressQueryResult *symbolStatus)
{
    return proc_lookup(symbol, pfn, cudaVersion, flags, symbolStatus);
}
