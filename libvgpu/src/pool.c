/*
 * pool.c — the stream-ordered allocator (cuMemAllocAsync & co) and memory pools.
 *
 * A pool keeps freed blocks reserved (up to its release threshold), so what a
 * process really holds on the device is the pool's RESERVATION, not the sum of its
 * live blocks. libvgpu therefore charges each pool exactly its reservation:
 *
 *   before an async alloc   reserve (CAS, against the limit) the part of the
 *                           request the pool's idle reservation cannot cover
 *                           (idle = charged - bytes of live blocks we handed out);
 *   after it                read the real CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT and
 *                           set the pool's charge to exactly that, turning the
 *                           provisional reservation into the charge and giving the
 *                           rest back. If the pool grew by more than was admitted
 *                           (fragmentation, granularity) and the slice is now over
 *                           its limit, the block is freed, the pool trimmed back and
 *                           CUDA_ERROR_OUT_OF_MEMORY returned.
 *   re-synced after         cuMemFreeAsync, cuMemFree of a pool block,
 *                           cuMemPoolTrimTo, cuMemPoolSetAttribute,
 *                           cuStreamSynchronize(_ptsz), cuCtxSynchronize (pools
 *                           release memory at synchronization points) — only pools
 *                           this process allocated from, one attribute read each;
 *                           a process that never used a pool pays one load.
 *   cuMemPoolDestroy        credits the pool's idle reservation at once; blocks
 *                           still out are credited as they are freed (the driver
 *                           releases a destroyed pool's memory exactly so).
 *
 * Each pool has a process-local mutex held from the reservation through the
 * driver call to the sync (and around every other sync). Without it, two threads
 * growing the same pool at once could each see the other's growth in the
 * reservation they read and count it twice (once as their "extra", once as the
 * other's still-held provisional reservation) — a transient over-count that could
 * even refuse an allocation that fit. The driver serializes a pool's operations
 * internally anyway; this adds an uncontended lock pair per async call.
 *
 * The default/current pool of a device comes from the real cuDeviceGetMemPool.
 *
 * Known gaps (documented): the device of cuMemAllocAsync is the current context's
 * (the stream's context is assumed current); pools imported over IPC are charged
 * to their importer's current device.
 */
#include <pthread.h>
#include <string.h>

#include "vgpu_internal.h"

#define MAX_POOLS 256

struct pool_rec {
    _Atomic(CUmemoryPool) pool; /* NULL: record free */
    int sd;                     /* slice device; -1: device not in the slice */
    pthread_mutex_t mu;         /* see the file comment */
    _Atomic int used;           /* this process allocated from it: sync it */
    uint64_t charged;           /* reservation charged to the slice (under mu) */
    uint64_t inuse;             /* bytes of live blocks we handed out (under mu) */
    /* Destroyed while blocks were still out: the driver frees the pool as they
     * come back, so each returning block credits its size (from zcharge). The
     * record is reused only once inuse reaches 0. */
    _Atomic int zombie;
    uint64_t zcharge; /* under mu */
};

static struct pool_rec pools[MAX_POOLS];
static _Atomic uint32_t pools_hw; /* records [0, hw) may be in use */
static vgpu_lock_t pools_lock;    /* record allocation only */
static _Atomic int any_pool_used;

static void pools_init(void)
{
    for (int i = 0; i < MAX_POOLS; i++)
        pthread_mutex_init(&pools[i].mu, NULL);
}

/* The child owns none of the parent's pools (and a parent thread may have held a
 * pool mutex at fork time). */
static void pools_reset_child(void)
{
    memset(pools, 0, sizeof pools);
    pools_init();
    atomic_store_explicit(&pools_hw, 0, memory_order_relaxed);
    atomic_store_explicit(&pools_lock.v, 0, memory_order_relaxed);
    atomic_store_explicit(&any_pool_used, 0, memory_order_relaxed);
}

static void pool_init(int mode)
{
    if (mode == VGPU_MODE_ENFORCE)
        pools_init();
}

static void pool_fork_child(int mode)
{
    if (mode == VGPU_MODE_ENFORCE)
        pools_reset_child();
}

