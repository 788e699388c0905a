/*
 * launch.c — kernel and graph launches.
 *
 * Every launch entry point (cuLaunchKernel, cuLaunchKernelEx,
 * cuLaunchCooperativeKernel, cuGraphLaunch, each with its _ptsz variant) goes
 * through the same gate, so that graph and cooperative launches — which vLLM
 * decode and some training loops rely on — can never slip past the throttle.
 *
 * THE THROTTLE ITSELF ARRIVES WITH ISSUE 5. Today the gate is only its fast path:
 * one relaxed load of a process-global flag that is false while every token_rate
 * in the budget is 0, then a direct tail call of the real function. No syscall, no
 * lock, no getenv, no driver call is added. When the flag is set (a budget with a
 * token rate), vgpu_throttle_gate() is where the token bucket will charge the
 * launch against usage.dev[d].tokens; for now it only lets the launch through.
 */
#include "vgpu_internal.h"

/* Issue 5: token-bucket admission of one launch. */
static void vgpu_throttle_gate(void)
{
}

/*
 * The fast path reads the real pointer (NULL until initialization resolved it) and
 * the throttle flag, then jumps to the driver: two loads, one branch, a tail call.
 * Everything else — first-call initialization, a missing driver symbol, the
 * throttle — happens in an out-of-line cold function that takes no arguments and
 * returns the function to jump to (NULL: the driver lacks it), so the fast path
 * keeps its arguments where they are.
 */
#define LAUNCH_HOOK(name, params, args)                                            \
    __attribute__((noinline, cold)) static name##_fn slow_##name(void)             \
    {                                                                              \
        vgpu_mode();                                                               \
        name##_fn real = vgpu_real.name;                                           \
        if (!real)                                                                 \
            return NULL;                                                           \
        if (atomic_load_explicit(&vgpu_g.throttle_active, memory_order_relaxed))   \
            vgpu_throttle_gate();                                                  \
        return real;                                                               \
    }                                                                              \
    VGPU_EXPORT CUresult name params                                               \
    {                                                                              \
        name##_fn real = vgpu_real.name;                                           \
        if (VGPU_UNLIKELY(!real ||                                                 \
                          atomic_load_explicit(&vgpu_g.throttle_active,            \
                                               memory_order_relaxed))) {           \
            real = slow_##name();                                                  \
            if (!real)                                                             \
                return CUDA_ERROR_NOT_FOUND;                                       \
        }                                                                          \
        return real args;                                                          \
    }

#define KERNEL_PARAMS                                                                      \
    (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,     \
     unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params,      \
     void **extra)
#define KERNEL_ARGS (f, gx, gy, gz, bx, by, bz, shmem, s, params, extra)
#define EX_PARAMS (const CUlaunchConfig *config, CUfunction f, void **params, void **extra)
#define EX_ARGS (config, f, params, extra)
#define COOP_PARAMS                                                                        \
    (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,     \
     unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params)
#define COOP_ARGS (f, gx, gy, gz, bx, by, bz, shmem, s, params)
#define GRAPH_PARAMS (CUgraphExec g, CUstream s)
#define GRAPH_ARGS (g, s)

LAUNCH_HOOK(cuLaunchKernel, KERNEL_PARAMS, KERNEL_ARGS)
LAUNCH_HOOK(cuLaunchKernel_ptsz, KERNEL_PARAMS, KERNEL_ARGS)
LAUNCH_HOOK(cuLaunchKernelEx, EX_PARAMS, EX_ARGS)
LAUNCH_HOOK(cuLaunchKernelEx_ptsz, EX_PARAMS, EX_ARGS)
LAUNCH_HOOK(cuLaunchCooperativeKernel, COOP_PARAMS, COOP_ARGS)
LAUNCH_HOOK(cuLaunchCooperativeKernel_ptsz, COOP_PARAMS, COOP_ARGS)
LAUNCH_HOOK(cuGraphLaunch, GRAPH_PARAMS, GRAPH_ARGS)
LAUNCH_HOOK(cuGraphLaunch_ptsz, GRAPH_PARAMS, GRAPH_ARGS)
