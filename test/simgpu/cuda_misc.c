//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * cuda_misc.c — the rest of what a full driver client (PyCUDA links ~160 entry
 * points) expects to find: context limits and cache / shared-memory configuration,
 * peer access, texture and surface references, the JIT linker, IPC, OpenGL interop
 * and the profiler controls.
 *
 * What the simulated node answers, and why:
 *  - limits and configurations are kept per context and read back; nothing depends
 *    on them (the malloc heap a real device reserves for CU_LIMIT_MALLOC_HEAP_SIZE is
 *    not charged);
 *  - peer access: no two simulated devices can access each other
 *    (cuDeviceCanAccessPeer 0, as for GPUs without NVLink or a shared PCIe switch);
 *    peer copies work (the driver stages them through the host);
 *  - texture references are plain records (a module has none: cuModuleGetTexRef is
 *    CUDA_ERROR_NOT_FOUND, so surface references cannot exist);
 *  - the linker accepts PTX/cubin input and hands back a stub image that
 *    cuModuleLoadData accepts (modules hold no code: see cuda_launch.c);
 *  - IPC is CUDA_ERROR_NOT_SUPPORTED (device memory contents are process-private
 *    mappings here; the real driver says the same on platforms without IPC);
 *  - OpenGL: the node is headless, so every interop call that needs a GL context is
 *    CUDA_ERROR_INVALID_GRAPHICS_CONTEXT (cuGLInit, which needs none, succeeds);
 *  - the profiler controls succeed (no profiler attached).
 */
#define _GNU_SOURCE
#include "cuda_internal.h"

#include <sys/stat.h>

#define SIM_ERR_UNSUPPORTED_LIMIT ((CUresult)215)
#define SIM_ERR_PEER_ACCESS_UNSUPPORTED ((CUresult)217)
#define SIM_ERR_INVALID_GRAPHICS_CONTEXT ((CUresult)219)
#define SIM_ERR_FILE_NOT_FOUND ((CUresult)301)
#define SIM_ERR_PEER_ACCESS_NOT_ENABLED ((CUresult)705)

#define TEXREF_MAGIC 0x54455831u
#define LINK_MAGIC 0x4c4e4b31u

/* ------------------------------------------------------------------ context configuration */

