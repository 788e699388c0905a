/*
 * launch.c — kernel and graph launches.
 *
 * Every launch entry point (cuLaunchKernel, cuLaunchKernelEx,
 * cuLaunchCooperativeKernel, cuGraphLaunch, each with its _ptsz variant) goes
 * through the same gate, so that graph and cooperative launches — which vLLM
 * decode and some training loops rely on — can never slip past the throttle.
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

#define LAUNCH_HOOK(name, params, args, kind, arg)               \
    __attribute__((noinline)) static CUresult slow_##name params \
    {                                                            \
        vgpu_mode();                                             \
        name##_fn real = vgpu_real.name;                         \
        if (!real)                                               \
            return CUDA_ERROR_NOT_FOUND;                         \
        vgpu_throttle_launch(kind, arg);                         \
        return real args;                                        \
    }                                                            \
    VGPU_EXPORT CUresult name params                             \
    {                                                            \
        name##_fn real = vgpu_real.name;                         \
        if (VGPU_UNLIKELY(!real || vgpu_gate_closed()))          \
            return slow_##name args;                             \
        return real args;                                        \
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

#define K VGPU_LAUNCH_KERNEL
#define G VGPU_LAUNCH_GRAPH
LAUNCH_HOOK(cuLaunchKernel, KERNEL_PARAMS, KERNEL_ARGS, K, grid_blocks(gx, gy, gz))
LAUNCH_HOOK(cuLaunchKernel_ptsz, KERNEL_PARAMS, KERNEL_ARGS, K, grid_blocks(gx, gy, gz))
LAUNCH_HOOK(cuLaunchKernelEx, EX_PARAMS, EX_ARGS, K, config_blocks(config))
LAUNCH_HOOK(cuLaunchKernelEx_ptsz, EX_PARAMS, EX_ARGS, K, config_blocks(config))
LAUNCH_HOOK(cuLaunchCooperativeKernel, COOP_PARAMS, COOP_ARGS, K, grid_blocks(gx, gy, gz))
LAUNCH_HOOK(cuLaunchCooperativeKernel_ptsz, COOP_PARAMS, COOP_ARGS, K, grid_blocks(gx, gy, gz))
LAUNCH_HOOK(cuGraphLaunch, GRAPH_PARAMS, GRAPH_ARGS, G, (uint64_t)(uintptr_t)g)
LAUNCH_HOOK(cuGraphLaunch_ptsz, GRAPH_PARAMS, GRAPH_ARGS, G, (uint64_t)(uintptr_t)g)
#undef K
#undef G
