/*
 * vgpu_internal.h — private declarations shared by libvgpu's sources.
 *
 * Everything here has hidden visibility (the Makefile builds with
 * -fvisibility=hidden); only the hooks are exported, marked VGPU_EXPORT.
 *
 * The library is split by concern:
 *   init.c    slice discovery and validation, real-symbol resolution, process slot,
 *             device map, fork and exit handling, the one-line stderr messages and
 *             their level; runs the modules' lifecycle handlers (registry below)
 *   modules.c the module registry: which modules have init / fork handlers
 *   table.c   the hook table (symbol -> hook -> real pointer), dlsym interposition,
 *             cuGetProcAddress(_v2)
 *   account.c admission (CAS reservation against the budget) and crediting, the
 *             process-local allocation table
 *   memory.c  allocation / release hooks (plain, pitch, managed, arrays: 1D/2D,
 *             3D/layered/cubemap, mipmapped)
 *   vmm.c     VMM: cuMemCreate / cuMemMap / cuMemUnmap / cuMemRelease — a handle is
 *             credited once it is released and no longer mapped
 *   pool.c    stream-ordered allocator: async allocs and pool reservations
 *   context.c the current context -> slice device cache, context footprints,
 *             crediting the allocations a destroyed context takes with it
 *   query.c   cuMemGetInfo, cuDeviceTotalMem, nvmlDeviceGetMemoryInfo(_v2)
 *   launch.c  kernel and graph launches: the gate every launch passes
 *   throttle.c the launch throttle behind the gate: token bucket per slice device,
 *             the cost of each executable graph
 *   marker.c  completion markers: events around the launches whose ticket crosses a
 *             VGPU_MARKER_STRIDE, token_done / sampled_*, the in-flight bound, the
 *             learnt device-ns per wave (daemonless costing)
 *   graph.c   graph instantiation: walks the graph for its launch cost and for the
 *             memory its allocation nodes take (charged until cuGraphExecDestroy)
 *   elastic.c elastic memory: a refused admission in an elastic slice asks vgpud
 *             for more and waits, bounded, for the answer
 */
#ifndef VGPU_INTERNAL_H
#define VGPU_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vgpu_cuda.h"
#include "vgpu_shm.h"

#define VGPU_EXPORT __attribute__((visibility("default")))
#define VGPU_LIKELY(x) __builtin_expect(!!(x), 1)
#define VGPU_UNLIKELY(x) __builtin_expect(!!(x), 0)
/* Code that may run before a sanitizer runtime has initialized (`make sanitize`
 * builds libvgpu with ASan): ASan resolves its interceptors through dlsym — that
 * is, through our dlsym hook — before its shadow memory exists, so the hook and
 * what it calls on the way to the real dlsym must not be instrumented. Nothing in
 * the normal build. */
#define VGPU_NO_ASAN __attribute__((no_sanitize_address))

/* CUDA ordinals libvgpu maps to slice devices. Real nodes have at most 16-ish. */
#define VGPU_MAX_ORDINALS 64
/* SM count assumed for a slice device the driver does not describe. */
#define VGPU_FALLBACK_SMS 132u

/* ------------------------------------------------------------- driver types */

/* Function types of every driver / NVML entry point libvgpu calls or hooks. They
 * follow cuda.h / nvml.h exactly; versioned names (_v2, _v3, _ptsz) are distinct
 * ABI entry points in the real driver, so each gets its own type and real pointer. */
typedef CUresult (*cuInit_fn)(unsigned int);
typedef CUresult (*cuGetProcAddress_fn)(const char *, void **, int, cuuint64_t);
typedef CUresult (*cuGetProcAddress_v2_fn)(const char *, void **, int, cuuint64_t,
                                           CUdriverProcAddressQueryResult *);
typedef CUresult (*cuMemAlloc_v2_fn)(CUdeviceptr *, size_t);
typedef CUresult (*cuMemAllocPitch_v2_fn)(CUdeviceptr *, size_t *, size_t, size_t, unsigned int);
typedef CUresult (*cuMemAllocManaged_fn)(CUdeviceptr *, size_t, unsigned int);
typedef CUresult (*cuMemFree_v2_fn)(CUdeviceptr);
typedef CUresult (*cuMemCreate_fn)(CUmemGenericAllocationHandle *, size_t,
                                   const CUmemAllocationProp *, unsigned long long);
typedef CUresult (*cuMemRelease_fn)(CUmemGenericAllocationHandle);
typedef CUresult (*cuMemMap_fn)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
                                unsigned long long);
typedef CUresult (*cuMemUnmap_fn)(CUdeviceptr, size_t);
typedef CUresult (*cuArrayCreate_v2_fn)(CUarray *, const CUDA_ARRAY_DESCRIPTOR *);
typedef CUresult (*cuArrayDestroy_fn)(CUarray);
typedef CUresult (*cuArray3DCreate_v2_fn)(CUarray *, const CUDA_ARRAY3D_DESCRIPTOR *);
typedef CUresult (*cuMipmappedArrayCreate_fn)(CUmipmappedArray *, const CUDA_ARRAY3D_DESCRIPTOR *,
                                              unsigned int);
