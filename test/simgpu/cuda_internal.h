/*
 * cuda_internal.h — what the files of the simulated CUDA driver share
 * (build/simgpu/libcuda.so.1 = cuda_*.c + state.c + pidview.c).
 *
 * A faithful stand-in for the driver API that vgpu cares about: the node is the
 * shared state file (state.h); the driver adds what a real driver keeps per process:
 * contexts (thread-local current-context stack, refcounted primary contexts), the
 * allocation table, VMM handles/reservations/mappings, stream-ordered pools, streams,
 * modules, graphs, and the versioned cuGetProcAddress table. One file per area:
 *
 *   cuda_init.c      process state G, cuInit, fork/exit, device queries, error strings
 *   cuda_context.c   primary and created contexts, the current-context stack
 *   cuda_memory.c    the allocation table, charge/credit, cuMemAlloc*, arrays (1D to
 *                    3D, layered, mipmapped)
 *   cuda_vmm.c       cuMemCreate handles, VA reservations, mappings
 *   cuda_pool.c      memory pools and the stream-ordered allocator
 *   cuda_launch.c    streams, modules, kernel launches (also the legacy cuLaunch* and
 *                    the multi-device cooperative launch)
 *   cuda_event.c     events (one FIFO timeline: an event completes with its stream's
 *                    queued work), cuStreamWaitEvent
 *   cuda_graph.c     graphs of kernel and memory nodes, graph memory
 *   cuda_procaddr.c  cuGetProcAddress / _v2
 *   cuda_copy.c      the contents of device memory: memcpy (1D, 2D, 3D, arrays, peer),
 *                    memset, page-locked host memory
 *   cuda_misc.c      context limits and cache configuration, peer access, texture
 *                    references, the linker, IPC, OpenGL interop, the profiler
 *
 * Error codes follow the real driver: CUDA_ERROR_NOT_INITIALIZED before cuInit,
 * CUDA_ERROR_INVALID_VALUE for NULL out-pointers and bad sizes,
 * CUDA_ERROR_INVALID_CONTEXT without a current context, CUDA_ERROR_INVALID_DEVICE for
 * bad ordinals, CUDA_ERROR_OUT_OF_MEMORY when the (whole, shared) device is full.
 *
 * Process-local tables are guarded by a process-local mutex (a dead process takes it
 * with it); the node-wide state uses atomics only. The library is linked -Bsymbolic,
 * so calls between these functions never go through an interposer (as in the real
 * libcuda): libvgpu sees exactly what the application calls.
 *
 * Visibility: the library is built with -fvisibility=hidden; everything declared
 * here is hidden (the pragma below) except the driver API, marked EXPORT.
 *
 * Deliberate simplifications (documented in test/simgpu/README.md):
 *  - device nodes are opened at cuInit (a device whose node cannot be opened is not
 *    visible; none visible -> CUDA_ERROR_NO_DEVICE) and once per context;
 *  - the 32-bit v1 memory entry points (cuMemAlloc, cuMemFree, ...) are not provided;
 *    cuGetProcAddress reports VERSION_NOT_SUFFICIENT for versions before 3020;
 *  - a forked child starts uninitialized: it must call cuInit and gets its own
 *    process slot (the parent's contexts are invalid in it).
 */
#ifndef VGPU_SIMGPU_CUDA_INTERNAL_H
#define VGPU_SIMGPU_CUDA_INTERNAL_H

#include "state.h"
#include "vgpu_cuda.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#pragma GCC visibility push(hidden)

#define EXPORT __attribute__((visibility("default")))

/* Codes the shared header does not name. */
#define SIM_ERR_INVALID_PTX ((CUresult)218)
#define SIM_ERR_OPERATING_SYSTEM ((CUresult)304)
#define SIM_ERR_CONTEXT_IS_DESTROYED ((CUresult)709)
#define SIM_ERR_PRIMARY_CONTEXT_ACTIVE ((CUresult)708)

#define CU_STREAM_LEGACY_H ((CUstream)0x1)
#define CU_STREAM_PER_THREAD_H ((CUstream)0x2)

