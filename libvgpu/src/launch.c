/*
 * launch.c — kernel and graph launches.
 *
 * Every launch entry point (cuLaunchKernel, cuLaunchKernelEx,
 * cuLaunchCooperativeKernel, cuGraphLaunch, each with its _ptsz variant; the
 * pre-CUDA-4.0 cuLaunch, cuLaunchGrid, cuLaunchGridAsync; and the deprecated
 * cuLaunchCooperativeKernelMultiDevice) goes through the same gate, so that graph,
 * cooperative and legacy launches — which vLLM decode, some training loops and
 * old bindings rely on — can never slip past the throttle.
 *
 * The fast path reads the real pointer (NULL until initialization resolved it), the
 * budget's generation and the gate word (vgpu_internal.h, struct vgpu_gate), then
 * jumps to the driver: four loads, one compare-and-branch, a tail call. No syscall,
 * no lock, no getenv, no driver call. The gate is open while nothing of the slice
 * is throttled under the budget's current generation.
 *
 * Everything else — first-call initialization, a missing driver symbol, the token
 * bucket (throttle.c) — happens in an out-of-line function with the same
 * parameters, reached by a tail call too: both exits of the hook are jumps with the
 * arguments untouched, so the fast path saves no register and builds no frame. The
 * grid's block count (the launch's cost) is computed only on the slow path.
 */
#include "vgpu_internal.h"

/* charge: the statement that takes the launch's tokens into mk (slow path only);
 * stream: the stream the launch runs on, where a marker launch's events go
 * (marker.c: a begin event before the launch, an end event after it). */
#define LAUNCH_HOOK(name, params, args, charge, stream)                \
    __attribute__((noinline)) static CUresult slow_##name params       \
    {                                                                  \
        vgpu_mode();                                                   \
        name##_fn real = vgpu_real.name;                               \
        if (!real)                                                     \
            return CUDA_ERROR_NOT_FOUND;                               \
        struct vgpu_mark mk;                                           \
        mk.flags = 0;                                                  \
        charge;                                                        \
        if (VGPU_LIKELY(!mk.flags) || !vgpu_marker_begin(&mk, stream)) \
            return real args;                                          \
        CUresult r = real args;                                        \
        vgpu_marker_end(&mk, r);                                       \
        return r;                                                      \
    }                                                                  \
    VGPU_EXPORT CUresult name params                                   \
    {                                                                  \
        name##_fn real = vgpu_real.name;                               \
        if (VGPU_UNLIKELY(!real || vgpu_gate_closed()))                \
            return slow_##name args;                                   \
        return real args;                                              \
    }

/* Blocks of a grid; 0 for a malformed launch (the driver rejects it, nothing to charge). */
static inline uint64_t grid_blocks(unsigned gx, unsigned gy, unsigned gz)
{
    return (uint64_t)gx * gy * gz;
}

static inline uint64_t config_blocks(const CUlaunchConfig *c)
{
    return c ? grid_blocks(c->gridDimX, c->gridDimY, c->gridDimZ) : 0;
}

/* cuLaunchGrid's dimensions are ints: a non-positive one is malformed. */
static inline uint64_t int_grid_blocks(int w, int h)
{
    return w > 0 && h > 0 ? (uint64_t)w * (uint64_t)h : 0;
}

/* A multi-device cooperative launch is one kernel launch per entry, each charged
 * as such (to the current context's device: see README "Known limits"). Its
 * entries are not timed (one stream per device); a marker launch among them
 * retires markers and holds the in-flight bound all the same. */
static void charge_multi(const CUDA_LAUNCH_PARAMS *list, unsigned int n)
{
    if (!list)
        return; /* the driver refuses it */
    for (unsigned int i = 0; i < n; i++) {
        struct vgpu_mark m;
        m.flags = 0;
        vgpu_throttle_launch(VGPU_LAUNCH_KERNEL,
                             grid_blocks(list[i].gridDimX, list[i].gridDimY, list[i].gridDimZ), &m);
        if (m.flags) {
            m.flags &= ~VGPU_MARK_RECORD;
            vgpu_marker_begin(&m, NULL);
        }
    }
}

