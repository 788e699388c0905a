//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * cuda_graph.c — graphs of kernel and memory nodes: build, introspect,
 * instantiate, launch.
 *
 * Graph memory, as the driver: an allocation node (cuGraphAddMemAllocNode) gets its
 * device address when it is added, and an executable graph takes the physical
 * memory of all its allocation nodes, per device, at its first launch (charged to
 * the launching process; CUDA_ERROR_OUT_OF_MEMORY from cuGraphLaunch when the
 * device is full). The graph keeps it — free nodes (cuGraphAddMemFreeNode) return
 * a block to the graph's pool, not to the device — until the executable graph is
 * destroyed (or its context), or cuDeviceGraphMemTrim finds it idle with every
 * allocation freed inside the graph; the next launch takes it again.
 * Simplification: cuMemFree / cuMemFreeAsync of a graph allocation is refused
 * (CUDA_ERROR_INVALID_VALUE); allocations must be freed by a free node, or live as
 * long as the executable graph.
 */
#define _GNU_SOURCE
#include "cuda_internal.h"

#define GRAPH_MAGIC 0x47524131u
#define GNODE_MAGIC 0x474e4431u
#define GEXEC_MAGIC 0x47455831u

struct sim_gnode {
    uint32_t magic;
    int type; /* CU_GRAPH_NODE_TYPE_KERNEL, _MEM_ALLOC or _MEM_FREE */
    uint64_t blocks;
    /* Memory nodes: the block (alloc: its size, device, pool properties). */
    CUdeviceptr dptr;
    uint64_t bytes;
    int dev;
    CUmemPoolProps props;
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
    uint64_t *blocks; /* of each kernel node, in order */
    size_t n;
    uint64_t mem[SIM_MAX_DEVICES]; /* graph memory per device (state index) */
    bool trimmable;                /* every allocation is freed inside the graph */
    _Atomic uint64_t busy_until;   /* end of the work its latest launch queued */
};

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

/* Checks the dependencies of a node about to be added to g. */
static CUresult check_deps(const struct sim_graph *g, const CUgraphNode *deps, size_t ndeps)
{
    if (ndeps > 0 && deps == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!graph_ok(g))
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < ndeps; i++) {
        const struct sim_gnode *d = (const struct sim_gnode *)deps[i];
        if (d == NULL || d->magic != GNODE_MAGIC)
            return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

/* Appends node n to g (nodes run in the order they were added) and hands it back;
 * frees it on failure. */
static CUresult graph_append(struct sim_graph *g, struct sim_gnode *n, CUgraphNode *ph)
{
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
    g->nodes[g->n++] = n;
    pthread_mutex_unlock(&G.lock);
    *ph = (CUgraphNode)n;
    return CUDA_SUCCESS;
}

static CUresult graph_add_kernel(CUgraphNode *ph, CUgraph hg, const CUgraphNode *deps, size_t ndeps,
                                 bool have_fn, CUfunction func, CUkernel kern, unsigned gx,
                                 unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                 unsigned shmem)
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
    n->type = CU_GRAPH_NODE_TYPE_KERNEL;
    n->blocks = (uint64_t)gx * gy * gz;
    n->func = func;
    n->kern = kern;
    n->grid[0] = gx, n->grid[1] = gy, n->grid[2] = gz;
    n->block[0] = bx, n->block[1] = by, n->block[2] = bz;
    n->shmem = shmem;
    return graph_append(g, n, ph);
}

EXPORT CUresult cuGraphAddKernelNode(CUgraphNode *ph, CUgraph hg, const CUgraphNode *deps,
                                     size_t ndeps, const CUDA_KERNEL_NODE_PARAMS *p)
{
    if (p == NULL)
        return ready() ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_INITIALIZED;
    if (ready() && !func_ok(p->func))
        return CUDA_ERROR_INVALID_VALUE;
    return graph_add_kernel(ph, hg, deps, ndeps, true, p->func, NULL, p->gridDimX, p->gridDimY,
                            p->gridDimZ, p->blockDimX, p->blockDimY, p->blockDimZ,
                            p->sharedMemBytes);
}

