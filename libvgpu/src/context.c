/*
 * context.c — contexts: which device an allocation lands on, and what a context
 * costs and frees.
 *
 * Footprint. A context costs device memory of its own (code, stacks, the driver's
 * heaps): budget.dev[d].context_overhead bytes are charged per context this process
 * holds on device d, admitted by the same CAS reservation as any allocation, so a
 * full slice cannot also create contexts past its limit.
 *   cuCtxCreate(_v2/_v3/_v4),  charged before the call, credited at cuCtxDestroy(_v2),
 *   cuGLCtxCreate(_v2) (GL)
 *                              or at the cuCtxDetach that drops its last usage count
 *                              (cuCtxAttach adds one: pycuda detaches, never destroys)
 *   primary context            charged on the process's first cuDevicePrimaryCtxRetain
 *                              of a device, credited when the last reference is
 *                              released (cuDevicePrimaryCtxRelease(_v2)) or the
 *                              context is reset (cuDevicePrimaryCtxReset(_v2))
 * The amount charged is remembered per context, so a budget change of
 * context_overhead never makes a release credit more than was charged. The sim
 * charges its --context-memory the same way, so the two figures agree.
 *
 * Teardown. Destroying a context (created: destroy; primary: last release or
 * reset) frees everything allocated in it — cuMemAlloc/Pitch/Managed memory and
 * arrays — as the real driver does; libvgpu credits those allocations then.
 * Stream-ordered pools and VMM handles are not bound to a context and stay.
 *
 * Target device. Allocations go to the device of the calling thread's current
 * context. cuCtxGetCurrent is one cheap driver call; the context -> slice device
 * answer is cached in a small lock-free table (filled on first sight, dropped when
 * the context is destroyed), so the hot path needs no cuCtxGetDevice.
 *
 * Context operations are rare: a process-local mutex (re-initialized in a fork
 * child) keeps the primary reference counts consistent with the driver's.
 */
#include <pthread.h>
#include <string.h>

#include "vgpu_internal.h"

/* ---------------------------------------------------------------- ctx cache */

#define CTX_CACHE 64

static struct {
    _Atomic(CUcontext) ctx; /* NULL: empty entry */
    int sd;
    CUdevice ord;
} ctx_cache[CTX_CACHE];
static _Atomic int ctx_cache_n;
static vgpu_lock_t ctx_cache_lock;

static void cache_put(CUcontext ctx, int sd, CUdevice ord)
{
    vgpu_lock(&ctx_cache_lock);
    int n = atomic_load_explicit(&ctx_cache_n, memory_order_relaxed);
    int slot = -1;
    for (int i = 0; i < n; i++) {
        CUcontext c = atomic_load_explicit(&ctx_cache[i].ctx, memory_order_relaxed);
        if (c == ctx) {
            slot = -2; /* already there */
            break;
        }
        if (!c && slot == -1)
            slot = i;
    }
    if (slot == -1 && n < CTX_CACHE)
        slot = n;
    if (slot >= 0) {
        ctx_cache[slot].sd = sd;
        ctx_cache[slot].ord = ord;
        /* Publish after the payload: a reader that matches ctx sees sd/ord. */
        atomic_store_explicit(&ctx_cache[slot].ctx, ctx, memory_order_release);
        if (slot == n)
            atomic_store_explicit(&ctx_cache_n, n + 1, memory_order_release);
    }
    vgpu_unlock(&ctx_cache_lock);
}

static void cache_drop(CUcontext ctx)
{
    vgpu_lock(&ctx_cache_lock);
    int n = atomic_load_explicit(&ctx_cache_n, memory_order_relaxed);
    for (int i = 0; i < n; i++)
        if (atomic_load_explicit(&ctx_cache[i].ctx, memory_order_relaxed) == ctx)
            atomic_store_explicit(&ctx_cache[i].ctx, NULL, memory_order_release);
    vgpu_unlock(&ctx_cache_lock);
}

