//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * cuda_copy.c — the contents of device memory: cuMemcpy* (host, device, arrays,
 * 2D, 3D, peer; synchronous and async), cuMemsetD* and page-locked host memory.
 *
 * Device addresses are fake (sim_va_alloc: above the user address space), so the
 * bytes live elsewhere: each allocation of the table (cuMemAlloc*, pitch, managed,
 * pool memory, arrays) gets, at the first copy or memset that touches it, a private
 * anonymous mapping of its size, MAP_NORESERVE: untouched pages cost nothing, so a
 * 16 GiB allocation costs only what is written to it. The mapping goes with the
 * allocation (alloc_drop). Copies round-trip real bytes; kernels do not change them
 * (the simulator does not run code).
 *
 * A cuMemCreate handle's contents are one such mapping of the handle's size, made at
 * the first copy into a range mapped to it (cuMemMap), so every mapping of the handle
 * sees the same bytes; it goes when the handle is released and unmapped.
 *
 * Page-locked host memory (cuMemHostAlloc, cuMemHostRegister) is ordinary host
 * memory recorded in a list; with unified addressing its device pointer is its host
 * address, and copies accept it wherever device memory is expected.
 *
 * Ordering: a synchronous copy or memset waits until the work queued in its context
 * is done (as the legacy stream does); the async forms copy at once (the bytes do not
 * depend on simulated kernels) and return. Graph memory has no contents here: a copy
 * touching it is CUDA_ERROR_INVALID_VALUE.
 */
#define _GNU_SOURCE
#include "cuda_internal.h"

#include <sys/mman.h>

/* Codes the shared header does not name. */
#define SIM_ERR_HOST_MEMORY_ALREADY_REGISTERED ((CUresult)712)
#define SIM_ERR_HOST_MEMORY_NOT_REGISTERED ((CUresult)713)

#define CU_MEMHOSTALLOC_PORTABLE 0x01
#define CU_MEMHOSTALLOC_DEVICEMAP 0x02
#define CU_MEMHOSTALLOC_WRITECOMBINED 0x04
#define CU_MEMHOSTREGISTER_KNOWN 0x0f /* PORTABLE, DEVICEMAP, IOMEMORY, READ_ONLY */

typedef enum {
    MT_HOST = 1,
    MT_DEVICE = 2,
    MT_ARRAY = 3,
    MT_UNIFIED = 4,
} sim_memorytype;

/* CUDA_MEMCPY2D */
struct sim_memcpy2d {
    size_t srcXInBytes, srcY;
    int srcMemoryType;
    const void *srcHost;
    CUdeviceptr srcDevice;
    CUarray srcArray;
    size_t srcPitch;
    size_t dstXInBytes, dstY;
    int dstMemoryType;
    void *dstHost;
    CUdeviceptr dstDevice;
    CUarray dstArray;
    size_t dstPitch;
    size_t WidthInBytes, Height;
};

/* CUDA_MEMCPY3D and CUDA_MEMCPY3D_PEER (the same layout: the peer form's contexts
 * sit where the plain form has a reserved pointer). */
struct sim_memcpy3d {
    size_t srcXInBytes, srcY, srcZ, srcLOD;
    int srcMemoryType;
    const void *srcHost;
    CUdeviceptr srcDevice;
    CUarray srcArray;
    void *srcContext;
    size_t srcPitch, srcHeight;
    size_t dstXInBytes, dstY, dstZ, dstLOD;
    int dstMemoryType;
    void *dstHost;
    CUdeviceptr dstDevice;
    CUarray dstArray;
    void *dstContext;
    size_t dstPitch, dstHeight;
    size_t WidthInBytes, Height, Depth;
};

struct sim_host {
    char *ptr;
    size_t size;
    unsigned flags;
    bool allocated; /* cuMemHostAlloc (ours to unmap), not cuMemHostRegister */
    struct sim_host *next;
};

static struct sim_host *hosts; /* under G.lock */

void alloc_unback(struct sim_alloc *a)
{
    if (a->bytes != NULL)
        munmap(a->bytes, a->size);
    a->bytes = NULL;
}

static struct sim_host *host_find(const void *p, size_t len)
{
    const char *cp = p;
    for (struct sim_host *h = hosts; h != NULL; h = h->next)
        if (cp >= h->ptr && cp < h->ptr + h->size && len <= (size_t)(h->ptr + h->size - cp))
            return h;
    return NULL;
}