typedef CUresult (*cuMipmappedArrayDestroy_fn)(CUmipmappedArray);
typedef CUresult (*cuMemAllocAsync_fn)(CUdeviceptr *, size_t, CUstream);
typedef CUresult (*cuMemAllocFromPoolAsync_fn)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
typedef CUresult (*cuMemFreeAsync_fn)(CUdeviceptr, CUstream);
typedef CUresult (*cuMemPoolCreate_fn)(CUmemoryPool *, const CUmemPoolProps *);
typedef CUresult (*cuMemPoolDestroy_fn)(CUmemoryPool);
typedef CUresult (*cuMemPoolTrimTo_fn)(CUmemoryPool, size_t);
typedef CUresult (*cuMemPoolSetAttribute_fn)(CUmemoryPool, CUmemPool_attribute, void *);
typedef CUresult (*cuMemPoolGetAttribute_fn)(CUmemoryPool, CUmemPool_attribute, void *);
typedef CUresult (*cuDeviceGetDefaultMemPool_fn)(CUmemoryPool *, CUdevice);
typedef CUresult (*cuDeviceGetMemPool_fn)(CUmemoryPool *, CUdevice);
typedef CUresult (*cuStreamSynchronize_fn)(CUstream);
typedef CUresult (*cuCtxSynchronize_fn)(void);
typedef CUresult (*cuCtxCreate_v2_fn)(CUcontext *, unsigned int, CUdevice);
typedef CUresult (*cuCtxCreate_v3_fn)(CUcontext *, void *, int, unsigned int, CUdevice);
typedef CUresult (*cuCtxCreate_v4_fn)(CUcontext *, void *, unsigned int, CUdevice);
typedef CUresult (*cuCtxDestroy_v2_fn)(CUcontext);
typedef CUresult (*cuCtxAttach_fn)(CUcontext *, unsigned int);
typedef CUresult (*cuCtxDetach_fn)(CUcontext);
typedef CUresult (*cuDevicePrimaryCtxRetain_fn)(CUcontext *, CUdevice);
typedef CUresult (*cuDevicePrimaryCtxRelease_fn)(CUdevice);
typedef CUresult (*cuMemGetInfo_v2_fn)(size_t *, size_t *);
typedef CUresult (*cuDeviceTotalMem_v2_fn)(size_t *, CUdevice);
typedef CUresult (*cuLaunchKernel_fn)(CUfunction, unsigned int, unsigned int, unsigned int,
                                      unsigned int, unsigned int, unsigned int, unsigned int,
                                      CUstream, void **, void **);
typedef CUresult (*cuLaunchKernelEx_fn)(const CUlaunchConfig *, CUfunction, void **, void **);
typedef CUresult (*cuLaunchCooperativeKernel_fn)(CUfunction, unsigned int, unsigned int,
                                                 unsigned int, unsigned int, unsigned int,
                                                 unsigned int, unsigned int, CUstream, void **);
typedef CUresult (*cuGraphLaunch_fn)(CUgraphExec, CUstream);
/* The pre-CUDA-4.0 launch API: block shape and parameters set beforehand
 * (cuFuncSetBlockShape, cuParamSet*); cuLaunch runs a grid of one block. */
typedef CUresult (*cuLaunch_fn)(CUfunction);
typedef CUresult (*cuLaunchGrid_fn)(CUfunction, int, int);
typedef CUresult (*cuLaunchGridAsync_fn)(CUfunction, int, int, CUstream);
typedef CUresult (*cuLaunchCooperativeKernelMultiDevice_fn)(CUDA_LAUNCH_PARAMS *, unsigned int,
                                                            unsigned int);
typedef CUresult (*cuGraphInstantiate_fn)(CUgraphExec *, CUgraph, CUgraphNode *, char *, size_t);
typedef CUresult (*cuGraphInstantiateWithFlags_fn)(CUgraphExec *, CUgraph, unsigned long long);
/* The third argument is a CUDA_GRAPH_INSTANTIATE_PARAMS *; libvgpu never looks into it. */
typedef CUresult (*cuGraphInstantiateWithParams_fn)(CUgraphExec *, CUgraph, void *);
typedef CUresult (*cuGraphExecDestroy_fn)(CUgraphExec);
/* Not hooked, only called. */
typedef CUresult (*cuCtxGetDevice_fn)(CUdevice *);
typedef CUresult (*cuCtxGetCurrent_fn)(CUcontext *);
typedef CUresult (*cuDeviceGetCount_fn)(int *);
typedef CUresult (*cuDeviceGetUuid_fn)(CUuuid *, CUdevice);
typedef CUresult (*cuDeviceGetAttribute_fn)(int *, CUdevice_attribute, CUdevice);
/* Graph introspection (costing a graph at instantiation). CUgraphNodeType is an
 * int-sized enum: kernel = 0, child graph = 4 (cuda.h). */
