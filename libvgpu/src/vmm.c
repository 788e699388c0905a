/*
 * vmm.c — the virtual memory management API: cuMemCreate, cuMemMap, cuMemUnmap,
 * cuMemRelease (PyTorch expandable segments, vLLM sleep mode).
 *
 * cuMemCreate makes physical memory; it is charged there, in full, on
 * prop->location.id. The driver frees it only when the handle has been released
 * AND every mapping of it is unmapped, in either order: a program may create, map,
 * release and keep using the memory through the mapping. So the charge is credited
 * at cuMemRelease only when the handle has no mapping left, else at the
 * cuMemUnmap that drops its last one. (Crediting at release would let a
 * create/map/release loop hold any amount of memory while being charged nothing.)
 * Reserving VA (cuMemAddressReserve) costs nothing and is not tracked.
 *
 * Two namespaces of the process-local allocation table (account.c) hold the state:
 *   VMM   handle -> {size, device, state LIVE/RELEASING/RELEASED, maps, gen}
 *   VMAP  start of a mapped VA range -> {length, handle, gen of the handle}
 * Every change is one table operation (one stripe lock, a few instructions); no
 * lock is held across a driver call and no other lock exists.
 *
 * Ordering, so that whatever the interleaving of threads, libvgpu never credits
 * memory the driver still holds (at worst it over-counts until exit):
 *   - cuMemMap counts the mapping on the handle BEFORE calling the driver (and
 *     gives it back if the driver refuses): a release racing with it sees it.
 *   - cuMemUnmap marks the mappings it covers, calls the driver, and only after
 *     the driver succeeded drops them and their counts (unmarks on failure).
 *   - cuMemRelease marks the handle RELEASING, calls the driver, then settles:
 *     success -> credited now if unmapped, else RELEASED (the last unmap credits);
 *     failure -> LIVE again. An unmap that drops the last mapping of a RELEASING
 *     handle leaves the credit to the release's settlement.
 *   Whoever sees "released and no mapping" first under the stripe lock drops the
 *   record and credits it; nobody else can.
 *
 * Handle values are the driver's and may be reused once it freed the memory, even
 * while one of our hooks is still settling the old handle. Each handle record
 * carries a creation number (gen): a settlement that finds another gen under the
 * value knows its handle is gone. A cuMemCreate whose new handle replaces a
 * record still in the table credits that record, because the driver reusing the
 * value proves the old handle's memory was freed. Likewise a cuMemMap that
 * replaces a mapping record still at its address drops that mapping: the driver
 * maps nothing over a live mapping.
 *
 * What is left can only over-count (until exit), and takes a program racing
 * itself: two threads unmapping the same mapping at once (one call fails), or one
 * thread mapping into a range another thread is unmapping; either can leave a
 * mapping recorded that the driver no longer has. So can a table that cannot grow.
 *
 * Handles are not bound to a context: destroying or resetting a context leaves
 * them (and their charge) alone (vgpu_tab_drop_ctx skips these namespaces). A
 * clean exit credits everything with the rest of the slot (init.c).
 */
#include "vgpu_internal.h"

/* Creation numbers; 0 is never used. Process-local, one relaxed add per create. */
static _Atomic uint64_t vmm_gen;

