//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * cuda_memory.c — the allocation table, device charges, cuMemAlloc and friends,
 * cuMemGetInfo and CUDA arrays (1D/2D, 3D/layered/cubemap, mipmapped).
 */
#define _GNU_SOURCE
#include "cuda_internal.h"

/* ------------------------------------------------------------------ allocation table */

static inline unsigned at_hash(uint64_t p)
{
    return (unsigned)((p >> 9) * 0x9E3779B97F4A7C15ull >> (64 - AT_BITS));
}

static void at_insert(struct sim_alloc *a)
{
    unsigned h = at_hash(a->ptr);
    a->next = G.at[h];
    G.at[h] = a;
}

struct sim_alloc *at_find(uint64_t p, bool unlink)
{
    unsigned h = at_hash(p);
    for (struct sim_alloc **pp = &G.at[h]; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->ptr == p) {
            struct sim_alloc *a = *pp;
            if (unlink)
                *pp = a->next;
            return a;
        }
    }
    return NULL;
}

struct sim_alloc *at_containing(uint64_t p)
{
    for (unsigned h = 0; h < AT_SIZE; h++)
        for (struct sim_alloc *a = G.at[h]; a != NULL; a = a->next)
            if (!alloc_is_handle(a->kind) && p >= a->ptr && p < a->ptr + a->size)
                return a;
    return NULL;
}

CUresult charge(int dev, uint64_t bytes)
{
    if (bytes == 0)
        return CUDA_SUCCESS;
    return sim_charge(G.st, G.slot, dev, bytes) == 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

void credit(int dev, uint64_t bytes) { sim_credit(G.st, G.slot, dev, bytes); }

/* Frees an entry already unlinked from the table (lock held). */
void alloc_drop(struct sim_alloc *a)
{
    alloc_unback(a);
    if (a->kind == AK_POOL)
        pool_release_alloc(a);
    else
        credit(a->dev, a->charged);
    free(a);
}

CUresult alloc_new(uint64_t ptr, uint64_t size, uint64_t charged, int dev, int kind,
                   struct sim_ctx *ctx, struct sim_pool *pool)
{
    struct sim_alloc *a = calloc(1, sizeof *a);
    if (a == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    a->ptr = ptr;
    a->size = size;
    a->charged = charged;
    a->dev = dev;
    a->kind = kind;
    a->ctx = ctx;
    a->pool = pool;
    at_insert(a);
    return CUDA_SUCCESS;
}

/* Charges `charged` bytes on the context's device and records an allocation. */
static CUresult device_alloc(struct sim_ctx *c, uint64_t size, uint64_t charged, int kind,
                             CUdeviceptr *out)
{
    pthread_mutex_lock(&G.lock);
    CUresult r = charge(c->dev, charged);
    if (r == CUDA_SUCCESS) {
        uint64_t p =
            sim_va_alloc(G.st, c->dev, size, size >= VMM_GRANULARITY ? VMM_GRANULARITY : 512);
        r = alloc_new(p, size, charged, c->dev, kind, c, NULL);
        if (r == CUDA_SUCCESS)
            *out = p;
        else
            credit(c->dev, charged);
    }
    pthread_mutex_unlock(&G.lock);
    return r;
}

/* ------------------------------------------------------------------ memory */

EXPORT CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total_b)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (free_b == NULL || total_b == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t total = G.st->hdr.dev[c->dev].total_mem;
    uint64_t used = atomic_load(&G.st->dev[c->dev].used);
    *total_b = total;
    *free_b = used >= total ? 0 : total - used;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (dptr == NULL || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    return device_alloc(c, bytesize, bytesize, AK_MEM, dptr);
}

EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t width, size_t height,
                                   unsigned int elementSize)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (dptr == NULL || pPitch == NULL || width == 0 || height == 0 ||
        (elementSize != 4 && elementSize != 8 && elementSize != 16))
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t pitch = round_up(width, 512);
    if (height > UINT64_MAX / pitch)
        return CUDA_ERROR_OUT_OF_MEMORY;
    uint64_t size = pitch * height;
    r = device_alloc(c, size, size, AK_PITCH, dptr);
    if (r == CUDA_SUCCESS)
        *pPitch = pitch;
    return r;
}

EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (dptr == NULL || bytesize == 0 ||
        (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST))
        return CUDA_ERROR_INVALID_VALUE;
    /* Managed memory counts as device memory of the current context's device. */
    return device_alloc(c, bytesize, bytesize, AK_MANAGED, dptr);
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    pthread_mutex_lock(&G.lock);
    struct sim_alloc *a = at_find(dptr, false);
    if (a == NULL || alloc_is_handle(a->kind)) {
        r = CUDA_ERROR_INVALID_VALUE;
    } else {
        at_find(dptr, true);
        alloc_drop(a);
    }
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr dptr)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    pthread_mutex_lock(&G.lock);
    uint64_t base = 0, size = 0;
    struct sim_alloc *a = at_find(dptr, false);
    if (a == NULL || alloc_is_handle(a->kind))
        a = at_containing(dptr);
    if (a != NULL) {
        base = a->ptr;
        size = a->size;
    } else {
        for (struct sim_vmap *m = G.vmaps; m != NULL; m = m->next) {
            if (dptr >= m->ptr && dptr < m->ptr + m->size) {
                base = m->ptr;
                size = m->size;
                break;
            }
        }
    }
    pthread_mutex_unlock(&G.lock);
    if (size == 0)
        return CUDA_ERROR_NOT_FOUND;
    if (pbase != NULL)
        *pbase = base;
    if (psize != NULL)
        *psize = size;
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------ arrays */

