/*
 * memory.c — allocation and release hooks outside the stream-ordered allocator.
 *
 * What is charged, and how much (README "What libvgpu charges"):
 *   cuMemAlloc_v2        the requested size, on the current context's device
 *   cuMemAllocPitch_v2   reserved as round_up(width, 512) * height before the call,
 *                        trued up to pitch * height with the pitch the driver chose
 *   cuMemAllocManaged    POLICY: charged in full as device memory of the current
 *                        context's device. Managed memory can migrate to the host,
 *                        but a slice that could oversubscribe through it would not be
 *                        a cap; frameworks rarely use it for large buffers.
 *   cuMemCreate          in vmm.c: the size, at create, on prop->location.id (VMM:
 *                        PyTorch expandable segments, vLLM sleep mode); credited
 *                        when the handle is released AND no longer mapped — at
 *                        cuMemRelease if it is unmapped, else at the cuMemUnmap
 *                        that drops its last mapping (the driver frees it then).
 *                        Reserving VA costs nothing; mapping holds the memory.
 *   cuArrayCreate_v2     round_up(Width * bytes_per_element * NumChannels, 512) *
 *                        max(Height, 1), on the current context's device
 *   cuArray3DCreate_v2   the same times max(Depth, 1) (Depth: the layers of a
 *                        layered array, 6 for a cubemap); sparse arrays too (the
 *                        driver backs them later: over-charged, never under)
 *   cuMipmappedArrayCreate  the sum over its levels of the 3D formula, each level
 *                        halving Width, Height and (unless layered or cubemap)
 *                        Depth, never below 1; credited by cuMipmappedArrayDestroy
 * Arrays, mipmapped arrays and graph memory (graph.c) die with their context.
 * The pre-3.2 cuArrayCreate / cuArray3DCreate take descriptors of 32-bit sizes: a
 * different ABI, not hooked (like cuMemAlloc), and not provided by 64-bit drivers'
 * headers since CUDA 3.2.
 * Releases credit exactly what was charged. A pointer/handle libvgpu never saw (it
 * was allocated before a fork, or in passthrough) goes straight to the driver and
 * is not touched.
 */
#include "vgpu_internal.h"

/* Common prologue of a charged allocation on the current context's device. Returns
 * the slice device, or <0 with *ret set to what the hook must return. */
static inline int charge_target(CUcontext *ctx, CUresult *ret)
{
    CUresult err;
    int sd = vgpu_current_target(ctx, NULL, &err);
    if (VGPU_UNLIKELY(sd < 0)) {
        *ret = err;
        return -1;
    }
    if (VGPU_UNLIKELY(!vgpu_slot_get())) {
        *ret = CUDA_ERROR_OUT_OF_MEMORY;
        return -1;
    }
    return sd;
}

static inline void remember(int ns, uint64_t key, uint64_t size, int sd, CUcontext ctx)
{
    struct vgpu_rec rec = {
        .size = size, .ctx = (uint64_t)(uintptr_t)ctx, .sd = (int16_t)sd, .kind = VGPU_KIND_PLAIN};
    vgpu_tab_insert(ns, key, &rec);
}

VGPU_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
    int m = vgpu_mode();
    cuMemAlloc_v2_fn real = vgpu_real.cuMemAlloc_v2;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    if (m != VGPU_MODE_ENFORCE)
        return m == VGPU_MODE_REFUSE ? CUDA_ERROR_OUT_OF_MEMORY : real(dptr, bytesize);
    CUresult ret;
    CUcontext ctx = NULL;
    int sd = charge_target(&ctx, &ret);
    if (sd < 0)
        return ret;
    if (!vgpu_reserve(sd, bytesize))
        return vgpu_refuse(sd);
    CUresult r = real(dptr, bytesize);
    if (r != CUDA_SUCCESS) {
        vgpu_unreserve(sd, bytesize);
        return r;
    }
    vgpu_commit(sd, bytesize);
    remember(VGPU_NS_PTR, *dptr, bytesize, sd, ctx);
    return r;
}

VGPU_EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags)
{
    int m = vgpu_mode();
    cuMemAllocManaged_fn real = vgpu_real.cuMemAllocManaged;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    if (m != VGPU_MODE_ENFORCE)
        return m == VGPU_MODE_REFUSE ? CUDA_ERROR_OUT_OF_MEMORY : real(dptr, bytesize, flags);
    CUresult ret;
    CUcontext ctx = NULL;
    int sd = charge_target(&ctx, &ret);
    if (sd < 0)
        return ret;
    if (!vgpu_reserve(sd, bytesize))
        return vgpu_refuse(sd);
    CUresult r = real(dptr, bytesize, flags);
    if (r != CUDA_SUCCESS) {
        vgpu_unreserve(sd, bytesize);
        return r;
    }
    vgpu_commit(sd, bytesize);
    remember(VGPU_NS_PTR, *dptr, bytesize, sd, ctx);
    return r;
}