VGPU_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                                 const CUmemAllocationProp *prop, unsigned long long flags)
{
    int m = vgpu_mode();
    cuMemCreate_fn real = vgpu_real.cuMemCreate;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    if (m != VGPU_MODE_ENFORCE)
        return m == VGPU_MODE_REFUSE ? CUDA_ERROR_OUT_OF_MEMORY : real(handle, size, prop, flags);
    /* Only device-located physical memory counts; anything else (host NUMA
     * locations of newer drivers, a NULL prop the driver rejects) passes. */
    if (!prop || prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return real(handle, size, prop, flags);
    CUresult err;
    int sd = vgpu_slice_dev_of_ordinal(prop->location.id, &err);
    if (sd < 0) {
        if (sd == -2 && err == CUDA_ERROR_INVALID_DEVICE)
            return real(handle, size, prop, flags); /* the driver's own error */
        return err;
    }
    if (!vgpu_slot_get())
        return CUDA_ERROR_OUT_OF_MEMORY;
    if (!vgpu_reserve(sd, size))
        return vgpu_refuse(sd);
    CUresult r = real(handle, size, prop, flags);
    if (r != CUDA_SUCCESS) {
        vgpu_unreserve(sd, size);
        return r;
    }
    vgpu_commit(sd, size);
    struct vgpu_rec rec = {.size = size,
                           .gen = atomic_fetch_add_explicit(&vmm_gen, 1, memory_order_relaxed) + 1,
                           .sd = (int16_t)sd,
                           .kind = VGPU_VMM_LIVE,
                           .maps = 0};
    struct vgpu_rec old;
    /* A record still under this value belongs to a handle the driver has freed
     * (it could not hand the value out again otherwise): its memory is gone. */
    if (vgpu_tab_put(VGPU_NS_VMM, *handle, &rec, &old) == 1)
        vgpu_credit(old.sd, old.size);
    return r;
}

/* ------------------------------------------------------------- handle updates */

/* Result of a handle update: what to credit once the stripe lock is released. */
struct vmm_op {
    uint64_t gen;  /* in/out: the handle's creation number */
    bool ok;       /* in: the driver call succeeded */
    bool marked;   /* out */
    bool credit;   /* out: the record was dropped, credit size on sd */
    uint64_t size; /* out */
    int sd;        /* out */
};

static inline int settle(struct vgpu_rec *rec, struct vmm_op *op)
{
    if (rec->kind == VGPU_VMM_RELEASED && rec->maps == 0) {
        op->credit = true;
        op->size = rec->size;
        op->sd = rec->sd;
        return VGPU_TAB_DROP;
    }
    return VGPU_TAB_WRITE;
}

/* cuMemMap, before the driver: one more mapping (in flight). Any state counts,
 * even one the driver will refuse to map: the count is given back then. */
static int map_begin(uint64_t key, struct vgpu_rec *rec, void *arg)
{
    (void)key;
    struct vmm_op *op = arg;
    if (VGPU_UNLIKELY(rec->maps == UINT32_MAX))
        return VGPU_TAB_KEEP; /* cannot count it: left untracked (never credited early) */
    rec->maps++;
    op->marked = true;
    op->gen = rec->gen;
    op->sd = rec->sd;
    return VGPU_TAB_WRITE;
}

/* One mapping of the handle is gone (unmapped, or a counted map the driver
 * refused). */
static int map_end(uint64_t key, struct vgpu_rec *rec, void *arg)
{
    (void)key;
    struct vmm_op *op = arg;
    if ((uint32_t)rec->gen != (uint32_t)op->gen)
        return VGPU_TAB_KEEP; /* the value was reused: its create credited ours */
    if (rec->maps > 0)
        rec->maps--;
    return settle(rec, op);
}

static void drop_mapping(CUmemGenericAllocationHandle handle, uint64_t gen)
{
    struct vmm_op op = {.gen = gen};
    vgpu_tab_update(VGPU_NS_VMM, handle, map_end, &op);
    if (op.credit)
        vgpu_credit(op.sd, op.size);
}

/* cuMemRelease, before the driver. Only a LIVE handle is marked: a second release
 * of the same handle (racing or not) changes nothing here; the driver answers it. */
static int release_begin(uint64_t key, struct vgpu_rec *rec, void *arg)
{
    (void)key;
    struct vmm_op *op = arg;
    if (rec->kind != VGPU_VMM_LIVE)
        return VGPU_TAB_KEEP;
    rec->kind = VGPU_VMM_RELEASING;
    op->marked = true;
    op->gen = rec->gen;
    return VGPU_TAB_WRITE;
}

/* cuMemRelease, after the driver. */
static int release_end(uint64_t key, struct vgpu_rec *rec, void *arg)
{
    (void)key;
    struct vmm_op *op = arg;
    if (rec->gen != op->gen || rec->kind != VGPU_VMM_RELEASING)
        return VGPU_TAB_KEEP; /* the value was reused: its create credited ours */
    rec->kind = op->ok ? VGPU_VMM_RELEASED : VGPU_VMM_LIVE;
    return settle(rec, op);
}

VGPU_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
    int m = vgpu_mode();
    cuMemRelease_fn real = vgpu_real.cuMemRelease;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    struct vmm_op op = {0};
    if (m != VGPU_MODE_ENFORCE || !vgpu_tab_update(VGPU_NS_VMM, handle, release_begin, &op) ||
        !op.marked)
        return real(handle); /* a handle libvgpu does not charge */
    CUresult r = real(handle);
    op.ok = r == CUDA_SUCCESS;
    vgpu_tab_update(VGPU_NS_VMM, handle, release_end, &op);
    if (op.credit)
        vgpu_credit(op.sd, op.size);
    return r;
}

/* ------------------------------------------------------------------- mappings */