const struct vgpu_module vgpu_module_pool = {
    .name = "pool",
    .init = pool_init,
    .fork_child = pool_fork_child,
};

static int pool_find(CUmemoryPool p)
{
    uint32_t hw = atomic_load_explicit(&pools_hw, memory_order_acquire);
    for (uint32_t i = 0; i < hw; i++)
        if (atomic_load_explicit(&pools[i].pool, memory_order_acquire) == p)
            return (int)i;
    return -1;
}

/* Finds or records a pool. -1 when the record table is full. */
static int pool_get(CUmemoryPool p, int sd)
{
    int i = pool_find(p);
    if (i >= 0)
        return i;
    vgpu_lock(&pools_lock);
    i = pool_find(p);
    if (i < 0) {
        uint32_t hw = atomic_load_explicit(&pools_hw, memory_order_relaxed);
        for (uint32_t k = 0; k < hw && i < 0; k++)
            if (!atomic_load_explicit(&pools[k].pool, memory_order_relaxed) &&
                !atomic_load_explicit(&pools[k].zombie, memory_order_acquire))
                i = (int)k;
        if (i < 0 && hw < MAX_POOLS)
            i = (int)hw;
        if (i >= 0) {
            /* A free record is touched by no one (its pool is NULL and it is no
             * zombie), so its fields can be set before it is published. */
            struct pool_rec *r = &pools[i];
            r->sd = sd;
            r->charged = 0;
            r->inuse = 0;
            r->zcharge = 0;
            atomic_store_explicit(&r->used, 0, memory_order_relaxed);
            atomic_store_explicit(&r->pool, p, memory_order_release);
            if ((uint32_t)i == hw)
                atomic_store_explicit(&pools_hw, hw + 1, memory_order_release);
        }
    }
    vgpu_unlock(&pools_lock);
    if (i < 0)
        VGPU_LOG_ONCE(logged_pools, VGPU_LOG_WARN,
                      "more than %d memory pools; further pools charged per block", MAX_POOLS);
    return i;
}

/* Sets the pool's charge to its real reservation (mu held). prov: bytes reserved
 * on the device counter before the alloc this sync follows (0 otherwise); it
 * becomes part of the charge or is given back. Returns the bytes charged beyond
 * prov without admission (the pool grew more than was admitted). */
static uint64_t pool_sync_locked(struct pool_rec *p, uint64_t prov)
{
    CUmemoryPool h = atomic_load_explicit(&p->pool, memory_order_acquire);
    int sd = p->sd;
    if (sd < 0)
        return 0;
    cuuint64_t r = 0;
    if (!h || !vgpu_real.cuMemPoolGetAttribute ||
        vgpu_real.cuMemPoolGetAttribute(h, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &r) !=
            CUDA_SUCCESS) {
        /* The truth is unreadable: keep the admitted amount as the charge. */
        if (prov) {
            p->charged += prov;
            vgpu_commit(sd, prov);
        }
        return 0;
    }
    uint64_t old = p->charged;
    p->charged = (uint64_t)r;
    if ((uint64_t)r >= old) {
        uint64_t grow = (uint64_t)r - old;
        uint64_t conv = grow < prov ? grow : prov;
        if (conv)
            vgpu_commit(sd, conv);
        if (grow > conv)
            vgpu_force_charge(sd, grow - conv);
        if (prov > conv)
            vgpu_unreserve(sd, prov - conv);
        return grow - conv;
    }
    vgpu_credit(sd, old - (uint64_t)r);
    vgpu_unreserve(sd, prov);
    return 0;
}

void vgpu_pools_sync_used(void)
{
    if (VGPU_LIKELY(!atomic_load_explicit(&any_pool_used, memory_order_relaxed)))
        return;
    uint32_t hw = atomic_load_explicit(&pools_hw, memory_order_acquire);
    for (uint32_t i = 0; i < hw; i++) {
        struct pool_rec *p = &pools[i];
        if (!atomic_load_explicit(&p->pool, memory_order_relaxed) ||
            !atomic_load_explicit(&p->used, memory_order_relaxed))
            continue;
        pthread_mutex_lock(&p->mu);
        pool_sync_locked(p, 0);
        pthread_mutex_unlock(&p->mu);
    }
}