#define MiB (1024ull * 1024ull)
#define VMM_GRANULARITY (2 * MiB)
#define DRIVER_VERSION 12040
#define CTX_STACK_MAX 64
#define MAX_BLOCKS_PER_SM 32

#define CTX_MAGIC 0x43545831u
#define POOL_MAGIC 0x504f4f4cu
#define ARRAY_MAGIC 0x41525231u

/* ------------------------------------------------------------------ objects */

struct sim_ctx {
    uint32_t magic;
    bool alive;
    bool primary;
    unsigned epoch;
    int ord; /* CUDA ordinal */
    int dev; /* index in the state file */
    int fd;  /* the device node, open while the context lives */
    unsigned flags;
    unsigned refcount;         /* primary contexts only */
    unsigned usage;            /* created contexts: 1 + cuCtxAttach - cuCtxDetach */
    _Atomic uint64_t last_end; /* end of the latest work queued in this context */
    _Atomic uint64_t null_end; /* the legacy NULL stream */
    unsigned cache_config;     /* cuCtxSetCacheConfig (cuda_misc.c) */
    unsigned shmem_config;     /* cuCtxSetSharedMemConfig */
    unsigned limits_set;       /* bit l: limits[l] was set by cuCtxSetLimit */
    size_t limits[8];
    struct sim_ctx *next;
};

struct sim_pool {
    uint32_t magic;
    bool alive;
    bool is_default;
    unsigned epoch;
    int ord, dev;
    uint64_t reserved, used, reserved_high, used_high, threshold;
    int reuse[3];
    struct sim_pool *next;
};

struct sim_vmem; /* a cuMemCreate handle (cuda_vmm.c) */

struct sim_resv {
    uint64_t base, size;
    struct sim_resv *next;
};

struct sim_vmap {
    uint64_t ptr, size;
    uint64_t offset; /* into the handle (cuMemMap) */
    struct sim_vmem *mem;
    struct sim_vmap *next;
};

/* AK_ARRAY, AK_MIPMAP: keyed by their handle; AK_GRAPHMEM: an executable graph's
 * memory on one device, keyed by graph_mem_key (cuda_graph.c). None of them is a
 * device address range. */
enum alloc_kind { AK_MEM = 1, AK_PITCH, AK_MANAGED, AK_POOL, AK_ARRAY, AK_MIPMAP, AK_GRAPHMEM };

static inline bool alloc_is_handle(int kind)
{
    return kind == AK_ARRAY || kind == AK_MIPMAP || kind == AK_GRAPHMEM;
}

struct sim_alloc {
    uint64_t ptr;     /* device address, or the handle (alloc_is_handle) */
    uint64_t size;    /* bytes the caller owns (address range) */
    uint64_t charged; /* bytes charged to the device by this entry (0 for pool memory) */
    int dev;
    int kind;
    struct sim_ctx *ctx;
    struct sim_pool *pool;
    void *bytes; /* the contents: a sparse anonymous mapping of `size`, made at the first
                  * copy or memset that touches it (cuda_copy.c); NULL until then */
    struct sim_alloc *next;
};

/* An array's handle (AK_ARRAY): the first word marks it, the descriptor follows
 * (cuArray3DGetDescriptor); its contents are the allocation's bytes, rows of
 * round_up(Width * element size, 512) bytes, Height (at least 1) rows per slice. */
struct sim_array {
    uint32_t magic;
    bool is3d;
    CUDA_ARRAY3D_DESCRIPTOR desc;
};

#define AT_BITS 16
#define AT_SIZE (1u << AT_BITS)