/* Where the bytes of device range [p, p+len) are (lock held): the allocation's
 * mapping (made now if it has none), or page-locked host memory. */
static CUresult dev_bytes(uint64_t p, uint64_t len, char **out)
{
    struct sim_alloc *a = at_find(p, false);
    if (a == NULL || alloc_is_handle(a->kind))
        a = at_containing(p);
    if (a == NULL) {
        char *v = vmm_bytes(p, len);
        if (v != NULL) {
            *out = v;
            return CUDA_SUCCESS;
        }
        struct sim_host *h = host_find((const void *)(uintptr_t)p, len);
        if (h == NULL)
            return CUDA_ERROR_INVALID_VALUE;
        *out = (char *)(uintptr_t)p;
        return CUDA_SUCCESS;
    }
    if (len > a->ptr + a->size - p)
        return CUDA_ERROR_INVALID_VALUE;
    if (a->bytes == NULL) {
        void *m = mmap(NULL, a->size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            return CUDA_ERROR_OUT_OF_MEMORY;
        a->bytes = m;
    }
    *out = (char *)a->bytes + (p - a->ptr);
    return CUDA_SUCCESS;
}

/* An array's bytes (lock held), its row pitch and rows per slice. */
static CUresult array_bytes_of(CUarray h, char **out, size_t *pitch, size_t *rows, size_t *size)
{
    struct sim_alloc *a = at_find((uint64_t)(uintptr_t)h, false);
    if (h == NULL || a == NULL || a->kind != AK_ARRAY)
        return CUDA_ERROR_INVALID_VALUE;
    const struct sim_array *arr = (const struct sim_array *)h;
    if (a->bytes == NULL) {
        void *m = mmap(NULL, a->size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            return CUDA_ERROR_OUT_OF_MEMORY;
        a->bytes = m;
    }
    *out = a->bytes;
    *pitch = round_up(
        arr->desc.Width * (size_t)format_bytes(arr->desc.Format) * arr->desc.NumChannels, 512);
    *rows = arr->desc.Height ? arr->desc.Height : 1;
    *size = a->size;
    return CUDA_SUCCESS;
}

/* Waits for the work queued in the current context (a synchronous copy). */
static CUresult sync_ctx(void)
{
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    uint64_t t = atomic_load(&c->last_end);
    if (t > sim_now_ns())
        sim_sleep_until(t);
    return CUDA_SUCCESS;
}

/* Checks an async call's stream (the copy itself happens at once). */
static CUresult check_stream(CUstream s)
{
    struct sim_ctx *c;
    _Atomic uint64_t *end;
    return resolve_stream(s, false, &c, &end);
}

static CUresult prologue(bool async, CUstream s)
{
    CHECK_INIT();
    return async ? check_stream(s) : sync_ctx();
}

/* ------------------------------------------------------------------ linear copies */

enum side { S_HOST, S_DEV };

static CUresult copy_linear(enum side dk, uint64_t dst, enum side sk, uint64_t src, size_t n,
                            bool async, CUstream s)
{
    CUresult r = prologue(async, s);
    if (r != CUDA_SUCCESS || n == 0)
        return r;
    if ((dk == S_HOST && dst == 0) || (sk == S_HOST && src == 0))
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.lock);
    char *d = (char *)(uintptr_t)dst, *sp = (char *)(uintptr_t)src;
    if (dk == S_DEV)
        r = dev_bytes(dst, n, &d);
    if (r == CUDA_SUCCESS && sk == S_DEV)
        r = dev_bytes(src, n, &sp);
    if (r == CUDA_SUCCESS)
        memmove(d, sp, n);
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n)
{
    return copy_linear(S_DEV, dst, S_HOST, (uint64_t)(uintptr_t)src, n, false, NULL);
}

EXPORT CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n)
{
    return copy_linear(S_HOST, (uint64_t)(uintptr_t)dst, S_DEV, src, n, false, NULL);
}

EXPORT CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    return copy_linear(S_DEV, dst, S_DEV, src, n, false, NULL);
}

EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream s)
{
    return copy_linear(S_DEV, dst, S_HOST, (uint64_t)(uintptr_t)src, n, true, s);
}

EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream s)
{
    return copy_linear(S_HOST, (uint64_t)(uintptr_t)dst, S_DEV, src, n, true, s);
}

EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s)
{
    return copy_linear(S_DEV, dst, S_DEV, src, n, true, s);
}

/* Unified addressing: either side may be host or device memory. */
EXPORT CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    CHECK_INIT();
    pthread_mutex_lock(&G.lock);
    char *p;
    enum side dk = dev_bytes(dst, n, &p) == CUDA_SUCCESS ? S_DEV : S_HOST;
    enum side sk = dev_bytes(src, n, &p) == CUDA_SUCCESS ? S_DEV : S_HOST;
    pthread_mutex_unlock(&G.lock);
    return copy_linear(dk, dst, sk, src, n, false, NULL);
}

EXPORT CUresult cuMemcpyPeer(CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx,
                             size_t n)
{
    if (!ctx_live((struct sim_ctx *)dctx) || !ctx_live((struct sim_ctx *)sctx))
        return ready() ? CUDA_ERROR_INVALID_CONTEXT : CUDA_ERROR_NOT_INITIALIZED;
    return copy_linear(S_DEV, dst, S_DEV, src, n, false, NULL);
}

EXPORT CUresult cuMemcpyPeerAsync(CUdeviceptr dst, CUcontext dctx, CUdeviceptr src, CUcontext sctx,
                                  size_t n, CUstream s)
{
    if (!ctx_live((struct sim_ctx *)dctx) || !ctx_live((struct sim_ctx *)sctx))
        return ready() ? CUDA_ERROR_INVALID_CONTEXT : CUDA_ERROR_NOT_INITIALIZED;
    return copy_linear(S_DEV, dst, S_DEV, src, n, true, s);
}

/* ------------------------------------------------------------------ 2D / 3D and arrays */

/* One side of a strided copy, resolved (lock held) to host bytes. */
struct side3d {
    char *base;
    size_t pitch, height; /* bytes per row, rows per slice */
};

static CUresult resolve_side(int type, const void *host, CUdeviceptr dev, CUarray arr, size_t x,
                             size_t y, size_t z, size_t pitch, size_t height, size_t w, size_t h,
                             size_t d, struct side3d *out)
{
    if (type == MT_ARRAY) {
        char *b;
        size_t ap, rows, size;
        CUresult r = array_bytes_of(arr, &b, &ap, &rows, &size);
        if (r != CUDA_SUCCESS)
            return r;
        uint64_t first = (z * rows + y) * ap + x;
        uint64_t last = ((z + d - 1) * rows + (y + h - 1)) * ap + x + w;
        if (x + w > ap || y + h > rows || last > size || first > last)
            return CUDA_ERROR_INVALID_VALUE;
        out->base = b + first;
        out->pitch = ap;
        out->height = rows;
        return CUDA_SUCCESS;
    }
    if (pitch == 0)
        pitch = w;
    if (height == 0)
        height = h;
    if (x + w > pitch && h > 1)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t first = (z * height + y) * pitch + x;
    uint64_t extent = ((d - 1) * height + (h - 1)) * pitch + w;
    if (type == MT_HOST) {
        if (host == NULL)
            return CUDA_ERROR_INVALID_VALUE;
        out->base = (char *)(uintptr_t)host + first;
    } else if (type == MT_DEVICE || type == MT_UNIFIED) {
        CUresult r = dev_bytes(dev + first, extent, &out->base);
        if (r != CUDA_SUCCESS) {
            if (type != MT_UNIFIED || dev == 0)
                return r;
            out->base = (char *)(uintptr_t)dev + first; /* unified: host memory */
        }
    } else {
        return CUDA_ERROR_INVALID_VALUE;
    }
    out->pitch = pitch;
    out->height = height;
    return CUDA_SUCCESS;
}