static inline uint64_t sub_clamped(uint64_t v, uint64_t b) { return v > b ? v - b : 0; }

void vgpu_pool_after_free(uint32_t idx, uint64_t size)
{
    if (idx >= MAX_POOLS)
        return;
    struct pool_rec *p = &pools[idx];
    pthread_mutex_lock(&p->mu);
    p->inuse = sub_clamped(p->inuse, size);
    if (VGPU_UNLIKELY(atomic_load_explicit(&p->zombie, memory_order_acquire))) {
        uint64_t t = size < p->zcharge ? size : p->zcharge;
        p->zcharge -= t;
        if (p->sd >= 0)
            vgpu_credit(p->sd, t);
        if (p->inuse == 0) {
            p->zcharge = 0;
            atomic_store_explicit(&p->zombie, 0, memory_order_release);
        }
    } else {
        pool_sync_locked(p, 0);
    }
    pthread_mutex_unlock(&p->mu);
}

/* ------------------------------------------------------------------ async alloc */

enum which { A_CUR, A_CUR_PTSZ, A_POOL, A_POOL_PTSZ };

static CUresult call_alloc(enum which w, CUdeviceptr *dptr, size_t size, CUmemoryPool pool,
                           CUstream s)
{
    switch (w) {
    case A_CUR: return vgpu_real.cuMemAllocAsync(dptr, size, s);
    case A_CUR_PTSZ: return vgpu_real.cuMemAllocAsync_ptsz(dptr, size, s);
    case A_POOL: return vgpu_real.cuMemAllocFromPoolAsync(dptr, size, pool, s);
    case A_POOL_PTSZ: return vgpu_real.cuMemAllocFromPoolAsync_ptsz(dptr, size, pool, s);
    }
    return CUDA_ERROR_INVALID_VALUE;
}

/* Gives back a block after an over-limit growth (mu held): free it on its stream,
 * wait for the free, trim the pool back to what it held before. The OOM path. */
static void undo_block(enum which w, struct pool_rec *p, CUdeviceptr ptr, CUstream s, uint64_t size,
                       uint64_t keep)
{
    bool ptsz = (w == A_CUR_PTSZ || w == A_POOL_PTSZ);
    cuMemFreeAsync_fn fr = ptsz && vgpu_real.cuMemFreeAsync_ptsz ? vgpu_real.cuMemFreeAsync_ptsz
                                                                 : vgpu_real.cuMemFreeAsync;
    cuStreamSynchronize_fn sy = ptsz && vgpu_real.cuStreamSynchronize_ptsz
                                    ? vgpu_real.cuStreamSynchronize_ptsz
                                    : vgpu_real.cuStreamSynchronize;
    if (fr)
        fr(ptr, s);
    if (sy)
        sy(s);
    if (vgpu_real.cuMemPoolTrimTo)
        vgpu_real.cuMemPoolTrimTo(atomic_load_explicit(&p->pool, memory_order_acquire), keep);
    p->inuse = sub_clamped(p->inuse, size);
    pool_sync_locked(p, 0);
}

/* Charges the plain way when a pool cannot be tracked (lookup failed, table full). */
static CUresult plain_alloc(enum which w, int sd, CUdeviceptr *dptr, size_t size, CUmemoryPool pool,
                            CUstream s)
{
    if (!vgpu_reserve(sd, size))
        return vgpu_refuse(sd);
    CUresult r = call_alloc(w, dptr, size, pool, s);
    if (r != CUDA_SUCCESS) {
        vgpu_unreserve(sd, size);
        return r;
    }
    vgpu_commit(sd, size);
    struct vgpu_rec rec = {.size = size, .sd = (int16_t)sd, .kind = VGPU_KIND_PLAIN};
    vgpu_tab_insert(VGPU_NS_PTR, *dptr, &rec);
    return r;
}