typedef CUresult (*cuGraphGetNodes_fn)(CUgraph, CUgraphNode *, size_t *);
typedef CUresult (*cuGraphNodeGetType_fn)(CUgraphNode, int *);
typedef CUresult (*cuGraphKernelNodeGetParams_fn)(CUgraphNode, CUDA_KERNEL_NODE_PARAMS *);
typedef CUresult (*cuGraphKernelNodeGetParams_v2_fn)(CUgraphNode, CUDA_KERNEL_NODE_PARAMS_v2 *);
typedef CUresult (*cuGraphChildGraphNodeGetGraph_fn)(CUgraphNode, CUgraph *);
typedef CUresult (*cuGraphMemAllocNodeGetParams_fn)(CUgraphNode, CUDA_MEM_ALLOC_NODE_PARAMS *);
/* Completion markers (marker.c). */
typedef CUresult (*cuEventCreate_fn)(CUevent *, unsigned int);
typedef CUresult (*cuEventDestroy_v2_fn)(CUevent);
typedef CUresult (*cuEventRecord_fn)(CUevent, CUstream);
typedef CUresult (*cuEventQuery_fn)(CUevent);
typedef CUresult (*cuEventElapsedTime_fn)(float *, CUevent, CUevent);
typedef cuEventElapsedTime_fn cuEventElapsedTime_v2_fn;
/* The status is a CUstreamCaptureStatus (int-sized enum; 0 = not capturing). */
typedef CUresult (*cuStreamIsCapturing_fn)(CUstream, int *);
#define VGPU_GRAPH_NODE_KERNEL 0
#define VGPU_GRAPH_NODE_GRAPH 4
#define VGPU_GRAPH_NODE_MEM_ALLOC 10

typedef nvmlReturn_t (*nvmlDeviceGetMemoryInfo_fn)(nvmlDevice_t, nvmlMemory_t *);
typedef nvmlReturn_t (*nvmlDeviceGetMemoryInfo_v2_fn)(nvmlDevice_t, nvmlMemory_v2_t *);
typedef nvmlReturn_t (*nvmlDeviceGetUUID_fn)(nvmlDevice_t, char *, unsigned int);
typedef nvmlReturn_t (*nvmlDeviceGetIndex_fn)(nvmlDevice_t, unsigned int *);

/*
 * The hooked entry points: X(library, symbol). One list drives the real-pointer
 * struct and the hook table, so a hook cannot exist without its real slot.
 * Library C = libcuda.so.1, N = libnvidia-ml.so.1.
 */
#define VGPU_HOOKS(X)                          \
    X(C, cuInit)                               \
    X(C, cuGetProcAddress)                     \
    X(C, cuGetProcAddress_v2)                  \
    X(C, cuMemAlloc_v2)                        \
    X(C, cuMemAllocPitch_v2)                   \
    X(C, cuMemAllocManaged)                    \
    X(C, cuMemFree_v2)                         \
    X(C, cuMemCreate)                          \
    X(C, cuMemRelease)                         \
    X(C, cuMemMap)                             \
    X(C, cuMemUnmap)                           \
    X(C, cuArrayCreate_v2)                     \
    X(C, cuArrayDestroy)                       \
    X(C, cuArray3DCreate_v2)                   \
    X(C, cuMipmappedArrayCreate)               \
    X(C, cuMipmappedArrayDestroy)              \
    X(C, cuMemAllocAsync)                      \
    X(C, cuMemAllocAsync_ptsz)                 \
    X(C, cuMemAllocFromPoolAsync)              \
    X(C, cuMemAllocFromPoolAsync_ptsz)         \
    X(C, cuMemFreeAsync)                       \
    X(C, cuMemFreeAsync_ptsz)                  \
    X(C, cuMemPoolCreate)                      \
    X(C, cuMemPoolDestroy)                     \
    X(C, cuMemPoolTrimTo)                      \
    X(C, cuMemPoolSetAttribute)                \
    X(C, cuDeviceGetDefaultMemPool)            \
    X(C, cuDeviceGetMemPool)                   \
    X(C, cuStreamSynchronize)                  \
    X(C, cuStreamSynchronize_ptsz)             \
    X(C, cuCtxSynchronize)                     \
    X(C, cuCtxCreate)                          \
    X(C, cuCtxCreate_v2)                       \
    X(C, cuCtxCreate_v3)                       \
    X(C, cuCtxCreate_v4)                       \
    X(C, cuGLCtxCreate)                        \
    X(C, cuGLCtxCreate_v2)                     \
    X(C, cuCtxDestroy)                         \
    X(C, cuCtxDestroy_v2)                      \
    X(C, cuCtxAttach)                          \
    X(C, cuCtxDetach)                          \
    X(C, cuDevicePrimaryCtxRetain)             \
    X(C, cuDevicePrimaryCtxRelease)            \
    X(C, cuDevicePrimaryCtxRelease_v2)         \
    X(C, cuDevicePrimaryCtxReset)              \
    X(C, cuDevicePrimaryCtxReset_v2)           \
    X(C, cuMemGetInfo_v2)                      \
    X(C, cuDeviceTotalMem_v2)                  \
    X(C, cuLaunchKernel)                       \
    X(C, cuLaunchKernel_ptsz)                  \
    X(C, cuLaunchKernelEx)                     \
    X(C, cuLaunchKernelEx_ptsz)                \
    X(C, cuLaunchCooperativeKernel)            \
    X(C, cuLaunchCooperativeKernel_ptsz)       \
    X(C, cuGraphLaunch)                        \
    X(C, cuGraphLaunch_ptsz)                   \
    X(C, cuLaunch)                             \
    X(C, cuLaunchGrid)                         \
    X(C, cuLaunchGridAsync)                    \
    X(C, cuLaunchCooperativeKernelMultiDevice) \
    X(C, cuGraphInstantiate)                   \
    X(C, cuGraphInstantiate_v2)                \
    X(C, cuGraphInstantiateWithFlags)          \
    X(C, cuGraphInstantiateWithParams)         \
    X(C, cuGraphInstantiateWithParams_ptsz)    \
    X(C, cuGraphExecDestroy)                   \
    X(N, nvmlDeviceGetMemoryInfo)              \
    X(N, nvmlDeviceGetMemoryInfo_v2)