/* Everything this process knows; reset in a forked child. */
struct sim_proc_state {
    pthread_mutex_t lock;
    _Atomic int inited;
    CUresult init_err;
    bool said_why;
    struct sim_state *st;
    int slot;
    int pid;
    unsigned epoch;
    int ndev;
    int ord2dev[SIM_MAX_DEVICES];
    struct sim_ctx primary[SIM_MAX_DEVICES];
    struct sim_ctx *ctxs;
    struct sim_pool default_pool[SIM_MAX_DEVICES];
    struct sim_pool *cur_pool[SIM_MAX_DEVICES];
    struct sim_pool *pools;
    struct sim_resv *resv;
    struct sim_vmap *vmaps;
    _Atomic uint64_t resv_cursor;
    struct sim_alloc *at[AT_SIZE];
};

/* Defined in cuda_init.c. */
extern struct sim_proc_state G;
extern __thread struct sim_ctx *t_stack[CTX_STACK_MAX]; /* the current-context stack */
extern __thread int t_depth;
extern __thread _Atomic uint64_t t_ptds_end; /* the per-thread default stream */

/* ------------------------------------------------------------------ helpers */

static inline uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static inline void atomic_max_u64(_Atomic uint64_t *p, uint64_t v)
{
    uint64_t cur = atomic_load(p);
    while (cur < v && !atomic_compare_exchange_weak(p, &cur, v)) {
    }
}

static inline bool ready(void)
{
    return atomic_load_explicit(&G.inited, memory_order_acquire) != 0;
}

#define CHECK_INIT()                           \
    do {                                       \
        if (!ready())                          \
            return CUDA_ERROR_NOT_INITIALIZED; \
    } while (0)

static inline bool ctx_live(const struct sim_ctx *c)
{
    return c != NULL && c->magic == CTX_MAGIC && c->alive && c->epoch == G.epoch;
}

static inline struct sim_ctx *cur_ctx(void) { return t_depth > 0 ? t_stack[t_depth - 1] : NULL; }

static inline CUresult need_ctx(struct sim_ctx **out)
{
    struct sim_ctx *c = cur_ctx();
    if (!ctx_live(c))
        return CUDA_ERROR_INVALID_CONTEXT;
    *out = c;
    return CUDA_SUCCESS;
}

static inline bool ord_ok(CUdevice d) { return d >= 0 && d < G.ndev; }

/* ------------------------------------------------------------------ shared internals */

/* cuda_init.c */
void node_path(char *out, size_t n, int dev);

/* cuda_memory.c (the allocation table; lock held unless noted) */
CUresult charge(int dev, uint64_t bytes);
void credit(int dev, uint64_t bytes);
struct sim_alloc *at_find(uint64_t p, bool unlink);
CUresult alloc_new(uint64_t ptr, uint64_t size, uint64_t charged, int dev, int kind,
                   struct sim_ctx *ctx, struct sim_pool *pool);
void alloc_drop(struct sim_alloc *a);
struct sim_alloc *at_containing(uint64_t p);
int format_bytes(CUarray_format f);

/* cuda_copy.c */
void alloc_unback(struct sim_alloc *a);

/* cuda_vmm.c: where the bytes of mapped range [p, p+len) are (lock held; NULL: not
 * inside one mapping, or out of memory) */
char *vmm_bytes(uint64_t p, uint64_t len);

/* cuda_pool.c */
void pool_release_alloc(struct sim_alloc *a);
void pools_sync_trim(int dev);

/* cuda_launch.c */
CUresult resolve_stream(CUstream h, bool ptsz, struct sim_ctx **pc, _Atomic uint64_t **pend);
bool func_ok(CUfunction hf);
CUresult check_dims(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                    unsigned shmem);
CUresult launch_blocks(CUstream h, bool ptsz, uint64_t blocks, bool cooperative);

#pragma GCC visibility pop

/* ------------------------------------------------------------------ the driver API (exported) */

/* cuda_init.c */
EXPORT CUresult cuInit(unsigned int flags);
EXPORT CUresult cuDriverGetVersion(int *v);
EXPORT CUresult cuDeviceGetCount(int *count);
EXPORT CUresult cuDeviceGet(CUdevice *dev, int ordinal);
EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice d);
EXPORT CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice d);
EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice d);
EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d);
EXPORT CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice d);
EXPORT CUresult cuDeviceComputeCapability(int *major, int *minor, CUdevice d);
EXPORT CUresult cuDeviceGetPCIBusId(char *pciBusId, int len, CUdevice d);
EXPORT CUresult cuDeviceGetByPCIBusId(CUdevice *dev, const char *pciBusId);
EXPORT CUresult cuGetErrorString(CUresult error, const char **pStr);
EXPORT CUresult cuGetErrorName(CUresult error, const char **pStr);

