//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * cuda.c — the simulated CUDA driver (build/simgpu/libcuda.so.1).
 *
 * A faithful stand-in for the driver API that vgpu cares about: the node is the
 * shared state file (state.h); this file adds what a real driver keeps per process:
 * contexts (thread-local current-context stack, refcounted primary contexts), the
 * allocation table, VMM handles/reservations/mappings, stream-ordered pools, streams,
 * modules, graphs, and the versioned cuGetProcAddress table.
 *
 * Error codes follow the real driver: CUDA_ERROR_NOT_INITIALIZED before cuInit,
 * CUDA_ERROR_INVALID_VALUE for NULL out-pointers and bad sizes,
 * CUDA_ERROR_INVALID_CONTEXT without a current context, CUDA_ERROR_INVALID_DEVICE for
 * bad ordinals, CUDA_ERROR_OUT_OF_MEMORY when the (whole, shared) device is full.
 *
 * Process-local tables are guarded by a process-local mutex (a dead process takes it
 * with it); the node-wide state uses atomics only. The library is linked -Bsymbolic,
 * so calls between these functions never go through an interposer (as in the real
 * libcuda): libvgpu sees exactly what the application calls.
 *
 * Deliberate simplifications (documented in test/simgpu/README.md):
 *  - device nodes are opened at cuInit (a device whose node cannot be opened is not
 *    visible; none visible -> CUDA_ERROR_NO_DEVICE) and once per context;
 *  - the 32-bit v1 memory entry points (cuMemAlloc, cuMemFree, ...) are not provided;
 *    cuGetProcAddress reports VERSION_NOT_SUFFICIENT for versions before 3020;
 *  - a forked child starts uninitialized: it must call cuInit and gets its own
 *    process slot (the parent's contexts are invalid in it).
 */
#define _GNU_SOURCE
#include "state.h"
#include "vgpu_cuda.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* Codes the shared header does not name. */
#define SIM_ERR_INVALID_PTX ((CUresult)218)
#define SIM_ERR_OPERATING_SYSTEM ((CUresult)304)
#define SIM_ERR_CONTEXT_IS_DESTROYED ((CUresult)709)
#define SIM_ERR_PRIMARY_CONTEXT_ACTIVE ((CUresult)708)

#define CU_STREAM_LEGACY_H ((CUstream)0x1)
#define CU_STREAM_PER_THREAD_H ((CUstream)0x2)

#define MiB (1024ull * 1024ull)
#define VMM_GRANULARITY (2 * MiB)
#define DRIVER_VERSION 12040
#define CTX_STACK_MAX 64
#define MAX_BLOCKS_PER_SM 32

#define CTX_MAGIC 0x43545831u
#define STREAM_MAGIC 0x53545231u
#define POOL_MAGIC 0x504f4f4cu
#define MOD_MAGIC 0x4d4f4431u
#define FUNC_MAGIC 0x46554e31u
#define GRAPH_MAGIC 0x47524131u
#define GNODE_MAGIC 0x474e4431u
#define GEXEC_MAGIC 0x47455831u
#define VMEM_MAGIC 0x564d4d31u
#define ARRAY_MAGIC 0x41525231u

/* ------------------------------------------------------------------ objects */

struct sim_ctx {
    uint32_t magic;
    bool alive;
    bool primary;
    unsigned epoch;
    int ord;       /* CUDA ordinal */
    int dev;       /* index in the state file */
    int fd;        /* the device node, open while the context lives */
    unsigned flags;
    unsigned refcount; /* primary contexts only */
    _Atomic uint64_t last_end; /* end of the latest work queued in this context */
    _Atomic uint64_t null_end; /* the legacy NULL stream */
    struct sim_ctx *next;
};

struct sim_stream {
    uint32_t magic;
    bool alive;
    unsigned epoch;
    struct sim_ctx *ctx;
    unsigned flags;
    _Atomic uint64_t last_end;
};

struct sim_pool {
    uint32_t magic;
    bool alive;
    bool is_default;
    unsigned epoch;
    int ord, dev;
    uint64_t reserved, used, reserved_high, used_high, threshold;
    int reuse[3];
    struct sim_pool *next;
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
};

struct sim_gnode {
    uint32_t magic;
    uint64_t blocks;
    /* What cuGraphKernelNodeGetParams(_v2) reports back. */
    CUfunction func;
    CUkernel kern;
    unsigned grid[3], block[3], shmem;
};

struct sim_graph {
    uint32_t magic;
    bool alive;
    unsigned epoch;
    struct sim_gnode **nodes;
    size_t n, cap;
};

struct sim_gexec {
    uint32_t magic;
    bool alive;
    unsigned epoch;
    uint64_t *blocks;
    size_t n;
};

struct sim_vmem { /* a cuMemCreate handle */
    uint32_t magic;
    bool released;
    unsigned epoch;
    int ord, dev;
    uint64_t size;
    unsigned maps;
};

struct sim_resv {
    uint64_t base, size;
    struct sim_resv *next;
};

struct sim_vmap {
    uint64_t ptr, size;
    struct sim_vmem *mem;
    struct sim_vmap *next;
};

enum alloc_kind { AK_MEM = 1, AK_PITCH, AK_MANAGED, AK_POOL, AK_ARRAY };

struct sim_alloc {
    uint64_t ptr;      /* device address, or the CUarray handle for arrays */
    uint64_t size;     /* bytes the caller owns (address range) */
    uint64_t charged;  /* bytes charged to the device by this entry (0 for pool memory) */
    int dev;
    int kind;
    struct sim_ctx *ctx;
    struct sim_pool *pool;
    struct sim_alloc *next;
};

#define AT_BITS 16
#define AT_SIZE (1u << AT_BITS)

/* Everything this process knows; reset in a forked child. */
struct sim_proc_state {
    pthread_mutex_t lock;
    _Atomic int inited;
    CUresult init_err;
    bool said_why;
    struct sim_state *st;
    int slot;
    int pid;
    unsigned epoch;
    int ndev;
    int ord2dev[SIM_MAX_DEVICES];
    struct sim_ctx primary[SIM_MAX_DEVICES];
    struct sim_ctx *ctxs;
    struct sim_pool default_pool[SIM_MAX_DEVICES];
    struct sim_pool *cur_pool[SIM_MAX_DEVICES];
    struct sim_pool *pools;
    struct sim_resv *resv;
    struct sim_vmap *vmaps;
    _Atomic uint64_t resv_cursor;
    struct sim_alloc *at[AT_SIZE];
};

static struct sim_proc_state G = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .slot = -1,
    .epoch = 1,
};

static __thread struct sim_ctx *t_stack[CTX_STACK_MAX];
static __thread int t_depth;
static __thread _Atomic uint64_t t_ptds_end; /* the per-thread default stream */

/* ------------------------------------------------------------------ helpers */

static inline uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static inline void atomic_max_u64(_Atomic uint64_t *p, uint64_t v)
{
    uint64_t cur = atomic_load(p);
    while (cur < v && !atomic_compare_exchange_weak(p, &cur, v)) {
    }
}

static inline bool ready(void) { return atomic_load_explicit(&G.inited, memory_order_acquire) != 0; }

#define CHECK_INIT()                          \
    do {                                      \
        if (!ready())                         \
            return CUDA_ERROR_NOT_INITIALIZED; \
    } while (0)

static inline bool ctx_live(const struct sim_ctx *c)
{
    return c != NULL && c->magic == CTX_MAGIC && c->alive && c->epoch == G.epoch;
}

static inline struct sim_ctx *cur_ctx(void) { return t_depth > 0 ? t_stack[t_depth - 1] : NULL; }