EXPORT CUresult cuGraphAddKernelNode_v2(CUgraphNode *ph, CUgraph hg, const CUgraphNode *deps,
                                        size_t ndeps, const CUDA_KERNEL_NODE_PARAMS_v2 *p)
{
    if (p == NULL)
        return ready() ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_INITIALIZED;
    /* v2 names the kernel by CUfunction or by CUkernel (opaque here). */
    bool have =
        (p->func != NULL && ready() && func_ok(p->func)) || (p->func == NULL && p->kern != NULL);
    return graph_add_kernel(ph, hg, deps, ndeps, have, p->func, p->kern, p->gridDimX, p->gridDimY,
                            p->gridDimZ, p->blockDimX, p->blockDimY, p->blockDimZ,
                            p->sharedMemBytes);
}

/* ------------------------------------------------------------------ memory nodes */

EXPORT CUresult cuGraphAddMemAllocNode(CUgraphNode *ph, CUgraph hg, const CUgraphNode *deps,
                                       size_t ndeps, CUDA_MEM_ALLOC_NODE_PARAMS *p)
{
    CHECK_INIT();
    struct sim_graph *g = (struct sim_graph *)hg;
    if (ph == NULL || p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult r = check_deps(g, deps, ndeps);
    if (r != CUDA_SUCCESS)
        return r;
    const CUmemLocation *loc = &p->poolProps.location;
    if (p->bytesize == 0 || p->poolProps.allocType != CU_MEM_ALLOCATION_TYPE_PINNED ||
        loc->type != CU_MEM_LOCATION_TYPE_DEVICE || (p->accessDescCount > 0 && !p->accessDescs))
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(loc->id))
        return CUDA_ERROR_INVALID_DEVICE;
    struct sim_gnode *n = calloc(1, sizeof *n);
    if (n == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    n->magic = GNODE_MAGIC;
    n->type = CU_GRAPH_NODE_TYPE_MEM_ALLOC;
    n->bytes = p->bytesize;
    n->dev = G.ord2dev[loc->id];
    n->props = p->poolProps;
    /* The address is fixed now, for the graph's lifetime (as the driver). */
    n->dptr = sim_va_alloc(G.st, n->dev, p->bytesize,
                           p->bytesize >= VMM_GRANULARITY ? VMM_GRANULARITY : 512);
    r = graph_append(g, n, ph);
    if (r == CUDA_SUCCESS)
        p->dptr = n->dptr;
    return r;
}

EXPORT CUresult cuGraphAddMemFreeNode(CUgraphNode *ph, CUgraph hg, const CUgraphNode *deps,
                                      size_t ndeps, CUdeviceptr dptr)
{
    CHECK_INIT();
    struct sim_graph *g = (struct sim_graph *)hg;
    if (ph == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult r = check_deps(g, deps, ndeps);
    if (r != CUDA_SUCCESS)
        return r;
    /* Only a graph allocation of this graph, freed once. */
    bool alloc = false, freed = false;
    pthread_mutex_lock(&G.lock);
    for (size_t i = 0; i < g->n; i++) {
        if (g->nodes[i]->dptr != dptr)
            continue;
        alloc |= g->nodes[i]->type == CU_GRAPH_NODE_TYPE_MEM_ALLOC;
        freed |= g->nodes[i]->type == CU_GRAPH_NODE_TYPE_MEM_FREE;
    }
    pthread_mutex_unlock(&G.lock);
    if (!alloc || freed)
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_gnode *n = calloc(1, sizeof *n);
    if (n == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    n->magic = GNODE_MAGIC;
    n->type = CU_GRAPH_NODE_TYPE_MEM_FREE;
    n->dptr = dptr;
    return graph_append(g, n, ph);
}

/* ------------------------------------------------------------------ introspection */

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
    const struct sim_gnode *n = gnode_of(h);
    if (type == NULL || n == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *type = n->type;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphMemAllocNodeGetParams(CUgraphNode h, CUDA_MEM_ALLOC_NODE_PARAMS *p)
{
    CHECK_INIT();
    const struct sim_gnode *n = gnode_of(h);
    if (p == NULL || n == NULL || n->type != CU_GRAPH_NODE_TYPE_MEM_ALLOC)
        return CUDA_ERROR_INVALID_VALUE;
    memset(p, 0, sizeof *p);
    p->poolProps = n->props;
    p->bytesize = n->bytes;
    p->dptr = n->dptr;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphKernelNodeGetParams(CUgraphNode h, CUDA_KERNEL_NODE_PARAMS *p)
{
    CHECK_INIT();
    const struct sim_gnode *n = gnode_of(h);
    if (p == NULL || n == NULL || n->type != CU_GRAPH_NODE_TYPE_KERNEL)
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
    if (p == NULL || n == NULL || n->type != CU_GRAPH_NODE_TYPE_KERNEL)
        return CUDA_ERROR_INVALID_VALUE;
    memset(p, 0, sizeof *p);
    p->func = n->func;
    p->kern = n->kern;
    p->gridDimX = n->grid[0], p->gridDimY = n->grid[1], p->gridDimZ = n->grid[2];
    p->blockDimX = n->block[0], p->blockDimY = n->block[1], p->blockDimZ = n->block[2];
    p->sharedMemBytes = n->shmem;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *pexec, CUgraph hg,
                                            unsigned long long flags)
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
    size_t allocs = 0, frees = 0;
    for (size_t i = 0; i < g->n; i++) {
        const struct sim_gnode *n = g->nodes[i];
        if (n->type == CU_GRAPH_NODE_TYPE_KERNEL) {
            e->blocks[e->n++] = n->blocks;
        } else if (n->type == CU_GRAPH_NODE_TYPE_MEM_ALLOC) {
            e->mem[n->dev] += n->bytes;
            allocs++;
        } else {
            frees++; /* of an allocation of this graph, each once (AddMemFreeNode) */
        }
    }
    e->trimmable = allocs == frees;
    pthread_mutex_unlock(&G.lock);
    e->magic = GEXEC_MAGIC;
    e->alive = true;
    e->epoch = G.epoch;
    *pexec = (CUgraphExec)e;
    return CUDA_SUCCESS;
}

/* CUDA 10/11 forms: error node and log buffer. */
EXPORT CUresult cuGraphInstantiate(CUgraphExec *pexec, CUgraph hg, CUgraphNode *errNode,
                                   char *logBuf, size_t bufSize)
{
    if (errNode != NULL)
        *errNode = NULL;
    if (logBuf != NULL && bufSize > 0)
        logBuf[0] = '\0';
    return cuGraphInstantiateWithFlags(pexec, hg, 0);
}

EXPORT CUresult cuGraphInstantiate_v2(CUgraphExec *pexec, CUgraph hg, CUgraphNode *errNode,
                                      char *logBuf, size_t bufSize)
{
    return cuGraphInstantiate(pexec, hg, errNode, logBuf, bufSize);
}

/* The allocation-table key of e's graph memory on device dev: an address inside
 * e's own heap block (dev < 16 <= its size), so no other handle or device address
 * can have it. */
static inline uint64_t graph_mem_key(const struct sim_gexec *e, int dev)
{
    return (uint64_t)(uintptr_t)e + (uint64_t)dev;
}

/* Gives e's graph memory back (lock held): on device dev_only, or all (-1). */
static void graph_mem_give(struct sim_gexec *e, int dev_only)
{
    for (int d = 0; d < SIM_MAX_DEVICES; d++) {
        if (dev_only >= 0 && d != dev_only)
            continue;
        struct sim_alloc *a = at_find(graph_mem_key(e, d), false);
        if (a != NULL && a->kind == AK_GRAPHMEM) {
            at_find(a->ptr, true);
            alloc_drop(a);
        }
    }
}

/* Takes e's graph memory where it does not hold it yet (lock held), recorded as
 * allocations of context c: all of it, or nothing and CUDA_ERROR_OUT_OF_MEMORY. */
static CUresult graph_mem_take(struct sim_gexec *e, struct sim_ctx *c)
{
    bool took[SIM_MAX_DEVICES] = {false};
    for (int d = 0; d < SIM_MAX_DEVICES; d++) {
        if (e->mem[d] == 0 || at_find(graph_mem_key(e, d), false) != NULL)
            continue;
        CUresult r = charge(d, e->mem[d]);
        if (r == CUDA_SUCCESS) {
            r = alloc_new(graph_mem_key(e, d), e->mem[d], e->mem[d], d, AK_GRAPHMEM, c, NULL);
            if (r != CUDA_SUCCESS)
                credit(d, e->mem[d]);
        }
        if (r != CUDA_SUCCESS) {
            for (int k = 0; k < d; k++)
                if (took[k])
                    graph_mem_give(e, k);
            return r;
        }
        took[d] = true;
    }
    return CUDA_SUCCESS;
}

static bool gexec_ok(const struct sim_gexec *e)
{
    return e != NULL && e->magic == GEXEC_MAGIC && e->alive && e->epoch == G.epoch;
}

static CUresult graph_launch(CUgraphExec he, CUstream h, bool ptsz)
{
    CHECK_INIT();
    struct sim_gexec *e = (struct sim_gexec *)he;
    if (!gexec_ok(e))
        return CUDA_ERROR_INVALID_VALUE;
    struct sim_ctx *c;
    _Atomic uint64_t *send;
    CUresult r = resolve_stream(h, ptsz, &c, &send);
    if (r != CUDA_SUCCESS)
        return r;
    pthread_mutex_lock(&G.lock);
    r = graph_mem_take(e, c);
    pthread_mutex_unlock(&G.lock);
    if (r != CUDA_SUCCESS)
        return r;
    for (size_t i = 0; i < e->n; i++) {
        r = launch_blocks(h, ptsz, e->blocks[i], false);
        if (r != CUDA_SUCCESS)
            return r;
    }
    atomic_max_u64(&e->busy_until, atomic_load(send));
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
    pthread_mutex_lock(&G.lock);
    if (!gexec_ok(e)) {
        pthread_mutex_unlock(&G.lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    graph_mem_give(e, -1);
    e->alive = false; /* kept allocated: a stale handle stays harmless */
    pthread_mutex_unlock(&G.lock);
    return CUDA_SUCCESS;
}

/* Returns to device d the graph memory of every executable graph that is idle (its
 * launches done) and frees all its allocations inside the graph; its next launch
 * takes the memory again. Graph allocations still in use stay. */
EXPORT CUresult cuDeviceGraphMemTrim(CUdevice d)
{
    CHECK_INIT();
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    int dev = G.ord2dev[d];
    uint64_t now = sim_now_ns();
    pthread_mutex_lock(&G.lock);
    for (unsigned h = 0; h < AT_SIZE; h++) {
        struct sim_alloc **pp = &G.at[h];
        while (*pp != NULL) {
            struct sim_alloc *a = *pp;
            const struct sim_gexec *e =
                a->kind == AK_GRAPHMEM
                    ? (const struct sim_gexec *)(uintptr_t)(a->ptr - (uint64_t)a->dev)
                    : NULL;
            if (e != NULL && a->dev == dev && e->trimmable && atomic_load(&e->busy_until) <= now) {
                *pp = a->next;
                alloc_drop(a);
            } else {
                pp = &a->next;
            }
        }
    }
    pthread_mutex_unlock(&G.lock);
    return CUDA_SUCCESS;
}
