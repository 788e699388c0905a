//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * cuda_graph.c — graphs of kernel nodes: build, introspect, instantiate, launch.
 */
#define _GNU_SOURCE
#include "cuda_internal.h"

#define GRAPH_MAGIC 0x47524131u
#define GNODE_MAGIC 0x474e4431u
#define GEXEC_MAGIC 0x47455831u

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