int vgpu_current_target(CUcontext *pctx, CUdevice *ordinal, CUresult *err)
{
    CUcontext ctx = NULL;
    CUresult r =
        vgpu_real.cuCtxGetCurrent ? vgpu_real.cuCtxGetCurrent(&ctx) : CUDA_ERROR_NOT_INITIALIZED;
    if (VGPU_UNLIKELY(r != CUDA_SUCCESS)) {
        *err = r;
        return -2;
    }
    if (VGPU_UNLIKELY(!ctx)) {
        *err = CUDA_ERROR_INVALID_CONTEXT;
        return -2;
    }
    if (pctx)
        *pctx = ctx;
    int n = atomic_load_explicit(&ctx_cache_n, memory_order_acquire);
    for (int i = 0; i < n; i++) {
        if (atomic_load_explicit(&ctx_cache[i].ctx, memory_order_acquire) == ctx) {
            int sd = ctx_cache[i].sd;
            if (ordinal)
                *ordinal = ctx_cache[i].ord;
            if (VGPU_UNLIKELY(sd < 0)) {
                *err = CUDA_ERROR_OUT_OF_MEMORY;
                return -1;
            }
            return sd;
        }
    }
    /* First sight of this context: ask the driver (it also rejects a dead one). */
    CUdevice dev = -1;
    r = vgpu_real.cuCtxGetDevice ? vgpu_real.cuCtxGetDevice(&dev) : CUDA_ERROR_NOT_INITIALIZED;
    if (r != CUDA_SUCCESS) {
        *err = r;
        return -2;
    }
    if (ordinal)
        *ordinal = dev;
    int sd = vgpu_slice_dev_of_ordinal(dev, err);
    if (sd >= -1)
        cache_put(ctx, sd, dev);
    return sd;
}

/* --------------------------------------------------------------- footprints */

#define MAX_CREATED 256

struct created_ctx {
    CUcontext ctx;
    int sd;
    int refs; /* usage count: 1 at creation, +1 per cuCtxAttach, -1 per cuCtxDetach */
    uint64_t charged;
};

static pthread_mutex_t ctx_mu = PTHREAD_MUTEX_INITIALIZER;
static struct created_ctx created[MAX_CREATED];
static int ncreated;
static int prim_refs[VGPU_MAX_ORDINALS];
static int prim_sd[VGPU_MAX_ORDINALS];
static uint64_t prim_charged[VGPU_MAX_ORDINALS];
static CUcontext prim_ctx[VGPU_MAX_ORDINALS];

static void ctx_fork_child(int mode)
{
    (void)mode;
    pthread_mutex_init(&ctx_mu, NULL);
    memset(created, 0, sizeof created);
    ncreated = 0;
    memset(prim_refs, 0, sizeof prim_refs);
    memset(prim_charged, 0, sizeof prim_charged);
    memset(prim_ctx, 0, sizeof prim_ctx);
    /* The parent's context handles mean nothing in the child. */
    for (int i = 0; i < CTX_CACHE; i++)
        atomic_store_explicit(&ctx_cache[i].ctx, NULL, memory_order_relaxed);
    atomic_store_explicit(&ctx_cache_n, 0, memory_order_relaxed);
    atomic_store_explicit(&ctx_cache_lock.v, 0, memory_order_relaxed);
}

const struct vgpu_module vgpu_module_context = {
    .name = "context",
    .fork_child = ctx_fork_child,
};