VGPU_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes,
                                        size_t Height, unsigned int ElementSizeBytes)
{
    int m = vgpu_mode();
    cuMemAllocPitch_v2_fn real = vgpu_real.cuMemAllocPitch_v2;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    if (m != VGPU_MODE_ENFORCE)
        return m == VGPU_MODE_REFUSE ? CUDA_ERROR_OUT_OF_MEMORY
                                     : real(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
    CUresult ret;
    CUcontext ctx = NULL;
    int sd = charge_target(&ctx, &ret);
    if (sd < 0)
        return ret;
    /* Estimate with the usual 512-byte pitch alignment; the driver's real pitch
     * trues it up below. */
    uint64_t est;
    if (WidthInBytes > UINT64_MAX - 511 ||
        __builtin_mul_overflow((uint64_t)((WidthInBytes + 511) & ~(size_t)511), (uint64_t)Height,
                               &est))
        return vgpu_refuse(sd);
    if (!vgpu_reserve(sd, est))
        return vgpu_refuse(sd);
    CUresult r = real(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
    if (r != CUDA_SUCCESS) {
        vgpu_unreserve(sd, est);
        return r;
    }
    uint64_t actual;
    if (__builtin_mul_overflow((uint64_t)*pPitch, (uint64_t)Height, &actual))
        actual = est;
    if (actual > est) {
        if (!vgpu_reserve(sd, actual - est)) {
            /* The pitch made it bigger than the slice allows: undo, refuse. */
            if (vgpu_real.cuMemFree_v2)
                vgpu_real.cuMemFree_v2(*dptr);
            vgpu_unreserve(sd, est);
            return vgpu_refuse(sd);
        }
    } else if (actual < est) {
        vgpu_unreserve(sd, est - actual);
    }
    vgpu_commit(sd, actual);
    remember(VGPU_NS_PTR, *dptr, actual, sd, ctx);
    return r;
}

VGPU_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    int m = vgpu_mode();
    cuMemFree_v2_fn real = vgpu_real.cuMemFree_v2;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    struct vgpu_rec rec;
    /* Removed before the driver frees it: the driver cannot hand the same address
     * to another thread (whose insert would collide) until its free returned. */
    if (m != VGPU_MODE_ENFORCE || !vgpu_tab_remove(VGPU_NS_PTR, dptr, &rec))
        return real(dptr);
    CUresult r = real(dptr);
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

/* --------------------------------------------------------------------- arrays */

static uint64_t format_bytes(CUarray_format f)
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
    /* Formats this header does not name (block-compressed, YUV, ...): charge as 16
     * bytes per element, the largest texel size: never under-charged. */
    return 16;
}

/* Footprint of one array (level) of W x H x D elements as charged: a row rounded
 * up to 512 bytes, times max(H, 1) rows, times max(D, 1) slices or layers. 0 on
 * overflow. */
static uint64_t array_bytes(uint64_t w, uint64_t h, uint64_t d, CUarray_format f, unsigned nc)
{
    uint64_t row, out;
    if (__builtin_mul_overflow(w, format_bytes(f), &row) ||
        __builtin_mul_overflow(row, (uint64_t)nc, &row) || row > UINT64_MAX - 511)
        return 0;
    row = (row + 511) & ~(uint64_t)511;
    if (__builtin_mul_overflow(row, h ? h : 1, &out) ||
        __builtin_mul_overflow(out, d ? d : 1, &out))
        return 0;
    return out;
}

static uint64_t array_footprint(const CUDA_ARRAY_DESCRIPTOR *d)
{
    return array_bytes(d->Width, d->Height, 0, d->Format, d->NumChannels);
}

static inline uint64_t level_dim(uint64_t v, unsigned l)
{
    if (!v)
        return 0; /* an absent dimension stays absent */
    v = l < 64 ? v >> l : 0;
    return v ? v : 1;
}

/* Footprint of a mipmapped array: the sum of its levels. 0 on overflow. Past 64
 * levels every dimension that shrinks is 1: the rest are charged as copies of
 * level 64, without a loop as long as the caller's level count. */
static uint64_t mipmap_footprint(const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned levels)
{
    bool fixed_depth = d->Flags & (CUDA_ARRAY3D_LAYERED | CUDA_ARRAY3D_CUBEMAP);
    uint64_t sum = 0, lv = 0;
    for (unsigned l = 0; l < levels && l <= 64; l++) {
        lv =
            array_bytes(level_dim(d->Width, l), level_dim(d->Height, l),
                        fixed_depth ? d->Depth : level_dim(d->Depth, l), d->Format, d->NumChannels);
        if (lv == 0 || __builtin_add_overflow(sum, lv, &sum))
            return 0;
    }
    if (levels > 65) {
        uint64_t rest;
        if (__builtin_mul_overflow(lv, (uint64_t)(levels - 65), &rest) ||
            __builtin_add_overflow(sum, rest, &sum))
            return 0;
    }
    return sum;
}

/* Shared body of the array-creating hooks: charge `size` on the current context's
 * device around `call`, which writes the new handle to *handle; the record lands
 * in namespace ns. size 0 means the footprint overflowed. */
#define ARRAY_CREATE_BODY(ns, handle, size_expr, call)                \
    CUresult ret;                                                     \
    CUcontext ctx = NULL;                                             \
    int sd = charge_target(&ctx, &ret);                               \
    if (sd < 0)                                                       \
        return ret;                                                   \
    uint64_t size = (size_expr);                                      \
    if (size == 0)                                                    \
        return vgpu_refuse(sd); /* overflows 64 bits: fits nowhere */ \
    if (!vgpu_reserve(sd, size))                                      \
        return vgpu_refuse(sd);                                       \
    CUresult r = (call);                                              \
    if (r != CUDA_SUCCESS) {                                          \
        vgpu_unreserve(sd, size);                                     \
        return r;                                                     \
    }                                                                 \
    vgpu_commit(sd, size);                                            \
    remember(ns, (uint64_t)(uintptr_t) * (handle), size, sd, ctx);    \
    return r;

VGPU_EXPORT CUresult cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *desc)
{
    int m = vgpu_mode();
    cuArrayCreate_v2_fn real = vgpu_real.cuArrayCreate_v2;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    if (m != VGPU_MODE_ENFORCE)
        return m == VGPU_MODE_REFUSE ? CUDA_ERROR_OUT_OF_MEMORY : real(pHandle, desc);
    if (!desc || !pHandle || desc->Width == 0)
        return real(pHandle, desc); /* the driver's own error */
    ARRAY_CREATE_BODY(VGPU_NS_ARRAY, pHandle, array_footprint(desc), real(pHandle, desc))
}