/* Entry points libvgpu calls but does not hook. */
#define VGPU_CALLS(X)                   \
    X(C, cuCtxGetCurrent)               \
    X(C, cuCtxGetDevice)                \
    X(C, cuDeviceGetCount)              \
    X(C, cuDeviceGetUuid)               \
    X(C, cuDeviceGetUuid_v2)            \
    X(C, cuMemPoolGetAttribute)         \
    X(C, cuDeviceGetAttribute)          \
    X(C, cuGraphGetNodes)               \
    X(C, cuGraphNodeGetType)            \
    X(C, cuGraphKernelNodeGetParams)    \
    X(C, cuGraphKernelNodeGetParams_v2) \
    X(C, cuGraphChildGraphNodeGetGraph) \
    X(C, cuGraphMemAllocNodeGetParams)  \
    X(C, cuEventCreate)                 \
    X(C, cuEventDestroy_v2)             \
    X(C, cuEventRecord)                 \
    X(C, cuEventQuery)                  \
    X(C, cuEventElapsedTime)            \
    X(C, cuEventElapsedTime_v2)         \
    X(C, cuStreamIsCapturing)           \
    X(N, nvmlDeviceGetUUID)             \
    X(N, nvmlDeviceGetIndex)

/* The _ptsz / _v2 variants share their base's function type. */
typedef cuMemAllocAsync_fn cuMemAllocAsync_ptsz_fn;
typedef cuMemAllocFromPoolAsync_fn cuMemAllocFromPoolAsync_ptsz_fn;
typedef cuMemFreeAsync_fn cuMemFreeAsync_ptsz_fn;
typedef cuStreamSynchronize_fn cuStreamSynchronize_ptsz_fn;
typedef cuDevicePrimaryCtxRelease_fn cuDevicePrimaryCtxRelease_v2_fn;
typedef cuDevicePrimaryCtxRelease_fn cuDevicePrimaryCtxReset_fn;
typedef cuDevicePrimaryCtxRelease_fn cuDevicePrimaryCtxReset_v2_fn;
/* The pre-3.2 names cuCtxCreate / cuCtxDestroy have the same 64-bit ABI as their
 * _v2 successors (only the 32-bit pointer-size variants differ), so a program or
 * cuGetProcAddress caller asking for an old version still gets them hooked. */
typedef cuCtxCreate_v2_fn cuCtxCreate_fn;
typedef cuCtxDestroy_v2_fn cuCtxDestroy_fn;
/* cuGLCtxCreate(_v2): cuCtxCreate_v2's arguments (the GL context is the current one). */
typedef cuCtxCreate_v2_fn cuGLCtxCreate_fn;
typedef cuCtxCreate_v2_fn cuGLCtxCreate_v2_fn;
typedef cuLaunchKernel_fn cuLaunchKernel_ptsz_fn;
typedef cuLaunchKernelEx_fn cuLaunchKernelEx_ptsz_fn;
typedef cuLaunchCooperativeKernel_fn cuLaunchCooperativeKernel_ptsz_fn;
typedef cuGraphLaunch_fn cuGraphLaunch_ptsz_fn;
/* cuGraphInstantiate_v2 (CUDA 11) is cuGraphInstantiate's ABI under a new name. */
typedef cuGraphInstantiate_fn cuGraphInstantiate_v2_fn;
typedef cuGraphInstantiateWithParams_fn cuGraphInstantiateWithParams_ptsz_fn;
typedef cuDeviceGetUuid_fn cuDeviceGetUuid_v2_fn;

/* Real entry points, resolved from the driver libraries by exact symbol name. */
struct vgpu_real {
#define VGPU_REAL_FIELD(lib, name) name##_fn name;
    VGPU_HOOKS(VGPU_REAL_FIELD)
    VGPU_CALLS(VGPU_REAL_FIELD)
#undef VGPU_REAL_FIELD
};
extern struct vgpu_real vgpu_real;

