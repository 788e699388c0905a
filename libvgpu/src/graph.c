/*
 * graph.c — CUDA graph instantiation: what one launch of the graph costs (the
 * throttle) and what its memory nodes take (the memory cap).
 *
 * Every instantiation entry point (cuGraphInstantiate, _v2, WithFlags, WithParams,
 * WithParams_ptsz: distinct driver ABI symbols) walks the graph with
 * cuGraphGetNodes before it calls the driver — graphs made by stream capture as
 * well as hand-built ones, child graphs included — and learns:
 *   cost    the waves of every kernel node; throttle.c keeps exec -> cost for
 *           cuGraphLaunch;
 *   memory  the bytes of every memory-allocation node (cuGraphAddMemAllocNode, or
 *           cuMemAllocAsync captured into the graph), per device
 *           (poolProps.location.id).
 *
 * Graph memory — when the driver takes it, and what libvgpu charges. The driver
 * serves an executable graph's allocation nodes from a per-device graph memory
 * pool: physical memory is mapped at the graph's first launch and stays with the
 * executable graph — reused launch after launch, also past the graph's own free
 * nodes (cuGraphAddMemFreeNode returns a block to that pool, not to the device) —
 * until the executable graph is destroyed, or cuDeviceGraphMemTrim gives back what
 * no graph is using at that moment. libvgpu charges the sum of the allocation
 * nodes' bytesize when the graph is INSTANTIATED: reserved before the driver is
 * called (over budget: CUDA_ERROR_OUT_OF_MEMORY, the driver never sees the call),
 * committed when the instantiation succeeds, credited at cuGraphExecDestroy or when
 * the exec's context is destroyed. Charging at instantiation rather than first
 * launch, and through a trim, over-counts a little (by what an instantiated graph
 * not yet launched, or a trimmed one, does not hold); it never under-counts — an
 * executable graph cannot hold device memory its slice did not pay for, and the
 * refusal comes at a call that can already fail with out-of-memory. A graph
 * whose allocation nodes cannot all be read (or that names a device outside the
 * slice) is refused once the driver has shown it valid: fail closed.
 *
 * Nothing here is on a hot path: instantiation and destruction are driver calls
 * that allocate anyway. The walk allocates (one node array per graph level).
 */
#include <stdlib.h>
#include <string.h>

#include "vgpu_internal.h"

static inline uint64_t sat_mul(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX / 4 : r;
}

