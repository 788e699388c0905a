//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * cuda_launch.c — streams, modules and kernel launches (the device queue): the
 * CUDA 4+ launches, the pre-4.0 cuLaunch / cuLaunchGrid / cuLaunchGridAsync (block
 * shape from cuFuncSetBlockShape) and the multi-device cooperative launch.
 */
#define _GNU_SOURCE
#include "cuda_internal.h"

#define STREAM_MAGIC 0x53545231u
#define MOD_MAGIC 0x4d4f4431u
#define FUNC_MAGIC 0x46554e31u

struct sim_stream {
    uint32_t magic;
    bool alive;
    unsigned epoch;
    struct sim_ctx *ctx;
    unsigned flags;
    _Atomic uint64_t last_end;
};

struct sim_module {
    uint32_t magic;
    bool alive;
    unsigned epoch;
    struct sim_ctx *ctx;
};

struct sim_func {
    uint32_t magic;
    struct sim_module *mod;
    int block[3];         /* cuFuncSetBlockShape (the legacy launches); 1x1x1 until set */
    int max_dyn_shared;   /* CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES */
    int carveout;         /* CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT */
    unsigned shared_size; /* cuFuncSetSharedSize (the legacy launches) */
    unsigned param_size;  /* cuParamSetSize */
};

/* ------------------------------------------------------------------ streams */