VGPU_EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                              CUmemGenericAllocationHandle handle, unsigned long long flags)
{
    int m = vgpu_mode();
    cuMemMap_fn real = vgpu_real.cuMemMap;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    struct vmm_op op = {0};
    if (m != VGPU_MODE_ENFORCE || !vgpu_tab_update(VGPU_NS_VMM, handle, map_begin, &op) ||
        !op.marked)
        return real(ptr, size, offset, handle, flags); /* a handle libvgpu does not charge */
    CUresult r = real(ptr, size, offset, handle, flags);
    if (r != CUDA_SUCCESS) {
        drop_mapping(handle, op.gen);
        return r;
    }
    struct vgpu_rec v = {.size = size,
                         .handle = handle,
                         .sd = (int16_t)op.sd,
                         .kind = VGPU_VMAP_MAPPED,
                         .hgen = (uint32_t)op.gen};
    struct vgpu_rec old;
    int put = vgpu_tab_put(VGPU_NS_VMAP, ptr, &v, &old);
    /* A record still at ptr is a mapping the driver has already removed (it
     * refuses to map over one): an unmap whose settlement has not run yet. Its
     * settlement will not find it any more, so its handle loses the mapping here.
     * put < 0 (the table cannot grow): the mapping is never seen going, so the
     * handle stays charged until exit — an over-count, never an escape. */
    if (put == 1)
        drop_mapping(old.handle, old.hgen);
    return r;
}

enum { UNMAP_MARK, UNMAP_DONE, UNMAP_UNDO };

struct unmap_op {
    int step;
    uint64_t end;    /* the range is [ptr, end) */
    uint64_t size;   /* out: length of the mapping looked at */
    bool hit;        /* out (UNMAP_DONE): a mapping was dropped */
    uint64_t handle; /* out (UNMAP_DONE): its handle and gen */
    uint32_t hgen;
    unsigned marked; /* out (UNMAP_MARK): mappings marked so far */
};

/* One mapping starting in the range. Only mappings wholly inside it are the
 * call's: the driver refuses a range that cuts one (libvgpu then changes
 * nothing). */
static int unmap_visit(uint64_t key, struct vgpu_rec *rec, void *arg)
{
    struct unmap_op *op = arg;
    op->size = rec->size;
    op->hit = false;
    if (rec->size > op->end - key) /* key < end: no wrap */
        return VGPU_TAB_KEEP;
    switch (op->step) {
    case UNMAP_MARK:
        if (rec->kind != VGPU_VMAP_MAPPED)
            return VGPU_TAB_KEEP; /* another thread's unmap is on it */
        rec->kind = VGPU_VMAP_UNMAPPING;
        op->marked++;
        return VGPU_TAB_WRITE;
    case UNMAP_DONE:
        if (rec->kind != VGPU_VMAP_UNMAPPING)
            return VGPU_TAB_KEEP;
        op->hit = true;
        op->handle = rec->handle;
        op->hgen = rec->hgen;
        return VGPU_TAB_DROP;
    default: /* UNMAP_UNDO */
        if (rec->kind != VGPU_VMAP_UNMAPPING)
            return VGPU_TAB_KEEP;
        rec->kind = VGPU_VMAP_MAPPED;
        return VGPU_TAB_WRITE;
    }
}

/* Visits every recorded mapping that starts in [ptr, end). Fast path: mappings
 * laid end to end (one mapping, or a run of them, as allocators unmap) are found
 * by key, each from the previous one's end. A gap costs one walk of the table. */
static void unmap_walk(uint64_t ptr, struct unmap_op *op)
{
    uint64_t cur = ptr;
    while (cur < op->end) {
        if (!vgpu_tab_update(VGPU_NS_VMAP, cur, unmap_visit, op)) {
            /* Nothing starts at cur (it was looked up): search after it. */
            if (!vgpu_tab_next(VGPU_NS_VMAP, cur + 1, op->end, &cur))
                return;
            continue;
        }
        if (op->hit)
            drop_mapping(op->handle, op->hgen);
        if (op->size == 0 || op->size > UINT64_MAX - cur)
            return;
        cur += op->size;
    }
}

VGPU_EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
    int m = vgpu_mode();
    cuMemUnmap_fn real = vgpu_real.cuMemUnmap;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    if (m != VGPU_MODE_ENFORCE || size == 0)
        return real(ptr, size);
    struct unmap_op op = {.step = UNMAP_MARK,
                          .end = size > UINT64_MAX - ptr ? UINT64_MAX : ptr + size};
    unmap_walk(ptr, &op);
    if (op.marked == 0)
        return real(ptr, size); /* nothing libvgpu recorded */
    CUresult r = real(ptr, size);
    op.step = r == CUDA_SUCCESS ? UNMAP_DONE : UNMAP_UNDO;
    unmap_walk(ptr, &op);
    return r;
}