static inline uint64_t sat_add(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

/* What the walk of one graph found. */
struct graph_scan {
    uint64_t sms;                    /* of the device the cost is charged on */
    uint64_t waves;                  /* every kernel node's waves */
    bool cost_ok;                    /* every kernel node was read */
    bool mem_ok;                     /* every allocation node was read */
    uint64_t mem[VGPU_MAX_ORDINALS]; /* bytes of allocation nodes per CUDA ordinal */
};

/* Blocks of one kernel node, through whichever accessor the driver has (the v2
 * struct starts with the v1 fields). */
static bool kernel_node_blocks(CUgraphNode n, uint64_t *blocks)
{
    CUDA_KERNEL_NODE_PARAMS_v2 p = {0};
    CUresult r = CUDA_ERROR_NOT_FOUND;
    if (vgpu_real.cuGraphKernelNodeGetParams_v2)
        r = vgpu_real.cuGraphKernelNodeGetParams_v2(n, &p);
    else if (vgpu_real.cuGraphKernelNodeGetParams)
        r = vgpu_real.cuGraphKernelNodeGetParams(n, (CUDA_KERNEL_NODE_PARAMS *)&p);
    if (r != CUDA_SUCCESS)
        return false;
    *blocks = (uint64_t)p.gridDimX * p.gridDimY * p.gridDimZ;
    return true;
}

static void scan_alloc_node(CUgraphNode n, struct graph_scan *sc)
{
    CUDA_MEM_ALLOC_NODE_PARAMS p = {0};
    if (!vgpu_real.cuGraphMemAllocNodeGetParams ||
        vgpu_real.cuGraphMemAllocNodeGetParams(n, &p) != CUDA_SUCCESS) {
        sc->mem_ok = false;
        return;
    }
    int ord = p.poolProps.location.id;
    if (ord < 0 || ord >= VGPU_MAX_ORDINALS) {
        sc->mem_ok = false; /* the driver refuses it; if not, neither do we know it */
        return;
    }
    sc->mem[ord] = sat_add(sc->mem[ord], p.bytesize);
}

static void scan_graph(CUgraph g, int depth, struct graph_scan *sc)
{
    size_t n = 0;
    if (!vgpu_real.cuGraphGetNodes || !vgpu_real.cuGraphNodeGetType) {
        /* A driver without graph introspection (CUDA < 10) has no memory nodes. */
        sc->cost_ok = false;
        return;
    }
    if (depth >= 8 || vgpu_real.cuGraphGetNodes(g, NULL, &n) != CUDA_SUCCESS) {
        sc->cost_ok = sc->mem_ok = false;
        return;
    }
    if (n == 0)
        return;
    CUgraphNode *nodes = malloc(n * sizeof *nodes);
    if (!nodes) {
        sc->cost_ok = sc->mem_ok = false;
        return;
    }
    size_t got = n;
    if (vgpu_real.cuGraphGetNodes(g, nodes, &got) != CUDA_SUCCESS) {
        sc->cost_ok = sc->mem_ok = false;
        got = 0;
    }
    if (got > n)
        got = n;
    for (size_t i = 0; i < got; i++) {
        int type = -1;
        if (vgpu_real.cuGraphNodeGetType(nodes[i], &type) != CUDA_SUCCESS) {
            sc->cost_ok = sc->mem_ok = false;
            continue;
        }
        if (type == VGPU_GRAPH_NODE_KERNEL) {
            uint64_t b = 0;
            if (!kernel_node_blocks(nodes[i], &b))
                sc->cost_ok = false;
            else if (b)
                sc->waves = sat_add(sc->waves, (b + sc->sms - 1) / sc->sms);
        } else if (type == VGPU_GRAPH_NODE_GRAPH) {
            CUgraph child = NULL;
            if (!vgpu_real.cuGraphChildGraphNodeGetGraph ||
                vgpu_real.cuGraphChildGraphNodeGetGraph(nodes[i], &child) != CUDA_SUCCESS)
                sc->cost_ok = sc->mem_ok = false;
            else
                scan_graph(child, depth + 1, sc);
        } else if (type == VGPU_GRAPH_NODE_MEM_ALLOC) {
            scan_alloc_node(nodes[i], sc);
        }
        /* Copies, memsets, host, event and free nodes use no SMs worth charging
         * and take no memory of their own. */
    }
    free(nodes);
}

/* ---------------------------------------------------------- the instantiation */

/* Graph memory records are keyed by (exec, slice device): user-space pointers
 * leave the top 4 bits free, and a slice has at most 16 devices. */
_Static_assert(VGPU_MAX_DEVICES <= 16, "graph memory keys hold the slice device in 4 bits");
static inline uint64_t gm_key(CUgraphExec exec, int sd)
{
    return ((uint64_t)(uintptr_t)exec << 4) | (uint64_t)sd;
}

/* One instantiation in flight: what was found and reserved before the driver call. */
struct graph_plan {
    bool active; /* enforcing, and an exec will be handed back */
    bool mem_ok;
    int cost_sd;
    CUcontext ctx;
    uint64_t cost;
    uint64_t bytes[VGPU_MAX_DEVICES]; /* reserved per slice device */
};

static void plan_unreserve(const struct graph_plan *p)
{
    for (uint32_t sd = 0; sd < vgpu_g.ndev; sd++)
        if (p->bytes[sd])
            vgpu_unreserve((int)sd, p->bytes[sd]);
}

/* Before the driver call: walks g and reserves its memory. False with *ret set
 * when the instantiation must be refused without calling the driver. */
static bool plan_instantiate(CUgraph g, CUgraphExec *exec, struct graph_plan *p, CUresult *ret)
{
    memset(p, 0, sizeof *p);
    if (atomic_load_explicit(&vgpu_g.mode, memory_order_acquire) != VGPU_MODE_ENFORCE || !exec)
        return true;
    p->active = true;
    CUresult err;
    if (vgpu_g.ndev > 1) {
        int sd = vgpu_current_target(&p->ctx, NULL, &err);
        p->cost_sd = sd < 0 ? 0 : sd;
    } else if (vgpu_real.cuCtxGetCurrent) {
        vgpu_real.cuCtxGetCurrent(&p->ctx);
    }
    struct graph_scan sc;
    memset(&sc, 0, sizeof sc);
    sc.sms = vgpu_sms_of(p->cost_sd);
    sc.cost_ok = sc.mem_ok = true;
    scan_graph(g, 0, &sc);
    p->mem_ok = sc.mem_ok;

    p->cost = sat_mul(sc.waves, VGPU_TOKEN_WAVE_NS);
    if (!sc.cost_ok) {
        VGPU_LOG_ONCE(logged_graph_walk, VGPU_LOG_WARN,
                      "cannot read every node of a CUDA graph; such graphs are charged at "
                      "least as the largest graph seen");
        uint64_t u = vgpu_graph_unknown_cost();
        if (p->cost < u)
            p->cost = u;
    }

    for (int ord = 0; ord < VGPU_MAX_ORDINALS; ord++) {
        if (!sc.mem[ord])
            continue;
        int sd = vgpu_slice_dev_of_ordinal(ord, &err);
        if (sd == -2)
            continue; /* the driver's own error (a bad ordinal) comes from the driver */
        if (sd < 0 || !vgpu_slot_get()) {
            plan_unreserve(p);
            *ret = CUDA_ERROR_OUT_OF_MEMORY; /* a device outside the slice; no slot */
            return false;
        }
        if (!vgpu_reserve(sd, sc.mem[ord])) {
            plan_unreserve(p);
            *ret = vgpu_refuse(sd);
            return false;
        }
        p->bytes[sd] += sc.mem[ord];
    }
    return true;
}

/* After the driver call: commits (or gives back) the reservation, learns the cost. */
static CUresult finish_instantiate(struct graph_plan *p, CUgraphExec *exec, CUresult r)
{
    if (!p->active)
        return r;
    if (r != CUDA_SUCCESS) {
        plan_unreserve(p);
        return r;
    }
    if (!p->mem_ok) {
        /* A valid graph (the driver took it) whose memory nodes we could not read:
         * it must not run uncharged. */
        VGPU_LOG_ONCE(logged_graph_mem, VGPU_LOG_ERROR,
                      "cannot read the memory nodes of a CUDA graph; its instantiation is "
                      "refused (CUDA_ERROR_OUT_OF_MEMORY)");
        if (vgpu_real.cuGraphExecDestroy)
            vgpu_real.cuGraphExecDestroy(*exec);
        plan_unreserve(p);
        return vgpu_refuse(p->cost_sd);
    }
    for (uint32_t sd = 0; sd < vgpu_g.ndev; sd++) {
        if (!p->bytes[sd])
            continue;
        vgpu_commit((int)sd, p->bytes[sd]);
        struct vgpu_rec rec = {.size = p->bytes[sd],
                               .ctx = (uint64_t)(uintptr_t)p->ctx,
                               .sd = (int16_t)sd,
                               .kind = VGPU_KIND_PLAIN};
        vgpu_tab_insert(VGPU_NS_GRAPHMEM, gm_key(*exec, (int)sd), &rec);
    }
    vgpu_graph_cost_put((uint64_t)(uintptr_t)*exec, p->cost);
    return r;
}

#define INSTANTIATE_HOOK(name, params, args)               \
    VGPU_EXPORT CUresult name params                       \
    {                                                      \
        vgpu_mode();                                       \
        name##_fn real = vgpu_real.name;                   \
        if (VGPU_UNLIKELY(!real))                          \
            return CUDA_ERROR_NOT_FOUND;                   \
        struct graph_plan plan;                            \
        CUresult r;                                        \
        if (!plan_instantiate(g, exec, &plan, &r))         \
            return r;                                      \
        return finish_instantiate(&plan, exec, real args); \
    }

#define LOG_PARAMS \
    (CUgraphExec * exec, CUgraph g, CUgraphNode * err_node, char *log, size_t log_size)
#define LOG_ARGS (exec, g, err_node, log, log_size)
#define PARAMS_PARAMS (CUgraphExec * exec, CUgraph g, void *params)
#define PARAMS_ARGS (exec, g, params)

INSTANTIATE_HOOK(cuGraphInstantiate, LOG_PARAMS, LOG_ARGS)
INSTANTIATE_HOOK(cuGraphInstantiate_v2, LOG_PARAMS, LOG_ARGS)
INSTANTIATE_HOOK(cuGraphInstantiateWithFlags,
                 (CUgraphExec * exec, CUgraph g, unsigned long long flags), (exec, g, flags))
INSTANTIATE_HOOK(cuGraphInstantiateWithParams, PARAMS_PARAMS, PARAMS_ARGS)
INSTANTIATE_HOOK(cuGraphInstantiateWithParams_ptsz, PARAMS_PARAMS, PARAMS_ARGS)

VGPU_EXPORT CUresult cuGraphExecDestroy(CUgraphExec exec)
{
    int m = vgpu_mode();
    cuGraphExecDestroy_fn real = vgpu_real.cuGraphExecDestroy;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    if (!exec || m != VGPU_MODE_ENFORCE)
        return real(exec);
    /* Forget first: once the driver destroyed it the handle value may be reused. */
    vgpu_graph_cost_drop((uint64_t)(uintptr_t)exec);
    struct vgpu_rec recs[VGPU_MAX_DEVICES];
    int sds[VGPU_MAX_DEVICES], n = 0;
    for (uint32_t sd = 0; sd < vgpu_g.ndev; sd++)
        if (vgpu_tab_remove(VGPU_NS_GRAPHMEM, gm_key(exec, (int)sd), &recs[n]))
            sds[n++] = (int)sd;
    CUresult r = real(exec);
    for (int i = 0; i < n; i++) {
        if (r == CUDA_SUCCESS)
            vgpu_credit(recs[i].sd, recs[i].size);
        else
            vgpu_tab_insert(VGPU_NS_GRAPHMEM, gm_key(exec, sds[i]), &recs[i]);
    }
    return r;
}