/* One hook table entry: the symbol, our hook, the slot of the real pointer. */
struct vgpu_hook {
    const char *name;
    void *hook;
    void **real;
    char lib; /* 'C' libcuda, 'N' libnvidia-ml */
};
extern const struct vgpu_hook vgpu_hooks[];
extern const size_t vgpu_nhooks;

/* --------------------------------------------------------------- global state */

enum vgpu_mode {
    VGPU_MODE_UNINIT = 0,
    VGPU_MODE_ENFORCE = 1,     /* a valid slice: charge, cap, virtualize queries */
    VGPU_MODE_PASSTHROUGH = 2, /* no slice / bad region, passthrough chosen */
    VGPU_MODE_REFUSE = 3,      /* no slice / bad region, refusal chosen (always in containers) */
};

struct vgpu_global {
    _Atomic int mode; /* enum vgpu_mode; written once (release) at the end of init */

    const struct vgpu_budget *budget; /* PROT_READ mapping */
    struct vgpu_usage *usage;         /* PROT_READ|PROT_WRITE mapping */
    uint32_t ndev;                    /* budget device_count */
    uint32_t nslots;                  /* usage slot_count */

    /* CUDA ordinal -> slice device index (-1: not in the slice). Built once the
     * driver is initialized (needs cuDeviceGetUuid), published by devmap_ready. */
    _Atomic int devmap_ready;
    int ndevmap;
    int8_t devmap[VGPU_MAX_ORDINALS];
    /* SM count of each slice device (0 until the device map is built): a launch of
     * B blocks costs ceil(B / sms) waves. */
    _Atomic uint32_t sms[VGPU_MAX_DEVICES];

    /* This process's slot; NULL until the first charge (claimed lazily, so
     * processes that never allocate — monitors, forked children that exec — never
     * hold one). slot_pid guards exit-time release against clone children. */
    _Atomic(struct vgpu_slot *) slot;
    int slot_pid;
    _Atomic int released; /* exit started: the slot was returned, charges refused */

    void *libcuda;
    void *libnvml;
};
extern struct vgpu_global vgpu_g;

/* Lazy initialization: returns the mode (never VGPU_MODE_UNINIT). The fast path is
 * one acquire load (a plain load on x86). */
int vgpu_init_slow(void);
static inline int vgpu_mode(void)
{
    int m = atomic_load_explicit(&vgpu_g.mode, memory_order_acquire);
    if (VGPU_UNLIKELY(m == VGPU_MODE_UNINIT))
        m = vgpu_init_slow();
    return m;
}
/* Opens libnvidia-ml and resolves NVML reals (once). Returns 0 on success. */
int vgpu_nvml_init(void);

/* The real dlsym (used for every internal lookup: never our own export). */
typedef void *(*dlsym_fn)(void *, const char *);
dlsym_fn vgpu_real_dlsym(void);

/* Hook table lookups (table.c). */
const struct vgpu_hook *vgpu_hook_by_name(const char *name);
void vgpu_resolve_reals(char lib, void *handle);

/* "vgpu: ..." on stderr. No allocation (stack buffer + write(2)). Unfiltered: call
 * it through VGPU_LOG / VGPU_LOG_ONCE, which apply the log level. */
void vgpu_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Log levels. VGPU_LOG_LEVEL (off, error, warn, info, debug; default info, which
 * shows every message libvgpu printed before levels existed) is read once, by the
 * lazy initialization (init.c); a message before it uses the default. The check is
 * one relaxed load and a compare — no getenv, syscall or lock — and every message
 * is on a slow path anyway.
 */
enum vgpu_log_level {
    VGPU_LOG_OFF = 0,
    VGPU_LOG_ERROR = 1, /* libvgpu refuses CUDA or cannot work */
    VGPU_LOG_WARN = 2,  /* something is not enforced, or enforced more coarsely */
    VGPU_LOG_INFO = 3,  /* the default */
    VGPU_LOG_DEBUG = 4, /* what initialization found */
};
extern _Atomic int vgpu_log_level;
#define VGPU_LOG_ENABLED(level) \
    VGPU_UNLIKELY((level) <= atomic_load_explicit(&vgpu_log_level, memory_order_relaxed))
#define VGPU_LOG(level, ...)         \
    do {                             \
        if (VGPU_LOG_ENABLED(level)) \
            vgpu_log(__VA_ARGS__);   \
    } while (0)
/* Logs at most once per flag (a message below the level does not use it up). */
#define VGPU_LOG_ONCE(flag, level, ...)                                                           \
    do {                                                                                          \
        static _Atomic int flag;                                                                  \
        if (VGPU_LOG_ENABLED(level) && !atomic_exchange_explicit(&flag, 1, memory_order_relaxed)) \
            vgpu_log(__VA_ARGS__);                                                                \
    } while (0)

/* Device map: CUDA ordinal -> slice device (>= 0). -1: the device is not in the
 * slice (*err = CUDA_ERROR_OUT_OF_MEMORY, one stderr line per process); -2: the
 * driver cannot tell (not initialized, bad ordinal; *err is its error). */