EXPORT CUresult cuCtxGetApiVersion(CUcontext ctx, unsigned int *version)
{
    CHECK_INIT();
    if (version == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_ctx *c = (struct sim_ctx *)ctx;
    if (c == NULL && need_ctx(&c) != CUDA_SUCCESS)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (!ctx_live(c))
        return CUDA_ERROR_INVALID_CONTEXT;
    *version = 3020; /* every context here is created through the _v2 API */
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetCacheConfig(int *config)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (config == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *config = (int)c->cache_config;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSetCacheConfig(int config)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (config < 0 || config > 3) /* PREFER_NONE, SHARED, L1, EQUAL */
        return CUDA_ERROR_INVALID_VALUE;
    c->cache_config = (unsigned)config;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetSharedMemConfig(int *config)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (config == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *config = (int)c->shmem_config;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSetSharedMemConfig(int config)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (config < 0 || config > 2) /* DEFAULT, FOUR_BYTE, EIGHT_BYTE */
        return CUDA_ERROR_INVALID_VALUE;
    c->shmem_config = (unsigned)config;
    return CUDA_SUCCESS;
}

/* CU_LIMIT_*: stack size, printf FIFO, malloc heap, device runtime sync depth and
 * pending launches, L2 fetch granularity, persisting L2 size (H100 defaults). */
static const size_t limit_default[] = {1024, 1 << 20, 8 << 20, 2, 2048, 64, 0};
#define NLIMITS (sizeof limit_default / sizeof limit_default[0])

EXPORT CUresult cuCtxGetLimit(size_t *value, int limit)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (value == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (limit < 0 || (size_t)limit >= NLIMITS)
        return SIM_ERR_UNSUPPORTED_LIMIT;
    *value = (c->limits_set & (1u << limit)) ? c->limits[limit] : limit_default[limit];
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSetLimit(int limit, size_t value)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (limit < 0 || (size_t)limit >= NLIMITS)
        return SIM_ERR_UNSUPPORTED_LIMIT;
    if (limit == 5 && value != 0 && value != 32 && value != 64 && value != 128)
        return CUDA_ERROR_INVALID_VALUE;
    c->limits[limit] = value;
    c->limits_set |= 1u << limit;
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------ peer access */

EXPORT CUresult cuDeviceCanAccessPeer(int *can, CUdevice d, CUdevice peer)
{
    CHECK_INIT();
    if (can == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d) || !ord_ok(peer))
        return CUDA_ERROR_INVALID_DEVICE;
    *can = 0;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxEnablePeerAccess(CUcontext peer, unsigned int flags)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ctx_live((struct sim_ctx *)peer))
        return CUDA_ERROR_INVALID_CONTEXT;
    return SIM_ERR_PEER_ACCESS_UNSUPPORTED;
}

EXPORT CUresult cuCtxDisablePeerAccess(CUcontext peer)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (!ctx_live((struct sim_ctx *)peer))
        return CUDA_ERROR_INVALID_CONTEXT;
    return SIM_ERR_PEER_ACCESS_NOT_ENABLED;
}

/* ------------------------------------------------------------------ texture references */

struct sim_texref {
    uint32_t magic;
    bool alive;
    CUarray array;
    CUdeviceptr addr;
    size_t bytes;
    int format, channels;
    int address_mode[3];
    int filter_mode;
    unsigned flags;
};

static struct sim_texref *texref(void *h)
{
    struct sim_texref *t = h;
    return t != NULL && t->magic == TEXREF_MAGIC && t->alive ? t : NULL;
}

EXPORT CUresult cuTexRefCreate(void **ph)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (ph == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_texref *t = calloc(1, sizeof *t);
    if (t == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    t->magic = TEXREF_MAGIC;
    t->alive = true;
    t->format = CU_AD_FORMAT_FLOAT;
    t->channels = 1;
    *ph = t;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuTexRefDestroy(void *h)
{
    CHECK_INIT();
    struct sim_texref *t = texref(h);
    if (t == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    t->alive = false; /* kept, so a stale handle tests as invalid */
    return CUDA_SUCCESS;
}

EXPORT CUresult cuTexRefSetArray(void *h, CUarray a, unsigned int flags)
{
    CHECK_INIT();
    struct sim_texref *t = texref(h);
    if (t == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (flags != 0x01) /* CU_TRSA_OVERRIDE_FORMAT */
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_ARRAY3D_DESCRIPTOR d;
    CUresult r = cuArray3DGetDescriptor_v2(&d, a);
    if (r != CUDA_SUCCESS)
        return r;
    t->array = a;
    t->addr = 0;
    t->format = d.Format;
    t->channels = (int)d.NumChannels;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuTexRefGetArray(CUarray *pa, void *h)
{
    CHECK_INIT();
    struct sim_texref *t = texref(h);
    if (t == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (pa == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (t->array == NULL)
        return CUDA_ERROR_INVALID_VALUE; /* bound to linear memory, or unbound */
    *pa = t->array;
    return CUDA_SUCCESS;
}

static CUresult texref_bind(void *h, CUdeviceptr p, size_t bytes)
{
    CHECK_INIT();
    struct sim_texref *t = texref(h);
    if (t == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (p % 256 != 0 && p != 0) /* texture alignment of the offset is returned instead */
        return CUDA_ERROR_INVALID_VALUE;
    t->array = NULL;
    t->addr = p;
    t->bytes = bytes;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuTexRefSetAddress_v2(size_t *off, void *h, CUdeviceptr p, size_t bytes)
{
    CUresult r = texref_bind(h, p, bytes);
    if (r == CUDA_SUCCESS && off != NULL)
        *off = 0;
    return r;
}

EXPORT CUresult cuTexRefSetAddress2D_v3(void *h, const CUDA_ARRAY_DESCRIPTOR *d, CUdeviceptr p,
                                        size_t pitch)
{
    if (d == NULL || pitch == 0)
        return ready() ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = texref_bind(h, p, pitch * (d->Height ? d->Height : 1));
    if (r == CUDA_SUCCESS) {
        struct sim_texref *t = texref(h);
        t->format = d->Format;
        t->channels = (int)d->NumChannels;
    }
    return r;
}

EXPORT CUresult cuTexRefGetAddress_v2(CUdeviceptr *pp, void *h)
{
    CHECK_INIT();
    struct sim_texref *t = texref(h);
    if (t == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (pp == NULL || t->addr == 0)
        return CUDA_ERROR_INVALID_VALUE;
    *pp = t->addr;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuTexRefSetFormat(void *h, int format, int channels)
{
    CHECK_INIT();
    struct sim_texref *t = texref(h);
    if (t == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (format_bytes((CUarray_format)format) == 0 ||
        (channels != 1 && channels != 2 && channels != 4))
        return CUDA_ERROR_INVALID_VALUE;
    t->format = format;
    t->channels = channels;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuTexRefGetFormat(int *format, int *channels, void *h)
{
    CHECK_INIT();
    struct sim_texref *t = texref(h);
    if (t == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (format != NULL)
        *format = t->format;
    if (channels != NULL)
        *channels = t->channels;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuTexRefSetAddressMode(void *h, int dim, int mode)
{
    CHECK_INIT();
    struct sim_texref *t = texref(h);
    if (t == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (dim < 0 || dim > 2 || mode < 0 || mode > 3) /* WRAP, CLAMP, MIRROR, BORDER */
        return CUDA_ERROR_INVALID_VALUE;
    t->address_mode[dim] = mode;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuTexRefGetAddressMode(int *mode, void *h, int dim)
{
    CHECK_INIT();
    struct sim_texref *t = texref(h);
    if (t == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (mode == NULL || dim < 0 || dim > 2)
        return CUDA_ERROR_INVALID_VALUE;
    *mode = t->address_mode[dim];
    return CUDA_SUCCESS;
}

EXPORT CUresult cuTexRefSetFilterMode(void *h, int mode)
{
    CHECK_INIT();
    struct sim_texref *t = texref(h);
    if (t == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (mode != 0 && mode != 1) /* POINT, LINEAR */
        return CUDA_ERROR_INVALID_VALUE;
    t->filter_mode = mode;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuTexRefGetFilterMode(int *mode, void *h)
{
    CHECK_INIT();
    struct sim_texref *t = texref(h);
    if (t == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (mode == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *mode = t->filter_mode;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuTexRefSetFlags(void *h, unsigned int flags)
{
    CHECK_INIT();
    struct sim_texref *t = texref(h);
    if (t == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if ((flags & ~0x3fu) != 0) /* READ_AS_INTEGER, NORMALIZED_COORDINATES, SRGB, ... */
        return CUDA_ERROR_INVALID_VALUE;
    t->flags = flags;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuTexRefGetFlags(unsigned int *flags, void *h)
{
    CHECK_INIT();
    struct sim_texref *t = texref(h);
    if (t == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (flags == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *flags = t->flags;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuParamSetTexRef(CUfunction f, int texunit, void *h)
{
    CHECK_INIT();
    if (!func_ok(f))
        return CUDA_ERROR_INVALID_HANDLE;
    if (texunit != -1) /* CU_PARAM_TR_DEFAULT */
        return CUDA_ERROR_INVALID_VALUE;
    return texref(h) != NULL ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

/* No module defines a surface reference (cuModuleGetSurfRef: not found), so no
 * handle passed here can be one. */
EXPORT CUresult cuSurfRefSetArray(void *h, CUarray a, unsigned int flags)
{
    (void)h, (void)a, (void)flags;
    CHECK_INIT();
    return CUDA_ERROR_INVALID_HANDLE;
}

EXPORT CUresult cuSurfRefGetArray(CUarray *pa, void *h)
{
    (void)pa, (void)h;
    CHECK_INIT();
    return CUDA_ERROR_INVALID_HANDLE;
}

/* ------------------------------------------------------------------ the JIT linker */

struct sim_link {
    uint32_t magic;
    bool alive;
    unsigned inputs;
    char image[64]; /* what cuLinkComplete hands back: a stub cubin for cuModuleLoadData */
};

EXPORT CUresult cuLinkCreate_v2(unsigned int n, void *options, void **values, void **pstate)
{
    (void)options, (void)values;
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (pstate == NULL || (n > 0 && (options == NULL || values == NULL)))
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_link *l = calloc(1, sizeof *l);
    if (l == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    l->magic = LINK_MAGIC;
    l->alive = true;
    *pstate = l;
    return CUDA_SUCCESS;
}

static struct sim_link *link_ok(void *h)
{
    struct sim_link *l = h;
    return l != NULL && l->magic == LINK_MAGIC && l->alive ? l : NULL;
}

EXPORT CUresult cuLinkAddData_v2(void *state, int type, void *data, size_t size, const char *name,
                                 unsigned int n, void *options, void **values)
{
    (void)name, (void)n, (void)options, (void)values;
    CHECK_INIT();
    struct sim_link *l = link_ok(state);
    if (l == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (data == NULL || size == 0 || type < 0 || type > 5) /* CUBIN .. LIBRARY */
        return CUDA_ERROR_INVALID_VALUE;
    l->inputs++;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuLinkAddFile_v2(void *state, int type, const char *path, unsigned int n,
                                 void *options, void **values)
{
    (void)n, (void)options, (void)values;
    CHECK_INIT();
    struct sim_link *l = link_ok(state);
    if (l == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (path == NULL || type < 0 || type > 5)
        return CUDA_ERROR_INVALID_VALUE;
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return SIM_ERR_FILE_NOT_FOUND;
    l->inputs++;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuLinkComplete(void *state, void **cubin, size_t *size)
{
    CHECK_INIT();
    struct sim_link *l = link_ok(state);
    if (l == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    if (cubin == NULL || size == NULL || l->inputs == 0)
        return CUDA_ERROR_INVALID_VALUE;
    snprintf(l->image, sizeof l->image, "simgpu linked image (%u inputs)", l->inputs);
    *cubin = l->image;
    *size = strlen(l->image) + 1;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuLinkDestroy(void *state)
{
    CHECK_INIT();
    struct sim_link *l = link_ok(state);
    if (l == NULL)
        return CUDA_ERROR_INVALID_HANDLE;
    l->alive = false; /* kept: the image stays valid as long as the caller may read it */
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------ IPC */

EXPORT CUresult cuIpcGetMemHandle(void *handle, CUdeviceptr p)
{
    (void)handle, (void)p;
    CHECK_INIT();
    return CUDA_ERROR_NOT_SUPPORTED;
}

EXPORT CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *pp, const void *handle, unsigned int flags)
{
    (void)pp, (void)handle, (void)flags;
    CHECK_INIT();
    return CUDA_ERROR_NOT_SUPPORTED;
}

EXPORT CUresult cuIpcCloseMemHandle(CUdeviceptr p)
{
    (void)p;
    CHECK_INIT();
    return CUDA_ERROR_NOT_SUPPORTED;
}

EXPORT CUresult cuIpcGetEventHandle(void *handle, CUevent e)
{
    (void)handle, (void)e;
    CHECK_INIT();
    return CUDA_ERROR_NOT_SUPPORTED;
}

EXPORT CUresult cuIpcOpenEventHandle(CUevent *pe, const void *handle)
{
    (void)pe, (void)handle;
    CHECK_INIT();
    return CUDA_ERROR_NOT_SUPPORTED;
}

/* ------------------------------------------------------------------ OpenGL (headless) */

EXPORT CUresult cuGLInit(void)
{
    CHECK_INIT();
    return CUDA_SUCCESS;
}

#define NO_GL(...)                               \
    {                                            \
        CHECK_INIT();                            \
        return SIM_ERR_INVALID_GRAPHICS_CONTEXT; \
    }

EXPORT CUresult cuGLCtxCreate_v2(CUcontext *p, unsigned int f, CUdevice d)
{
    (void)p, (void)f, (void)d;
    NO_GL();
}
EXPORT CUresult cuGLRegisterBufferObject(unsigned int b)
{
    (void)b;
    NO_GL();
}
EXPORT CUresult cuGLUnregisterBufferObject(unsigned int b)
{
    (void)b;
    NO_GL();
}
EXPORT CUresult cuGLMapBufferObject_v2(CUdeviceptr *p, size_t *s, unsigned int b)
{
    (void)p, (void)s, (void)b;
    NO_GL();
}
EXPORT CUresult cuGLUnmapBufferObject(unsigned int b)
{
    (void)b;
    NO_GL();
}
EXPORT CUresult cuGraphicsGLRegisterBuffer(void **r, unsigned int b, unsigned int f)
{
    (void)r, (void)b, (void)f;
    NO_GL();
}
EXPORT CUresult cuGraphicsGLRegisterImage(void **r, unsigned int i, unsigned int t, unsigned int f)
{
    (void)r, (void)i, (void)t, (void)f;
    NO_GL();
}

/* No graphics resource can be registered, so every handle is invalid. */
EXPORT CUresult cuGraphicsUnregisterResource(void *r)
{
    (void)r;
    CHECK_INIT();
    return CUDA_ERROR_INVALID_HANDLE;
}
EXPORT CUresult cuGraphicsMapResources(unsigned int n, void **r, CUstream s)
{
    (void)s;
    CHECK_INIT();
    return n == 0 || r == NULL ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_INVALID_HANDLE;
}
EXPORT CUresult cuGraphicsUnmapResources(unsigned int n, void **r, CUstream s)
{
    (void)s;
    CHECK_INIT();
    return n == 0 || r == NULL ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_INVALID_HANDLE;
}
EXPORT CUresult cuGraphicsResourceGetMappedPointer_v2(CUdeviceptr *p, size_t *s, void *r)
{
    (void)p, (void)s, (void)r;
    CHECK_INIT();
    return CUDA_ERROR_INVALID_HANDLE;
}
EXPORT CUresult cuGraphicsSubResourceGetMappedArray(CUarray *a, void *r, unsigned int i,
                                                    unsigned int l)
{
    (void)a, (void)r, (void)i, (void)l;
    CHECK_INIT();
    return CUDA_ERROR_INVALID_HANDLE;
}

/* ------------------------------------------------------------------ profiler */

EXPORT CUresult cuProfilerInitialize(const char *config, const char *out, int mode)
{
    (void)config, (void)out, (void)mode;
    CHECK_INIT();
    return CUDA_SUCCESS;
}

EXPORT CUresult cuProfilerStart(void)
{
    CHECK_INIT();
    return CUDA_SUCCESS;
}

EXPORT CUresult cuProfilerStop(void)
{
    CHECK_INIT();
    return CUDA_SUCCESS;
}
