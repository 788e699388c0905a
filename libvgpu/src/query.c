/*
 * query.c — memory queries report the slice, never another tenant's usage.
 *
 *   cuMemGetInfo_v2            total = min(limit, real total),
 *                              free = min(limit - used, real free)
 *   cuDeviceTotalMem_v2        min(limit, real total)
 *   nvmlDeviceGetMemoryInfo    total = min(limit, real total), used = the slice's used
 *   nvmlDeviceGetMemoryInfo_v2 bytes, free = min(limit - used, real free), reserved = 0
 * A limit larger than the card (a misconfigured or deliberately unlimited slice)
 * never makes the card look bigger than it is.
 * "used" is the slice's admission counter (all its processes, context footprints
 * included). free is clamped at zero (a limit lowered below usage reports 0, not a
 * wrapped-around huge number) and never exceeds what the physical device really
 * has free (another tenant filling the GPU shows up as less free, never as its
 * usage). Devices outside the slice pass through unchanged: the slice cannot
 * allocate there anyway, and in a container they are not visible.
 */
#include <string.h>

#include "vgpu_internal.h"

static inline uint64_t clamped_total(int sd, uint64_t real_total)
{
    uint64_t limit = vgpu_limit(sd);
    return limit < real_total ? limit : real_total;
}

static inline uint64_t clamped_free(int sd, uint64_t real_free)
{
    uint64_t limit = vgpu_limit(sd), used = vgpu_used(sd);
    uint64_t f = limit > used ? limit - used : 0;
    return f < real_free ? f : real_free;
}

VGPU_EXPORT CUresult cuMemGetInfo_v2(size_t *free, size_t *total)
{
    int m = vgpu_mode();
    if (VGPU_UNLIKELY(!vgpu_real.cuMemGetInfo_v2))
        return CUDA_ERROR_NOT_FOUND;
    CUresult r = vgpu_real.cuMemGetInfo_v2(free, total);
    if (r != CUDA_SUCCESS || m != VGPU_MODE_ENFORCE)
        return r;
    CUresult err;
    int sd = vgpu_current_target(NULL, NULL, &err);
    if (sd < 0)
        return r;
    if (free)
        *free = (size_t)clamped_free(sd, *free);
    if (total)
        *total = (size_t)clamped_total(sd, *total);
    return r;
}

VGPU_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    int m = vgpu_mode();
    if (VGPU_UNLIKELY(!vgpu_real.cuDeviceTotalMem_v2))
        return CUDA_ERROR_NOT_FOUND;
    CUresult r = vgpu_real.cuDeviceTotalMem_v2(bytes, dev);
    if (r != CUDA_SUCCESS || m != VGPU_MODE_ENFORCE || !bytes)
        return r;
    CUresult err;
    int sd = vgpu_slice_dev_of_ordinal(dev, &err);
    if (sd >= 0)
        *bytes = (size_t)clamped_total(sd, *bytes);
    return r;
}

/* ------------------------------------------------------------------------ NVML */

/* nvmlDevice_t -> slice device, cached: handles are stable for the process's life
 * and the lookup costs NVML calls. Lock-free reads; appends under a spinlock. */
#define NVML_CACHE 64
static struct {
    _Atomic(nvmlDevice_t) handle;
    int sd;
} nvml_cache[NVML_CACHE];
static _Atomic int nvml_cached;
static vgpu_lock_t nvml_lock;

static int nvml_slice_dev(nvmlDevice_t dev)
{
    int n = atomic_load_explicit(&nvml_cached, memory_order_acquire);
    for (int i = 0; i < n; i++)
        if (atomic_load_explicit(&nvml_cache[i].handle, memory_order_relaxed) == dev)
            return nvml_cache[i].sd;
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
    const char *u = NULL;
    unsigned int index = ~0u;
    if (vgpu_real.nvmlDeviceGetUUID &&
        vgpu_real.nvmlDeviceGetUUID(dev, uuid, sizeof uuid) == NVML_SUCCESS) {
        uuid[sizeof uuid - 1] = 0;
        u = uuid;
    }
    if (vgpu_real.nvmlDeviceGetIndex)
        vgpu_real.nvmlDeviceGetIndex(dev, &index);
    int sd = vgpu_match_nvml_device(index, u);
    vgpu_lock(&nvml_lock);
    n = atomic_load_explicit(&nvml_cached, memory_order_relaxed);
    if (n < NVML_CACHE) {
        nvml_cache[n].sd = sd;
        atomic_store_explicit(&nvml_cache[n].handle, dev, memory_order_relaxed);
        atomic_store_explicit(&nvml_cached, n + 1, memory_order_release);
    }
    vgpu_unlock(&nvml_lock);
    return sd;
}

VGPU_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    int m = vgpu_mode();
    vgpu_nvml_init();
    if (VGPU_UNLIKELY(!vgpu_real.nvmlDeviceGetMemoryInfo))
        return NVML_ERROR_FUNCTION_NOT_FOUND;
    nvmlReturn_t r = vgpu_real.nvmlDeviceGetMemoryInfo(device, memory);
    if (r != NVML_SUCCESS || m != VGPU_MODE_ENFORCE || !memory)
        return r;
    int sd = nvml_slice_dev(device);
    if (sd < 0)
        return r;
    memory->free = clamped_free(sd, memory->free);
    memory->total = clamped_total(sd, memory->total);
    memory->used = vgpu_used(sd);
    return r;
}

VGPU_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    int m = vgpu_mode();
    vgpu_nvml_init();
    if (VGPU_UNLIKELY(!vgpu_real.nvmlDeviceGetMemoryInfo_v2))
        return NVML_ERROR_FUNCTION_NOT_FOUND;
    nvmlReturn_t r = vgpu_real.nvmlDeviceGetMemoryInfo_v2(device, memory);
    if (r != NVML_SUCCESS || m != VGPU_MODE_ENFORCE || !memory)
        return r;
    int sd = nvml_slice_dev(device);
    if (sd < 0)
        return r;
    memory->free = clamped_free(sd, memory->free);
    memory->total = clamped_total(sd, memory->total);
    memory->used = vgpu_used(sd);
    memory->reserved = 0;
    return r;
}