static CUresult copy3d(const struct sim_memcpy3d *p, bool async, CUstream s)
{
    if (p == NULL)
        return ready() ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = prologue(async, s);
    if (r != CUDA_SUCCESS)
        return r;
    size_t w = p->WidthInBytes, h = p->Height ? p->Height : 1, d = p->Depth ? p->Depth : 1;
    if (w == 0)
        return CUDA_SUCCESS;
    if (p->srcLOD != 0 || p->dstLOD != 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct side3d src, dst;
    pthread_mutex_lock(&G.lock);
    r = resolve_side(p->srcMemoryType, p->srcHost, p->srcDevice, p->srcArray, p->srcXInBytes,
                     p->srcY, p->srcZ, p->srcPitch, p->srcHeight, w, h, d, &src);
    if (r == CUDA_SUCCESS)
        r = resolve_side(p->dstMemoryType, p->dstHost, p->dstDevice, p->dstArray, p->dstXInBytes,
                         p->dstY, p->dstZ, p->dstPitch, p->dstHeight, w, h, d, &dst);
    if (r == CUDA_SUCCESS)
        for (size_t k = 0; k < d; k++)
            for (size_t j = 0; j < h; j++)
                memmove(dst.base + (k * dst.height + j) * dst.pitch,
                        src.base + (k * src.height + j) * src.pitch, w);
    pthread_mutex_unlock(&G.lock);
    return r;
}

static CUresult copy2d(const struct sim_memcpy2d *p, bool async, CUstream s)
{
    if (p == NULL)
        return ready() ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_INITIALIZED;
    struct sim_memcpy3d q = {
        .srcXInBytes = p->srcXInBytes,
        .srcY = p->srcY,
        .srcMemoryType = p->srcMemoryType,
        .srcHost = p->srcHost,
        .srcDevice = p->srcDevice,
        .srcArray = p->srcArray,
        .srcPitch = p->srcPitch,
        .dstXInBytes = p->dstXInBytes,
        .dstY = p->dstY,
        .dstMemoryType = p->dstMemoryType,
        .dstHost = p->dstHost,
        .dstDevice = p->dstDevice,
        .dstArray = p->dstArray,
        .dstPitch = p->dstPitch,
        .WidthInBytes = p->WidthInBytes,
        .Height = p->Height,
        .Depth = 1,
    };
    return copy3d(&q, async, s);
}

EXPORT CUresult cuMemcpy2D_v2(const void *p) { return copy2d(p, false, NULL); }
EXPORT CUresult cuMemcpy2DUnaligned_v2(const void *p) { return copy2d(p, false, NULL); }
EXPORT CUresult cuMemcpy2DAsync_v2(const void *p, CUstream s) { return copy2d(p, true, s); }
EXPORT CUresult cuMemcpy3D_v2(const void *p) { return copy3d(p, false, NULL); }
EXPORT CUresult cuMemcpy3DAsync_v2(const void *p, CUstream s) { return copy3d(p, true, s); }
EXPORT CUresult cuMemcpy3DPeer(const void *p) { return copy3d(p, false, NULL); }
EXPORT CUresult cuMemcpy3DPeerAsync(const void *p, CUstream s) { return copy3d(p, true, s); }

/* 1D copies with an array on one side: the array's bytes as one range, offset in
 * bytes from its start. */
static CUresult copy_array1d(int dt, void *dh, CUdeviceptr dd, CUarray da, size_t doff, int st,
                             const void *sh, CUdeviceptr sd, CUarray sa, size_t soff, size_t n)
{
    struct sim_memcpy3d q = {
        .srcXInBytes = st == MT_ARRAY ? soff : 0,
        .srcMemoryType = st,
        .srcHost = sh,
        .srcDevice = sd,
        .srcArray = sa,
        .dstXInBytes = dt == MT_ARRAY ? doff : 0,
        .dstMemoryType = dt,
        .dstHost = dh,
        .dstDevice = dd,
        .dstArray = da,
        .WidthInBytes = n,
        .Height = 1,
        .Depth = 1,
    };
    return copy3d(&q, false, NULL);
}

EXPORT CUresult cuMemcpyHtoA_v2(CUarray dst, size_t off, const void *src, size_t n)
{
    return copy_array1d(MT_ARRAY, NULL, 0, dst, off, MT_HOST, src, 0, NULL, 0, n);
}

EXPORT CUresult cuMemcpyAtoH_v2(void *dst, CUarray src, size_t off, size_t n)
{
    return copy_array1d(MT_HOST, dst, 0, NULL, 0, MT_ARRAY, NULL, 0, src, off, n);
}

EXPORT CUresult cuMemcpyDtoA_v2(CUarray dst, size_t off, CUdeviceptr src, size_t n)
{
    return copy_array1d(MT_ARRAY, NULL, 0, dst, off, MT_DEVICE, NULL, src, NULL, 0, n);
}

EXPORT CUresult cuMemcpyAtoD_v2(CUdeviceptr dst, CUarray src, size_t off, size_t n)
{
    return copy_array1d(MT_DEVICE, NULL, dst, NULL, 0, MT_ARRAY, NULL, 0, src, off, n);
}

EXPORT CUresult cuMemcpyAtoA_v2(CUarray dst, size_t doff, CUarray src, size_t soff, size_t n)
{
    return copy_array1d(MT_ARRAY, NULL, 0, dst, doff, MT_ARRAY, NULL, 0, src, soff, n);
}

/* ------------------------------------------------------------------ memset */

/* Fills `h` rows of `w` elements of `esz` bytes, `pitch` bytes apart. */
static CUresult memset2d(CUdeviceptr p, size_t pitch, uint32_t v, size_t esz, size_t w, size_t h,
                         bool async, CUstream s)
{
    CUresult r = prologue(async, s);
    if (r != CUDA_SUCCESS)
        return r;
    if (w == 0 || h == 0)
        return CUDA_SUCCESS;
    if (p % esz != 0 || (h > 1 && (pitch % esz != 0 || pitch < w * esz)))
        return CUDA_ERROR_INVALID_VALUE;
    if (h == 1)
        pitch = w * esz;
    pthread_mutex_lock(&G.lock);
    char *b;
    r = dev_bytes(p, (h - 1) * pitch + w * esz, &b);
    if (r == CUDA_SUCCESS) {
        for (size_t j = 0; j < h; j++) {
            char *row = b + j * pitch;
            if (esz == 1) {
                memset(row, (int)(v & 0xff), w);
            } else if (esz == 2) {
                uint16_t x = (uint16_t)v;
                for (size_t i = 0; i < w; i++)
                    memcpy(row + 2 * i, &x, 2);
            } else {
                for (size_t i = 0; i < w; i++)
                    memcpy(row + 4 * i, &v, 4);
            }
        }
    }
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemsetD8_v2(CUdeviceptr p, unsigned char v, size_t n)
{
    return memset2d(p, 0, v, 1, n, 1, false, NULL);
}

EXPORT CUresult cuMemsetD16_v2(CUdeviceptr p, unsigned short v, size_t n)
{
    return memset2d(p, 0, v, 2, n, 1, false, NULL);
}

EXPORT CUresult cuMemsetD32_v2(CUdeviceptr p, unsigned int v, size_t n)
{
    return memset2d(p, 0, v, 4, n, 1, false, NULL);
}

EXPORT CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, CUstream s)
{
    return memset2d(p, 0, v, 1, n, 1, true, s);
}

EXPORT CUresult cuMemsetD16Async(CUdeviceptr p, unsigned short v, size_t n, CUstream s)
{
    return memset2d(p, 0, v, 2, n, 1, true, s);
}

EXPORT CUresult cuMemsetD32Async(CUdeviceptr p, unsigned int v, size_t n, CUstream s)
{
    return memset2d(p, 0, v, 4, n, 1, true, s);
}

EXPORT CUresult cuMemsetD2D8_v2(CUdeviceptr p, size_t pitch, unsigned char v, size_t w, size_t h)
{
    return memset2d(p, pitch, v, 1, w, h, false, NULL);
}

EXPORT CUresult cuMemsetD2D16_v2(CUdeviceptr p, size_t pitch, unsigned short v, size_t w, size_t h)
{
    return memset2d(p, pitch, v, 2, w, h, false, NULL);
}

EXPORT CUresult cuMemsetD2D32_v2(CUdeviceptr p, size_t pitch, unsigned int v, size_t w, size_t h)
{
    return memset2d(p, pitch, v, 4, w, h, false, NULL);
}

EXPORT CUresult cuMemsetD2D8Async(CUdeviceptr p, size_t pitch, unsigned char v, size_t w, size_t h,
                                  CUstream s)
{
    return memset2d(p, pitch, v, 1, w, h, true, s);
}

EXPORT CUresult cuMemsetD2D16Async(CUdeviceptr p, size_t pitch, unsigned short v, size_t w,
                                   size_t h, CUstream s)
{
    return memset2d(p, pitch, v, 2, w, h, true, s);
}

EXPORT CUresult cuMemsetD2D32Async(CUdeviceptr p, size_t pitch, unsigned int v, size_t w, size_t h,
                                   CUstream s)
{
    return memset2d(p, pitch, v, 4, w, h, true, s);
}

/* ------------------------------------------------------------------ page-locked host memory */

static CUresult host_add(void *p, size_t size, unsigned flags, bool allocated)
{
    struct sim_host *h = calloc(1, sizeof *h);
    if (h == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    h->ptr = p;
    h->size = size;
    h->flags = flags;
    h->allocated = allocated;
    h->next = hosts;
    hosts = h;
    return CUDA_SUCCESS;
}

/* Unlinks the entry starting exactly at p (lock held). */
static struct sim_host *host_take(const void *p)
{
    for (struct sim_host **pp = &hosts; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->ptr == p) {
            struct sim_host *h = *pp;
            *pp = h->next;
            return h;
        }
    }
    return NULL;
}

EXPORT CUresult cuMemHostAlloc(void **pp, size_t size, unsigned int flags)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (pp == NULL || size == 0 ||
        (flags & ~(unsigned)(CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP |
                             CU_MEMHOSTALLOC_WRITECOMBINED)) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&G.lock);
    r = host_add(m, size, flags, true);
    pthread_mutex_unlock(&G.lock);
    if (r != CUDA_SUCCESS) {
        munmap(m, size);
        return r;
    }
    *pp = m;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAllocHost_v2(void **pp, size_t size) { return cuMemHostAlloc(pp, size, 0); }

EXPORT CUresult cuMemFreeHost(void *p)
{
    CHECK_INIT();
    pthread_mutex_lock(&G.lock);
    struct sim_host *h = host_take(p);
    if (h != NULL && !h->allocated) { /* registered, not allocated: not ours to free */
        h->next = hosts;
        hosts = h;
        h = NULL;
    }
    pthread_mutex_unlock(&G.lock);
    if (h == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    munmap(h->ptr, h->size);
    free(h);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemHostRegister_v2(void *p, size_t size, unsigned int flags)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (p == NULL || size == 0 || (flags & ~(unsigned)CU_MEMHOSTREGISTER_KNOWN) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.lock);
    if (host_find(p, 1) != NULL || host_find((char *)p + size - 1, 1) != NULL)
        r = SIM_ERR_HOST_MEMORY_ALREADY_REGISTERED;
    else
        r = host_add(p, size, flags, false);
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemHostUnregister(void *p)
{
    CHECK_INIT();
    pthread_mutex_lock(&G.lock);
    struct sim_host *h = host_take(p);
    if (h != NULL && h->allocated) {
        h->next = hosts;
        hosts = h;
        h = NULL;
    }
    pthread_mutex_unlock(&G.lock);
    if (h == NULL)
        return SIM_ERR_HOST_MEMORY_NOT_REGISTERED;
    free(h);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *pd, void *p, unsigned int flags)
{
    CHECK_INIT();
    if (pd == NULL || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.lock);
    struct sim_host *h = host_find(p, 1);
    pthread_mutex_unlock(&G.lock);
    if (h == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pd = (CUdeviceptr)(uintptr_t)p; /* unified addressing: the same address */
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemHostGetFlags(unsigned int *pflags, void *p)
{
    CHECK_INIT();
    if (pflags == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.lock);
    struct sim_host *h = host_find(p, 1);
    unsigned f = h != NULL ? h->flags : 0;
    pthread_mutex_unlock(&G.lock);
    if (h == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pflags = f;
    return CUDA_SUCCESS;
}

/* Managed memory is device memory here; attaching it to a stream changes nothing. */
EXPORT CUresult cuStreamAttachMemAsync(CUstream s, CUdeviceptr p, size_t len, unsigned int flags)
{
    CHECK_INIT();
    CUresult r = check_stream(s);
    if (r != CUDA_SUCCESS)
        return r;
    if (flags != 0x1 && flags != 0x2 && flags != 0x4) /* GLOBAL, HOST, SINGLE */
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.lock);
    struct sim_alloc *a = at_find(p, false);
    bool ok = a != NULL && a->kind == AK_MANAGED && (len == 0 || len == a->size);
    pthread_mutex_unlock(&G.lock);
    return ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