/* cuda_context.c */
EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice d);
EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d);
EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice d);
EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice d);
EXPORT CUresult cuDevicePrimaryCtxReset(CUdevice d);
EXPORT CUresult cuDevicePrimaryCtxGetState(CUdevice d, unsigned int *flags, int *active);
EXPORT CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice d, unsigned int flags);
EXPORT CUresult cuDevicePrimaryCtxSetFlags(CUdevice d, unsigned int flags);
EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice d);
EXPORT CUresult cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice d);
EXPORT CUresult cuCtxCreate_v3(CUcontext *pctx, void *paramsArray, int numParams,
                               unsigned int flags, CUdevice d);
EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx);
EXPORT CUresult cuCtxDestroy(CUcontext ctx);
EXPORT CUresult cuCtxAttach(CUcontext *pctx, unsigned int flags);
EXPORT CUresult cuCtxDetach(CUcontext ctx);
EXPORT CUresult cuCtxGetCurrent(CUcontext *pctx);
EXPORT CUresult cuCtxSetCurrent(CUcontext ctx);
EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx);
EXPORT CUresult cuCtxPushCurrent(CUcontext ctx);
EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *pctx);
EXPORT CUresult cuCtxPopCurrent(CUcontext *pctx);
EXPORT CUresult cuCtxGetDevice(CUdevice *dev);
EXPORT CUresult cuCtxSynchronize(void);

/* cuda_memory.c */
EXPORT CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total_b);
EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize);
EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t width, size_t height,
                                   unsigned int elementSize);
EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags);
EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr);
EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr dptr);
EXPORT CUresult cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *desc);
EXPORT CUresult cuArrayDestroy(CUarray h);
EXPORT CUresult cuArray3DCreate_v2(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *desc);
EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *pHandle,
                                       const CUDA_ARRAY3D_DESCRIPTOR *desc, unsigned int levels);
EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray h);

/* cuda_vmm.c */
EXPORT CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
                                              int option);
EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                            const CUmemAllocationProp *prop, unsigned long long flags);
EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle h);
EXPORT CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment,
                                    CUdeviceptr addr, unsigned long long flags);
EXPORT CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size);
EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                         CUmemGenericAllocationHandle h, unsigned long long flags);
EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size);
EXPORT CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,
                               size_t count);

/* cuda_pool.c */
EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t size, CUstream h);
EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t size, CUstream h);
EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t size, CUmemoryPool pool,
                                        CUstream h);
EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t size, CUmemoryPool pool,
                                             CUstream h);
EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream h);
EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream h);
EXPORT CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice d);
EXPORT CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice d);
EXPORT CUresult cuDeviceSetMemPool(CUdevice d, CUmemoryPool pool);
EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props);
EXPORT CUresult cuMemPoolDestroy(CUmemoryPool pool);
EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep);
EXPORT CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value);
EXPORT CUresult cuMemPoolGetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value);

/* cuda_launch.c */
EXPORT CUresult cuStreamCreate(CUstream *ph, unsigned int flags);
EXPORT CUresult cuStreamCreateWithPriority(CUstream *ph, unsigned int flags, int priority);
EXPORT CUresult cuStreamDestroy_v2(CUstream h);
EXPORT CUresult cuStreamDestroy(CUstream h);
EXPORT CUresult cuStreamSynchronize(CUstream h);
EXPORT CUresult cuStreamSynchronize_ptsz(CUstream h);
EXPORT CUresult cuStreamQuery(CUstream h);
EXPORT CUresult cuStreamQuery_ptsz(CUstream h);
EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image);
EXPORT CUresult cuModuleUnload(CUmodule hmod);
EXPORT CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name);
EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                               unsigned int bx, unsigned int by, unsigned int bz,
                               unsigned int shmem, CUstream h, void **params, void **extra);
EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                                    unsigned int bx, unsigned int by, unsigned int bz,
                                    unsigned int shmem, CUstream h, void **params, void **extra);
EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gx, unsigned int gy,
                                          unsigned int gz, unsigned int bx, unsigned int by,
                                          unsigned int bz, unsigned int shmem, CUstream h,
                                          void **params);
EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy,
                                               unsigned int gz, unsigned int bx, unsigned int by,
                                               unsigned int bz, unsigned int shmem, CUstream h,
                                               void **params);
EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *cfg, CUfunction f, void **params,
                                 void **extra);
EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *cfg, CUfunction f, void **params,
                                      void **extra);
EXPORT CUresult cuFuncSetBlockShape(CUfunction f, int x, int y, int z);
EXPORT CUresult cuLaunch(CUfunction f);
EXPORT CUresult cuLaunchGrid(CUfunction f, int w, int h);
EXPORT CUresult cuLaunchGridAsync(CUfunction f, int w, int h, CUstream s);
EXPORT CUresult cuLaunchCooperativeKernelMultiDevice(CUDA_LAUNCH_PARAMS *list, unsigned int n,
                                                     unsigned int flags);

/* cuda_event.c */
EXPORT CUresult cuEventCreate(CUevent *ph, unsigned int flags);
EXPORT CUresult cuEventDestroy_v2(CUevent h);
EXPORT CUresult cuEventDestroy(CUevent h);
EXPORT CUresult cuEventRecord(CUevent h, CUstream s);
EXPORT CUresult cuEventRecord_ptsz(CUevent h, CUstream s);
EXPORT CUresult cuEventRecordWithFlags(CUevent h, CUstream s, unsigned int flags);
EXPORT CUresult cuEventRecordWithFlags_ptsz(CUevent h, CUstream s, unsigned int flags);
EXPORT CUresult cuEventQuery(CUevent h);
EXPORT CUresult cuEventSynchronize(CUevent h);
EXPORT CUresult cuEventElapsedTime(float *ms, CUevent start, CUevent end);
EXPORT CUresult cuEventElapsedTime_v2(float *ms, CUevent start, CUevent end);
EXPORT CUresult cuStreamWaitEvent(CUstream s, CUevent h, unsigned int flags);
EXPORT CUresult cuStreamWaitEvent_ptsz(CUstream s, CUevent h, unsigned int flags);

/* cuda_graph.c */
EXPORT CUresult cuGraphCreate(CUgraph *ph, unsigned int flags);
EXPORT CUresult cuGraphAddKernelNode(CUgraphNode *ph, CUgraph hg, const CUgraphNode *deps,
                                     size_t ndeps, const CUDA_KERNEL_NODE_PARAMS *p);
EXPORT CUresult cuGraphAddKernelNode_v2(CUgraphNode *ph, CUgraph hg, const CUgraphNode *deps,
                                        size_t ndeps, const CUDA_KERNEL_NODE_PARAMS_v2 *p);
EXPORT CUresult cuGraphAddMemAllocNode(CUgraphNode *ph, CUgraph hg, const CUgraphNode *deps,
                                       size_t ndeps, CUDA_MEM_ALLOC_NODE_PARAMS *p);
EXPORT CUresult cuGraphAddMemFreeNode(CUgraphNode *ph, CUgraph hg, const CUgraphNode *deps,
                                      size_t ndeps, CUdeviceptr dptr);