static void ctx_counted(int delta)
{
    struct vgpu_slot *s = atomic_load_explicit(&vgpu_g.slot, memory_order_acquire);
    if (!s)
        return;
    if (delta > 0) {
        __atomic_fetch_add(&s->contexts, 1, __ATOMIC_RELAXED);
    } else {
        uint64_t cur = __atomic_load_n(&s->contexts, __ATOMIC_RELAXED);
        while (cur && !__atomic_compare_exchange_n(&s->contexts, &cur, cur - 1, true,
                                                   __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            ;
    }
}

static void credit_rec(const struct vgpu_rec *rec) { vgpu_credit(rec->sd, rec->size); }

/* The driver destroyed ctx: its allocations and its footprint go back. */
static void ctx_torn_down(CUcontext ctx, int sd, uint64_t charged)
{
    vgpu_tab_drop_ctx((uint64_t)(uintptr_t)ctx, credit_rec);
    cache_drop(ctx);
    vgpu_marker_ctx_gone(ctx);
    if (sd >= 0)
        vgpu_credit(sd, charged);
    ctx_counted(-1);
}

/* Admission for a new context on `dev`. Returns the slice device (>= 0) with the
 * overhead reserved in *charge, or -1 with *ret set. */
static int ctx_admit(CUdevice dev, uint64_t *charge, CUresult *ret)
{
    CUresult err;
    int sd = vgpu_slice_dev_of_ordinal(dev, &err);
    if (sd < 0) {
        *ret = err;
        return -1;
    }
    if (!vgpu_slot_get()) {
        *ret = CUDA_ERROR_OUT_OF_MEMORY;
        return -1;
    }
    uint64_t ovh = __atomic_load_n(&vgpu_g.budget->dev[sd].context_overhead, __ATOMIC_RELAXED);
    if (!vgpu_reserve(sd, ovh)) {
        *ret = vgpu_refuse(sd);
        return -1;
    }
    *charge = ovh;
    return sd;
}

static void ctx_created(CUcontext ctx, CUdevice dev, int sd, uint64_t charge)
{
    vgpu_commit(sd, charge);
    ctx_counted(+1);
    cache_put(ctx, sd, dev);
    pthread_mutex_lock(&ctx_mu);
    int i;
    for (i = 0; i < ncreated; i++)
        if (!created[i].ctx)
            break;
    if (i == ncreated && ncreated < MAX_CREATED)
        ncreated++;
    if (i < ncreated) {
        created[i].ctx = ctx;
        created[i].sd = sd;
        created[i].refs = 1;
        created[i].charged = charge;
    } else {
        VGPU_LOG_ONCE(logged_ctx, VGPU_LOG_WARN,
                      "more than %d live contexts; the footprint of further ones "
                      "stays charged until exit",
                      MAX_CREATED);
    }
    pthread_mutex_unlock(&ctx_mu);
}

/* Shared body of the cuCtxCreate variants; `call` performs the real call. */
#define CTX_CREATE_BODY(realptr, dev, call)                               \
    int m = vgpu_mode();                                                  \
    if (VGPU_UNLIKELY(!(realptr)))                                        \
        return CUDA_ERROR_NOT_FOUND;                                      \
    if (m != VGPU_MODE_ENFORCE)                                           \
        return m == VGPU_MODE_REFUSE ? CUDA_ERROR_OUT_OF_MEMORY : (call); \
    uint64_t charge = 0;                                                  \
    CUresult ret;                                                         \
    int sd = ctx_admit((dev), &charge, &ret);                             \
    if (sd < 0)                                                           \
        return ret;                                                       \
    CUresult r = (call);                                                  \
    if (r != CUDA_SUCCESS) {                                              \
        vgpu_unreserve(sd, charge);                                       \
        return r;                                                         \
    }                                                                     \
    ctx_created(*pctx, (dev), sd, charge);                                \
    return r;

VGPU_EXPORT CUresult cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev){
    CTX_CREATE_BODY(vgpu_real.cuCtxCreate, dev, vgpu_real.cuCtxCreate(pctx, flags, dev))}

VGPU_EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev){
    CTX_CREATE_BODY(vgpu_real.cuCtxCreate_v2, dev, vgpu_real.cuCtxCreate_v2(pctx, flags, dev))}