int vgpu_slice_dev_of_ordinal(CUdevice dev, CUresult *err);
/* Slice device of the calling thread's current context (context.c): one driver
 * call (cuCtxGetCurrent) plus a lookup in a small context cache. Returns the slice
 * device, or <0 with *err set to what the hook must return: -1 when the device is
 * not in the slice (CUDA_ERROR_OUT_OF_MEMORY), -2 for the driver's own error (no
 * context, not initialized). ctx / ordinal may be NULL. */
int vgpu_current_target(CUcontext *ctx, CUdevice *ordinal, CUresult *err);

/* Budget device index for an NVML device (index, uuid may be NULL), or -1. */
int vgpu_match_nvml_device(unsigned int index, const char *uuid);
/* The slice directory in use (for messages). */
const char *vgpu_slice_dir(void);

/* This process's slot, claimed on first use. NULL: none free or exit started. */
struct vgpu_slot *vgpu_slot_get(void);

/* ------------------------------------------------------------------ throttle */

/*
 * The launch gate (launch.c, throttle.c). Every launch hook compares two words:
 * the budget's generation (through gen: a constant 0 without a slice) and fast, the
 * generation under which nothing of this process is throttled. Equal: the launch
 * goes straight to the driver. Different — not initialized yet, a token rate is set
 * (fast then holds VGPU_GATE_CLOSED, which no generation reaches), or vgpud changed
 * the budget since — the launch takes the throttle path, which re-reads the budget.
 * state packs (generation << 16 | mask of throttled slice devices) as last read, so
 * a throttled launch need not scan the budget either.
 */
#define VGPU_GATE_CLOSED UINT64_MAX
struct vgpu_gate {
    _Atomic(const uint64_t *) gen; /* set once, at initialization */
    _Atomic uint64_t fast;
    _Atomic uint64_t state;
};
extern struct vgpu_gate vgpu_gate;

static inline bool vgpu_gate_closed(void)
{
    const uint64_t *gen = atomic_load_explicit(&vgpu_gate.gen, memory_order_relaxed);
    return __atomic_load_n(gen, __ATOMIC_RELAXED) !=
           atomic_load_explicit(&vgpu_gate.fast, memory_order_relaxed);
}

enum vgpu_launch_kind {
    VGPU_LAUNCH_KERNEL = 0, /* arg: blocks in the grid */
    VGPU_LAUNCH_GRAPH = 1,  /* arg: the CUgraphExec */
};
/* What a charged launch must do besides (marker.c): flags 0 on the hot path. */
#define VGPU_MARK_RECORD 0x1 /* its ticket crossed a VGPU_MARKER_STRIDE: time it */
#define VGPU_MARK_CHECK 0x2  /* it waited for tokens: retire markers, bound in-flight */
struct vgpu_mark {
    int flags;
    int sd;
    int slot;        /* ring entry (marker.c), -1: none */
    CUstream stream; /* the launch's stream (marker.c) */
    uint64_t ticket_end;
    uint64_t cost;    /* tokens charged */
    uint64_t nominal; /* the same launch at VGPU_TOKEN_WAVE_NS per wave */
};
/* Charges one launch to its slice device's bucket; sleeps (bounded steps) while
 * the bucket is empty. Returns at once when nothing is throttled. Sets mk->flags
 * (and, when non-zero, the rest of *mk); mk->flags must be 0 on entry. */
void vgpu_throttle_launch(enum vgpu_launch_kind kind, uint64_t arg, struct vgpu_mark *mk);

/* The per-thread default stream handle (cuda.h CU_STREAM_PER_THREAD). */
#define VGPU_STREAM_PER_THREAD ((CUstream)0x2)
/* Tokens one wave of blocks costs now: VGPU_TOKEN_WAVE_NS on a managed slice (or
 * before any sample), the learnt device-ns per wave otherwise (marker.c). Read
 * relaxed on the hot path: a plain load. */
extern _Atomic uint64_t vgpu_wave_tokens;
/* The budget's VGPU_BUDGET_F_MANAGED, as read with its generation (throttle.c). */
void vgpu_marker_set_managed(bool managed);
/* Before a launch with mk->flags set: retires completed markers, holds the
 * in-flight bound, and (VGPU_MARK_RECORD) records the begin event on stream.
 * True when the launch must be followed by vgpu_marker_end. */
bool vgpu_marker_begin(struct vgpu_mark *mk, CUstream stream);
void vgpu_marker_end(struct vgpu_mark *mk, CUresult launched);
/* The driver destroyed ctx (context.c): its events went with it. */
void vgpu_marker_ctx_gone(CUcontext ctx);
/* SM count of slice device sd, building the device map if needed. */
uint32_t vgpu_sms_of(int sd);
/* The cost table of executable graphs (throttle.c); graph.c fills it when a graph
 * is instantiated. */
void vgpu_graph_cost_put(uint64_t exec, uint64_t cost);
void vgpu_graph_cost_drop(uint64_t exec);
/* What a graph libvgpu could not cost is charged: the largest seen, at least 100
 * waves. */
