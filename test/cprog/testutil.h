/*
 * testutil.h — shared helpers of the C test programs (test/cprog/NAME.c).
 *
 * The programs are driven by the Go integration tests (test/integration): each one
 * prints what it did as "KEY k=v ..." lines on stdout, and, when asked to step
 * (--step), stops at named phases ("PHASE name") and waits for a line on stdin so
 * the test can inspect the usage region and the simulated driver while the process
 * holds memory. Failures print "FAIL ..." on stderr and exit 1.
 *
 * The same binaries run against the simulated driver (LD_LIBRARY_PATH=build/simgpu)
 * and a real one: nothing here depends on the simulation.
 *
 * The helpers are compiled once into build/testutil/libtestutil.a, which every test
 * program links:
 *   testutil.c         the generic helpers, real_symbol() and the allocation
 *                      workload shared by alloc.c, dl_alloc.c (and vmm_escape.c's
 *                      resolve_api / report_hooks); it references no driver symbol,
 *                      so the dl_* programs (dlopen only, not linked to libcuda)
 *                      link it too
 *   testutil_linked.c  resolve_linked(): the workload's --path linked, the driver's
 *                      own symbols; only programs linked to libcuda may use it (the
 *                      archive member is pulled in only where it is referenced)
 */
#ifndef VGPU_TESTUTIL_H
#define VGPU_TESTUTIL_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vgpu_cuda.h"

#define MiB (1024ull * 1024ull)
#define GiB (1024ull * MiB)

/* --------------------------------------------------------------- prototypes */

/* Driver entry points under their exported (versioned) names: the real cuda.h
 * #defines cuMemAlloc -> cuMemAlloc_v2 etc.; we name the versions directly. Only
 * programs linked to libcuda (not dl_*) may call these. */