VGPU_EXPORT CUresult
    cuCtxCreate_v3(CUcontext *pctx, void *params, int numParams, unsigned int flags, CUdevice dev){
        CTX_CREATE_BODY(vgpu_real.cuCtxCreate_v3, dev,
                        vgpu_real.cuCtxCreate_v3(pctx, params, numParams, flags, dev))}

VGPU_EXPORT CUresult cuCtxCreate_v4(CUcontext *pctx, void *params, unsigned int flags, CUdevice dev)
{
    CTX_CREATE_BODY(vgpu_real.cuCtxCreate_v4, dev,
                    vgpu_real.cuCtxCreate_v4(pctx, params, flags, dev))
}

static CUresult ctx_destroy(cuCtxDestroy_v2_fn real, CUcontext ctx)
{
    int m = vgpu_mode();
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    if (m != VGPU_MODE_ENFORCE)
        return real(ctx);
    pthread_mutex_lock(&ctx_mu);
    int i;
    for (i = 0; i < ncreated; i++)
        if (created[i].ctx == ctx && ctx)
            break;
    CUresult r = real(ctx);
    if (r == CUDA_SUCCESS && i < ncreated) {
        ctx_torn_down(ctx, created[i].sd, created[i].charged);
        created[i].ctx = NULL;
    }
    pthread_mutex_unlock(&ctx_mu);
    return r;
}

/* The created context ctx, or NULL (ctx_mu held). */
static struct created_ctx *find_created(CUcontext ctx)
{
    if (!ctx)
        return NULL;
    for (int i = 0; i < ncreated; i++)
        if (created[i].ctx == ctx)
            return &created[i];
    return NULL;
}

/*
 * cuCtxAttach / cuCtxDetach (pycuda's Context.attach / detach): the driver keeps a
 * usage count per created context, 1 at cuCtxCreate; cuCtxAttach adds one to the
 * current context and cuCtxDetach drops one, destroying the context — with
 * everything allocated in it — when it reaches 0, as cuCtxDestroy does whatever
 * the count. libvgpu mirrors the count (both calls go through it on every path)
 * and credits the context when its last reference goes. Attaching costs nothing.
 */
VGPU_EXPORT CUresult cuCtxAttach(CUcontext *pctx, unsigned int flags)
{
    int m = vgpu_mode();
    cuCtxAttach_fn real = vgpu_real.cuCtxAttach;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    if (m != VGPU_MODE_ENFORCE)
        return real(pctx, flags);
    pthread_mutex_lock(&ctx_mu);
    CUresult r = real(pctx, flags);
    if (r == CUDA_SUCCESS && pctx) {
        struct created_ctx *c = find_created(*pctx);
        if (c)
            c->refs++;
    }
    pthread_mutex_unlock(&ctx_mu);
    return r;
}

VGPU_EXPORT CUresult cuCtxDetach(CUcontext ctx)
{
    int m = vgpu_mode();
    cuCtxDetach_fn real = vgpu_real.cuCtxDetach;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    if (m != VGPU_MODE_ENFORCE)
        return real(ctx);
    pthread_mutex_lock(&ctx_mu);
    struct created_ctx *c = find_created(ctx);
    CUresult r = real(ctx);
    if (r == CUDA_SUCCESS && c && --c->refs <= 0) {
        ctx_torn_down(ctx, c->sd, c->charged);
        c->ctx = NULL;
    }
    pthread_mutex_unlock(&ctx_mu);
    return r;
}

VGPU_EXPORT CUresult cuCtxDestroy(CUcontext ctx)
{
    vgpu_mode();
    return ctx_destroy(vgpu_real.cuCtxDestroy, ctx);
}

VGPU_EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    vgpu_mode();
    return ctx_destroy(vgpu_real.cuCtxDestroy_v2, ctx);
}

/* ---------------------------------------------------------- primary contexts */