int format_bytes(CUarray_format f)
{
    switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8: return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF: return 2;
    case CU_AD_FORMAT_UNSIGNED_INT32:
    case CU_AD_FORMAT_SIGNED_INT32:
    case CU_AD_FORMAT_FLOAT: return 4;
    }
    return 0;
}

/* Records an array-like object: charges `size` and keys it by a fresh opaque
 * handle (struct sim_array: the first word marks it, then its descriptor). */
static CUresult handle_alloc(struct sim_ctx *c, uint64_t size, int kind,
                             const CUDA_ARRAY3D_DESCRIPTOR *desc, bool is3d, uint64_t *out)
{
    struct sim_array *handle = calloc(1, sizeof *handle);
    if (handle == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    handle->magic = ARRAY_MAGIC;
    handle->is3d = is3d;
    handle->desc = *desc;
    pthread_mutex_lock(&G.lock);
    CUresult r = charge(c->dev, size);
    if (r == CUDA_SUCCESS) {
        r = alloc_new((uint64_t)(uintptr_t)handle, size, size, c->dev, kind, c, NULL);
        if (r != CUDA_SUCCESS)
            credit(c->dev, size);
    }
    pthread_mutex_unlock(&G.lock);
    if (r != CUDA_SUCCESS) {
        free(handle);
        return r;
    }
    *out = (uint64_t)(uintptr_t)handle;
    return CUDA_SUCCESS;
}

/* Drops an array-like object of the given kind; the handle memory itself is kept,
 * so a stale handle stays harmless. */
static CUresult handle_free(uint64_t h, int kind)
{
    CHECK_INIT();
    pthread_mutex_lock(&G.lock);
    struct sim_alloc *a = at_find(h, false);
    CUresult r = CUDA_SUCCESS;
    if (a == NULL || a->kind != kind) {
        r = CUDA_ERROR_INVALID_HANDLE;
    } else {
        at_find(a->ptr, true);
        alloc_drop(a);
    }
    pthread_mutex_unlock(&G.lock);
    return r;
}

/* Bytes of one W x H x D array (level): rows rounded up to 512 bytes, times
 * max(H,1), times max(D,1). false on overflow. */
static bool array_bytes(uint64_t w, uint64_t h, uint64_t d, int bpe, unsigned nc, uint64_t *out)
{
    uint64_t row;
    if (__builtin_mul_overflow(w, (uint64_t)bpe * nc, &row) || row > UINT64_MAX - 511)
        return false;
    row = round_up(row, 512);
    return !__builtin_mul_overflow(row, h ? h : 1, out) &&
           !__builtin_mul_overflow(*out, d ? d : 1, out);
}

EXPORT CUresult cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *desc)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (pHandle == NULL || desc == NULL || desc->Width == 0)
        return CUDA_ERROR_INVALID_VALUE;
    int bpe = format_bytes(desc->Format);
    unsigned nc = desc->NumChannels;
    if (bpe == 0 || (nc != 1 && nc != 2 && nc != 4))
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t size, h;
    if (!array_bytes(desc->Width, desc->Height, 0, bpe, nc, &size))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUDA_ARRAY3D_DESCRIPTOR d3 = {.Width = desc->Width,
                                  .Height = desc->Height,
                                  .Format = desc->Format,
                                  .NumChannels = desc->NumChannels};
    r = handle_alloc(c, size, AK_ARRAY, &d3, false, &h);
    if (r == CUDA_SUCCESS)
        *pHandle = (CUarray)(uintptr_t)h;
    return r;
}

EXPORT CUresult cuArrayDestroy(CUarray h) { return handle_free((uint64_t)(uintptr_t)h, AK_ARRAY); }

#define ARRAY3D_KNOWN_FLAGS                                                    \
    (CUDA_ARRAY3D_LAYERED | CUDA_ARRAY3D_SURFACE_LDST | CUDA_ARRAY3D_CUBEMAP | \
     CUDA_ARRAY3D_TEXTURE_GATHER | CUDA_ARRAY3D_SPARSE)