EXPORT CUresult cuGraphMemAllocNodeGetParams(CUgraphNode h, CUDA_MEM_ALLOC_NODE_PARAMS *p);
EXPORT CUresult cuDeviceGraphMemTrim(CUdevice d);
EXPORT CUresult cuGraphGetNodes(CUgraph hg, CUgraphNode *nodes, size_t *num);
EXPORT CUresult cuGraphNodeGetType(CUgraphNode h, int *type);
EXPORT CUresult cuGraphKernelNodeGetParams(CUgraphNode h, CUDA_KERNEL_NODE_PARAMS *p);
EXPORT CUresult cuGraphKernelNodeGetParams_v2(CUgraphNode h, CUDA_KERNEL_NODE_PARAMS_v2 *p);
EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *pexec, CUgraph hg,
                                            unsigned long long flags);
EXPORT CUresult cuGraphInstantiate(CUgraphExec *pexec, CUgraph hg, CUgraphNode *errNode,
                                   char *logBuf, size_t bufSize);
EXPORT CUresult cuGraphInstantiate_v2(CUgraphExec *pexec, CUgraph hg, CUgraphNode *errNode,
                                      char *logBuf, size_t bufSize);
EXPORT CUresult cuGraphLaunch(CUgraphExec he, CUstream h);
EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec he, CUstream h);
EXPORT CUresult cuGraphDestroy(CUgraph hg);
EXPORT CUresult cuGraphExecDestroy(CUgraphExec he);

/* cuda_procaddr.c */
EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags);
EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion,
                                    cuuint64_t flags, CUdriverProcAddressQueryResult *symbolStatus);

/* cuda_memory.c (added for full driver clients such as PyCUDA) */
EXPORT CUresult cuArrayGetDescriptor_v2(CUDA_ARRAY_DESCRIPTOR *pdesc, CUarray h);
EXPORT CUresult cuArray3DGetDescriptor_v2(CUDA_ARRAY3D_DESCRIPTOR *pdesc, CUarray h);

/* cuda_copy.c (added for full driver clients such as PyCUDA) */
EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n);
EXPORT CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n);
EXPORT CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n);
EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream s);
EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream s);
EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s);
EXPORT CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n);
EXPORT CUresult cuMemcpyPeer(CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx,
                             size_t n);
EXPORT CUresult cuMemcpyPeerAsync(CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx,
                                  size_t n, CUstream s);
EXPORT CUresult cuMemcpy2D_v2(const void *p);
EXPORT CUresult cuMemcpy2DUnaligned_v2(const void *p);
EXPORT CUresult cuMemcpy2DAsync_v2(const void *p, CUstream s);
EXPORT CUresult cuMemcpy3D_v2(const void *p);
EXPORT CUresult cuMemcpy3DAsync_v2(const void *p, CUstream s);
EXPORT CUresult cuMemcpy3DPeer(const void *p);
EXPORT CUresult cuMemcpy3DPeerAsync(const void *p, CUstream s);
EXPORT CUresult cuMemcpyHtoA_v2(CUarray dst, size_t off, const void *src, size_t n);
EXPORT CUresult cuMemcpyAtoH_v2(void *dst, CUarray src, size_t off, size_t n);
EXPORT CUresult cuMemcpyDtoA_v2(CUarray dst, size_t off, CUdeviceptr src, size_t n);
EXPORT CUresult cuMemcpyAtoD_v2(CUdeviceptr dst, CUarray src, size_t off, size_t n);
EXPORT CUresult cuMemcpyAtoA_v2(CUarray dst, size_t doff, CUarray src, size_t soff, size_t n);
EXPORT CUresult cuMemsetD8_v2(CUdeviceptr p, unsigned char v, size_t n);
EXPORT CUresult cuMemsetD16_v2(CUdeviceptr p, unsigned short v, size_t n);
EXPORT CUresult cuMemsetD32_v2(CUdeviceptr p, unsigned int v, size_t n);
EXPORT CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, CUstream s);
EXPORT CUresult cuMemsetD16Async(CUdeviceptr p, unsigned short v, size_t n, CUstream s);
EXPORT CUresult cuMemsetD32Async(CUdeviceptr p, unsigned int v, size_t n, CUstream s);
EXPORT CUresult cuMemsetD2D8_v2(CUdeviceptr p, size_t pitch, unsigned char v, size_t w, size_t h);
EXPORT CUresult cuMemsetD2D16_v2(CUdeviceptr p, size_t pitch, unsigned short v, size_t w, size_t h);
EXPORT CUresult cuMemsetD2D32_v2(CUdeviceptr p, size_t pitch, unsigned int v, size_t w, size_t h);
EXPORT CUresult cuMemsetD2D8Async(CUdeviceptr p, size_t pitch, unsigned char v, size_t w, size_t h,
                                  CUstream s);