CUresult resolve_stream(CUstream h, bool ptsz, struct sim_ctx **pc, _Atomic uint64_t **pend)
{
    if (h == NULL || h == CU_STREAM_LEGACY_H || h == CU_STREAM_PER_THREAD_H) {
        struct sim_ctx *c;
        CUresult r = need_ctx(&c);
        if (r != CUDA_SUCCESS)
            return r;
        *pc = c;
        bool per_thread = h == CU_STREAM_PER_THREAD_H || (h == NULL && ptsz);
        *pend = per_thread ? &t_ptds_end : &c->null_end;
        return CUDA_SUCCESS;
    }
    struct sim_stream *s = (struct sim_stream *)h;
    if (s->magic != STREAM_MAGIC || !s->alive || s->epoch != G.epoch)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!ctx_live(s->ctx))
        return CUDA_ERROR_INVALID_CONTEXT;
    *pc = s->ctx;
    *pend = &s->last_end;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamCreate(CUstream *ph, unsigned int flags)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (ph == NULL || flags > 1)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_stream *s = calloc(1, sizeof *s);
    if (s == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    s->magic = STREAM_MAGIC;
    s->alive = true;
    s->epoch = G.epoch;
    s->ctx = c;
    s->flags = flags;
    *ph = (CUstream)s;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamCreateWithPriority(CUstream *ph, unsigned int flags, int priority)
{
    (void)priority;
    return cuStreamCreate(ph, flags);
}

EXPORT CUresult cuStreamDestroy_v2(CUstream h)
{
    CHECK_INIT();
    struct sim_stream *s = (struct sim_stream *)h;
    if (h == NULL || h == CU_STREAM_LEGACY_H || h == CU_STREAM_PER_THREAD_H ||
        s->magic != STREAM_MAGIC || !s->alive || s->epoch != G.epoch)
        return CUDA_ERROR_INVALID_HANDLE;
    s->alive = false; /* kept allocated so a stale handle tests as invalid */
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamDestroy(CUstream h) { return cuStreamDestroy_v2(h); }

static CUresult stream_sync(CUstream h, bool ptsz)
{
    CHECK_INIT();
    struct sim_ctx *c;
    _Atomic uint64_t *end;
    CUresult r = resolve_stream(h, ptsz, &c, &end);
    if (r != CUDA_SUCCESS)
        return r;
    uint64_t t = atomic_load(end);
    if (h == NULL && !ptsz) /* the legacy stream synchronizes with every blocking stream */
        t = atomic_load(&c->last_end);
    if (t > sim_now_ns())
        sim_sleep_until(t);
    pthread_mutex_lock(&G.lock);
    pools_sync_trim(c->dev);
    pthread_mutex_unlock(&G.lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamSynchronize(CUstream h) { return stream_sync(h, false); }
EXPORT CUresult cuStreamSynchronize_ptsz(CUstream h) { return stream_sync(h, true); }

static CUresult stream_query(CUstream h, bool ptsz)
{
    CHECK_INIT();
    struct sim_ctx *c;
    _Atomic uint64_t *end;
    CUresult r = resolve_stream(h, ptsz, &c, &end);
    if (r != CUDA_SUCCESS)
        return r;
    return atomic_load(end) > sim_now_ns() ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS;
}

EXPORT CUresult cuStreamQuery(CUstream h) { return stream_query(h, false); }
EXPORT CUresult cuStreamQuery_ptsz(CUstream h) { return stream_query(h, true); }

/* ------------------------------------------------------------------ modules */

EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    if (module == NULL || image == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_module *m = calloc(1, sizeof *m);
    if (m == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    m->magic = MOD_MAGIC;
    m->alive = true;
    m->epoch = G.epoch;
    m->ctx = c;
    *module = (CUmodule)m;
    return CUDA_SUCCESS;
}

static bool module_ok(const struct sim_module *m)
{
    return m != NULL && m->magic == MOD_MAGIC && m->alive && m->epoch == G.epoch;
}

EXPORT CUresult cuModuleUnload(CUmodule hmod)
{
    CHECK_INIT();
    struct sim_module *m = (struct sim_module *)hmod;
    if (!module_ok(m))
        return CUDA_ERROR_INVALID_HANDLE;
    m->alive = false;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name)
{
    CHECK_INIT();
    if (hfunc == NULL || name == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_module *m = (struct sim_module *)hmod;
    if (!module_ok(m))
        return CUDA_ERROR_INVALID_HANDLE;
    struct sim_func *f = calloc(1, sizeof *f);
    if (f == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    f->magic = FUNC_MAGIC;
    f->mod = m;
    f->block[0] = f->block[1] = f->block[2] = 1;
    f->max_dyn_shared = 49152;
    f->carveout = -1;
    *hfunc = (CUfunction)f;
    return CUDA_SUCCESS;
}

/* JIT options whose values the driver writes back (CUjit_option). */
#define JIT_INFO_LOG_BUFFER 3
#define JIT_INFO_LOG_BUFFER_SIZE_BYTES 4
#define JIT_ERROR_LOG_BUFFER 5
#define JIT_ERROR_LOG_BUFFER_SIZE_BYTES 6

/* Modules hold no code: the image is accepted as the driver would a valid one, and
 * the JIT logs come back empty (their size options set to 0, the buffers to ""). */
EXPORT CUresult cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int n,
                                   int *options, void **values)
{
    if (n > 0 && (options == NULL || values == NULL))
        return ready() ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = cuModuleLoadData(module, image);
    if (r != CUDA_SUCCESS)
        return r;
    for (unsigned i = 0; i < n; i++) {
        if (options[i] != JIT_INFO_LOG_BUFFER && options[i] != JIT_ERROR_LOG_BUFFER)
            continue;
        for (unsigned j = 0; j < n; j++) {
            bool size_of_i = options[j] == options[i] + 1;
            if (size_of_i && values[i] != NULL && (uintptr_t)values[j] > 0)
                *(char *)values[i] = '\0';
        }
    }
    for (unsigned i = 0; i < n; i++)
        if (options[i] == JIT_INFO_LOG_BUFFER_SIZE_BYTES ||
            options[i] == JIT_ERROR_LOG_BUFFER_SIZE_BYTES)
            values[i] = (void *)(uintptr_t)0;
    return CUDA_SUCCESS;
}

/* A module from a file: the file must exist and be readable. */
EXPORT CUresult cuModuleLoad(CUmodule *module, const char *fname)
{
    CHECK_INIT();
    if (fname == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    int fd = open(fname, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return CUDA_ERROR_FILE_NOT_FOUND;
    close(fd);
    return cuModuleLoadData(module, fname);
}

/* A module holds no globals, texture or surface references: every name is not
 * found, as the driver answers for a name the module does not define. */
EXPORT CUresult cuModuleGetGlobal_v2(CUdeviceptr *dptr, size_t *bytes, CUmodule hmod,
                                     const char *name)
{
    (void)dptr, (void)bytes;
    CHECK_INIT();
    if (name == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!module_ok((struct sim_module *)hmod))
        return CUDA_ERROR_INVALID_HANDLE;
    return CUDA_ERROR_NOT_FOUND;
}

EXPORT CUresult cuModuleGetTexRef(void **ptex, CUmodule hmod, const char *name)
{
    CHECK_INIT();
    if (ptex == NULL || name == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!module_ok((struct sim_module *)hmod))
        return CUDA_ERROR_INVALID_HANDLE;
    return CUDA_ERROR_NOT_FOUND;
}

EXPORT CUresult cuModuleGetSurfRef(void **psurf, CUmodule hmod, const char *name)
{
    CHECK_INIT();
    if (psurf == NULL || name == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!module_ok((struct sim_module *)hmod))
        return CUDA_ERROR_INVALID_HANDLE;
    return CUDA_ERROR_NOT_FOUND;
}

/* ------------------------------------------------------------------ function attributes */

/* CUfunction_attribute, as a compiled kernel of this device would report them. */
EXPORT CUresult cuFuncGetAttribute(int *pi, int attrib, CUfunction hf)
{
    CHECK_INIT();
    if (pi == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!func_ok(hf))
        return CUDA_ERROR_INVALID_HANDLE;
    const struct sim_func *f = (const struct sim_func *)hf;
    switch (attrib) {
    case 0: *pi = 1024; break;                /* max threads per block */
    case 1: *pi = (int)f->shared_size; break; /* static shared bytes */
    case 2:                                   /* constant bytes */
    case 3: *pi = 0; break;                   /* local bytes */
    case 4: *pi = 32; break;                  /* registers */
    case 5:                                   /* PTX version */
    case 6: *pi = 90; break;                  /* binary version */
    case 7: *pi = 0; break;                   /* cache mode CA */
    case 8: *pi = f->max_dyn_shared; break;
    case 9: *pi = f->carveout; break;
    default:
        if (attrib < 0 || attrib > 15)
            return CUDA_ERROR_INVALID_VALUE;
        *pi = 0; /* the cluster attributes: no cluster requirements */
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuFuncSetAttribute(CUfunction hf, int attrib, int value)
{
    CHECK_INIT();
    if (!func_ok(hf))
        return CUDA_ERROR_INVALID_HANDLE;
    struct sim_func *f = (struct sim_func *)hf;
    if (attrib == 8 && value >= 0 && value <= 232448 - (int)f->shared_size)
        f->max_dyn_shared = value;
    else if (attrib == 9 && value >= -1 && value <= 100)
        f->carveout = value;
    else
        return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuFuncSetCacheConfig(CUfunction hf, int config)
{
    CHECK_INIT();
    if (!func_ok(hf))
        return CUDA_ERROR_INVALID_HANDLE;
    return config < 0 || config > 3 ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

EXPORT CUresult cuFuncSetSharedSize(CUfunction hf, unsigned int bytes)
{
    CHECK_INIT();
    if (!func_ok(hf))
        return CUDA_ERROR_INVALID_HANDLE;
    if (bytes > 232448)
        return CUDA_ERROR_INVALID_VALUE;
    ((struct sim_func *)hf)->shared_size = bytes;
    return CUDA_SUCCESS;
}

/* The legacy parameter calls (for cuLaunch / cuLaunchGrid): checked, not kept (the
 * simulated kernels read no parameters). 4 KiB of parameters, as the driver. */
static CUresult param_check(CUfunction hf, uint64_t end)
{
    CHECK_INIT();
    if (!func_ok(hf))
        return CUDA_ERROR_INVALID_HANDLE;
    return end > 4096 ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

EXPORT CUresult cuParamSetSize(CUfunction hf, unsigned int bytes)
{
    CUresult r = param_check(hf, bytes);
    if (r == CUDA_SUCCESS)
        ((struct sim_func *)hf)->param_size = bytes;
    return r;
}

EXPORT CUresult cuParamSeti(CUfunction hf, int offset, unsigned int value)
{
    (void)value;
    return offset < 0 ? CUDA_ERROR_INVALID_VALUE : param_check(hf, (uint64_t)offset + 4);
}

EXPORT CUresult cuParamSetf(CUfunction hf, int offset, float value)
{
    (void)value;
    return offset < 0 ? CUDA_ERROR_INVALID_VALUE : param_check(hf, (uint64_t)offset + 4);
}

EXPORT CUresult cuParamSetv(CUfunction hf, int offset, void *ptr, unsigned int bytes)
{
    if (offset < 0 || (ptr == NULL && bytes > 0))
        return ready() ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_INITIALIZED;
    return param_check(hf, (uint64_t)offset + bytes);
}

/* ------------------------------------------------------------------ launches */

bool func_ok(CUfunction hf)
{
    const struct sim_func *f = (const struct sim_func *)hf;
    return f != NULL && f->magic == FUNC_MAGIC && module_ok(f->mod);
}

CUresult check_dims(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                    unsigned shmem)
{
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (gx > 2147483647u || gy > 65535 || gz > 65535 || bx > 1024 || by > 1024 || bz > 64 ||
        (uint64_t)bx * by * bz > 1024)
        return CUDA_ERROR_INVALID_VALUE;
    if (shmem > 232448)
        return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS;
}

/* Occupies the device queue for `blocks` blocks on the given stream. */
CUresult launch_blocks(CUstream h, bool ptsz, uint64_t blocks, bool cooperative)
{
    struct sim_ctx *c;
    _Atomic uint64_t *send;
    CUresult r = resolve_stream(h, ptsz, &c, &send);
    if (r != CUDA_SUCCESS)
        return r;
    if (cooperative && blocks > (uint64_t)G.st->hdr.dev[c->dev].sms * MAX_BLOCKS_PER_SM)
        return CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE;
    uint64_t dur = sim_launch_duration(G.st, c->dev, blocks);
    uint64_t end = sim_queue_launch(G.st, G.slot, c->dev, dur);
    atomic_max_u64(send, end);
    atomic_max_u64(&c->last_end, end);
    return CUDA_SUCCESS;
}

static CUresult launch_kernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                              unsigned by, unsigned bz, unsigned shmem, CUstream h, void **params,
                              void **extra, bool ptsz, bool coop)
{
    CHECK_INIT();
    if (!func_ok(f))
        return CUDA_ERROR_INVALID_HANDLE;
    if (params != NULL && extra != NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult r = check_dims(gx, gy, gz, bx, by, bz, shmem);
    if (r != CUDA_SUCCESS)
        return r;
    return launch_blocks(h, ptsz, (uint64_t)gx * gy * gz, coop);
}

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                               unsigned int bx, unsigned int by, unsigned int bz,
                               unsigned int shmem, CUstream h, void **params, void **extra)
{
    return launch_kernel(f, gx, gy, gz, bx, by, bz, shmem, h, params, extra, false, false);
}

EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                                    unsigned int bx, unsigned int by, unsigned int bz,
                                    unsigned int shmem, CUstream h, void **params, void **extra)
{
    return launch_kernel(f, gx, gy, gz, bx, by, bz, shmem, h, params, extra, true, false);
}

EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gx, unsigned int gy,
                                          unsigned int gz, unsigned int bx, unsigned int by,
                                          unsigned int bz, unsigned int shmem, CUstream h,
                                          void **params)
{
    return launch_kernel(f, gx, gy, gz, bx, by, bz, shmem, h, params, NULL, false, true);
}

EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy,
                                               unsigned int gz, unsigned int bx, unsigned int by,
                                               unsigned int bz, unsigned int shmem, CUstream h,
                                               void **params)
{
    return launch_kernel(f, gx, gy, gz, bx, by, bz, shmem, h, params, NULL, true, true);
}

#define CU_LAUNCH_ATTRIBUTE_COOPERATIVE 2

static CUresult launch_ex(const CUlaunchConfig *cfg, CUfunction f, void **params, void **extra,
                          bool ptsz)
{
    CHECK_INIT();
    if (cfg == NULL || (cfg->numAttrs > 0 && cfg->attrs == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    bool coop = false;
    for (unsigned i = 0; i < cfg->numAttrs; i++)
        if (cfg->attrs[i].id == CU_LAUNCH_ATTRIBUTE_COOPERATIVE &&
            *(const int *)cfg->attrs[i].value.pad != 0)
            coop = true;
    return launch_kernel(f, cfg->gridDimX, cfg->gridDimY, cfg->gridDimZ, cfg->blockDimX,
                         cfg->blockDimY, cfg->blockDimZ, cfg->sharedMemBytes, cfg->hStream, params,
                         extra, ptsz, coop);
}

EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *cfg, CUfunction f, void **params,
                                 void **extra)
{
    return launch_ex(cfg, f, params, extra, false);
}

EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *cfg, CUfunction f, void **params,
                                      void **extra)
{
    return launch_ex(cfg, f, params, extra, true);
}

/* ------------------------------------------------------------------ legacy launches */

EXPORT CUresult cuFuncSetBlockShape(CUfunction hf, int x, int y, int z)
{
    CHECK_INIT();
    if (!func_ok(hf))
        return CUDA_ERROR_INVALID_HANDLE;
    if (x <= 0 || y <= 0 || z <= 0 ||
        check_dims(1, 1, 1, (unsigned)x, (unsigned)y, (unsigned)z, 0) != CUDA_SUCCESS)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_func *f = (struct sim_func *)hf;
    f->block[0] = x, f->block[1] = y, f->block[2] = z;
    return CUDA_SUCCESS;
}

/* A legacy launch of a w x h grid with the function's block shape, on stream h
 * (NULL: the legacy default stream; these entry points have no _ptsz form). */
static CUresult launch_grid(CUfunction hf, int w, int h, CUstream s)
{
    CHECK_INIT();
    if (!func_ok(hf))
        return CUDA_ERROR_INVALID_HANDLE;
    if (w <= 0 || h <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    const struct sim_func *f = (const struct sim_func *)hf;
    CUresult r = check_dims((unsigned)w, (unsigned)h, 1, (unsigned)f->block[0],
                            (unsigned)f->block[1], (unsigned)f->block[2], 0);
    if (r != CUDA_SUCCESS)
        return r;
    return launch_blocks(s, false, (uint64_t)w * (uint64_t)h, false);
}

EXPORT CUresult cuLaunch(CUfunction f) { return launch_grid(f, 1, 1, NULL); }
EXPORT CUresult cuLaunchGrid(CUfunction f, int w, int h) { return launch_grid(f, w, h, NULL); }
EXPORT CUresult cuLaunchGridAsync(CUfunction f, int w, int h, CUstream s)
{
    return launch_grid(f, w, h, s);
}

/* ------------------------------------------------------------------ multi-device */

/* One cooperative kernel per device, as the (deprecated) driver call: every entry
 * on a created stream of a different device, with the same grid, block and shared
 * memory; each must fit co-resident on its device. Checked for all entries before
 * any is queued; then each occupies its device like cuLaunchCooperativeKernel. */
EXPORT CUresult cuLaunchCooperativeKernelMultiDevice(CUDA_LAUNCH_PARAMS *list, unsigned int n,
                                                     unsigned int flags)
{
    CHECK_INIT();
    if (list == NULL || n == 0 || n > SIM_MAX_DEVICES ||
        (flags & ~(unsigned)(CUDA_COOPERATIVE_LAUNCH_MULTI_DEVICE_NO_PRE_LAUNCH_SYNC |
                             CUDA_COOPERATIVE_LAUNCH_MULTI_DEVICE_NO_POST_LAUNCH_SYNC)) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    bool used[SIM_MAX_DEVICES] = {false};
    for (unsigned i = 0; i < n; i++) {
        const CUDA_LAUNCH_PARAMS *p = &list[i];
        if (!func_ok(p->function))
            return CUDA_ERROR_INVALID_HANDLE;
        CUresult r = check_dims(p->gridDimX, p->gridDimY, p->gridDimZ, p->blockDimX, p->blockDimY,
                                p->blockDimZ, p->sharedMemBytes);
        if (r != CUDA_SUCCESS)
            return r;
        if (p->gridDimX != list[0].gridDimX || p->gridDimY != list[0].gridDimY ||
            p->gridDimZ != list[0].gridDimZ || p->blockDimX != list[0].blockDimX ||
            p->blockDimY != list[0].blockDimY || p->blockDimZ != list[0].blockDimZ ||
            p->sharedMemBytes != list[0].sharedMemBytes)
            return CUDA_ERROR_INVALID_VALUE;
        /* Created streams only: not the NULL, legacy or per-thread stream. */
        if (p->hStream == NULL || p->hStream == CU_STREAM_LEGACY_H ||
            p->hStream == CU_STREAM_PER_THREAD_H)
            return CUDA_ERROR_INVALID_VALUE;
        struct sim_ctx *c;
        _Atomic uint64_t *end;
        r = resolve_stream(p->hStream, false, &c, &end);
        if (r != CUDA_SUCCESS)
            return r;
        if (used[c->dev])
            return CUDA_ERROR_INVALID_DEVICE; /* two kernels on one device */
        used[c->dev] = true;
        uint64_t blocks = (uint64_t)p->gridDimX * p->gridDimY * p->gridDimZ;
        if (blocks > (uint64_t)G.st->hdr.dev[c->dev].sms * MAX_BLOCKS_PER_SM)
            return CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE;
    }
    for (unsigned i = 0; i < n; i++) {
        const CUDA_LAUNCH_PARAMS *p = &list[i];
        CUresult r = launch_blocks(p->hStream, false,
                                   (uint64_t)p->gridDimX * p->gridDimY * p->gridDimZ, true);
        if (r != CUDA_SUCCESS)
            return r;
    }
    return CUDA_SUCCESS;
}
