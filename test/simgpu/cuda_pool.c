//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * cuda_pool.c — memory pools and the stream-ordered allocator (cuMemAllocAsync,
 * cuMemAllocFromPoolAsync, cuMemFreeAsync, cuMemPool*).
 */
#define _GNU_SOURCE
#include "cuda_internal.h"

/* ------------------------------------------------------------------ pools */

static struct sim_pool *pool_default(int ord)
{
    struct sim_pool *p = &G.default_pool[ord];
    if (p->magic != POOL_MAGIC || p->epoch != G.epoch) {
        memset(p, 0, sizeof *p);
        p->magic = POOL_MAGIC;
        p->alive = true;
        p->is_default = true;
        p->epoch = G.epoch;
        p->ord = ord;
        p->dev = G.ord2dev[ord];
    }
    return p;
}

static struct sim_pool *pool_current(int ord)
{
    struct sim_pool *p = G.cur_pool[ord];
    return (p != NULL && p->alive && p->epoch == G.epoch) ? p : pool_default(ord);
}

static bool pool_known(struct sim_pool *p)
{
    if (p == NULL)
        return false;
    if (p >= &G.default_pool[0] && p < &G.default_pool[SIM_MAX_DEVICES])
        return p->magic == POOL_MAGIC && p->epoch == G.epoch && p->ord < G.ndev;
    for (struct sim_pool *it = G.pools; it != NULL; it = it->next)
        if (it == p)
            return p->alive;
    return false;
}

static void pool_trim(struct sim_pool *p, uint64_t keep)
{
    uint64_t target = p->used > keep ? p->used : keep;
    if (p->reserved > target) {
        credit(p->dev, p->reserved - target);
        p->reserved = target;
    }
}

/* What a synchronize does to the stream-ordered allocator: every pool of the device
 * gives back its unused reservation above the release threshold. (lock held) */
void pools_sync_trim(int dev)
{
    for (int o = 0; o < G.ndev; o++) {
        struct sim_pool *p = &G.default_pool[o];
        if (p->magic == POOL_MAGIC && p->epoch == G.epoch && p->dev == dev)
            pool_trim(p, p->threshold);
    }
    for (struct sim_pool *p = G.pools; p != NULL; p = p->next)
        if (p->alive && p->dev == dev)
            pool_trim(p, p->threshold);
}

static CUresult pool_alloc(struct sim_pool *p, struct sim_ctx *c, uint64_t size, CUdeviceptr *out)
{
    uint64_t free_res = p->reserved - p->used;
    if (free_res < size) {
        uint64_t grow = size - free_res;
        CUresult r = charge(p->dev, grow);
        if (r != CUDA_SUCCESS)
            return r;
        p->reserved += grow;
        if (p->reserved > p->reserved_high)
            p->reserved_high = p->reserved;
    }
    p->used += size;
    if (p->used > p->used_high)
        p->used_high = p->used;
    uint64_t ptr =
        sim_va_alloc(G.st, p->dev, size, size >= VMM_GRANULARITY ? VMM_GRANULARITY : 512);
    CUresult r = alloc_new(ptr, size, 0, p->dev, AK_POOL, c, p);
    if (r != CUDA_SUCCESS) {
        p->used -= size;
        return r;
    }
    *out = ptr;
    return CUDA_SUCCESS;
}

void pool_release_alloc(struct sim_alloc *a)
{
    struct sim_pool *p = a->pool;
    p->used -= a->size;
    if (!p->alive) { /* destroyed with outstanding allocations: release as they come back */
        p->reserved -= a->size;
        credit(p->dev, a->size);
    }
}

/* ------------------------------------------------------------------ stream-ordered allocator */

static CUresult alloc_async(CUdeviceptr *dptr, size_t size, struct sim_pool *pool, CUstream h,
                            bool ptsz)
{
    CHECK_INIT();
    if (dptr == NULL || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_ctx *c;
    _Atomic uint64_t *end;
    CUresult r = resolve_stream(h, ptsz, &c, &end);
    if (r != CUDA_SUCCESS)
        return r;
    pthread_mutex_lock(&G.lock);
    if (pool == NULL) {
        pool = pool_current(c->ord);
    } else if (!pool_known(pool)) {
        pthread_mutex_unlock(&G.lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    r = pool_alloc(pool, c, size, dptr);
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t size, CUstream h)
{
    return alloc_async(dptr, size, NULL, h, false);
}
EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t size, CUstream h)
{
    return alloc_async(dptr, size, NULL, h, true);
}

EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t size, CUmemoryPool pool,
                                        CUstream h)
{
    if (pool == NULL)
        return ready() ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_INITIALIZED;
    return alloc_async(dptr, size, (struct sim_pool *)pool, h, false);
}

EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t size, CUmemoryPool pool,
                                             CUstream h)
{
    if (pool == NULL)
        return ready() ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_INITIALIZED;
    return alloc_async(dptr, size, (struct sim_pool *)pool, h, true);
}