static inline CUresult need_ctx(struct sim_ctx **out)
{
    struct sim_ctx *c = cur_ctx();
    if (!ctx_live(c))
        return CUDA_ERROR_INVALID_CONTEXT;
    *out = c;
    return CUDA_SUCCESS;
}

static inline bool ord_ok(CUdevice d) { return d >= 0 && d < G.ndev; }

/* A context handle the caller passed: primary slots or a created context we know. */
static bool ctx_known(struct sim_ctx *c)
{
    if (c == NULL)
        return false;
    if (c >= &G.primary[0] && c < &G.primary[SIM_MAX_DEVICES])
        return ctx_live(c);
    for (struct sim_ctx *it = G.ctxs; it != NULL; it = it->next)
        if (it == c)
            return ctx_live(c);
    return false;
}

/* Device node path: the pattern with its first %d replaced by the minor number.
 * Done by hand so that a stray % in the pattern can never become a format bug. */
static void node_path(char *out, size_t n, int dev)
{
    const char *pat = G.st->hdr.device_nodes;
    const char *pct = strstr(pat, "%d");
    if (pct == NULL) {
        snprintf(out, n, "%.*s", SIM_NODES_LEN, pat);
        return;
    }
    snprintf(out, n, "%.*s%u%s", (int)(pct - pat), pat, G.st->hdr.dev[dev].minor, pct + 2);
}

/* ------------------------------------------------------------------ allocation table */

static inline unsigned at_hash(uint64_t p) { return (unsigned)((p >> 9) * 0x9E3779B97F4A7C15ull >> (64 - AT_BITS)); }

static void at_insert(struct sim_alloc *a)
{
    unsigned h = at_hash(a->ptr);
    a->next = G.at[h];
    G.at[h] = a;
}

static struct sim_alloc *at_find(uint64_t p, bool unlink)
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

static struct sim_alloc *at_containing(uint64_t p)
{
    for (unsigned h = 0; h < AT_SIZE; h++)
        for (struct sim_alloc *a = G.at[h]; a != NULL; a = a->next)
            if (a->kind != AK_ARRAY && p >= a->ptr && p < a->ptr + a->size)
                return a;
    return NULL;
}

