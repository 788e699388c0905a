/*
 * testutil_linked.c — the workload's --path linked (testutil.h): the entry points
 * the program is linked against. Only programs linked to libcuda may call
 * resolve_linked; the dl_* programs never reference it, so this member of
 * libtestutil.a (and its driver symbols) stays out of them.
 */
#include "testutil.h"

void resolve_linked(struct cuapi *api, int ptsz)
{
    api->init = cuInit;
    api->retain = cuDevicePrimaryCtxRetain;
    api->release = cuDevicePrimaryCtxRelease_v2;
    api->ctx_create = cuCtxCreate_v2;
    api->ctx_destroy = cuCtxDestroy_v2;
    api->set_current = cuCtxSetCurrent;
    api->alloc = cuMemAlloc_v2;
    api->pitch = cuMemAllocPitch_v2;
    api->managed = cuMemAllocManaged;
    api->mfree = cuMemFree_v2;
    api->create = cuMemCreate;
    api->mrelease = cuMemRelease;
    api->reserve = cuMemAddressReserve;
    api->addr_free = cuMemAddressFree;
    api->map = cuMemMap;
    api->unmap = cuMemUnmap;
    api->set_access = cuMemSetAccess;
    api->array_create = cuArrayCreate_v2;
    api->array_destroy = cuArrayDestroy;
    api->alloc_async = ptsz ? cuMemAllocAsync_ptsz : cuMemAllocAsync;
    api->free_async = ptsz ? cuMemFreeAsync_ptsz : cuMemFreeAsync;
    api->alloc_pool = ptsz ? cuMemAllocFromPoolAsync_ptsz : cuMemAllocFromPoolAsync;
    api->pool_create = cuMemPoolCreate;
    api->pool_destroy = cuMemPoolDestroy;
    api->pool_trim = cuMemPoolTrimTo;
    api->pool_set = cuMemPoolSetAttribute;
    api->pool_get = cuMemPoolGetAttribute;
    api->stream_sync = ptsz ? cuStreamSynchronize_ptsz : cuStreamSynchronize;
    api->ctx_sync = cuCtxSynchronize;
    api->mem_info = cuMemGetInfo_v2;
    api->total_mem = cuDeviceTotalMem_v2;
    api->module_load = cuModuleLoadData;
    api->get_function = cuModuleGetFunction;
    api->launch = ptsz ? cuLaunchKernel_ptsz : cuLaunchKernel;
    api->launch_ex = ptsz ? cuLaunchKernelEx_ptsz : cuLaunchKernelEx;
    api->launch_coop = ptsz ? cuLaunchCooperativeKernel_ptsz : cuLaunchCooperativeKernel;
    api->graph_launch = ptsz ? cuGraphLaunch_ptsz : cuGraphLaunch;
    api->ctx_attach = cuCtxAttach;
    api->ctx_detach = cuCtxDetach;
    api->array3d_create = cuArray3DCreate_v2;
    api->mipmap_create = cuMipmappedArrayCreate;
    api->mipmap_destroy = cuMipmappedArrayDestroy;
    api->stream_create = cuStreamCreate;
    api->graph_create = cuGraphCreate;
    api->graph_add_alloc = cuGraphAddMemAllocNode;
    api->graph_add_free = cuGraphAddMemFreeNode;
    api->graph_instantiate = cuGraphInstantiateWithFlags;
    api->graph_exec_destroy = cuGraphExecDestroy;
    api->graph_destroy = cuGraphDestroy;
    api->set_block_shape = cuFuncSetBlockShape;
    api->launch_legacy = cuLaunch;
    api->launch_grid = cuLaunchGrid;
    api->launch_grid_async = cuLaunchGridAsync;
    api->launch_multi = cuLaunchCooperativeKernelMultiDevice;
}
