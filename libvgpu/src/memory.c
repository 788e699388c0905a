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

/* Footprint of a 1D/2D array as charged (documented formula). 0 on overflow. */
static uint64_t array_footprint(const CUDA_ARRAY_DESCRIPTOR *d)
{
    uint64_t row, out;
    if (__builtin_mul_overflow((uint64_t)d->Width, format_bytes(d->Format), &row) ||
        __builtin_mul_overflow(row, (uint64_t)d->NumChannels, &row) || row > UINT64_MAX - 511)
        return 0;
    row = (row + 511) & ~(uint64_t)511;
    if (__builtin_mul_overflow(row, (uint64_t)(d->Height ? d->Height : 1), &out))
        return 0;
    return out;
}

VGPU_EXPORT CUresult cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *desc)
{
    int m = vgpu_mode();
    cuArrayCreate_v2_fn real = vgpu_real.cuArrayCreate_v2;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    if (m != VGPU_MODE_ENFORCE)
        return m == VGPU_MODE_REFUSE ? CUDA_ERROR_OUT_OF_MEMORY : real(pHandle, desc);
    if (!desc || !pHandle)
        return real(pHandle, desc);
    CUresult ret;
    CUcontext ctx = NULL;
    int sd = charge_target(&ctx, &ret);
    if (sd < 0)
        return ret;
    uint64_t size = array_footprint(desc);
    if (size == 0 && desc->Width != 0)
        return vgpu_refuse(sd); /* overflows 64 bits: cannot fit anywhere */
    if (!vgpu_reserve(sd, size))
        return vgpu_refuse(sd);
    CUresult r = real(pHandle, desc);
    if (r != CUDA_SUCCESS) {
        vgpu_unreserve(sd, size);
        return r;
    }
    vgpu_commit(sd, size);
    remember(VGPU_NS_ARRAY, (uint64_t)(uintptr_t)*pHandle, size, sd, ctx);
    return r;
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