CUresult cuInit(unsigned int);
CUresult cuDeviceGet(CUdevice *, int);
CUresult cuDeviceGetCount(int *);
CUresult cuDeviceTotalMem_v2(size_t *, CUdevice);
CUresult cuDevicePrimaryCtxRetain(CUcontext *, CUdevice);
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice);
CUresult cuCtxCreate_v2(CUcontext *, unsigned int, CUdevice);
CUresult cuCtxDestroy_v2(CUcontext);
CUresult cuCtxSetCurrent(CUcontext);
CUresult cuCtxGetCurrent(CUcontext *);
CUresult cuCtxSynchronize(void);
CUresult cuMemAlloc_v2(CUdeviceptr *, size_t);
CUresult cuMemAllocPitch_v2(CUdeviceptr *, size_t *, size_t, size_t, unsigned int);
CUresult cuMemAllocManaged(CUdeviceptr *, size_t, unsigned int);
CUresult cuMemFree_v2(CUdeviceptr);
CUresult cuMemGetInfo_v2(size_t *, size_t *);
CUresult cuMemAddressReserve(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
CUresult cuMemAddressFree(CUdeviceptr, size_t);
CUresult cuMemCreate(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                     unsigned long long);
CUresult cuMemRelease(CUmemGenericAllocationHandle);
CUresult cuMemMap(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
CUresult cuMemUnmap(CUdeviceptr, size_t);
CUresult cuMemSetAccess(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
CUresult cuArrayCreate_v2(CUarray *, const CUDA_ARRAY_DESCRIPTOR *);
CUresult cuArrayDestroy(CUarray);
CUresult cuArray3DCreate_v2(CUarray *, const CUDA_ARRAY3D_DESCRIPTOR *);
CUresult cuMipmappedArrayCreate(CUmipmappedArray *, const CUDA_ARRAY3D_DESCRIPTOR *, unsigned int);
CUresult cuMipmappedArrayDestroy(CUmipmappedArray);
CUresult cuCtxAttach(CUcontext *, unsigned int);
CUresult cuCtxDetach(CUcontext);
CUresult cuStreamCreate(CUstream *, unsigned int);
CUresult cuGraphCreate(CUgraph *, unsigned int);
CUresult cuGraphAddMemAllocNode(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                                CUDA_MEM_ALLOC_NODE_PARAMS *);
CUresult cuGraphAddMemFreeNode(CUgraphNode *, CUgraph, const CUgraphNode *, size_t, CUdeviceptr);
CUresult cuGraphInstantiateWithFlags(CUgraphExec *, CUgraph, unsigned long long);
CUresult cuGraphExecDestroy(CUgraphExec);
CUresult cuGraphDestroy(CUgraph);
CUresult cuFuncSetBlockShape(CUfunction, int, int, int);
CUresult cuLaunch(CUfunction);
CUresult cuLaunchGrid(CUfunction, int, int);
CUresult cuLaunchGridAsync(CUfunction, int, int, CUstream);
CUresult cuLaunchCooperativeKernelMultiDevice(CUDA_LAUNCH_PARAMS *, unsigned int, unsigned int);
CUresult cuMemAllocAsync(CUdeviceptr *, size_t, CUstream);
CUresult cuMemAllocAsync_ptsz(CUdeviceptr *, size_t, CUstream);
CUresult cuMemFreeAsync(CUdeviceptr, CUstream);
CUresult cuMemFreeAsync_ptsz(CUdeviceptr, CUstream);
CUresult cuMemAllocFromPoolAsync(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
CUresult cuMemPoolCreate(CUmemoryPool *, const CUmemPoolProps *);
CUresult cuMemPoolDestroy(CUmemoryPool);
CUresult cuMemPoolTrimTo(CUmemoryPool, size_t);
CUresult cuMemPoolSetAttribute(CUmemoryPool, CUmemPool_attribute, void *);
CUresult cuMemPoolGetAttribute(CUmemoryPool, CUmemPool_attribute, void *);
CUresult cuStreamSynchronize(CUstream);
CUresult cuStreamSynchronize_ptsz(CUstream);
CUresult cuModuleLoadData(CUmodule *, const void *);
CUresult cuModuleGetFunction(CUfunction *, CUmodule, const char *);
CUresult cuLaunchKernel(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                        unsigned int, unsigned int, unsigned int, CUstream, void **, void **);
CUresult cuLaunchKernel_ptsz(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                             unsigned int, unsigned int, unsigned int, CUstream, void **, void **);
CUresult cuLaunchKernelEx(const CUlaunchConfig *, CUfunction, void **, void **);
CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *, CUfunction, void **, void **);
CUresult cuLaunchCooperativeKernel(CUfunction, unsigned int, unsigned int, unsigned int,
                                   unsigned int, unsigned int, unsigned int, unsigned int, CUstream,
                                   void **);
CUresult cuLaunchCooperativeKernel_ptsz(CUfunction, unsigned int, unsigned int, unsigned int,
                                        unsigned int, unsigned int, unsigned int, unsigned int,
                                        CUstream, void **);
CUresult cuGraphLaunch(CUgraphExec, CUstream);
CUresult cuGraphLaunch_ptsz(CUgraphExec, CUstream);
CUresult cuGetProcAddress(const char *, void **, int, cuuint64_t);
CUresult cuGetProcAddress_v2(const char *, void **, int, cuuint64_t,
                             CUdriverProcAddressQueryResult *);

nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlShutdown(void);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t, nvmlMemory_v2_t *);

/* ------------------------------------------------------------------ helpers */

/* Names of the codes the tests look at; kept here (not cuGetErrorName) so a
 * dl_* program can print them without resolving anything. */
const char *cu_name(CUresult r);

/* "FAIL <message>" on stderr, exit 1. */
__attribute__((format(printf, 1, 2), noreturn)) void fail(const char *fmt, ...);

#define CHECK(call)                                                                       \
    do {                                                                                  \
        CUresult r_ = (call);                                                             \
        if (r_ != CUDA_SUCCESS)                                                           \
            fail("%s:%d: %s = %d (%s)", __FILE__, __LINE__, #call, (int)r_, cu_name(r_)); \
    } while (0)

#define NVCHECK(call)                                                   \
    do {                                                                \
        nvmlReturn_t r_ = (call);                                       \
        if (r_ != NVML_SUCCESS)                                         \
            fail("%s:%d: %s = %d", __FILE__, __LINE__, #call, (int)r_); \
    } while (0)

/* Prints one protocol line and flushes it (stdout is a pipe in the tests). */
__attribute__((format(printf, 1, 2))) void say(const char *fmt, ...);

/* "PHASE name", then waits for one line on stdin when stepping. Returns 0 at EOF. */
int phase(int step, const char *name);

/* "64MiB", "2GiB", "512K", "4096" -> bytes (binary units); fails on anything else. */
uint64_t parse_size(const char *s);

/* Address of `name` in the loaded library whose path contains `lib`, read from the
 * library's own .dynsym on disk: no dlsym, so no interposer sees the lookup (to test
 * what libvgpu does with memory it never saw). */
void *real_symbol(const char *lib, const char *name);

/* ------------------------------------------------------------ the workload */

/*
 * Entry points the workload calls, resolved through one interception path:
 *   linked     the symbols the program is linked against (resolve_linked, only in
 *              programs linked to libcuda)
 *   dlsym      dlsym on a dlopen("libcuda.so.1") handle, exact versioned names
 *   gpa:VER    cuGetProcAddress (itself from dlsym) with base names at CUDA VER
 *   gpa2:VER   cuGetProcAddress_v2 (from dlsym) with base names at CUDA VER
 *   gpaself    cuGetProcAddress("cuGetProcAddress", 12000) -> _v2, then as gpa2:12000
 * --ptsz selects the per-thread default stream variants (_ptsz names, or the
 * CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM flag).
 */
struct cuapi {
    CUresult (*init)(unsigned int);
    CUresult (*retain)(CUcontext *, CUdevice);
    CUresult (*release)(CUdevice);
    CUresult (*ctx_create)(CUcontext *, unsigned int, CUdevice);               /* _v2 form */
    CUresult (*ctx_create3)(CUcontext *, void *, int, unsigned int, CUdevice); /* _v3 form */
    CUresult (*ctx_destroy)(CUcontext);
    CUresult (*set_current)(CUcontext);
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*pitch)(CUdeviceptr *, size_t *, size_t, size_t, unsigned int);
    CUresult (*managed)(CUdeviceptr *, size_t, unsigned int);
    CUresult (*mfree)(CUdeviceptr);
    CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                       unsigned long long);
    CUresult (*mrelease)(CUmemGenericAllocationHandle);
    CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
    CUresult (*addr_free)(CUdeviceptr, size_t);
    CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
    CUresult (*unmap)(CUdeviceptr, size_t);
    CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
    CUresult (*array_create)(CUarray *, const CUDA_ARRAY_DESCRIPTOR *);
    CUresult (*array_destroy)(CUarray);
    CUresult (*alloc_async)(CUdeviceptr *, size_t, CUstream);
    CUresult (*free_async)(CUdeviceptr, CUstream);
    CUresult (*alloc_pool)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
    CUresult (*pool_create)(CUmemoryPool *, const CUmemPoolProps *);
    CUresult (*pool_destroy)(CUmemoryPool);
    CUresult (*pool_trim)(CUmemoryPool, size_t);
    CUresult (*pool_set)(CUmemoryPool, CUmemPool_attribute, void *);
    CUresult (*pool_get)(CUmemoryPool, CUmemPool_attribute, void *);
    CUresult (*stream_sync)(CUstream);
    CUresult (*ctx_sync)(void);
    CUresult (*mem_info)(size_t *, size_t *);
    CUresult (*total_mem)(size_t *, CUdevice);
    CUresult (*module_load)(CUmodule *, const void *);
    CUresult (*get_function)(CUfunction *, CUmodule, const char *);
    CUresult (*launch)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                       unsigned int, unsigned int, unsigned int, CUstream, void **, void **);
    CUresult (*launch_ex)(const CUlaunchConfig *, CUfunction, void **, void **);
    CUresult (*launch_coop)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                            unsigned int, unsigned int, unsigned int, CUstream, void **);
    CUresult (*graph_launch)(CUgraphExec, CUstream);
    CUresult (*ctx_attach)(CUcontext *, unsigned int);
    CUresult (*ctx_detach)(CUcontext);
    CUresult (*array3d_create)(CUarray *, const CUDA_ARRAY3D_DESCRIPTOR *);
    CUresult (*mipmap_create)(CUmipmappedArray *, const CUDA_ARRAY3D_DESCRIPTOR *, unsigned int);
    CUresult (*mipmap_destroy)(CUmipmappedArray);
    CUresult (*stream_create)(CUstream *, unsigned int);
    /* Graph memory nodes (CUDA 11.4: absent on the gpa paths below that version). */
    CUresult (*graph_create)(CUgraph *, unsigned int);
    CUresult (*graph_add_alloc)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                                CUDA_MEM_ALLOC_NODE_PARAMS *);
    CUresult (*graph_add_free)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t, CUdeviceptr);
    CUresult (*graph_instantiate)(CUgraphExec *, CUgraph, unsigned long long);
    CUresult (*graph_exec_destroy)(CUgraphExec);
    CUresult (*graph_destroy)(CUgraph);
    /* The pre-4.0 launches and the multi-device cooperative launch (no _ptsz forms). */
    CUresult (*set_block_shape)(CUfunction, int, int, int);
    CUresult (*launch_legacy)(CUfunction);
    CUresult (*launch_grid)(CUfunction, int, int);
    CUresult (*launch_grid_async)(CUfunction, int, int, CUstream);
    CUresult (*launch_multi)(CUDA_LAUNCH_PARAMS *, unsigned int, unsigned int);
};
/* Fills api from the program's linked driver symbols (testutil_linked.c). */
typedef void (*linked_resolver)(struct cuapi *api, int ptsz);
void resolve_linked(struct cuapi *api, int ptsz);