static CUresult free_async(CUdeviceptr dptr, CUstream h, bool ptsz)
{
    CHECK_INIT();
    struct sim_ctx *c;
    _Atomic uint64_t *end;
    CUresult r = resolve_stream(h, ptsz, &c, &end);
    if (r != CUDA_SUCCESS)
        return r;
    pthread_mutex_lock(&G.lock);
    struct sim_alloc *a = at_find(dptr, false);
    if (a == NULL || a->kind != AK_POOL) {
        r = CUDA_ERROR_INVALID_VALUE;
    } else {
        at_find(dptr, true);
        alloc_drop(a); /* back to the pool; trimmed at the next synchronize */
    }
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream h) { return free_async(dptr, h, false); }
EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream h)
{
    return free_async(dptr, h, true);
}

EXPORT CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice d)
{
    CHECK_INIT();
    if (pool == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&G.lock);
    *pool = (CUmemoryPool)pool_default(d);
    pthread_mutex_unlock(&G.lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice d)
{
    CHECK_INIT();
    if (pool == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&G.lock);
    *pool = (CUmemoryPool)pool_current(d);
    pthread_mutex_unlock(&G.lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceSetMemPool(CUdevice d, CUmemoryPool pool)
{
    CHECK_INIT();
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    struct sim_pool *p = (struct sim_pool *)pool;
    pthread_mutex_lock(&G.lock);
    CUresult r = CUDA_SUCCESS;
    if (!pool_known(p) || p->ord != d)
        r = CUDA_ERROR_INVALID_VALUE;
    else
        G.cur_pool[d] = p;
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props)
{
    CHECK_INIT();
    if (pool == NULL || props == NULL || props->allocType != CU_MEM_ALLOCATION_TYPE_PINNED ||
        props->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(props->location.id))
        return CUDA_ERROR_INVALID_DEVICE;
    struct sim_pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    p->magic = POOL_MAGIC;
    p->alive = true;
    p->epoch = G.epoch;
    p->ord = props->location.id;
    p->dev = G.ord2dev[p->ord];
    pthread_mutex_lock(&G.lock);
    p->next = G.pools;
    G.pools = p;
    pthread_mutex_unlock(&G.lock);
    *pool = (CUmemoryPool)p;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemPoolDestroy(CUmemoryPool pool)
{
    CHECK_INIT();
    struct sim_pool *p = (struct sim_pool *)pool;
    pthread_mutex_lock(&G.lock);
    CUresult r = CUDA_SUCCESS;
    if (!pool_known(p) || p->is_default) {
        r = CUDA_ERROR_INVALID_VALUE;
    } else {
        /* Outstanding allocations keep their bytes until they are freed. */
        pool_trim(p, 0);
        p->alive = false;
        if (G.cur_pool[p->ord] == p)
            G.cur_pool[p->ord] = NULL;
        for (struct sim_pool **pp = &G.pools; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == p) {
                *pp = p->next;
                break;
            }
        }
    }
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep)
{
    CHECK_INIT();
    struct sim_pool *p = (struct sim_pool *)pool;
    pthread_mutex_lock(&G.lock);
    CUresult r = CUDA_SUCCESS;
    if (!pool_known(p))
        r = CUDA_ERROR_INVALID_VALUE;
    else
        pool_trim(p, minBytesToKeep);
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
    CHECK_INIT();
    struct sim_pool *p = (struct sim_pool *)pool;
    if (value == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.lock);
    CUresult r = CUDA_SUCCESS;
    if (!pool_known(p)) {
        r = CUDA_ERROR_INVALID_VALUE;
        goto out;
    }
    switch (attr) {
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES:
        p->reuse[attr - 1] = *(int *)value;
        break;
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: p->threshold = *(cuuint64_t *)value; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH: /* only resetting to the current value is allowed */
        if (*(cuuint64_t *)value != 0)
            r = CUDA_ERROR_INVALID_VALUE;
        else
            p->reserved_high = p->reserved;
        break;
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH:
        if (*(cuuint64_t *)value != 0)
            r = CUDA_ERROR_INVALID_VALUE;
        else
            p->used_high = p->used;
        break;
    default: r = CUDA_ERROR_INVALID_VALUE;
    }
out:
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemPoolGetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
    CHECK_INIT();
    struct sim_pool *p = (struct sim_pool *)pool;
    if (value == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.lock);
    CUresult r = CUDA_SUCCESS;
    if (!pool_known(p)) {
        r = CUDA_ERROR_INVALID_VALUE;
        goto out;
    }
    switch (attr) {
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES:
        *(int *)value = p->reuse[attr - 1];
        break;
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: *(cuuint64_t *)value = p->threshold; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT: *(cuuint64_t *)value = p->reserved; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH: *(cuuint64_t *)value = p->reserved_high; break;
    case CU_MEMPOOL_ATTR_USED_MEM_CURRENT: *(cuuint64_t *)value = p->used; break;
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH: *(cuuint64_t *)value = p->used_high; break;
    default: r = CUDA_ERROR_INVALID_VALUE;
    }
out:
    pthread_mutex_unlock(&G.lock);
    return r;
}