uint64_t vgpu_graph_unknown_cost(void);

/* ---------------------------------------------------------------- accounting */

/* Reserves bytes on slice device sd by CAS against its limit (device counter only).
 * Returns true when admitted; a refusal is answered with vgpu_refuse(). When the
 * CAS refuses and the slice is elastic, first asks vgpud for more and waits for the
 * answer, at most VGPU_ELASTIC_WAIT_MS (elastic.c): a caller must not hold a lock
 * another hot path needs (or must say why the bounded wait is acceptable there). */
bool vgpu_reserve(int sd, uint64_t bytes);
/* The same admission without asking (never waits): for callers holding a lock,
 * which ask with vgpu_elastic_ask after dropping it. */
bool vgpu_reserve_now(int sd, uint64_t bytes);

/* Elastic memory (elastic.c): the state of one admission's requests, zeroed by
 * the caller before the first vgpu_elastic_ask. */
struct vgpu_elastic {
    uint64_t deadline; /* CLOCK_MONOTONIC ns: VGPU_ELASTIC_WAIT_MS after the first ask */
    uint64_t limit;    /* memory_limit when the last request was posted */
    bool posted;
};
/* After vgpu_reserve_now(sd, bytes) refused: posts a request for used + bytes when
 * the budget is elastic and the ceiling leaves room, and waits (futex, bounded) for
 * vgpud's answer. True when the caller should retry the admission (then call again
 * with the same *st if it still does not fit); false: refuse. No lock, no
 * allocation; syscalls only here. */
bool vgpu_elastic_ask(int sd, uint64_t bytes, struct vgpu_elastic *st);
/* vgpu_reserve's refusal path: asks and retries until admitted or refused. */
__attribute__((noinline, cold)) bool vgpu_reserve_elastic(int sd, uint64_t bytes);
/* Gives a reservation back (device counter only), clamped at zero. */
void vgpu_unreserve(int sd, uint64_t bytes);
/* After the driver succeeded: adds a reservation to this process's slot. */
void vgpu_commit(int sd, uint64_t bytes);
/* Adds bytes the driver already took beyond the reservation (device + slot),
 * without admission: the counter must tell the truth. */
void vgpu_force_charge(int sd, uint64_t bytes);
/* Credits bytes held by this process: slot first, then the device counter. */
void vgpu_credit(int sd, uint64_t bytes);
/* Current figures for queries. */
uint64_t vgpu_limit(int sd);
uint64_t vgpu_used(int sd);
/* Refusal: counts it and returns CUDA_ERROR_OUT_OF_MEMORY. */
CUresult vgpu_refuse(int sd);

/* Process-local allocation table: (namespace, key) -> record.
 *   PTR    device pointer -> allocation          ARRAY  CUarray -> array
 *   VMM    cuMemCreate handle -> physical memory VMAP   mapped VA start -> mapping (vmm.c)
 *   MIPMAP CUmipmappedArray -> its levels        GRAPHMEM (CUgraphExec, slice device) ->
 *                                                the graph's allocation nodes (graph.c) */
enum vgpu_ns {
    VGPU_NS_PTR = 1,
    VGPU_NS_ARRAY = 2,
    VGPU_NS_VMM = 3,
    VGPU_NS_VMAP = 4,
    VGPU_NS_MIPMAP = 5,
    VGPU_NS_GRAPHMEM = 6,
};
/* rec.kind of PTR / ARRAY records. */
enum vgpu_kind {
    VGPU_KIND_PLAIN = 1, /* size charged on its own */
    VGPU_KIND_POOL = 2,  /* stream-ordered: charged through its pool's reservation */
};
/* rec.kind of VMM records: the handle's life as the program sees it. */
enum vgpu_vmm_state {
    VGPU_VMM_LIVE = 1,      /* not released */
    VGPU_VMM_RELEASING = 2, /* cuMemRelease in flight */
    VGPU_VMM_RELEASED = 3,  /* released, still mapped: charged until its last unmap */
};
/* rec.kind of VMAP records. */
enum vgpu_vmap_state {
    VGPU_VMAP_MAPPED = 1,
    VGPU_VMAP_UNMAPPING = 2, /* a cuMemUnmap covering it is in flight */
};
struct vgpu_rec {
    uint64_t size; /* bytes charged (PTR, ARRAY, VMM); bytes of VA mapped (VMAP) */
    union {
        uint64_t ctx;    /* PTR/ARRAY: CUcontext it belongs to; 0 when not context-bound */
        uint64_t gen;    /* VMM: creation number, tells a reused handle value apart */
        uint64_t handle; /* VMAP: the handle mapped there */
    };
    int16_t sd;
    uint8_t kind; /* enum vgpu_kind, vgpu_vmm_state or vgpu_vmap_state (by namespace) */
    uint8_t pad;
    union {
        uint32_t pool; /* PTR of VGPU_KIND_POOL: pool record index */
        uint32_t maps; /* VMM: mappings of the handle, counting maps in flight */
        uint32_t hgen; /* VMAP: low 32 bits of the mapped handle's gen */
    };
};
/* Returns false when the table could not grow (the charge then stays until exit). */
bool vgpu_tab_insert(int ns, uint64_t key, const struct vgpu_rec *rec);
/* As vgpu_tab_insert; an entry already under (ns, key) is replaced and returned in
 * *replaced. Returns -1 when the table could not grow, 0 inserted, 1 replaced. */