EXPORT CUresult cuMemsetD2D16Async(CUdeviceptr p, size_t pitch, unsigned short v, size_t w,
                                   size_t h, CUstream s);
EXPORT CUresult cuMemsetD2D32Async(CUdeviceptr p, size_t pitch, unsigned int v, size_t w, size_t h,
                                   CUstream s);
EXPORT CUresult cuMemHostAlloc(void **pp, size_t size, unsigned int flags);
EXPORT CUresult cuMemAllocHost_v2(void **pp, size_t size);
EXPORT CUresult cuMemFreeHost(void *p);
EXPORT CUresult cuMemHostRegister_v2(void *p, size_t size, unsigned int flags);
EXPORT CUresult cuMemHostUnregister(void *p);
EXPORT CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *pd, void *p, unsigned int flags);
EXPORT CUresult cuMemHostGetFlags(unsigned int *pflags, void *p);
EXPORT CUresult cuStreamAttachMemAsync(CUstream s, CUdeviceptr p, size_t len, unsigned int flags);

/* cuda_misc.c (added for full driver clients such as PyCUDA) */
EXPORT CUresult cuCtxGetApiVersion(CUcontext ctx, unsigned int *version);
EXPORT CUresult cuCtxGetCacheConfig(int *config);
EXPORT CUresult cuCtxSetCacheConfig(int config);
EXPORT CUresult cuCtxGetSharedMemConfig(int *config);
EXPORT CUresult cuCtxSetSharedMemConfig(int config);
EXPORT CUresult cuCtxGetLimit(size_t *value, int limit);
EXPORT CUresult cuCtxSetLimit(int limit, size_t value);
EXPORT CUresult cuDeviceCanAccessPeer(int *can, CUdevice d, CUdevice peer);
EXPORT CUresult cuCtxEnablePeerAccess(CUcontext peer, unsigned int flags);
EXPORT CUresult cuCtxDisablePeerAccess(CUcontext peer);
EXPORT CUresult cuTexRefCreate(void **ph);
EXPORT CUresult cuTexRefDestroy(void *h);
EXPORT CUresult cuTexRefSetArray(void *h, CUarray a, unsigned int flags);
EXPORT CUresult cuTexRefGetArray(CUarray *pa, void *h);
EXPORT CUresult cuTexRefSetAddress_v2(size_t *off, void *h, CUdeviceptr p, size_t bytes);
EXPORT CUresult cuTexRefSetAddress2D_v3(void *h, const CUDA_ARRAY_DESCRIPTOR *d, CUdeviceptr p,
                                        size_t pitch);
EXPORT CUresult cuTexRefGetAddress_v2(CUdeviceptr *pp, void *h);
EXPORT CUresult cuTexRefSetFormat(void *h, int format, int channels);
EXPORT CUresult cuTexRefGetFormat(int *format, int *channels, void *h);
EXPORT CUresult cuTexRefSetAddressMode(void *h, int dim, int mode);
EXPORT CUresult cuTexRefGetAddressMode(int *mode, void *h, int dim);
EXPORT CUresult cuTexRefSetFilterMode(void *h, int mode);
EXPORT CUresult cuTexRefGetFilterMode(int *mode, void *h);
EXPORT CUresult cuTexRefSetFlags(void *h, unsigned int flags);
EXPORT CUresult cuTexRefGetFlags(unsigned int *flags, void *h);
EXPORT CUresult cuParamSetTexRef(CUfunction f, int texunit, void *h);
EXPORT CUresult cuSurfRefSetArray(void *h, CUarray a, unsigned int flags);
EXPORT CUresult cuSurfRefGetArray(CUarray *pa, void *h);
EXPORT CUresult cuLinkCreate_v2(unsigned int n, void *options, void **values, void **pstate);
EXPORT CUresult cuLinkAddData_v2(void *state, int type, void *data, size_t size, const char *name,
                                 unsigned int n, void *options, void **values);
