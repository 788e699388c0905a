/*
 * account.c — admission and crediting against the shared usage region, and the
 * process-local table of what this process holds.
 *
 * Admission (DESIGN §3): a CAS loop on usage.dev[d].used_bytes against
 * budget.dev[d].memory_limit. The reservation is taken BEFORE the driver is
 * called, so two processes (or threads) can never both pass a check that only one
 * of them fits; a failed driver call gives the reservation back. Only after the
 * driver succeeded is the amount added to this process's slot. Order everywhere:
 *   charge: device counter, then slot     credit: slot, then device counter
 * so a SIGKILL between the two steps can only leave an over-count (which the
 * enforcer's Reclaim cannot turn into an under-count), never let usage drop below
 * what processes really hold.
 *
 * The allocation table maps (namespace, key) -> {size, slice device, kind, ...}:
 * pointers, arrays, VMM handles and VMM mappings (vmm.c), each its own namespace.
 * Besides insert and remove it offers update (look at / change / drop one record
 * atomically under its stripe lock) and next (smallest key in a range: a full
 * walk, slow path only). It is process-local, preallocated at init, open-addressed with linear probing and
 * split into 64 stripes, each behind a spinlock held for a few instructions. The
 * hot paths (insert on alloc, remove on free) make no syscall and no malloc; a
 * stripe that fills past 3/4 grows by mmap, under its lock, on the slow path.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>

#include "vgpu_internal.h"

/* ---------------------------------------------------------------- accounting */