static CUresult pooled_alloc(enum which w, int idx, CUdeviceptr *dptr, size_t size,
                             CUmemoryPool pool, CUstream s)
{
    struct pool_rec *p = &pools[idx];
    int sd = p->sd;
    if (sd < 0)
        return CUDA_ERROR_OUT_OF_MEMORY; /* a pool on a device outside the slice */
    /* The elastic wait happens with mu dropped: frees into this pool and stream
     * synchronizations (vgpu_pools_sync_used) take mu, and a free may be what makes
     * the retry fit. The need is worked out again after each answer. */
    struct vgpu_elastic el = {0};
    uint64_t before, need;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        before = p->charged;
        uint64_t idle = sub_clamped(p->charged, p->inuse);
        need = size > idle ? size - idle : 0;
        if (!need || vgpu_reserve_now(sd, need))
            break;
        pthread_mutex_unlock(&p->mu);
        if (!vgpu_elastic_ask(sd, need, &el))
            return vgpu_refuse(sd);
    }
    CUresult r = call_alloc(w, dptr, size, pool, s);
    if (r != CUDA_SUCCESS) {
        vgpu_unreserve(sd, need);
        pthread_mutex_unlock(&p->mu);
        return r;
    }
    p->inuse += size;
    if (!atomic_load_explicit(&p->used, memory_order_relaxed))
        atomic_store_explicit(&p->used, 1, memory_order_relaxed);
    if (!atomic_load_explicit(&any_pool_used, memory_order_relaxed))
        atomic_store_explicit(&any_pool_used, 1, memory_order_relaxed);
    uint64_t extra = pool_sync_locked(p, need);
    if (VGPU_UNLIKELY(extra && vgpu_used(sd) > vgpu_limit(sd))) {
        undo_block(w, p, *dptr, s, size, before);
        pthread_mutex_unlock(&p->mu);
        *dptr = 0;
        return vgpu_refuse(sd);
    }
    pthread_mutex_unlock(&p->mu);
    struct vgpu_rec rec = {
        .size = size, .sd = (int16_t)sd, .kind = VGPU_KIND_POOL, .pool = (uint32_t)idx};
    vgpu_tab_insert(VGPU_NS_PTR, *dptr, &rec);
    return r;
}

static CUresult alloc_current(enum which w, CUdeviceptr *dptr, size_t size, CUstream s)
{
    CUdevice dev;
    CUresult err;
    int sd = vgpu_current_target(NULL, &dev, &err);
    if (sd < 0)
        return err;
    if (!vgpu_slot_get())
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUmemoryPool pool = NULL;
    CUresult r = CUDA_ERROR_NOT_FOUND;
    if (vgpu_real.cuDeviceGetMemPool)
        r = vgpu_real.cuDeviceGetMemPool(&pool, dev);
    else if (vgpu_real.cuDeviceGetDefaultMemPool)
        r = vgpu_real.cuDeviceGetDefaultMemPool(&pool, dev);
    int idx = (r == CUDA_SUCCESS && pool) ? pool_get(pool, sd) : -1;
    if (idx < 0)
        return plain_alloc(w, sd, dptr, size, NULL, s);
    return pooled_alloc(w, idx, dptr, size, NULL, s);
}

static CUresult alloc_from(enum which w, CUdeviceptr *dptr, size_t size, CUmemoryPool pool,
                           CUstream s)
{
    int idx = pool_find(pool);
    if (idx < 0) {
        /* A pool we never saw created (imported, or made before libvgpu could see
         * it): attribute it to the current device. */
        CUresult err;
        int sd = vgpu_current_target(NULL, NULL, &err);
        if (sd < 0)
            return err;
        idx = pool_get(pool, sd);
        if (idx < 0) {
            if (!vgpu_slot_get())
                return CUDA_ERROR_OUT_OF_MEMORY;
            return plain_alloc(w, sd, dptr, size, pool, s);
        }
    }
    if (!vgpu_slot_get())
        return CUDA_ERROR_OUT_OF_MEMORY;
    return pooled_alloc(w, idx, dptr, size, pool, s);
}

#define ASYNC_PROLOGUE(realptr, passcall) \
    int m = vgpu_mode();                  \
    if (VGPU_UNLIKELY(!(realptr)))        \
        return CUDA_ERROR_NOT_FOUND;      \
    if (m != VGPU_MODE_ENFORCE)           \
        return m == VGPU_MODE_REFUSE ? CUDA_ERROR_OUT_OF_MEMORY : (passcall);