VGPU_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    int m = vgpu_mode();
    if (VGPU_UNLIKELY(!vgpu_real.cuDevicePrimaryCtxRetain))
        return CUDA_ERROR_NOT_FOUND;
    if (m != VGPU_MODE_ENFORCE)
        return m == VGPU_MODE_REFUSE ? CUDA_ERROR_OUT_OF_MEMORY
                                     : vgpu_real.cuDevicePrimaryCtxRetain(pctx, dev);
    if (dev < 0 || dev >= VGPU_MAX_ORDINALS)
        return vgpu_real.cuDevicePrimaryCtxRetain(pctx, dev); /* the driver's own error */
    /* ctx_mu is held across the admission, which in an elastic slice may wait for
     * vgpud's answer (at most VGPU_ELASTIC_WAIT_MS, default 100 ms): only context
     * creation and teardown take ctx_mu, never an allocation or a launch, and the
     * driver call below is held under it anyway. */
    pthread_mutex_lock(&ctx_mu);
    uint64_t charge = 0;
    int sd = -1;
    CUresult r;
    if (prim_refs[dev] == 0) {
        sd = ctx_admit(dev, &charge, &r);
        if (sd < 0)
            goto out;
    }
    r = vgpu_real.cuDevicePrimaryCtxRetain(pctx, dev);
    if (r != CUDA_SUCCESS) {
        if (sd >= 0)
            vgpu_unreserve(sd, charge);
        goto out;
    }
    if (prim_refs[dev]++ == 0) {
        vgpu_commit(sd, charge);
        ctx_counted(+1);
        prim_sd[dev] = sd;
        prim_charged[dev] = charge;
        prim_ctx[dev] = *pctx;
        cache_put(*pctx, sd, dev);
    }
out:
    pthread_mutex_unlock(&ctx_mu);
    return r;
}

/* Release (drop one reference) or reset (destroy whatever the references). */
static CUresult prim_down(cuDevicePrimaryCtxRelease_fn real, CUdevice dev, bool reset)
{
    int m = vgpu_mode();
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    if (m != VGPU_MODE_ENFORCE || dev < 0 || dev >= VGPU_MAX_ORDINALS)
        return real(dev);
    pthread_mutex_lock(&ctx_mu);
    CUresult r = real(dev);
    if (r == CUDA_SUCCESS && prim_refs[dev] > 0) {
        prim_refs[dev] = reset ? 0 : prim_refs[dev] - 1;
        if (prim_refs[dev] == 0) {
            ctx_torn_down(prim_ctx[dev], prim_sd[dev], prim_charged[dev]);
            prim_charged[dev] = 0;
            prim_ctx[dev] = NULL;
        }
    }
    pthread_mutex_unlock(&ctx_mu);
    return r;
}

VGPU_EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
    vgpu_mode();
    return prim_down(vgpu_real.cuDevicePrimaryCtxRelease, dev, false);
}

VGPU_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    vgpu_mode();
    return prim_down(vgpu_real.cuDevicePrimaryCtxRelease_v2, dev, false);
}

VGPU_EXPORT CUresult cuDevicePrimaryCtxReset(CUdevice dev)
{
    vgpu_mode();
    return prim_down(vgpu_real.cuDevicePrimaryCtxReset, dev, true);
}

VGPU_EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev)
{
    vgpu_mode();
    return prim_down(vgpu_real.cuDevicePrimaryCtxReset_v2, dev, true);
}

/* The deprecated OpenGL interop constructor (PyCUDA's pycuda.gl links it): a
 * context like any other, with the same arguments. */
// clang-format off
VGPU_EXPORT CUresult cuGLCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    CTX_CREATE_BODY(vgpu_real.cuGLCtxCreate, dev, vgpu_real.cuGLCtxCreate(pctx, flags, dev))
}

VGPU_EXPORT CUresult cuGLCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    CTX_CREATE_BODY(vgpu_real.cuGLCtxCreate_v2, dev,
                    vgpu_real.cuGLCtxCreate_v2(pctx, flags, dev))
}
// clang-format on