/* A _ptsz entry point's NULL stream is the per-thread default stream; the event
 * calls (no _ptsz form used) must name it. */
static inline CUstream ptsz_stream(CUstream s) { return s ? s : VGPU_STREAM_PER_THREAD; }
static inline CUstream config_stream(const CUlaunchConfig *c) { return c ? c->hStream : NULL; }

#define KERNEL_PARAMS                                                                  \
    (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, \
     unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params,  \
     void **extra)
#define KERNEL_ARGS (f, gx, gy, gz, bx, by, bz, shmem, s, params, extra)
#define EX_PARAMS (const CUlaunchConfig *config, CUfunction f, void **params, void **extra)
#define EX_ARGS (config, f, params, extra)
#define COOP_PARAMS                                                                    \
    (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, \
     unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params)
#define COOP_ARGS (f, gx, gy, gz, bx, by, bz, shmem, s, params)
#define GRAPH_PARAMS (CUgraphExec g, CUstream s)
#define GRAPH_ARGS (g, s)
#define GRID_PARAMS (CUfunction f, int w, int h)
#define GRID_ARGS (f, w, h)
#define GRID_ASYNC_PARAMS (CUfunction f, int w, int h, CUstream s)
#define GRID_ASYNC_ARGS (f, w, h, s)
#define MULTI_PARAMS (CUDA_LAUNCH_PARAMS * list, unsigned int n, unsigned int flags)
#define MULTI_ARGS (list, n, flags)

#define KERNEL(blocks) vgpu_throttle_launch(VGPU_LAUNCH_KERNEL, blocks, &mk)
#define GRAPH(exec) vgpu_throttle_launch(VGPU_LAUNCH_GRAPH, (uint64_t)(uintptr_t)(exec), &mk)
#define GRID3 grid_blocks(gx, gy, gz)
LAUNCH_HOOK(cuLaunchKernel, KERNEL_PARAMS, KERNEL_ARGS, KERNEL(GRID3), s)
LAUNCH_HOOK(cuLaunchKernel_ptsz, KERNEL_PARAMS, KERNEL_ARGS, KERNEL(GRID3), ptsz_stream(s))
LAUNCH_HOOK(cuLaunchKernelEx, EX_PARAMS, EX_ARGS, KERNEL(config_blocks(config)),
            config_stream(config))
LAUNCH_HOOK(cuLaunchKernelEx_ptsz, EX_PARAMS, EX_ARGS, KERNEL(config_blocks(config)),
            ptsz_stream(config_stream(config)))
LAUNCH_HOOK(cuLaunchCooperativeKernel, COOP_PARAMS, COOP_ARGS, KERNEL(GRID3), s)
LAUNCH_HOOK(cuLaunchCooperativeKernel_ptsz, COOP_PARAMS, COOP_ARGS, KERNEL(GRID3), ptsz_stream(s))
/* Graph launches get the same begin / end events as kernels: the graph's work runs
 * in order on s between them. */
LAUNCH_HOOK(cuGraphLaunch, GRAPH_PARAMS, GRAPH_ARGS, GRAPH(g), s)
LAUNCH_HOOK(cuGraphLaunch_ptsz, GRAPH_PARAMS, GRAPH_ARGS, GRAPH(g), ptsz_stream(s))
/* cuLaunch runs a grid of a single block; it and cuLaunchGrid use the legacy stream. */
LAUNCH_HOOK(cuLaunch, (CUfunction f), (f), KERNEL(1), NULL)
LAUNCH_HOOK(cuLaunchGrid, GRID_PARAMS, GRID_ARGS, KERNEL(int_grid_blocks(w, h)), NULL)
LAUNCH_HOOK(cuLaunchGridAsync, GRID_ASYNC_PARAMS, GRID_ASYNC_ARGS, KERNEL(int_grid_blocks(w, h)), s)
LAUNCH_HOOK(cuLaunchCooperativeKernelMultiDevice, MULTI_PARAMS, MULTI_ARGS, charge_multi(list, n),
            NULL)
#undef GRID3
#undef KERNEL
#undef GRAPH