EXPORT CUresult cuLinkAddFile_v2(void *state, int type, const char *path, unsigned int n,
                                 void *options, void **values);
EXPORT CUresult cuLinkComplete(void *state, void **cubin, size_t *size);
EXPORT CUresult cuLinkDestroy(void *state);
EXPORT CUresult cuIpcGetMemHandle(void *handle, CUdeviceptr p);
EXPORT CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *pp, const void *handle, unsigned int flags);
EXPORT CUresult cuIpcCloseMemHandle(CUdeviceptr p);
EXPORT CUresult cuIpcGetEventHandle(void *handle, CUevent e);
EXPORT CUresult cuIpcOpenEventHandle(CUevent *pe, const void *handle);
EXPORT CUresult cuGLInit(void);
EXPORT CUresult cuGLCtxCreate_v2(CUcontext *p, unsigned int f, CUdevice d);
EXPORT CUresult cuGLRegisterBufferObject(unsigned int b);
EXPORT CUresult cuGLUnregisterBufferObject(unsigned int b);
EXPORT CUresult cuGLMapBufferObject_v2(CUdeviceptr *p, size_t *s, unsigned int b);
EXPORT CUresult cuGLUnmapBufferObject(unsigned int b);
EXPORT CUresult cuGraphicsGLRegisterBuffer(void **r, unsigned int b, unsigned int f);
EXPORT CUresult cuGraphicsGLRegisterImage(void **r, unsigned int i, unsigned int t, unsigned int f);
EXPORT CUresult cuGraphicsUnregisterResource(void *r);
EXPORT CUresult cuGraphicsMapResources(unsigned int n, void **r, CUstream s);
EXPORT CUresult cuGraphicsUnmapResources(unsigned int n, void **r, CUstream s);
EXPORT CUresult cuGraphicsResourceGetMappedPointer_v2(CUdeviceptr *p, size_t *s, void *r);
EXPORT CUresult cuGraphicsSubResourceGetMappedArray(CUarray *a, void *r, unsigned int i,
                                                    unsigned int l);
EXPORT CUresult cuProfilerInitialize(const char *config, const char *out, int mode);
EXPORT CUresult cuProfilerStart(void);
EXPORT CUresult cuProfilerStop(void);

/* cuda_launch.c (added for full driver clients such as PyCUDA) */
EXPORT CUresult cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int n,
                                   int *options, void **values);
EXPORT CUresult cuModuleLoad(CUmodule *module, const char *fname);
EXPORT CUresult cuModuleGetGlobal_v2(CUdeviceptr *dptr, size_t *bytes, CUmodule hmod,
                                     const char *name);
EXPORT CUresult cuModuleGetTexRef(void **ptex, CUmodule hmod, const char *name);
EXPORT CUresult cuModuleGetSurfRef(void **psurf, CUmodule hmod, const char *name);
EXPORT CUresult cuFuncGetAttribute(int *pi, int attrib, CUfunction hf);
EXPORT CUresult cuFuncSetAttribute(CUfunction hf, int attrib, int value);
EXPORT CUresult cuFuncSetCacheConfig(CUfunction hf, int config);
EXPORT CUresult cuFuncSetSharedSize(CUfunction hf, unsigned int bytes);
EXPORT CUresult cuParamSetSize(CUfunction hf, unsigned int bytes);
EXPORT CUresult cuParamSeti(CUfunction hf, int offset, unsigned int value);
EXPORT CUresult cuParamSetf(CUfunction hf, int offset, float value);
EXPORT CUresult cuParamSetv(CUfunction hf, int offset, void *ptr, unsigned int bytes);

#endif /* VGPU_SIMGPU_CUDA_INTERNAL_H */