/* Resolves every entry point through `path` (above); "linked" needs `linked`
 * (resolve_linked, or NULL in a program not linked to libcuda: an unknown path). */
void resolve_api(struct cuapi *api, const char *path, int ptsz, linked_resolver linked);

/* Which object each resolved entry point lives in:
 *   "HOOKS vgpu=field:symbol,... driver=field,..."
 * (symbol: the libvgpu export it resolved to, e.g. alloc_async:cuMemAllocAsync_ptsz).
 * The test checks that every entry point libvgpu hooks came back as the right
 * hook on this path, and the others as the driver's own. */
void report_hooks(const struct cuapi *api);

/*
 * The workload: initialize, take a context, allocate --count chunks (or until the
 * first error with --until-oom), report, free everything (synchronizing so pools
 * give memory back), drop the context, exit. Phases (with --step the program
 * waits for a line on stdin at each):
 *   ready      context held, nothing allocated
 *   allocated  the chunks are held ("RESULT ..." printed just before)
 *   pool_destroyed  --destroy-pool-first: the pool destroyed, its blocks still out
 *   freed      everything freed and synchronized (context still held)
 *   trimmed    pooltrim only: after cuMemPoolTrimTo(pool, 0)
 *   released   context released (with --drop-ctx: right after "allocated", the
 *              blocks never freed — destroying the context frees them)
 *   detached_once  --ctx attach only: the context was created and attached once
 *              (usage count 2); the first cuCtxDetach left it alive, the second
 *              (then "released") destroys it
 * Exit status: 0 when the run went as asked (with --until-oom: it stopped on
 * CUDA_ERROR_OUT_OF_MEMORY), 3 when --until-oom stopped on another error, 4 when
 * cuInit failed (the error is printed as "INIT err=N name=...").
 */
int workload_main(int argc, char **argv, linked_resolver linked);

#endif /* VGPU_TESTUTIL_H */
