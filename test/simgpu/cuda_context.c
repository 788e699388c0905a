//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * cuda_context.c — contexts: the per-thread current-context stack, refcounted primary
 * contexts, created contexts (with their cuCtxAttach / cuCtxDetach usage count) and
 * cuCtxSynchronize.
 */
#define _GNU_SOURCE
#include "cuda_internal.h"

/* A context handle the caller passed: primary slots or a created context we know. */
static bool ctx_known(struct sim_ctx *c)
{
    if (c == NULL)
        return false;
    if (c >= &G.primary[0] && c < &G.primary[SIM_MAX_DEVICES])
        return ctx_live(c);
    for (struct sim_ctx *it = G.ctxs; it != NULL; it = it->next)
        if (it == c)
            return ctx_live(c);
    return false;
}

/* ------------------------------------------------------------------ contexts */

static CUresult ctx_activate(struct sim_ctx *c, int ord, unsigned flags, bool primary)
{
    int dev = G.ord2dev[ord];
    char path[SIM_NODES_LEN + 32];
    node_path(path, sizeof path, dev);
    /* Like the real driver, a context holds its device node open for its lifetime. */
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return CUDA_ERROR_NO_DEVICE;
    CUresult r = charge(dev, G.st->hdr.context_memory);
    if (r != CUDA_SUCCESS) {
        close(fd);
        return r;
    }
    atomic_fetch_add(&G.st->proc[G.slot].dev[dev].contexts, 1);
    c->magic = CTX_MAGIC;
    c->epoch = G.epoch;
    c->ord = ord;
    c->dev = dev;
    c->fd = fd;
    c->flags = flags;
    c->primary = primary;
    c->cache_config = 0;
    c->shmem_config = 0;
    c->limits_set = 0;
    atomic_store(&c->last_end, 0);
    atomic_store(&c->null_end, 0);
    c->alive = true;
    return CUDA_SUCCESS;
}

/* Destroying a context frees everything allocated in it, as the real driver does. */
static void ctx_deactivate(struct sim_ctx *c)
{
    for (unsigned h = 0; h < AT_SIZE; h++) {
        struct sim_alloc **pp = &G.at[h];
        while (*pp != NULL) {
            struct sim_alloc *a = *pp;
            if (a->ctx == c && a->kind != AK_POOL) {
                *pp = a->next;
                alloc_drop(a);
            } else {
                pp = &a->next;
            }
        }
    }
    c->alive = false;
    credit(c->dev, G.st->hdr.context_memory);
    atomic_fetch_sub(&G.st->proc[G.slot].dev[c->dev].contexts, 1);
    close(c->fd);
    c->fd = -1;
}

/* ------------------------------------------------------------------ primary contexts */

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice d)
{
    CHECK_INIT();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&G.lock);
    struct sim_ctx *c = &G.primary[d];
    CUresult r = CUDA_SUCCESS;
    if (!ctx_live(c)) {
        unsigned flags = c->epoch == G.epoch ? c->flags : 0;
        r = ctx_activate(c, d, flags, true);
        if (r == CUDA_SUCCESS)
            c->refcount = 0;
    }
    if (r == CUDA_SUCCESS) {
        c->refcount++;
        *pctx = (CUcontext)c;
    }
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d)
{
    CHECK_INIT();
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&G.lock);
    struct sim_ctx *c = &G.primary[d];
    CUresult r = CUDA_SUCCESS;
    if (!ctx_live(c) || c->refcount == 0)
        r = CUDA_ERROR_INVALID_CONTEXT;
    else if (--c->refcount == 0)
        ctx_deactivate(c);
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice d) { return cuDevicePrimaryCtxRelease_v2(d); }

EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice d)
{
    CHECK_INIT();
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&G.lock);
    struct sim_ctx *c = &G.primary[d];
    if (ctx_live(c)) {
        ctx_deactivate(c);
        c->refcount = 0;
    }
    pthread_mutex_unlock(&G.lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxReset(CUdevice d) { return cuDevicePrimaryCtxReset_v2(d); }

EXPORT CUresult cuDevicePrimaryCtxGetState(CUdevice d, unsigned int *flags, int *active)
{
    CHECK_INIT();
    if (flags == NULL || active == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&G.lock);
    struct sim_ctx *c = &G.primary[d];
    *active = ctx_live(c) ? 1 : 0;
    *flags = c->epoch == G.epoch ? c->flags : 0;
    pthread_mutex_unlock(&G.lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice d, unsigned int flags)
{
    CHECK_INIT();
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&G.lock);
    G.primary[d].flags = flags;
    G.primary[d].epoch = G.epoch;
    pthread_mutex_unlock(&G.lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxSetFlags(CUdevice d, unsigned int flags)
{
    return cuDevicePrimaryCtxSetFlags_v2(d, flags);
}

/* ------------------------------------------------------------------ contexts */

EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice d)
{
    CHECK_INIT();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    if (t_depth >= CTX_STACK_MAX)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&G.lock);
    CUresult r = ctx_activate(c, d, flags, false);
    if (r == CUDA_SUCCESS) {
        c->usage = 1;
        c->next = G.ctxs;
        G.ctxs = c;
    }
    pthread_mutex_unlock(&G.lock);
    if (r != CUDA_SUCCESS) {
        free(c);
        return r;
    }
    t_stack[t_depth++] = c; /* a new context becomes current */
    *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice d)
{
    return cuCtxCreate_v2(pctx, flags, d);
}

/* CUDA 11.4 form with execution-affinity parameters (ignored: no SM partitioning). */
EXPORT CUresult cuCtxCreate_v3(CUcontext *pctx, void *paramsArray, int numParams,
                               unsigned int flags, CUdevice d)
{
    if (numParams < 0 || (numParams > 0 && paramsArray == NULL))
        return ready() ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_INITIALIZED;
    return cuCtxCreate_v2(pctx, flags, d);
}

/* Destroys the created context c (lock held): frees what was allocated in it and
 * unlinks it. */
static void ctx_destroy_locked(struct sim_ctx *c)
{
    ctx_deactivate(c);
    for (struct sim_ctx **pp = &G.ctxs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    /* The struct is never freed: stale handles in other threads' stacks stay
     * readable and simply test as dead. */
}

EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    CHECK_INIT();
    struct sim_ctx *c = (struct sim_ctx *)ctx;
    pthread_mutex_lock(&G.lock);
    if (!ctx_known(c) || c->primary) {
        pthread_mutex_unlock(&G.lock);
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    ctx_destroy_locked(c); /* whatever its usage count, as the driver */
    pthread_mutex_unlock(&G.lock);
    if (cur_ctx() == c)
        t_depth--;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxDestroy(CUcontext ctx) { return cuCtxDestroy_v2(ctx); }

/* The usage count of created contexts (the pre-4.0 API, still used by pycuda):
 * cuCtxAttach adds one to the current context and hands it back; cuCtxDetach,
 * called with the current context, drops one and destroys the context (and what was
 * allocated in it) when none is left. Primary contexts have no usage count of this
 * kind: both refuse them (CUDA_ERROR_INVALID_CONTEXT; the documentation does not
 * say, this simulation's choice). */
EXPORT CUresult cuCtxAttach(CUcontext *pctx, unsigned int flags)
{
    CHECK_INIT();
    if (pctx == NULL || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (c->primary)
        return CUDA_ERROR_INVALID_CONTEXT;
    pthread_mutex_lock(&G.lock);
    c->usage++;
    pthread_mutex_unlock(&G.lock);
    *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxDetach(CUcontext ctx)
{
    CHECK_INIT();
    struct sim_ctx *c = (struct sim_ctx *)ctx;
    if (c == NULL || cur_ctx() != c)
        return CUDA_ERROR_INVALID_CONTEXT;
    pthread_mutex_lock(&G.lock);
    if (!ctx_known(c) || c->primary || c->usage == 0) {
        pthread_mutex_unlock(&G.lock);
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    bool gone = --c->usage == 0;
    if (gone)
        ctx_destroy_locked(c);
    pthread_mutex_unlock(&G.lock);
    if (gone)
        t_depth--; /* it was current */
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetCurrent(CUcontext *pctx)
{
    CHECK_INIT();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pctx = (CUcontext)cur_ctx();
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSetCurrent(CUcontext ctx)
{
    CHECK_INIT();
    struct sim_ctx *c = (struct sim_ctx *)ctx;
    if (c == NULL) {
        if (t_depth > 0)
            t_depth--;
        return CUDA_SUCCESS;
    }
    pthread_mutex_lock(&G.lock);
    bool ok = ctx_known(c);
    pthread_mutex_unlock(&G.lock);
    if (!ok)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (t_depth == 0)
        t_stack[t_depth++] = c;
    else
        t_stack[t_depth - 1] = c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
    CHECK_INIT();
    struct sim_ctx *c = (struct sim_ctx *)ctx;
    pthread_mutex_lock(&G.lock);
    bool ok = ctx_known(c);
    pthread_mutex_unlock(&G.lock);
    if (!ok)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (t_depth >= CTX_STACK_MAX)
        return CUDA_ERROR_INVALID_VALUE;
    t_stack[t_depth++] = c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxPushCurrent(CUcontext ctx) { return cuCtxPushCurrent_v2(ctx); }

EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *pctx)
{
    CHECK_INIT();
    if (t_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    struct sim_ctx *c = t_stack[--t_depth];
    if (pctx != NULL)
        *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxPopCurrent(CUcontext *pctx) { return cuCtxPopCurrent_v2(pctx); }

EXPORT CUresult cuCtxGetDevice(CUdevice *dev)
{
    CHECK_INIT();
    if (dev == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    *dev = c->ord;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSynchronize(void)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    uint64_t end = atomic_load(&c->last_end);
    if (end > sim_now_ns())
        sim_sleep_until(end);
    pthread_mutex_lock(&G.lock);
    pools_sync_trim(c->dev);
    pthread_mutex_unlock(&G.lock);
    return CUDA_SUCCESS;
}