int vgpu_tab_put(int ns, uint64_t key, const struct vgpu_rec *rec, struct vgpu_rec *replaced);
/* Removes and returns the record; false when unknown. */
bool vgpu_tab_remove(int ns, uint64_t key, struct vgpu_rec *out);
/* What a vgpu_tab_fn does with the record it is shown. */
enum vgpu_tab_act { VGPU_TAB_KEEP = 0, VGPU_TAB_WRITE = 1, VGPU_TAB_DROP = 2 };
/* Sees (and may change) one record with its stripe lock held: must only look at
 * and change *rec and *arg — no table call, no driver call, no accounting. */
typedef int (*vgpu_tab_fn)(uint64_t key, struct vgpu_rec *rec, void *arg);
/* Calls fn on the record under (ns, key) and applies its verdict (keep, write *rec
 * back, drop), atomically under the stripe lock. False when unknown (fn not called). */
bool vgpu_tab_update(int ns, uint64_t key, vgpu_tab_fn fn, void *arg);
/* The smallest key of namespace ns in [from, to), in *key. False when none. Slow
 * path: walks the whole table, one stripe lock at a time. */
bool vgpu_tab_next(int ns, uint64_t from, uint64_t to, uint64_t *key);
/* A context was destroyed: the driver freed every plain allocation, array,
 * mipmapped array and executable graph (with its graph memory) made in it. Calls fn for each such record (stripe lock held: fn must only account)
 * and drops it. VMM handles and mappings are not bound to a context and stay.
 * Slow path (walks the table). */
void vgpu_tab_drop_ctx(uint64_t ctx, void (*fn)(const struct vgpu_rec *));

/* Pools (pool.c). */
void vgpu_pools_sync_used(void);
void vgpu_pool_after_free(uint32_t pool, uint64_t size);

/* Process-local spinlock: held for a handful of instructions only (never across a
 * driver call), resettable in a fork child by storing 0. */
typedef struct {
    _Atomic int v;
} vgpu_lock_t;
void vgpu_lock_slow(vgpu_lock_t *l);
static inline void vgpu_lock(vgpu_lock_t *l)
{
    if (VGPU_UNLIKELY(atomic_exchange_explicit(&l->v, 1, memory_order_acquire)))
        vgpu_lock_slow(l);
}
static inline void vgpu_unlock(vgpu_lock_t *l)
{
    atomic_store_explicit(&l->v, 0, memory_order_release);
}

/* ------------------------------------------------------------ module registry */

/*
 * A module's lifecycle handlers: what it does when the process initializes and
 * around fork(). init.c runs them, walking vgpu_modules[] (modules.c) in order
 * (fork_prepare in reverse order, as pthread_atfork does).
 *
 * Why a registry: init.c owns the process lifecycle (lazy initialization, fork,
 * exit) but none of the modules' state. Each module keeps its reset code next to
 * the state it resets and describes it in one struct; init.c names no module, so
 * the modules depend on init.c and never the other way round (before, init.c
 * called every module's init and reset by name, and each module called back into
 * init.c: one include/call cycle).
 *
 * Why a constant list and not registration from constructors: initialization is
 * lazy and can run before libvgpu's own constructors have (ELF runs a library's
 * constructors after those of its dependencies, and nothing depends on a
 * preloaded libvgpu, so another library's constructor may call cuInit first). A
 * list fixed at link time is complete before any code runs, needs no allocation,
 * no lock and no syscall, and makes the order explicit.
 *
 * Nothing here is on a hot path: init runs once under pthread_once, the fork
 * handlers only at fork(). Any handler may be NULL.
 */
struct vgpu_module {
    const char *name;
    /* Once, when the mode is decided and before it is published (no hook of this
     * process has passed the mode check yet). */
    void (*init)(int mode);
    /* pthread_atfork: before fork() in the forking thread, after it in the parent. */
    void (*fork_prepare)(void);
    void (*fork_parent)(void);
    /* After fork() in the child (one thread): drop what the parent owns. No
     * allocation: another thread may have held malloc's lock at fork time. */
    void (*fork_child)(int mode);
};
extern const struct vgpu_module vgpu_module_account; /* the allocation table */
extern const struct vgpu_module vgpu_module_pool;
extern const struct vgpu_module vgpu_module_context;
extern const struct vgpu_module vgpu_module_throttle;
extern const struct vgpu_module vgpu_module_marker;
extern const struct vgpu_module vgpu_module_elastic;
extern const struct vgpu_module *const vgpu_modules[];
extern const size_t vgpu_nmodules;

#endif /* VGPU_INTERNAL_H */