/* Validates a 3D descriptor as the driver does; returns the element size. */
static CUresult check_array3d(const CUDA_ARRAY3D_DESCRIPTOR *d, int *bpe)
{
    *bpe = format_bytes(d->Format);
    unsigned nc = d->NumChannels;
    if (d->Width == 0 || *bpe == 0 || (nc != 1 && nc != 2 && nc != 4) ||
        (d->Flags & ~(unsigned)ARRAY3D_KNOWN_FLAGS) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    bool layered = d->Flags & CUDA_ARRAY3D_LAYERED;
    if (d->Flags & CUDA_ARRAY3D_CUBEMAP) {
        /* Square faces; 6 of them, or 6 per layer. */
        if (d->Width != d->Height || d->Depth == 0 || d->Depth % 6 != 0 ||
            (!layered && d->Depth != 6))
            return CUDA_ERROR_INVALID_VALUE;
    } else if (layered) {
        if (d->Depth == 0) /* the layer count */
            return CUDA_ERROR_INVALID_VALUE;
    } else if (d->Depth > 0 && d->Height == 0) {
        return CUDA_ERROR_INVALID_VALUE; /* a 3D array needs a height */
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuArray3DCreate_v2(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *desc)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (pHandle == NULL || desc == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    int bpe;
    r = check_array3d(desc, &bpe);
    if (r != CUDA_SUCCESS)
        return r;
    uint64_t size, h;
    if (!array_bytes(desc->Width, desc->Height, desc->Depth, bpe, desc->NumChannels, &size))
        return CUDA_ERROR_OUT_OF_MEMORY;
    r = handle_alloc(c, size, AK_ARRAY, desc, true, &h);
    if (r == CUDA_SUCCESS)
        *pHandle = (CUarray)(uintptr_t)h;
    return r;
}

static uint64_t level_dim(uint64_t v, unsigned l)
{
    if (v == 0)
        return 0;
    v >>= l;
    return v ? v : 1;
}

/* A mipmapped array holds every level: level l halves Width, Height and (unless the
 * array is layered or a cubemap, where Depth counts layers/faces) Depth l times,
 * never below 1; each level is charged like an array of that size. */
EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *pHandle,
                                       const CUDA_ARRAY3D_DESCRIPTOR *desc, unsigned int levels)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (pHandle == NULL || desc == NULL || levels == 0)
        return CUDA_ERROR_INVALID_VALUE;
    int bpe;
    r = check_array3d(desc, &bpe);
    if (r != CUDA_SUCCESS)
        return r;
    bool fixed_depth = desc->Flags & (CUDA_ARRAY3D_LAYERED | CUDA_ARRAY3D_CUBEMAP);
    uint64_t largest = desc->Width;
    if (desc->Height > largest)
        largest = desc->Height;
    if (!fixed_depth && desc->Depth > largest)
        largest = desc->Depth;
    unsigned max_levels = 64 - (unsigned)__builtin_clzll(largest); /* floor(log2) + 1 */
    if (levels > max_levels)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t size = 0;
    for (unsigned l = 0; l < levels; l++) {
        uint64_t lv;
        if (!array_bytes(level_dim(desc->Width, l), level_dim(desc->Height, l),
                         fixed_depth ? desc->Depth : level_dim(desc->Depth, l), bpe,
                         desc->NumChannels, &lv) ||
            __builtin_add_overflow(size, lv, &size))
            return CUDA_ERROR_OUT_OF_MEMORY;
    }
    uint64_t h;
    r = handle_alloc(c, size, AK_MIPMAP, desc, true, &h);
    if (r == CUDA_SUCCESS)
        *pHandle = (CUmipmappedArray)(uintptr_t)h;
    return r;
}

EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray h)
{
    return handle_free((uint64_t)(uintptr_t)h, AK_MIPMAP);
}

/* The descriptor an array was created with (a 3D array's Depth included). */
static CUresult array_desc(CUarray h, CUDA_ARRAY3D_DESCRIPTOR *out, bool *is3d)
{
    CHECK_INIT();
    if (out == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.lock);
    struct sim_alloc *a = at_find((uint64_t)(uintptr_t)h, false);
    CUresult r = CUDA_ERROR_INVALID_HANDLE;
    if (h != NULL && a != NULL && a->kind == AK_ARRAY) {
        const struct sim_array *arr = (const struct sim_array *)h;
        *out = arr->desc;
        *is3d = arr->is3d;
        r = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuArrayGetDescriptor_v2(CUDA_ARRAY_DESCRIPTOR *pdesc, CUarray h)
{
    CUDA_ARRAY3D_DESCRIPTOR d;
    bool is3d;
    if (pdesc == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult r = array_desc(h, &d, &is3d);
    if (r != CUDA_SUCCESS)
        return r;
    if (is3d && (d.Depth != 0 || d.Flags != 0)) /* as the driver: not a 1D/2D array */
        return CUDA_ERROR_INVALID_HANDLE;
    pdesc->Width = d.Width;
    pdesc->Height = d.Height;
    pdesc->Format = d.Format;
    pdesc->NumChannels = d.NumChannels;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuArray3DGetDescriptor_v2(CUDA_ARRAY3D_DESCRIPTOR *pdesc, CUarray h)
{
    bool is3d;
    if (pdesc == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return array_desc(h, pdesc, &is3d);
}