VGPU_EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
    ASYNC_PROLOGUE(vgpu_real.cuMemAllocAsync, vgpu_real.cuMemAllocAsync(dptr, bytesize, hStream))
    return alloc_current(A_CUR, dptr, bytesize, hStream);
}

VGPU_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
    ASYNC_PROLOGUE(vgpu_real.cuMemAllocAsync_ptsz,
                   vgpu_real.cuMemAllocAsync_ptsz(dptr, bytesize, hStream))
    return alloc_current(A_CUR_PTSZ, dptr, bytesize, hStream);
}

VGPU_EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                             CUstream hStream)
{
    ASYNC_PROLOGUE(vgpu_real.cuMemAllocFromPoolAsync,
                   vgpu_real.cuMemAllocFromPoolAsync(dptr, bytesize, pool, hStream))
    return alloc_from(A_POOL, dptr, bytesize, pool, hStream);
}

VGPU_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize,
                                                  CUmemoryPool pool, CUstream hStream)
{
    ASYNC_PROLOGUE(vgpu_real.cuMemAllocFromPoolAsync_ptsz,
                   vgpu_real.cuMemAllocFromPoolAsync_ptsz(dptr, bytesize, pool, hStream))
    return alloc_from(A_POOL_PTSZ, dptr, bytesize, pool, hStream);
}

static CUresult free_async(cuMemFreeAsync_fn real, CUdeviceptr dptr, CUstream s)
{
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    struct vgpu_rec rec;
    if (vgpu_mode() != VGPU_MODE_ENFORCE || !vgpu_tab_remove(VGPU_NS_PTR, dptr, &rec))
        return real(dptr, s);
    CUresult r = real(dptr, s);
    if (r != CUDA_SUCCESS) {
        vgpu_tab_insert(VGPU_NS_PTR, dptr, &rec);
        return r;
    }
    if (rec.kind == VGPU_KIND_POOL)
        vgpu_pool_after_free(rec.pool, rec.size);
    else
        vgpu_credit(rec.sd, rec.size);
    return r;
}

VGPU_EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream)
{
    vgpu_mode(); /* resolves the reals on a first call */
    return free_async(vgpu_real.cuMemFreeAsync, dptr, hStream);
}

VGPU_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream)
{
    vgpu_mode();
    return free_async(vgpu_real.cuMemFreeAsync_ptsz, dptr, hStream);
}

/* --------------------------------------------------------------- pool lifecycle */

VGPU_EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props)
{
    int m = vgpu_mode();
    if (VGPU_UNLIKELY(!vgpu_real.cuMemPoolCreate))
        return CUDA_ERROR_NOT_FOUND;
    CUresult r = vgpu_real.cuMemPoolCreate(pool, props);
    if (r == CUDA_SUCCESS && m == VGPU_MODE_ENFORCE && props &&
        props->location.type == CU_MEM_LOCATION_TYPE_DEVICE) {
        CUresult err;
        int sd = vgpu_slice_dev_of_ordinal(props->location.id, &err);
        if (sd != -2)
            pool_get(*pool, sd);
    }
    return r;
}

static void record_device_pool(CUresult r, CUmemoryPool *pool, CUdevice dev)
{
    if (r != CUDA_SUCCESS || !pool || vgpu_mode() != VGPU_MODE_ENFORCE)
        return;
    CUresult err;
    int sd = vgpu_slice_dev_of_ordinal(dev, &err);
    if (sd != -2)
        pool_get(*pool, sd);
}

VGPU_EXPORT CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice dev)
{
    vgpu_mode();
    if (VGPU_UNLIKELY(!vgpu_real.cuDeviceGetDefaultMemPool))
        return CUDA_ERROR_NOT_FOUND;
    CUresult r = vgpu_real.cuDeviceGetDefaultMemPool(pool, dev);
    record_device_pool(r, pool, dev);
    return r;
}

VGPU_EXPORT CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev)
{
    vgpu_mode();
    if (VGPU_UNLIKELY(!vgpu_real.cuDeviceGetMemPool))
        return CUDA_ERROR_NOT_FOUND;
    CUresult r = vgpu_real.cuDeviceGetMemPool(pool, dev);
    record_device_pool(r, pool, dev);
    return r;
}