static inline uint64_t sat_sub(uint64_t *p, uint64_t b)
{
    uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED), t;
    do {
        t = cur < b ? cur : b;
    } while (
        !__atomic_compare_exchange_n(p, &cur, cur - t, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return t;
}

static inline void bump_peak(struct vgpu_usage_device *u, uint64_t v)
{
    uint64_t peak = __atomic_load_n(&u->peak_bytes, __ATOMIC_RELAXED);
    while (v > peak && !__atomic_compare_exchange_n(&u->peak_bytes, &peak, v, true,
                                                    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

uint64_t vgpu_limit(int sd)
{
    return __atomic_load_n(&vgpu_g.budget->dev[sd].memory_limit, __ATOMIC_RELAXED);
}

uint64_t vgpu_used(int sd)
{
    return __atomic_load_n(&vgpu_g.usage->dev[sd].used_bytes, __ATOMIC_RELAXED);
}

static inline bool reserve_cas(int sd, uint64_t bytes)
{
    struct vgpu_usage_device *u = &vgpu_g.usage->dev[sd];
    uint64_t limit = vgpu_limit(sd);
    uint64_t cur = __atomic_load_n(&u->used_bytes, __ATOMIC_RELAXED);
    do {
        /* Written so that neither side can overflow. */
        if (bytes > limit || cur > limit - bytes)
            return false;
    } while (!__atomic_compare_exchange_n(&u->used_bytes, &cur, cur + bytes, true, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    bump_peak(u, cur + bytes);
    return true;
}

bool vgpu_reserve(int sd, uint64_t bytes)
{
    if (VGPU_LIKELY(reserve_cas(sd, bytes)))
        return true;
    /* Refused: an elastic slice asks vgpud for more and waits (bounded) for the
     * answer (elastic.c, out of line: the path above is all an admission costs). */
    return vgpu_reserve_elastic(sd, bytes);
}

bool vgpu_reserve_now(int sd, uint64_t bytes) { return reserve_cas(sd, bytes); }

void vgpu_unreserve(int sd, uint64_t bytes)
{
    if (bytes)
        sat_sub(&vgpu_g.usage->dev[sd].used_bytes, bytes);
}

void vgpu_commit(int sd, uint64_t bytes)
{
    struct vgpu_slot *s = atomic_load_explicit(&vgpu_g.slot, memory_order_acquire);
    if (VGPU_UNLIKELY(!s)) {
        /* Exit started and the slot was returned: nothing may stay charged. */
        vgpu_unreserve(sd, bytes);
        return;
    }
    __atomic_fetch_add(&s->used_bytes[sd], bytes, __ATOMIC_RELAXED);
}

void vgpu_force_charge(int sd, uint64_t bytes)
{
    if (!bytes)
        return;
    struct vgpu_usage_device *u = &vgpu_g.usage->dev[sd];
    uint64_t v = __atomic_add_fetch(&u->used_bytes, bytes, __ATOMIC_RELAXED);
    bump_peak(u, v);
    vgpu_commit(sd, bytes);
}

void vgpu_credit(int sd, uint64_t bytes)
{
    struct vgpu_slot *s = atomic_load_explicit(&vgpu_g.slot, memory_order_acquire);
    if (!s || !bytes)
        return; /* the exit path already returned everything the slot held */
    uint64_t t = sat_sub(&s->used_bytes[sd], bytes);
    sat_sub(&vgpu_g.usage->dev[sd].used_bytes, t);
}

CUresult vgpu_refuse(int sd)
{
    __atomic_fetch_add(&vgpu_g.usage->dev[sd].refused_allocs, 1, __ATOMIC_RELAXED);
    return CUDA_ERROR_OUT_OF_MEMORY;
}

/* ------------------------------------------------------------ allocation table */

#define NSTRIPES 64
#define STRIPE_INIT_CAP 64 /* power of two: 64 stripes x 64 = 4096 entries (128 KiB) at start */

struct ent {
    uint64_t key;
    uint64_t size;
    uint64_t ctx;  /* context it was made in (0: not context-bound, e.g. VMM) */
    uint32_t meta; /* ns (bits 0-7, 0 = empty) | kind (8-15) | sd + 1 (16-31) */
    uint32_t pool;
};

struct stripe {
    vgpu_lock_t lock;
    uint32_t cap;
    uint32_t count;
    uint32_t grown; /* tab was mmapped by a growth (not part of the initial block) */
    struct ent *tab;
} __attribute__((aligned(64))); /* one cache line each: no false sharing */

static struct stripe stripes[NSTRIPES];
static struct ent *initial_block;

static inline uint64_t hash_key(int ns, uint64_t key)
{
    uint64_t h = (key ^ ((uint64_t)ns * 0x9E3779B97F4A7C15ULL)) * 0xff51afd7ed558ccdULL;
    return h ^ (h >> 29);
}

static void tab_init(void)
{
    size_t bytes = sizeof(struct ent) * NSTRIPES * STRIPE_INIT_CAP;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        /* Stripes with cap 0 grow on first insert; if that fails too, inserts report
         * failure and the charge stays until exit (safe). */
        initial_block = NULL;
        return;
    }
    initial_block = p;
    for (int i = 0; i < NSTRIPES; i++) {
        stripes[i].cap = STRIPE_INIT_CAP;
        stripes[i].tab = initial_block + (size_t)i * STRIPE_INIT_CAP;
    }
}

static void tab_reset_child(void)
{
    for (int i = 0; i < NSTRIPES; i++) {
        struct stripe *s = &stripes[i];
        if (s->grown && s->tab)
            munmap(s->tab, sizeof(struct ent) * s->cap);
        s->grown = 0;
        s->count = 0;
        atomic_store_explicit(&s->lock.v, 0, memory_order_relaxed);
        if (initial_block) {
            s->cap = STRIPE_INIT_CAP;
            s->tab = initial_block + (size_t)i * STRIPE_INIT_CAP;
        } else {
            s->cap = 0;
            s->tab = NULL;
        }
    }
    if (initial_block)
        memset(initial_block, 0, sizeof(struct ent) * NSTRIPES * STRIPE_INIT_CAP);
}

/* The table exists in enforce mode only; a forked child starts it empty. */
static void account_init(int mode)
{
    if (mode == VGPU_MODE_ENFORCE)
        tab_init();
}

static void account_fork_child(int mode)
{
    if (mode == VGPU_MODE_ENFORCE)
        tab_reset_child();
}

const struct vgpu_module vgpu_module_account = {
    .name = "account",
    .init = account_init,
    .fork_child = account_fork_child,
};

static inline uint32_t home_of(const struct ent *e, uint32_t mask)
{
    return (uint32_t)(hash_key((int)(e->meta & 0xff), e->key) >> 6) & mask;
}

/* Slow path, stripe lock held: doubles the stripe (mmap) and rehashes. */
static bool grow(struct stripe *s)
{
    uint32_t ncap = s->cap ? s->cap * 2 : STRIPE_INIT_CAP;
    struct ent *nt = mmap(NULL, sizeof(struct ent) * ncap, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (nt == MAP_FAILED)
        return false;
    uint32_t mask = ncap - 1;
    for (uint32_t i = 0; i < s->cap; i++) {
        struct ent *e = &s->tab[i];
        if (!(e->meta & 0xff))
            continue;
        uint32_t j = home_of(e, mask);
        while (nt[j].meta & 0xff)
            j = (j + 1) & mask;
        nt[j] = *e;
    }
    if (s->grown)
        munmap(s->tab, sizeof(struct ent) * s->cap);
    s->tab = nt;
    s->cap = ncap;
    s->grown = 1;
    return true;
}

static inline void read_rec(const struct ent *e, struct vgpu_rec *out)
{
    out->size = e->size;
    out->ctx = e->ctx;
    out->kind = (uint8_t)(e->meta >> 8);
    out->sd = (int16_t)((int)(e->meta >> 16) - 1);
    out->pool = e->pool;
    out->pad = 0;
}

static inline void write_rec(struct ent *e, int ns, uint64_t key, const struct vgpu_rec *rec)
{
    e->key = key;
    e->size = rec->size;
    e->ctx = rec->ctx;
    e->pool = rec->pool;
    e->meta = (uint32_t)ns | ((uint32_t)rec->kind << 8) | ((uint32_t)(rec->sd + 1) << 16);
}

int vgpu_tab_put(int ns, uint64_t key, const struct vgpu_rec *rec, struct vgpu_rec *replaced)
{
    uint64_t h = hash_key(ns, key);
    struct stripe *s = &stripes[h & (NSTRIPES - 1)];
    vgpu_lock(&s->lock);
    if (VGPU_UNLIKELY((uint64_t)(s->count + 1) * 4 > (uint64_t)s->cap * 3)) {
        if (!grow(s) && s->count + 1 >= s->cap) {
            vgpu_unlock(&s->lock);
            VGPU_LOG_ONCE(logged_nomem, VGPU_LOG_WARN,
                          "allocation table cannot grow; affected charges stay until exit");
            return -1;
        }
    }
    uint32_t mask = s->cap - 1;
    uint32_t i = (uint32_t)(h >> 6) & mask;
    int ret = 0;
    for (;;) {
        struct ent *e = &s->tab[i];
        if (!(e->meta & 0xff)) {
            s->count++;
            break;
        }
        if (e->key == key && (e->meta & 0xff) == (uint32_t)ns) {
            /* The driver reused a key whose release we missed (or, for a VMM
             * handle, whose release is still finishing): replace; the caller
             * decides what the old record means. */
            if (replaced)
                read_rec(e, replaced);
            ret = 1;
            break;
        }
        i = (i + 1) & mask;
    }
    write_rec(&s->tab[i], ns, key, rec);
    vgpu_unlock(&s->lock);
    return ret;
}

bool vgpu_tab_insert(int ns, uint64_t key, const struct vgpu_rec *rec)
{
    return vgpu_tab_put(ns, key, rec, NULL) >= 0;
}

/* Backward-shift deletion of slot i (stripe lock held): no tombstones, so probe
 * chains never rot. Only entries after i (cyclically, up to the next empty slot)
 * move, each into a hole before it. */
static void delete_at(struct stripe *s, uint32_t i)
{
    uint32_t mask = s->cap - 1;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        struct ent *e = &s->tab[j];
        if (!(e->meta & 0xff))
            break;
        uint32_t k = home_of(e, mask);
        /* Move e into the hole at i unless its home lies cyclically in (i, j]. */
        bool stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            s->tab[i] = *e;
            i = j;
        }
    }
    s->tab[i].meta = 0;
    s->count--;
}

/* Slot of (ns, key) in its stripe (lock held), or -1. */
static inline int64_t find_at(const struct stripe *s, uint64_t h, int ns, uint64_t key)
{
    if (VGPU_UNLIKELY(s->cap == 0))
        return -1;
    uint32_t mask = s->cap - 1;
    uint32_t i = (uint32_t)(h >> 6) & mask;
    for (;;) {
        const struct ent *e = &s->tab[i];
        if (!(e->meta & 0xff))
            return -1;
        if (e->key == key && (e->meta & 0xff) == (uint32_t)ns)
            return i;
        i = (i + 1) & mask;
    }
}

bool vgpu_tab_update(int ns, uint64_t key, vgpu_tab_fn fn, void *arg)
{
    uint64_t h = hash_key(ns, key);
    struct stripe *s = &stripes[h & (NSTRIPES - 1)];
    vgpu_lock(&s->lock);
    int64_t i = find_at(s, h, ns, key);
    if (i < 0) {
        vgpu_unlock(&s->lock);
        return false;
    }
    struct vgpu_rec rec;
    read_rec(&s->tab[i], &rec);
    switch (fn(key, &rec, arg)) {
    case VGPU_TAB_WRITE:
        write_rec(&s->tab[i], ns, key, &rec); /* same key and ns: stays in place */
        break;
    case VGPU_TAB_DROP: delete_at(s, (uint32_t)i); break;
    default: break;
    }
    vgpu_unlock(&s->lock);
    return true;
}

bool vgpu_tab_next(int ns, uint64_t from, uint64_t to, uint64_t *key)
{
    bool found = false;
    uint64_t best = to;
    for (int k = 0; k < NSTRIPES; k++) {
        struct stripe *s = &stripes[k];
        vgpu_lock(&s->lock);
        for (uint32_t i = 0; i < s->cap; i++) {
            const struct ent *e = &s->tab[i];
            if ((e->meta & 0xff) == (uint32_t)ns && e->key >= from && e->key < best) {
                best = e->key;
                found = true;
            }
        }
        vgpu_unlock(&s->lock);
    }
    *key = best;
    return found;
}

bool vgpu_tab_remove(int ns, uint64_t key, struct vgpu_rec *out)
{
    uint64_t h = hash_key(ns, key);
    struct stripe *s = &stripes[h & (NSTRIPES - 1)];
    vgpu_lock(&s->lock);
    int64_t i = find_at(s, h, ns, key);
    if (i < 0) {
        vgpu_unlock(&s->lock);
        return false;
    }
    read_rec(&s->tab[i], out);
    delete_at(s, (uint32_t)i);
    vgpu_unlock(&s->lock);
    return true;
}

void vgpu_tab_drop_ctx(uint64_t ctx, void (*fn)(const struct vgpu_rec *))
{
    if (!ctx)
        return;
    for (int k = 0; k < NSTRIPES; k++) {
        struct stripe *s = &stripes[k];
        vgpu_lock(&s->lock);
        for (uint32_t i = 0; i < s->cap;) {
            struct ent *e = &s->tab[i];
            uint32_t ns = e->meta & 0xff;
            /* Pointers, arrays and executable graphs die with their context: VMM
             * handles and mappings are the process's, whatever context was current. */
            if (ns && e->ctx == ctx &&
                (ns == VGPU_NS_PTR || ns == VGPU_NS_ARRAY || ns == VGPU_NS_MIPMAP ||
                 ns == VGPU_NS_GRAPHMEM) &&
                (uint8_t)(e->meta >> 8) == VGPU_KIND_PLAIN) {
                struct vgpu_rec rec;
                read_rec(e, &rec);
                fn(&rec);
                /* An entry from further on may shift into i: look at i again. The
                 * ones shifted from before i were already looked at. */
                delete_at(s, i);
            } else {
                i++;
            }
        }
        vgpu_unlock(&s->lock);
    }
}