static CUresult charge(int dev, uint64_t bytes)
{
    if (bytes == 0)
        return CUDA_SUCCESS;
    return sim_charge(G.st, G.slot, dev, bytes) == 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

static void credit(int dev, uint64_t bytes) { sim_credit(G.st, G.slot, dev, bytes); }

static void pool_release_alloc(struct sim_alloc *a);

/* Frees an entry already unlinked from the table (lock held). */
static void alloc_drop(struct sim_alloc *a)
{
    if (a->kind == AK_POOL)
        pool_release_alloc(a);
    else
        credit(a->dev, a->charged);
    free(a);
}

static CUresult alloc_new(uint64_t ptr, uint64_t size, uint64_t charged, int dev, int kind,
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
static CUresult device_alloc(struct sim_ctx *c, uint64_t size, uint64_t charged, int kind, CUdeviceptr *out)
{
    pthread_mutex_lock(&G.lock);
    CUresult r = charge(c->dev, charged);
    if (r == CUDA_SUCCESS) {
        uint64_t p = sim_va_alloc(G.st, c->dev, size, size >= VMM_GRANULARITY ? VMM_GRANULARITY : 512);
        r = alloc_new(p, size, charged, c->dev, kind, c, NULL);
        if (r == CUDA_SUCCESS)
            *out = p;
        else
            credit(c->dev, charged);
    }
    pthread_mutex_unlock(&G.lock);
    return r;
}

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
static void pools_sync_trim(int dev)
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
    uint64_t ptr = sim_va_alloc(G.st, p->dev, size, size >= VMM_GRANULARITY ? VMM_GRANULARITY : 512);
    CUresult r = alloc_new(ptr, size, 0, p->dev, AK_POOL, c, p);
    if (r != CUDA_SUCCESS) {
        p->used -= size;
        return r;
    }
    *out = ptr;
    return CUDA_SUCCESS;
}

static void pool_release_alloc(struct sim_alloc *a)
{
    struct sim_pool *p = a->pool;
    p->used -= a->size;
    if (!p->alive) { /* destroyed with outstanding allocations: release as they come back */
        p->reserved -= a->size;
        credit(p->dev, a->size);
    }
}

/* ------------------------------------------------------------------ contexts */

static CUresult ctx_activate(struct sim_ctx *c, int ord, unsigned flags, bool primary)
{
    int dev = G.ord2dev[ord];
    char path[SIM_NODES_LEN + 32];
    node_path(path, sizeof path, dev);
    /* Like the real driver, a context holds its device node open for its lifetime. */
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return CUDA_ERROR_NO_DEVICE;
    CUresult r = charge(dev, G.st->hdr.context_memory);
    if (r != CUDA_SUCCESS) {
        close(fd);
        return r;
    }
    atomic_fetch_add(&G.st->proc[G.slot].dev[dev].contexts, 1);
    c->magic = CTX_MAGIC;
    c->epoch = G.epoch;
    c->ord = ord;
    c->dev = dev;
    c->fd = fd;
    c->flags = flags;
    c->primary = primary;
    atomic_store(&c->last_end, 0);
    atomic_store(&c->null_end, 0);
    c->alive = true;
    return CUDA_SUCCESS;
}

/* Destroying a context frees everything allocated in it, as the real driver does. */
static void ctx_deactivate(struct sim_ctx *c)
{
    for (unsigned h = 0; h < AT_SIZE; h++) {
        struct sim_alloc **pp = &G.at[h];
        while (*pp != NULL) {
            struct sim_alloc *a = *pp;
            if (a->ctx == c && a->kind != AK_POOL) {
                *pp = a->next;
                alloc_drop(a);
            } else {
                pp = &a->next;
            }
        }
    }
    c->alive = false;
    credit(c->dev, G.st->hdr.context_memory);
    atomic_fetch_sub(&G.st->proc[G.slot].dev[c->dev].contexts, 1);
    close(c->fd);
    c->fd = -1;
}

/* ------------------------------------------------------------------ init / fork / exit */

static void visible_devices(void)
{
    int n = (int)G.st->hdr.device_count;
    int cand[SIM_MAX_DEVICES], nc = 0;
    const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
    if (cvd == NULL) {
        for (int d = 0; d < n; d++)
            cand[nc++] = d;
    } else {
        /* Like the driver: a list of indices or UUID prefixes; the first entry that
         * names no device ends the list. */
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", cvd);
        char *save = NULL;
        for (char *tok = strtok_r(buf, ",", &save); tok != NULL && nc < SIM_MAX_DEVICES;
             tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ')
                tok++;
            int found = -1;
            if (strncmp(tok, "GPU-", 4) == 0) {
                for (int d = 0; d < n; d++)
                    if (strncmp(G.st->hdr.dev[d].uuid, tok, strlen(tok)) == 0)
                        found = d;
            } else {
                char *end;
                long v = strtol(tok, &end, 10);
                if (end != tok && *end == '\0' && v >= 0 && v < n)
                    found = (int)v;
            }
            if (found < 0)
                break;
            bool dup = false;
            for (int i = 0; i < nc; i++)
                dup |= cand[i] == found;
            if (dup)
                break;
            cand[nc++] = found;
        }
    }
    G.ndev = 0;
    for (int i = 0; i < nc; i++) {
        char path[SIM_NODES_LEN + 32];
        node_path(path, sizeof path, cand[i]);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
            continue; /* no access to the node: the device does not exist for us */
        close(fd);
        G.ord2dev[G.ndev++] = cand[i];
    }
}

static void fork_child(void)
{
    /* A child starts with no driver state: the parent's contexts, allocations and
     * slot are not its own. It must cuInit again and registers as itself. */
    pthread_mutex_init(&G.lock, NULL);
    atomic_store(&G.inited, 0);
    G.init_err = CUDA_SUCCESS;
    G.said_why = false;
    G.slot = -1;
    G.epoch++;
    G.ndev = 0;
    G.ctxs = NULL;
    G.pools = NULL;
    G.resv = NULL;
    G.vmaps = NULL;
    memset(G.primary, 0, sizeof G.primary);
    memset(G.default_pool, 0, sizeof G.default_pool);
    memset(G.cur_pool, 0, sizeof G.cur_pool);
    memset(G.at, 0, sizeof G.at);
    t_depth = 0;
    atomic_store(&t_ptds_end, 0);
}

__attribute__((constructor)) static void sim_cuda_ctor(void) { pthread_atfork(NULL, NULL, fork_child); }

__attribute__((destructor)) static void sim_cuda_dtor(void)
{
    /* A process that exits normally frees its entry; a killed one is reclaimed lazily. */
    if (G.st != NULL && G.slot >= 0 && G.pid == getpid()) {
        sim_proc_release(G.st, G.slot);
        G.slot = -1;
    }
}

EXPORT CUresult cuInit(unsigned int flags)
{
    if (flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (ready())
        return CUDA_SUCCESS;
    pthread_mutex_lock(&G.lock);
    CUresult r = CUDA_SUCCESS;
    if (ready())
        goto out;
    if (G.init_err != CUDA_SUCCESS) {
        r = G.init_err;
        goto out;
    }
    const char *why = NULL;
    G.st = sim_map(&why);
    if (G.st == NULL) {
        fprintf(stderr, "%s\n", why);
        r = G.init_err = CUDA_ERROR_NO_DEVICE;
        goto out;
    }
    visible_devices();
    if (G.ndev == 0) {
        fprintf(stderr, "simgpu: no device node could be opened (pattern %s)\n", G.st->hdr.device_nodes);
        r = G.init_err = CUDA_ERROR_NO_DEVICE;
        goto out;
    }
    G.pid = getpid();
    G.slot = sim_proc_register(G.st);
    if (G.slot < 0) {
        fprintf(stderr, "simgpu: process table full (%d processes)\n", SIM_MAX_PROCS);
        r = G.init_err = CUDA_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    atomic_store_explicit(&G.inited, 1, memory_order_release);
out:
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuDriverGetVersion(int *v)
{
    if (v == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *v = DRIVER_VERSION;
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------ devices */

EXPORT CUresult cuDeviceGetCount(int *count)
{
    CHECK_INIT();
    if (count == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *count = G.ndev;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGet(CUdevice *dev, int ordinal)
{
    CHECK_INIT();
    if (dev == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(ordinal))
        return CUDA_ERROR_INVALID_DEVICE;
    *dev = ordinal;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice d)
{
    CHECK_INIT();
    if (name == NULL || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, (size_t)len, "%s", G.st->hdr.dev[G.ord2dev[d]].name);
    return CUDA_SUCCESS;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void uuid_bytes(int dev, CUuuid *u)
{
    memset(u, 0, sizeof *u);
    const char *s = G.st->hdr.dev[dev].uuid;
    if (strncmp(s, "GPU-", 4) == 0)
        s += 4;
    int i = 0;
    while (*s != '\0' && i < 32) {
        int v = hexval(*s++);
        if (v < 0)
            continue; /* dashes */
        u->bytes[i / 2] = (char)(u->bytes[i / 2] | (v << ((i % 2) ? 0 : 4)));
        i++;
    }
}

EXPORT CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice d)
{
    CHECK_INIT();
    if (uuid == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    uuid_bytes(G.ord2dev[d], uuid);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice d) { return cuDeviceGetUuid(uuid, d); }

EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d)
{
    CHECK_INIT();
    if (bytes == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    *bytes = G.st->hdr.dev[G.ord2dev[d]].total_mem;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice d)
{
    CHECK_INIT();
    if (pi == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    const struct sim_devcfg *cfg = &G.st->hdr.dev[G.ord2dev[d]];
    int v = 0;
    switch ((int)attrib) {
    case 1: v = 1024; break;            /* max threads per block */
    case 2: case 3: v = 1024; break;    /* max block dim x, y */
    case 4: v = 64; break;              /* max block dim z */
    case 5: v = 2147483647; break;      /* max grid dim x */
    case 6: case 7: v = 65535; break;   /* max grid dim y, z */
    case 8: v = 49152; break;           /* shared memory per block */
    case 9: v = 65536; break;           /* constant memory */
    case 10: v = 32; break;             /* warp size */
    case 11: v = 2147483647; break;     /* max pitch */
    case 12: v = 65536; break;          /* registers per block */
    case 13: v = 1980000; break;        /* clock rate kHz */
    case 14: v = 512; break;            /* texture alignment */
    case 15: v = 1; break;              /* gpu overlap */
    case 16: v = (int)cfg->sms; break;  /* multiprocessor count */
    case 19: v = 1; break;              /* can map host memory */
    case 31: v = 1; break;              /* concurrent kernels */
    case 32: v = 1; break;              /* ECC enabled */
    case 33: v = (int)cfg->pci_bus; break;
    case 34: v = (int)cfg->pci_device; break;
    case 36: v = 2619000; break;        /* memory clock kHz */
    case 37: v = 5120; break;           /* memory bus width */
    case 38: v = 50 * 1024 * 1024; break; /* L2 */
    case 39: v = 2048; break;           /* max threads per SM */
    case 40: v = 3; break;              /* async engines */
    case 41: v = 1; break;              /* unified addressing */
    case 50: v = (int)cfg->pci_domain; break;
    case 75: v = (int)cfg->cc_major; break;
    case 76: v = (int)cfg->cc_minor; break;
    case 81: v = 233472; break;         /* shared memory per SM */
    case 82: v = 65536; break;          /* registers per SM */
    case 83: v = 1; break;              /* managed memory */
    case 89: v = 1; break;              /* concurrent managed access */
    case 95: v = 1; break;              /* cooperative launch */
    case 97: v = 232448; break;         /* shared memory per block opt-in */
    case 102: v = 1; break;             /* virtual memory management */
    case 106: v = MAX_BLOCKS_PER_SM; break;
    case 115: v = 1; break;             /* memory pools */
    default:
        if ((int)attrib <= 0 || (int)attrib > 140)
            return CUDA_ERROR_INVALID_VALUE;
        v = 0;
    }
    *pi = v;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceComputeCapability(int *major, int *minor, CUdevice d)
{
    CHECK_INIT();
    if (major == NULL || minor == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    *major = (int)G.st->hdr.dev[G.ord2dev[d]].cc_major;
    *minor = (int)G.st->hdr.dev[G.ord2dev[d]].cc_minor;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetPCIBusId(char *pciBusId, int len, CUdevice d)
{
    CHECK_INIT();
    if (pciBusId == NULL || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    const struct sim_devcfg *cfg = &G.st->hdr.dev[G.ord2dev[d]];
    snprintf(pciBusId, (size_t)len, "%04X:%02X:%02X.0", cfg->pci_domain, cfg->pci_bus, cfg->pci_device);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetByPCIBusId(CUdevice *dev, const char *pciBusId)
{
    CHECK_INIT();
    if (dev == NULL || pciBusId == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    unsigned dom = 0, bus = 0, devn = 0, fn = 0;
    if (sscanf(pciBusId, "%x:%x:%x.%x", &dom, &bus, &devn, &fn) != 4) {
        dom = 0;
        if (sscanf(pciBusId, "%x:%x.%x", &bus, &devn, &fn) != 3)
            return CUDA_ERROR_INVALID_VALUE;
    }
    for (int o = 0; o < G.ndev; o++) {
        const struct sim_devcfg *cfg = &G.st->hdr.dev[G.ord2dev[o]];
        if (cfg->pci_domain == dom && cfg->pci_bus == bus && cfg->pci_device == devn) {
            *dev = o;
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_INVALID_DEVICE;
}

/* ------------------------------------------------------------------ primary contexts */

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice d)
{
    CHECK_INIT();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&G.lock);
    struct sim_ctx *c = &G.primary[d];
    CUresult r = CUDA_SUCCESS;
    if (!ctx_live(c)) {
        unsigned flags = c->epoch == G.epoch ? c->flags : 0;
        r = ctx_activate(c, d, flags, true);
        if (r == CUDA_SUCCESS)
            c->refcount = 0;
    }
    if (r == CUDA_SUCCESS) {
        c->refcount++;
        *pctx = (CUcontext)c;
    }
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d)
{
    CHECK_INIT();
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&G.lock);
    struct sim_ctx *c = &G.primary[d];
    CUresult r = CUDA_SUCCESS;
    if (!ctx_live(c) || c->refcount == 0)
        r = CUDA_ERROR_INVALID_CONTEXT;
    else if (--c->refcount == 0)
        ctx_deactivate(c);
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice d) { return cuDevicePrimaryCtxRelease_v2(d); }

EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice d)
{
    CHECK_INIT();
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&G.lock);
    struct sim_ctx *c = &G.primary[d];
    if (ctx_live(c)) {
        ctx_deactivate(c);
        c->refcount = 0;
    }
    pthread_mutex_unlock(&G.lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxReset(CUdevice d) { return cuDevicePrimaryCtxReset_v2(d); }

EXPORT CUresult cuDevicePrimaryCtxGetState(CUdevice d, unsigned int *flags, int *active)
{
    CHECK_INIT();
    if (flags == NULL || active == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&G.lock);
    struct sim_ctx *c = &G.primary[d];
    *active = ctx_live(c) ? 1 : 0;
    *flags = c->epoch == G.epoch ? c->flags : 0;
    pthread_mutex_unlock(&G.lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice d, unsigned int flags)
{
    CHECK_INIT();
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&G.lock);
    G.primary[d].flags = flags;
    G.primary[d].epoch = G.epoch;
    pthread_mutex_unlock(&G.lock);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxSetFlags(CUdevice d, unsigned int flags)
{
    return cuDevicePrimaryCtxSetFlags_v2(d, flags);
}

/* ------------------------------------------------------------------ contexts */

EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice d)
{
    CHECK_INIT();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    if (t_depth >= CTX_STACK_MAX)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&G.lock);
    CUresult r = ctx_activate(c, d, flags, false);
    if (r == CUDA_SUCCESS) {
        c->next = G.ctxs;
        G.ctxs = c;
    }
    pthread_mutex_unlock(&G.lock);
    if (r != CUDA_SUCCESS) {
        free(c);
        return r;
    }
    t_stack[t_depth++] = c; /* a new context becomes current */
    *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice d) { return cuCtxCreate_v2(pctx, flags, d); }

/* CUDA 11.4 form with execution-affinity parameters (ignored: no SM partitioning). */
EXPORT CUresult cuCtxCreate_v3(CUcontext *pctx, void *paramsArray, int numParams, unsigned int flags, CUdevice d)
{
    if (numParams < 0 || (numParams > 0 && paramsArray == NULL))
        return ready() ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_INITIALIZED;
    return cuCtxCreate_v2(pctx, flags, d);
}

EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    CHECK_INIT();
    struct sim_ctx *c = (struct sim_ctx *)ctx;
    pthread_mutex_lock(&G.lock);
    if (!ctx_known(c) || c->primary) {
        pthread_mutex_unlock(&G.lock);
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    ctx_deactivate(c);
    for (struct sim_ctx **pp = &G.ctxs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    /* The struct is never freed: stale handles in other threads' stacks stay
     * readable and simply test as dead. */
    pthread_mutex_unlock(&G.lock);
    if (cur_ctx() == c)
        t_depth--;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxDestroy(CUcontext ctx) { return cuCtxDestroy_v2(ctx); }

EXPORT CUresult cuCtxGetCurrent(CUcontext *pctx)
{
    CHECK_INIT();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pctx = (CUcontext)cur_ctx();
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSetCurrent(CUcontext ctx)
{
    CHECK_INIT();
    struct sim_ctx *c = (struct sim_ctx *)ctx;
    if (c == NULL) {
        if (t_depth > 0)
            t_depth--;
        return CUDA_SUCCESS;
    }
    pthread_mutex_lock(&G.lock);
    bool ok = ctx_known(c);
    pthread_mutex_unlock(&G.lock);
    if (!ok)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (t_depth == 0)
        t_stack[t_depth++] = c;
    else
        t_stack[t_depth - 1] = c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
    CHECK_INIT();
    struct sim_ctx *c = (struct sim_ctx *)ctx;
    pthread_mutex_lock(&G.lock);
    bool ok = ctx_known(c);
    pthread_mutex_unlock(&G.lock);
    if (!ok)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (t_depth >= CTX_STACK_MAX)
        return CUDA_ERROR_INVALID_VALUE;
    t_stack[t_depth++] = c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxPushCurrent(CUcontext ctx) { return cuCtxPushCurrent_v2(ctx); }

EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *pctx)
{
    CHECK_INIT();
    if (t_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    struct sim_ctx *c = t_stack[--t_depth];
    if (pctx != NULL)
        *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxPopCurrent(CUcontext *pctx) { return cuCtxPopCurrent_v2(pctx); }

EXPORT CUresult cuCtxGetDevice(CUdevice *dev)
{
    CHECK_INIT();
    if (dev == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    *dev = c->ord;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSynchronize(void)
{
    CHECK_INIT();
    struct sim_ctx *c;
    CUresult r = need_ctx(&c);
    if (r != CUDA_SUCCESS)
        return r;
    uint64_t end = atomic_load(&c->last_end);
    if (end > sim_now_ns())
        sim_sleep_until(end);
    pthread_mutex_lock(&G.lock);
    pools_sync_trim(c->dev);
    pthread_mutex_unlock(&G.lock);
    return CUDA_SUCCESS;
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
    if (dptr == NULL || bytesize == 0 || (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST))
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
    if (a == NULL || a->kind == AK_ARRAY) {
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
    if (a == NULL || a->kind == AK_ARRAY)
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

static int format_bytes(CUarray_format f)
{
    switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8:
        return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF:
        return 2;
    case CU_AD_FORMAT_UNSIGNED_INT32:
    case CU_AD_FORMAT_SIGNED_INT32:
    case CU_AD_FORMAT_FLOAT:
        return 4;
    }
    return 0;
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
    uint64_t row = round_up((uint64_t)desc->Width * (uint64_t)bpe * nc, 512);
    uint64_t h = desc->Height > 0 ? desc->Height : 1;
    uint64_t size = row * h;
    uint32_t *handle = malloc(64); /* opaque handle; the first word marks it */
    if (handle == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    handle[0] = ARRAY_MAGIC;
    pthread_mutex_lock(&G.lock);
    r = charge(c->dev, size);
    if (r == CUDA_SUCCESS) {
        r = alloc_new((uint64_t)(uintptr_t)handle, size, size, c->dev, AK_ARRAY, c, NULL);
        if (r != CUDA_SUCCESS)
            credit(c->dev, size);
    }
    pthread_mutex_unlock(&G.lock);
    if (r != CUDA_SUCCESS) {
        free(handle);
        return r;
    }
    *pHandle = (CUarray)handle;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuArrayDestroy(CUarray h)
{
    CHECK_INIT();
    pthread_mutex_lock(&G.lock);
    struct sim_alloc *a = at_find((uint64_t)(uintptr_t)h, false);
    CUresult r = CUDA_SUCCESS;
    if (a == NULL || a->kind != AK_ARRAY) {
        r = CUDA_ERROR_INVALID_HANDLE;
    } else {
        at_find(a->ptr, true);
        alloc_drop(a);
        /* the handle memory itself is kept: a stale handle must stay harmless */
    }
    pthread_mutex_unlock(&G.lock);
    return r;
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

EXPORT CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop, int option)
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

EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop,
                            unsigned long long flags)
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
            credit(m->dev, m->size);
    }
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                                    unsigned long long flags)
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

EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle h,
                         unsigned long long flags)
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
                credit(m->dev, m->size);
            free(v);
        } else {
            pp = &v->next;
        }
    }
out:
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count)
{
    CHECK_INIT();
    if (desc == NULL || count == 0 || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < count; i++) {
        if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE)
            return CUDA_ERROR_INVALID_VALUE;
        if (!ord_ok(desc[i].location.id))
            return CUDA_ERROR_INVALID_DEVICE;
        if (desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_NONE && desc[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READ &&
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

/* ------------------------------------------------------------------ streams */

static CUresult resolve_stream(CUstream h, bool ptsz, struct sim_ctx **pc, _Atomic uint64_t **pend)
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
    if (h == NULL || h == CU_STREAM_LEGACY_H || h == CU_STREAM_PER_THREAD_H || s->magic != STREAM_MAGIC ||
        !s->alive || s->epoch != G.epoch)
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

/* ------------------------------------------------------------------ stream-ordered allocator */

static CUresult alloc_async(CUdeviceptr *dptr, size_t size, struct sim_pool *pool, CUstream h, bool ptsz)
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

EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t size, CUstream h) { return alloc_async(dptr, size, NULL, h, false); }
EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t size, CUstream h) { return alloc_async(dptr, size, NULL, h, true); }

EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream h)
{
    if (pool == NULL)
        return ready() ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_INITIALIZED;
    return alloc_async(dptr, size, (struct sim_pool *)pool, h, false);
}

EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream h)
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
EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream h) { return free_async(dptr, h, true); }

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
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD:
        p->threshold = *(cuuint64_t *)value;
        break;
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
    default:
        r = CUDA_ERROR_INVALID_VALUE;
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
    *hfunc = (CUfunction)f;
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------ launches */

static bool func_ok(CUfunction hf)
{
    const struct sim_func *f = (const struct sim_func *)hf;
    return f != NULL && f->magic == FUNC_MAGIC && module_ok(f->mod);
}

static CUresult check_dims(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
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
static CUresult launch_blocks(CUstream h, bool ptsz, uint64_t blocks, bool cooperative)
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

static CUresult launch_kernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                              unsigned bz, unsigned shmem, CUstream h, void **params, void **extra, bool ptsz,
                              bool coop)
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

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                               unsigned int by, unsigned int bz, unsigned int shmem, CUstream h, void **params,
                               void **extra)
{
    return launch_kernel(f, gx, gy, gz, bx, by, bz, shmem, h, params, extra, false, false);
}

EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                                    unsigned int bx, unsigned int by, unsigned int bz, unsigned int shmem,
                                    CUstream h, void **params, void **extra)
{
    return launch_kernel(f, gx, gy, gz, bx, by, bz, shmem, h, params, extra, true, false);
}

EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                                          unsigned int bx, unsigned int by, unsigned int bz, unsigned int shmem,
                                          CUstream h, void **params)
{
    return launch_kernel(f, gx, gy, gz, bx, by, bz, shmem, h, params, NULL, false, true);
}

EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                                               unsigned int bx, unsigned int by, unsigned int bz,
                                               unsigned int shmem, CUstream h, void **params)
{
    return launch_kernel(f, gx, gy, gz, bx, by, bz, shmem, h, params, NULL, true, true);
}

#define CU_LAUNCH_ATTRIBUTE_COOPERATIVE 2

static CUresult launch_ex(const CUlaunchConfig *cfg, CUfunction f, void **params, void **extra, bool ptsz)
{
    CHECK_INIT();
    if (cfg == NULL || (cfg->numAttrs > 0 && cfg->attrs == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    bool coop = false;
    for (unsigned i = 0; i < cfg->numAttrs; i++)
        if (cfg->attrs[i].id == CU_LAUNCH_ATTRIBUTE_COOPERATIVE && *(const int *)cfg->attrs[i].value.pad != 0)
            coop = true;
    return launch_kernel(f, cfg->gridDimX, cfg->gridDimY, cfg->gridDimZ, cfg->blockDimX, cfg->blockDimY,
                         cfg->blockDimZ, cfg->sharedMemBytes, cfg->hStream, params, extra, ptsz, coop);
}

EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *cfg, CUfunction f, void **params, void **extra)
{
    return launch_ex(cfg, f, params, extra, false);
}

EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *cfg, CUfunction f, void **params, void **extra)
{
    return launch_ex(cfg, f, params, extra, true);
}

/* ------------------------------------------------------------------ graphs */

static bool graph_ok(const struct sim_graph *g)
{
    return g != NULL && g->magic == GRAPH_MAGIC && g->alive && g->epoch == G.epoch;
}

EXPORT CUresult cuGraphCreate(CUgraph *ph, unsigned int flags)
{
    CHECK_INIT();
    if (ph == NULL || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_graph *g = calloc(1, sizeof *g);
    if (g == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    g->magic = GRAPH_MAGIC;
    g->alive = true;
    g->epoch = G.epoch;
    *ph = (CUgraph)g;
    return CUDA_SUCCESS;
}

static CUresult graph_add_kernel(CUgraphNode *ph, CUgraph hg, const CUgraphNode *deps, size_t ndeps,
                                 bool have_fn, CUfunction func, CUkernel kern, unsigned gx, unsigned gy,
                                 unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shmem)
{
    CHECK_INIT();
    struct sim_graph *g = (struct sim_graph *)hg;
    if (ph == NULL || (ndeps > 0 && deps == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    if (!graph_ok(g))
        return CUDA_ERROR_INVALID_VALUE;
    if (!have_fn)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult r = check_dims(gx, gy, gz, bx, by, bz, shmem);
    if (r != CUDA_SUCCESS)
        return r;
    for (size_t i = 0; i < ndeps; i++) {
        const struct sim_gnode *d = (const struct sim_gnode *)deps[i];
        if (d == NULL || d->magic != GNODE_MAGIC)
            return CUDA_ERROR_INVALID_VALUE;
    }
    struct sim_gnode *n = calloc(1, sizeof *n);
    if (n == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    n->magic = GNODE_MAGIC;
    n->blocks = (uint64_t)gx * gy * gz;
    n->func = func;
    n->kern = kern;
    n->grid[0] = gx, n->grid[1] = gy, n->grid[2] = gz;
    n->block[0] = bx, n->block[1] = by, n->block[2] = bz;
    n->shmem = shmem;
    pthread_mutex_lock(&G.lock);
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 8;
        struct sim_gnode **nn = realloc(g->nodes, cap * sizeof *nn);
        if (nn == NULL) {
            pthread_mutex_unlock(&G.lock);
            free(n);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        g->nodes = nn;
        g->cap = cap;
    }
    g->nodes[g->n++] = n; /* nodes run in the order they were added */
    pthread_mutex_unlock(&G.lock);
    *ph = (CUgraphNode)n;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphAddKernelNode(CUgraphNode *ph, CUgraph hg, const CUgraphNode *deps, size_t ndeps,
                                     const CUDA_KERNEL_NODE_PARAMS *p)
{
    if (p == NULL)
        return ready() ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_INITIALIZED;
    if (ready() && !func_ok(p->func))
        return CUDA_ERROR_INVALID_VALUE;
    return graph_add_kernel(ph, hg, deps, ndeps, true, p->func, NULL, p->gridDimX, p->gridDimY, p->gridDimZ,
                            p->blockDimX, p->blockDimY, p->blockDimZ, p->sharedMemBytes);
}

EXPORT CUresult cuGraphAddKernelNode_v2(CUgraphNode *ph, CUgraph hg, const CUgraphNode *deps, size_t ndeps,
                                        const CUDA_KERNEL_NODE_PARAMS_v2 *p)
{
    if (p == NULL)
        return ready() ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_INITIALIZED;
    /* v2 names the kernel by CUfunction or by CUkernel (opaque here). */
    bool have = (p->func != NULL && ready() && func_ok(p->func)) || (p->func == NULL && p->kern != NULL);
    return graph_add_kernel(ph, hg, deps, ndeps, have, p->func, p->kern, p->gridDimX, p->gridDimY, p->gridDimZ,
                            p->blockDimX, p->blockDimY, p->blockDimZ, p->sharedMemBytes);
}

/* Graph introspection, as the real driver: every node of this sim's graphs is a
 * kernel node (CU_GRAPH_NODE_TYPE_KERNEL = 0). */
#define SIM_GRAPH_NODE_KERNEL 0

EXPORT CUresult cuGraphGetNodes(CUgraph hg, CUgraphNode *nodes, size_t *num)
{
    CHECK_INIT();
    struct sim_graph *g = (struct sim_graph *)hg;
    if (num == NULL || !graph_ok(g))
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&G.lock);
    if (nodes != NULL) {
        /* Fills up to *num entries; extra entries are NULL; *num = nodes returned. */
        size_t i = 0;
        for (; i < *num && i < g->n; i++)
            nodes[i] = (CUgraphNode)g->nodes[i];
        for (size_t j = i; j < *num; j++)
            nodes[j] = NULL;
        *num = i;
    } else {
        *num = g->n;
    }
    pthread_mutex_unlock(&G.lock);
    return CUDA_SUCCESS;
}

static const struct sim_gnode *gnode_of(CUgraphNode h)
{
    const struct sim_gnode *n = (const struct sim_gnode *)h;
    return n != NULL && n->magic == GNODE_MAGIC ? n : NULL;
}

EXPORT CUresult cuGraphNodeGetType(CUgraphNode h, int *type)
{
    CHECK_INIT();
    if (type == NULL || gnode_of(h) == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *type = SIM_GRAPH_NODE_KERNEL;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphKernelNodeGetParams(CUgraphNode h, CUDA_KERNEL_NODE_PARAMS *p)
{
    CHECK_INIT();
    const struct sim_gnode *n = gnode_of(h);
    if (p == NULL || n == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    memset(p, 0, sizeof *p);
    p->func = n->func;
    p->gridDimX = n->grid[0], p->gridDimY = n->grid[1], p->gridDimZ = n->grid[2];
    p->blockDimX = n->block[0], p->blockDimY = n->block[1], p->blockDimZ = n->block[2];
    p->sharedMemBytes = n->shmem;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphKernelNodeGetParams_v2(CUgraphNode h, CUDA_KERNEL_NODE_PARAMS_v2 *p)
{
    CHECK_INIT();
    const struct sim_gnode *n = gnode_of(h);
    if (p == NULL || n == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    memset(p, 0, sizeof *p);
    p->func = n->func;
    p->kern = n->kern;
    p->gridDimX = n->grid[0], p->gridDimY = n->grid[1], p->gridDimZ = n->grid[2];
    p->blockDimX = n->block[0], p->blockDimY = n->block[1], p->blockDimZ = n->block[2];
    p->sharedMemBytes = n->shmem;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *pexec, CUgraph hg, unsigned long long flags)
{
    CHECK_INIT();
    struct sim_graph *g = (struct sim_graph *)hg;
    if (pexec == NULL || !graph_ok(g))
        return CUDA_ERROR_INVALID_VALUE;
    (void)flags;
    struct sim_gexec *e = calloc(1, sizeof *e);
    if (e == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&G.lock);
    e->blocks = calloc(g->n ? g->n : 1, sizeof *e->blocks);
    if (e->blocks == NULL) {
        pthread_mutex_unlock(&G.lock);
        free(e);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (size_t i = 0; i < g->n; i++)
        e->blocks[i] = g->nodes[i]->blocks;
    e->n = g->n;
    pthread_mutex_unlock(&G.lock);
    e->magic = GEXEC_MAGIC;
    e->alive = true;
    e->epoch = G.epoch;
    *pexec = (CUgraphExec)e;
    return CUDA_SUCCESS;
}

/* CUDA 10/11 forms: error node and log buffer. */
EXPORT CUresult cuGraphInstantiate(CUgraphExec *pexec, CUgraph hg, CUgraphNode *errNode, char *logBuf, size_t bufSize)
{
    if (errNode != NULL)
        *errNode = NULL;
    if (logBuf != NULL && bufSize > 0)
        logBuf[0] = '\0';
    return cuGraphInstantiateWithFlags(pexec, hg, 0);
}

EXPORT CUresult cuGraphInstantiate_v2(CUgraphExec *pexec, CUgraph hg, CUgraphNode *errNode, char *logBuf,
                                      size_t bufSize)
{
    return cuGraphInstantiate(pexec, hg, errNode, logBuf, bufSize);
}

static CUresult graph_launch(CUgraphExec he, CUstream h, bool ptsz)
{
    CHECK_INIT();
    struct sim_gexec *e = (struct sim_gexec *)he;
    if (e == NULL || e->magic != GEXEC_MAGIC || !e->alive || e->epoch != G.epoch)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_ctx *c;
    _Atomic uint64_t *send;
    CUresult r = resolve_stream(h, ptsz, &c, &send);
    if (r != CUDA_SUCCESS)
        return r;
    for (size_t i = 0; i < e->n; i++) {
        r = launch_blocks(h, ptsz, e->blocks[i], false);
        if (r != CUDA_SUCCESS)
            return r;
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphLaunch(CUgraphExec he, CUstream h) { return graph_launch(he, h, false); }
EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec he, CUstream h) { return graph_launch(he, h, true); }

EXPORT CUresult cuGraphDestroy(CUgraph hg)
{
    CHECK_INIT();
    struct sim_graph *g = (struct sim_graph *)hg;
    if (!graph_ok(g))
        return CUDA_ERROR_INVALID_VALUE;
    g->alive = false;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphExecDestroy(CUgraphExec he)
{
    CHECK_INIT();
    struct sim_gexec *e = (struct sim_gexec *)he;
    if (e == NULL || e->magic != GEXEC_MAGIC || !e->alive || e->epoch != G.epoch)
        return CUDA_ERROR_INVALID_VALUE;
    e->alive = false;
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------ errors */

struct err_ent {
    int code;
    const char *name;
    const char *str;
};

static const struct err_ent k_errors[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {4, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {200, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {202, "CUDA_ERROR_CONTEXT_ALREADY_CURRENT", "context already current"},
    {218, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {300, "CUDA_ERROR_INVALID_SOURCE", "device kernel image is invalid"},
    {301, "CUDA_ERROR_FILE_NOT_FOUND", "file not found"},
    {304, "CUDA_ERROR_OPERATING_SYSTEM", "OS call failed or operation not supported on this OS"},
    {400, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {600, "CUDA_ERROR_NOT_READY", "device not ready"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {708, "CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE", "primary context active"},
    {709, "CUDA_ERROR_CONTEXT_IS_DESTROYED", "context is destroyed"},
    {720, "CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE", "too many blocks in cooperative launch"},
    {800, "CUDA_ERROR_NOT_PERMITTED", "operation not permitted"},
    {801, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {999, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

static const struct err_ent *err_lookup(CUresult e)
{
    for (size_t i = 0; i < sizeof k_errors / sizeof k_errors[0]; i++)
        if (k_errors[i].code == (int)e)
            return &k_errors[i];
    return NULL;
}

EXPORT CUresult cuGetErrorString(CUresult error, const char **pStr)
{
    if (pStr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    const struct err_ent *e = err_lookup(error);
    *pStr = e ? e->str : NULL;
    return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuGetErrorName(CUresult error, const char **pStr)
{
    if (pStr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    const struct err_ent *e = err_lookup(error);
    *pStr = e ? e->name : NULL;
    return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ------------------------------------------------------------------ cuGetProcAddress */

EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags);
EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                                    CUdriverProcAddressQueryResult *symbolStatus);

/* One row per (base name, variant): the variant a caller asking for `name` at
 * cudaVersion >= since gets, the newest qualifying row winning; per_thread rows are
 * the _ptsz/_ptds variants chosen by CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM. */
struct proc_ent {
    const char *name;
    const char *variant;
    int since;
    bool per_thread;
    void *fn;
};

#define PE(n, v, s, f) {n, v, s, false, (void *)(f)}
#define PT(n, v, s, f) {n, v, s, true, (void *)(f)}

static const struct proc_ent k_procs[] = {
    PE("cuGetErrorString", "cuGetErrorString", 6000, cuGetErrorString),
    PE("cuGetErrorName", "cuGetErrorName", 6000, cuGetErrorName),
    PE("cuInit", "cuInit", 2000, cuInit),
    PE("cuDriverGetVersion", "cuDriverGetVersion", 2020, cuDriverGetVersion),
    PE("cuDeviceGet", "cuDeviceGet", 2000, cuDeviceGet),
    PE("cuDeviceGetCount", "cuDeviceGetCount", 2000, cuDeviceGetCount),
    PE("cuDeviceGetName", "cuDeviceGetName", 2000, cuDeviceGetName),
    PE("cuDeviceGetUuid", "cuDeviceGetUuid", 9020, cuDeviceGetUuid),
    PE("cuDeviceGetUuid", "cuDeviceGetUuid_v2", 11040, cuDeviceGetUuid_v2),
    PE("cuDeviceTotalMem", "cuDeviceTotalMem_v2", 3020, cuDeviceTotalMem_v2),
    PE("cuDeviceGetAttribute", "cuDeviceGetAttribute", 2000, cuDeviceGetAttribute),
    PE("cuDeviceComputeCapability", "cuDeviceComputeCapability", 2000, cuDeviceComputeCapability),
    PE("cuDeviceGetPCIBusId", "cuDeviceGetPCIBusId", 4010, cuDeviceGetPCIBusId),
    PE("cuDeviceGetByPCIBusId", "cuDeviceGetByPCIBusId", 4010, cuDeviceGetByPCIBusId),
    PE("cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRetain", 7000, cuDevicePrimaryCtxRetain),
    PE("cuDevicePrimaryCtxRelease", "cuDevicePrimaryCtxRelease", 7000, cuDevicePrimaryCtxRelease),
    PE("cuDevicePrimaryCtxRelease", "cuDevicePrimaryCtxRelease_v2", 11000, cuDevicePrimaryCtxRelease_v2),
    PE("cuDevicePrimaryCtxReset", "cuDevicePrimaryCtxReset", 7000, cuDevicePrimaryCtxReset),
    PE("cuDevicePrimaryCtxReset", "cuDevicePrimaryCtxReset_v2", 11000, cuDevicePrimaryCtxReset_v2),
    PE("cuDevicePrimaryCtxSetFlags", "cuDevicePrimaryCtxSetFlags", 7000, cuDevicePrimaryCtxSetFlags),
    PE("cuDevicePrimaryCtxSetFlags", "cuDevicePrimaryCtxSetFlags_v2", 11000, cuDevicePrimaryCtxSetFlags_v2),
    PE("cuDevicePrimaryCtxGetState", "cuDevicePrimaryCtxGetState", 7000, cuDevicePrimaryCtxGetState),
    PE("cuCtxCreate", "cuCtxCreate", 2000, cuCtxCreate),
    PE("cuCtxCreate", "cuCtxCreate_v2", 3020, cuCtxCreate_v2),
    PE("cuCtxCreate", "cuCtxCreate_v3", 11040, cuCtxCreate_v3),
    PE("cuCtxDestroy", "cuCtxDestroy", 2000, cuCtxDestroy),
    PE("cuCtxDestroy", "cuCtxDestroy_v2", 4000, cuCtxDestroy_v2),
    PE("cuCtxPushCurrent", "cuCtxPushCurrent", 2000, cuCtxPushCurrent),
    PE("cuCtxPushCurrent", "cuCtxPushCurrent_v2", 4000, cuCtxPushCurrent_v2),
    PE("cuCtxPopCurrent", "cuCtxPopCurrent", 2000, cuCtxPopCurrent),
    PE("cuCtxPopCurrent", "cuCtxPopCurrent_v2", 4000, cuCtxPopCurrent_v2),
    PE("cuCtxGetCurrent", "cuCtxGetCurrent", 4000, cuCtxGetCurrent),
    PE("cuCtxSetCurrent", "cuCtxSetCurrent", 4000, cuCtxSetCurrent),
    PE("cuCtxGetDevice", "cuCtxGetDevice", 2000, cuCtxGetDevice),
    PE("cuCtxSynchronize", "cuCtxSynchronize", 2000, cuCtxSynchronize),
    PE("cuMemGetInfo", "cuMemGetInfo_v2", 3020, cuMemGetInfo_v2),
    PE("cuMemAlloc", "cuMemAlloc_v2", 3020, cuMemAlloc_v2),
    PE("cuMemAllocPitch", "cuMemAllocPitch_v2", 3020, cuMemAllocPitch_v2),
    PE("cuMemAllocManaged", "cuMemAllocManaged", 6000, cuMemAllocManaged),
    PE("cuMemFree", "cuMemFree_v2", 3020, cuMemFree_v2),
    PE("cuMemGetAddressRange", "cuMemGetAddressRange_v2", 3020, cuMemGetAddressRange_v2),
    PE("cuArrayCreate", "cuArrayCreate_v2", 3020, cuArrayCreate_v2),
    PE("cuArrayDestroy", "cuArrayDestroy", 2000, cuArrayDestroy),
    PE("cuMemAddressReserve", "cuMemAddressReserve", 10020, cuMemAddressReserve),
    PE("cuMemAddressFree", "cuMemAddressFree", 10020, cuMemAddressFree),
    PE("cuMemCreate", "cuMemCreate", 10020, cuMemCreate),
    PE("cuMemRelease", "cuMemRelease", 10020, cuMemRelease),
    PE("cuMemMap", "cuMemMap", 10020, cuMemMap),
    PE("cuMemUnmap", "cuMemUnmap", 10020, cuMemUnmap),
    PE("cuMemSetAccess", "cuMemSetAccess", 10020, cuMemSetAccess),
    PE("cuMemGetAllocationGranularity", "cuMemGetAllocationGranularity", 10020, cuMemGetAllocationGranularity),
    PE("cuMemAllocAsync", "cuMemAllocAsync", 11020, cuMemAllocAsync),
    PT("cuMemAllocAsync", "cuMemAllocAsync_ptsz", 11020, cuMemAllocAsync_ptsz),
    PE("cuMemFreeAsync", "cuMemFreeAsync", 11020, cuMemFreeAsync),
    PT("cuMemFreeAsync", "cuMemFreeAsync_ptsz", 11020, cuMemFreeAsync_ptsz),
    PE("cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync", 11020, cuMemAllocFromPoolAsync),
    PT("cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync_ptsz", 11020, cuMemAllocFromPoolAsync_ptsz),
    PE("cuMemPoolCreate", "cuMemPoolCreate", 11020, cuMemPoolCreate),
    PE("cuMemPoolDestroy", "cuMemPoolDestroy", 11020, cuMemPoolDestroy),
    PE("cuMemPoolTrimTo", "cuMemPoolTrimTo", 11020, cuMemPoolTrimTo),
    PE("cuMemPoolSetAttribute", "cuMemPoolSetAttribute", 11020, cuMemPoolSetAttribute),
    PE("cuMemPoolGetAttribute", "cuMemPoolGetAttribute", 11020, cuMemPoolGetAttribute),
    PE("cuDeviceGetDefaultMemPool", "cuDeviceGetDefaultMemPool", 11020, cuDeviceGetDefaultMemPool),
    PE("cuDeviceGetMemPool", "cuDeviceGetMemPool", 11020, cuDeviceGetMemPool),
    PE("cuDeviceSetMemPool", "cuDeviceSetMemPool", 11020, cuDeviceSetMemPool),
    PE("cuStreamCreate", "cuStreamCreate", 2000, cuStreamCreate),
    PE("cuStreamCreateWithPriority", "cuStreamCreateWithPriority", 5050, cuStreamCreateWithPriority),
    PE("cuStreamDestroy", "cuStreamDestroy", 2000, cuStreamDestroy),
    PE("cuStreamDestroy", "cuStreamDestroy_v2", 4000, cuStreamDestroy_v2),
    PE("cuStreamSynchronize", "cuStreamSynchronize", 2000, cuStreamSynchronize),
    PT("cuStreamSynchronize", "cuStreamSynchronize_ptsz", 7000, cuStreamSynchronize_ptsz),
    PE("cuStreamQuery", "cuStreamQuery", 2000, cuStreamQuery),
    PT("cuStreamQuery", "cuStreamQuery_ptsz", 7000, cuStreamQuery_ptsz),
    PE("cuModuleLoadData", "cuModuleLoadData", 2000, cuModuleLoadData),
    PE("cuModuleUnload", "cuModuleUnload", 2000, cuModuleUnload),
    PE("cuModuleGetFunction", "cuModuleGetFunction", 2000, cuModuleGetFunction),
    PE("cuLaunchKernel", "cuLaunchKernel", 4000, cuLaunchKernel),
    PT("cuLaunchKernel", "cuLaunchKernel_ptsz", 7000, cuLaunchKernel_ptsz),
    PE("cuLaunchKernelEx", "cuLaunchKernelEx", 11060, cuLaunchKernelEx),
    PT("cuLaunchKernelEx", "cuLaunchKernelEx_ptsz", 11060, cuLaunchKernelEx_ptsz),
    PE("cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel", 9000, cuLaunchCooperativeKernel),
    PT("cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel_ptsz", 9000, cuLaunchCooperativeKernel_ptsz),
    PE("cuGraphCreate", "cuGraphCreate", 10000, cuGraphCreate),
    PE("cuGraphAddKernelNode", "cuGraphAddKernelNode", 10000, cuGraphAddKernelNode),
    PE("cuGraphAddKernelNode", "cuGraphAddKernelNode_v2", 12000, cuGraphAddKernelNode_v2),
    PE("cuGraphGetNodes", "cuGraphGetNodes", 10000, cuGraphGetNodes),
    PE("cuGraphNodeGetType", "cuGraphNodeGetType", 10000, cuGraphNodeGetType),
    PE("cuGraphKernelNodeGetParams", "cuGraphKernelNodeGetParams", 10000, cuGraphKernelNodeGetParams),
    PE("cuGraphKernelNodeGetParams", "cuGraphKernelNodeGetParams_v2", 12000, cuGraphKernelNodeGetParams_v2),
    PE("cuGraphInstantiate", "cuGraphInstantiate", 10000, cuGraphInstantiate),
    PE("cuGraphInstantiate", "cuGraphInstantiate_v2", 11000, cuGraphInstantiate_v2),
    PE("cuGraphInstantiate", "cuGraphInstantiateWithFlags", 12000, cuGraphInstantiateWithFlags),
    PE("cuGraphInstantiateWithFlags", "cuGraphInstantiateWithFlags", 11040, cuGraphInstantiateWithFlags),
    PE("cuGraphLaunch", "cuGraphLaunch", 10000, cuGraphLaunch),
    PT("cuGraphLaunch", "cuGraphLaunch_ptsz", 10000, cuGraphLaunch_ptsz),
    PE("cuGraphDestroy", "cuGraphDestroy", 10000, cuGraphDestroy),
    PE("cuGraphExecDestroy", "cuGraphExecDestroy", 10000, cuGraphExecDestroy),
    PE("cuGetProcAddress", "cuGetProcAddress", 11030, cuGetProcAddress),
    PE("cuGetProcAddress", "cuGetProcAddress_v2", 12000, cuGetProcAddress_v2),
};

static CUresult proc_lookup(const char *symbol, void **pfn, int ver, cuuint64_t flags,
                            CUdriverProcAddressQueryResult *status)
{
    if (symbol == NULL || pfn == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if ((flags & ~(cuuint64_t)(CU_GET_PROC_ADDRESS_LEGACY_STREAM | CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    bool want_pt = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
    const struct proc_ent *best = NULL, *best_pt = NULL;
    bool exists = false;
    for (size_t i = 0; i < sizeof k_procs / sizeof k_procs[0]; i++) {
        const struct proc_ent *e = &k_procs[i];
        if (strcmp(e->name, symbol) != 0)
            continue;
        exists = true;
        if (e->since > ver)
            continue;
        if (e->per_thread) {
            if (best_pt == NULL || e->since > best_pt->since)
                best_pt = e;
        } else if (best == NULL || e->since > best->since) {
            best = e;
        }
    }
    /* Per-thread callers get the _ptsz variant where one exists, the plain one otherwise. */
    const struct proc_ent *hit = (want_pt && best_pt != NULL) ? best_pt : best;
    *pfn = hit ? hit->fn : NULL;
    if (status != NULL)
        *status = hit ? CU_GET_PROC_ADDRESS_SUCCESS
                      : (exists ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
    return hit ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags)
{
    return proc_lookup(symbol, pfn, cudaVersion, flags, NULL);
}

EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                                    CUdriverProcAddressQueryResult *symbolStatus)
{
    return proc_lookup(symbol, pfn, cudaVersion, flags, symbolStatus);
}