VGPU_EXPORT CUresult cuMemPoolDestroy(CUmemoryPool pool)
{
    int m = vgpu_mode();
    if (VGPU_UNLIKELY(!vgpu_real.cuMemPoolDestroy))
        return CUDA_ERROR_NOT_FOUND;
    int idx = m == VGPU_MODE_ENFORCE ? pool_find(pool) : -1;
    if (idx < 0)
        return vgpu_real.cuMemPoolDestroy(pool);
    struct pool_rec *p = &pools[idx];
    pthread_mutex_lock(&p->mu);
    CUresult r = vgpu_real.cuMemPoolDestroy(pool);
    if (r == CUDA_SUCCESS) {
        /* The driver releases the pool's idle reservation now and each block still
         * out when it is freed: credit the former, keep the latter as a zombie
         * charge returned block by block (vgpu_pool_after_free). */
        uint64_t keep = p->inuse < p->charged ? p->inuse : p->charged;
        if (p->sd >= 0)
            vgpu_credit(p->sd, p->charged - keep);
        p->charged = 0;
        atomic_store_explicit(&p->used, 0, memory_order_relaxed);
        if (p->inuse) {
            p->zcharge = keep;
            atomic_store_explicit(&p->zombie, 1, memory_order_release);
        }
        atomic_store_explicit(&p->pool, NULL, memory_order_release);
    }
    pthread_mutex_unlock(&p->mu);
    return r;
}

/* After a call that may change a pool's reservation. */
static void resync(CUmemoryPool pool)
{
    int idx = pool_find(pool);
    if (idx < 0)
        return;
    struct pool_rec *p = &pools[idx];
    pthread_mutex_lock(&p->mu);
    pool_sync_locked(p, 0);
    pthread_mutex_unlock(&p->mu);
}

VGPU_EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep)
{
    int m = vgpu_mode();
    if (VGPU_UNLIKELY(!vgpu_real.cuMemPoolTrimTo))
        return CUDA_ERROR_NOT_FOUND;
    CUresult r = vgpu_real.cuMemPoolTrimTo(pool, minBytesToKeep);
    if (r == CUDA_SUCCESS && m == VGPU_MODE_ENFORCE)
        resync(pool);
    return r;
}

VGPU_EXPORT CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
    int m = vgpu_mode();
    if (VGPU_UNLIKELY(!vgpu_real.cuMemPoolSetAttribute))
        return CUDA_ERROR_NOT_FOUND;
    CUresult r = vgpu_real.cuMemPoolSetAttribute(pool, attr, value);
    if (r == CUDA_SUCCESS && m == VGPU_MODE_ENFORCE)
        resync(pool);
    return r;
}

/* ------------------------------------------------------------ synchronization */

VGPU_EXPORT CUresult cuStreamSynchronize(CUstream hStream)
{
    int m = vgpu_mode();
    if (VGPU_UNLIKELY(!vgpu_real.cuStreamSynchronize))
        return CUDA_ERROR_NOT_FOUND;
    CUresult r = vgpu_real.cuStreamSynchronize(hStream);
    if (m == VGPU_MODE_ENFORCE)
        vgpu_pools_sync_used();
    return r;
}

VGPU_EXPORT CUresult cuStreamSynchronize_ptsz(CUstream hStream)
{
    int m = vgpu_mode();
    if (VGPU_UNLIKELY(!vgpu_real.cuStreamSynchronize_ptsz))
        return CUDA_ERROR_NOT_FOUND;
    CUresult r = vgpu_real.cuStreamSynchronize_ptsz(hStream);
    if (m == VGPU_MODE_ENFORCE)
        vgpu_pools_sync_used();
    return r;
}

VGPU_EXPORT CUresult cuCtxSynchronize(void)
{
    int m = vgpu_mode();
    if (VGPU_UNLIKELY(!vgpu_real.cuCtxSynchronize))
        return CUDA_ERROR_NOT_FOUND;
    CUresult r = vgpu_real.cuCtxSynchronize();
    if (m == VGPU_MODE_ENFORCE)
        vgpu_pools_sync_used();
    return r;
}