VGPU_EXPORT CUresult cuArray3DCreate_v2(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *desc)
{
    int m = vgpu_mode();
    cuArray3DCreate_v2_fn real = vgpu_real.cuArray3DCreate_v2;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    if (m != VGPU_MODE_ENFORCE)
        return m == VGPU_MODE_REFUSE ? CUDA_ERROR_OUT_OF_MEMORY : real(pHandle, desc);
    if (!desc || !pHandle || desc->Width == 0)
        return real(pHandle, desc);
    ARRAY_CREATE_BODY(
        VGPU_NS_ARRAY, pHandle,
        array_bytes(desc->Width, desc->Height, desc->Depth, desc->Format, desc->NumChannels),
        real(pHandle, desc))
}

VGPU_EXPORT CUresult cuArrayDestroy(CUarray hArray)
{
    int m = vgpu_mode();
    cuArrayDestroy_fn real = vgpu_real.cuArrayDestroy;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    struct vgpu_rec rec;
    uint64_t key = (uint64_t)(uintptr_t)hArray;
    if (m != VGPU_MODE_ENFORCE || !vgpu_tab_remove(VGPU_NS_ARRAY, key, &rec))
        return real(hArray);
    CUresult r = real(hArray);
    if (r != CUDA_SUCCESS) {
        vgpu_tab_insert(VGPU_NS_ARRAY, key, &rec);
        return r;
    }
    vgpu_credit(rec.sd, rec.size);
    return r;
}

/* --------------------------------------------------------- mipmapped arrays */

VGPU_EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *pHandle,
                                            const CUDA_ARRAY3D_DESCRIPTOR *desc,
                                            unsigned int numMipmapLevels)
{
    int m = vgpu_mode();
    cuMipmappedArrayCreate_fn real = vgpu_real.cuMipmappedArrayCreate;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    if (m != VGPU_MODE_ENFORCE)
        return m == VGPU_MODE_REFUSE ? CUDA_ERROR_OUT_OF_MEMORY
                                     : real(pHandle, desc, numMipmapLevels);
    if (!desc || !pHandle || desc->Width == 0 || numMipmapLevels == 0)
        return real(pHandle, desc, numMipmapLevels);
    ARRAY_CREATE_BODY(VGPU_NS_MIPMAP, pHandle, mipmap_footprint(desc, numMipmapLevels),
                      real(pHandle, desc, numMipmapLevels))
}

VGPU_EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray hMipmappedArray)
{
    int m = vgpu_mode();
    cuMipmappedArrayDestroy_fn real = vgpu_real.cuMipmappedArrayDestroy;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    struct vgpu_rec rec;
    uint64_t key = (uint64_t)(uintptr_t)hMipmappedArray;
    if (m != VGPU_MODE_ENFORCE || !vgpu_tab_remove(VGPU_NS_MIPMAP, key, &rec))
        return real(hMipmappedArray);
    CUresult r = real(hMipmappedArray);
    if (r != CUDA_SUCCESS) {
        vgpu_tab_insert(VGPU_NS_MIPMAP, key, &rec);
        return r;
    }
    vgpu_credit(rec.sd, rec.size);
    return r;
}
