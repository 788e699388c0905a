//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * cuda_vmm.c — virtual memory management: cuMemCreate handles, address
 * reservations, mappings and access.
 */
#define _GNU_SOURCE
#include "cuda_internal.h"

#include <sys/mman.h>

#define VMEM_MAGIC 0x564d4d31u

struct sim_vmem { /* a cuMemCreate handle */
    uint32_t magic;
    bool released;
    unsigned epoch;
    int ord, dev;
    uint64_t size;
    unsigned maps;
    void *bytes; /* the contents: made at the first copy into a mapping (cuda_copy.c) */
};

/* The handle's memory is gone (released and unmapped): its charge and contents. */
static void vmem_gone(struct sim_vmem *m)
{
    credit(m->dev, m->size);
    if (m->bytes != NULL)
        munmap(m->bytes, m->size);
    m->bytes = NULL;
}

char *vmm_bytes(uint64_t p, uint64_t len)
{
    for (struct sim_vmap *v = G.vmaps; v != NULL; v = v->next) {
        if (p < v->ptr || p >= v->ptr + v->size)
            continue;
        if (len > v->ptr + v->size - p)
            return NULL;
        struct sim_vmem *m = v->mem;
        if (m->bytes == NULL) {
            void *b = mmap(NULL, m->size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (b == MAP_FAILED)
                return NULL;
            m->bytes = b;
        }
        return (char *)m->bytes + v->offset + (p - v->ptr);
    }
    return NULL;
}

/* ------------------------------------------------------------------ VMM */

static CUresult check_prop(const CUmemAllocationProp *prop, int *ord)
{
    if (prop == NULL || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
        prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(prop->location.id))
        return CUDA_ERROR_INVALID_DEVICE;
    *ord = prop->location.id;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
                                              int option)
{
    CHECK_INIT();
    if (granularity == NULL || (option != 0 && option != 1))
        return CUDA_ERROR_INVALID_VALUE;
    int ord;
    CUresult r = check_prop(prop, &ord);
    if (r != CUDA_SUCCESS)
        return r;
    *granularity = VMM_GRANULARITY; /* minimum and recommended alike */
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                            const CUmemAllocationProp *prop, unsigned long long flags)
{
    CHECK_INIT();
    if (handle == NULL || flags != 0 || size == 0 || size % VMM_GRANULARITY != 0)
        return CUDA_ERROR_INVALID_VALUE;
    int ord;
    CUresult r = check_prop(prop, &ord);
    if (r != CUDA_SUCCESS)
        return r;
    struct sim_vmem *m = calloc(1, sizeof *m);
    if (m == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    m->magic = VMEM_MAGIC;
    m->epoch = G.epoch;
    m->ord = ord;
    m->dev = G.ord2dev[ord];
    m->size = size;
    pthread_mutex_lock(&G.lock);
    r = charge(m->dev, size);
    pthread_mutex_unlock(&G.lock);
    if (r != CUDA_SUCCESS) {
        free(m);
        return r;
    }
    *handle = (CUmemGenericAllocationHandle)(uintptr_t)m;
    return CUDA_SUCCESS;
}

static struct sim_vmem *vmem_of(CUmemGenericAllocationHandle h)
{
    struct sim_vmem *m = (struct sim_vmem *)(uintptr_t)h;
    if (m == NULL || m->magic != VMEM_MAGIC || m->epoch != G.epoch || m->released)
        return NULL;
    return m;
}

EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle h)
{
    CHECK_INIT();
    pthread_mutex_lock(&G.lock);
    struct sim_vmem *m = vmem_of(h);
    CUresult r = CUDA_SUCCESS;
    if (m == NULL) {
        r = CUDA_ERROR_INVALID_VALUE;
    } else {
        m->released = true;
        /* Memory stays charged while it is still mapped somewhere. */
        if (m->maps == 0)
            vmem_gone(m);
    }
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment,
                                    CUdeviceptr addr, unsigned long long flags)
{
    (void)addr; /* a hint; the real driver may ignore it too */
    CHECK_INIT();
    if (ptr == NULL || size == 0 || size % VMM_GRANULARITY != 0 || flags != 0 ||
        (alignment != 0 && (alignment & (alignment - 1)) != 0))
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t align = alignment > VMM_GRANULARITY ? alignment : VMM_GRANULARITY;
    struct sim_resv *rv = calloc(1, sizeof *rv);
    if (rv == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    /* Reservations are address space only: a process-local window below the
     * per-device allocation windows. */
    const uint64_t base = 0x7f0000000000ull;
    uint64_t cur = atomic_load(&G.resv_cursor);
    uint64_t start;
    do {
        start = round_up(base + cur, align) - base;
    } while (!atomic_compare_exchange_weak(&G.resv_cursor, &cur, start + size));
    rv->base = base + start;
    rv->size = size;
    pthread_mutex_lock(&G.lock);
    rv->next = G.resv;
    G.resv = rv;
    pthread_mutex_unlock(&G.lock);
    *ptr = rv->base;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
    CHECK_INIT();
    pthread_mutex_lock(&G.lock);
    CUresult r = CUDA_ERROR_INVALID_VALUE;
    for (struct sim_resv **pp = &G.resv; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->base == ptr && (*pp)->size == size) {
            struct sim_resv *rv = *pp;
            *pp = rv->next;
            free(rv);
            r = CUDA_SUCCESS;
            break;
        }
    }
    pthread_mutex_unlock(&G.lock);
    return r;
}

static bool in_reservation(uint64_t p, uint64_t size)
{
    for (struct sim_resv *rv = G.resv; rv != NULL; rv = rv->next)
        if (p >= rv->base && p + size <= rv->base + rv->size)
            return true;
    return false;
}

EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                         CUmemGenericAllocationHandle h, unsigned long long flags)
{
    CHECK_INIT();
    if (flags != 0 || size == 0 || size % VMM_GRANULARITY != 0 || offset % VMM_GRANULARITY != 0 ||
        ptr % VMM_GRANULARITY != 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.lock);
    CUresult r = CUDA_SUCCESS;
    struct sim_vmem *m = vmem_of(h);
    if (m == NULL || offset > m->size || size > m->size - offset || !in_reservation(ptr, size)) {
        r = CUDA_ERROR_INVALID_VALUE;
        goto out;
    }
    for (struct sim_vmap *v = G.vmaps; v != NULL; v = v->next) {
        if (ptr < v->ptr + v->size && v->ptr < ptr + size) {
            r = CUDA_ERROR_INVALID_VALUE; /* already mapped */
            goto out;
        }
    }
    struct sim_vmap *v = calloc(1, sizeof *v);
    if (v == NULL) {
        r = CUDA_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    v->ptr = ptr;
    v->size = size;
    v->offset = offset;
    v->mem = m;
    v->next = G.vmaps;
    G.vmaps = v;
    m->maps++;
out:
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
    CHECK_INIT();
    if (size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.lock);
    CUresult r = CUDA_SUCCESS;
    /* The range must cover whole mappings; refuse before changing anything. */
    int found = 0;
    for (struct sim_vmap *v = G.vmaps; v != NULL; v = v->next) {
        bool overlap = v->ptr < ptr + size && ptr < v->ptr + v->size;
        bool inside = v->ptr >= ptr && v->ptr + v->size <= ptr + size;
        if (overlap && !inside) {
            r = CUDA_ERROR_INVALID_VALUE;
            goto out;
        }
        found += inside;
    }
    if (found == 0) {
        r = CUDA_ERROR_INVALID_VALUE;
        goto out;
    }
    for (struct sim_vmap **pp = &G.vmaps; *pp != NULL;) {
        struct sim_vmap *v = *pp;
        if (v->ptr >= ptr && v->ptr + v->size <= ptr + size) {
            *pp = v->next;
            struct sim_vmem *m = v->mem;
            if (--m->maps == 0 && m->released)
                vmem_gone(m);
            free(v);
        } else {
            pp = &v->next;
        }
    }
out:
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,
                               size_t count)
{
    CHECK_INIT();
    if (desc == NULL || count == 0 || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < count; i++) {
        if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE)
            return CUDA_ERROR_INVALID_VALUE;
        if (!ord_ok(desc[i].location.id))
            return CUDA_ERROR_INVALID_DEVICE;
        if (desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_NONE &&
            desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READ &&
            desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
            return CUDA_ERROR_INVALID_VALUE;
    }
    /* Every byte of the range must be mapped. */
    pthread_mutex_lock(&G.lock);
    uint64_t p = ptr, end = ptr + size;
    bool progress = true;
    while (p < end && progress) {
        progress = false;
        for (struct sim_vmap *v = G.vmaps; v != NULL; v = v->next) {
            if (p >= v->ptr && p < v->ptr + v->size) {
                p = v->ptr + v->size;
                progress = true;
                break;
            }
        }
    }
    pthread_mutex_unlock(&G.lock);
    return p >= end ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
