/*
 * throttle.c — the launch throttle: one token bucket per slice device.
 *
 * Units (vgpu_shm.h): a token is one estimated device-ns. A kernel launch of B
 * blocks on a device with S SMs costs ceil(B / S) * vgpu_wave_tokens tokens —
 * VGPU_TOKEN_WAVE_NS on a slice vgpud manages, the device-ns per wave libvgpu
 * measured with its completion markers (marker.c) on a slice without vgpud: a
 * "wave" is one pass of the grid over the whole device, so the same grid costs
 * less on a bigger GPU, as it runs shorter there. A graph costs the sum of its
 * kernel nodes, learnt when it is instantiated (graph.c walks the graph with
 * cuGraphGetNodes, so graphs made by stream capture — how PyTorch and vLLM build
 * them — are costed as well as hand-built ones); the table below keeps the cost of
 * each executable graph.
 *
 * Why this unit and not a calibrated one: the true duration of a kernel is unknown
 * to the host (it depends on the kernel's code). vgpud measures each slice's
 * achieved share from the driver and scales token_rate by feedback
 * (enforcer/controller.go), which absorbs any constant error of the estimate; the
 * estimate only has to be roughly proportional to device time, and waves are. The
 * controller's gain is therefore free of the SM count (unlike a pool of "cores"
 * charged per block, whose step grows with the SM count squared).
 *
 * The bucket is two monotonic counters in the usage region (usage.dev[d]):
 *   token_spent     each launch fetch_adds its cost and gets the old value: its
 *                   ticket, its place in the slice's queue;
 *   token_refilled  advanced at token_rate per wall second, never past
 *                   token_spent + token_burst.
 * A launch whose ticket is below token_refilled (the bucket had credit) goes on at
 * once: that is the whole hot path, one atomic add and one load. Otherwise the
 * thread refills the bucket itself (nobody else does: refills are lazy) and sleeps
 * until token_refilled passes its ticket, in steps of at most 10 ms; it never
 * spins. Tickets make the queue FIFO across every process of the slice, and
 * nothing is lost or counted twice: the time between two refills is credited once
 * (CAS on last_refill_ns), and a launch that waited still owes its cost.
 *
 * Refilling by wall time is what makes a launch-synchronize-launch workload come
 * out right: while the program waits for its kernel the bucket fills, so the time
 * it spends synchronizing counts towards its share — no reactive rule about
 * "recent utilization" is involved.
 *
 * No lock exists in the region: a process killed anywhere leaves at most one
 * unlaunched ticket behind (its cost is lost to the slice once). Processes of one
 * slice must share CLOCK_MONOTONIC (one time namespace), as containers do.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "vgpu_internal.h"

/* A waiter sleeps at least this long (the timer's own slack is ~50 us; a shorter
 * sleep would only burn CPU) and at most this long before looking again, so that a
 * rate raised by vgpud, or lifted, takes effect quickly. */
#define MIN_SLEEP_NS 20000ull
#define MAX_SLEEP_NS 10000000ull
/* A graph libvgpu could not cost (instantiated through a path it does not see, or
 * a driver without graph introspection) is charged the largest cost seen, at
 * least this many waves: over-charging only slows the slice, and vgpud's feedback
 * corrects the scale. */
#define UNKNOWN_GRAPH_WAVES 100ull
/* Launches are counted per thread and added to usage.launches in batches, so the
 * hot path stays at one shared atomic. */
#define LAUNCH_BATCH 32u

#define GEN_MASK ((1ull << 48) - 1)

static const uint64_t no_generation = 0;
struct vgpu_gate vgpu_gate = {
    .gen = &no_generation,
    .fast = VGPU_GATE_CLOSED, /* closed until initialization says otherwise */
    .state = UINT64_MAX,      /* matches no generation: read the budget first */
};

static __thread uint32_t tls_pending __attribute__((tls_model("initial-exec")));
static __thread int tls_pending_sd __attribute__((tls_model("initial-exec")));

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t sat_mul(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX / 4 : r;
}

static void throttle_init(int mode)
{
    /* Without a slice nothing is ever throttled: open the gate for good (gen stays
     * the constant 0). With one, the first launch reads the budget. */
    if (mode != VGPU_MODE_ENFORCE) {
        atomic_store_explicit(&vgpu_gate.fast, 0, memory_order_release);
        return;
    }
    /* Launches compare this word with the gate: from now on a change of the budget
     * (a token rate set by vgpud) reaches every launch. */
    atomic_store_explicit(&vgpu_gate.gen, &vgpu_g.budget->generation, memory_order_relaxed);
}

/* ------------------------------------------------------------- budget reads */

/* Reads which slice devices have a token rate, as a seqlock reader of the budget.
 * When the read was stable, publishes it: the gate opens if none is throttled. */
static uint32_t refresh(uint64_t g1)
{
    const struct vgpu_budget *b = vgpu_g.budget;
    uint32_t mask = 0;
    for (uint32_t d = 0; d < vgpu_g.ndev; d++)
        if (__atomic_load_n(&b->dev[d].token_rate, __ATOMIC_RELAXED) != 0)
            mask |= 1u << d;
    /* Whether vgpud scales this slice's rates (nominal costs) or nobody does (costs
     * in learnt device-ns, marker.c): read with the rates, so vgpud taking a slice
     * over later (a new generation) reaches every process. */
    vgpu_marker_set_managed(
        (__atomic_load_n(&b->flags, __ATOMIC_RELAXED) & VGPU_BUDGET_F_MANAGED) != 0);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    uint64_t g2 = __atomic_load_n(&b->generation, __ATOMIC_RELAXED);
    /* Odd: vgpud is mid-change (or died there). The rates are each read atomically,
     * so this launch uses them, but nothing is cached: the next launch reads again. */
    if (g1 == g2 && !(g1 & 1)) {
        atomic_store_explicit(&vgpu_gate.state, ((g1 & GEN_MASK) << 16) | mask,
                              memory_order_relaxed);
        atomic_store_explicit(&vgpu_gate.fast, mask ? VGPU_GATE_CLOSED : g1, memory_order_relaxed);
    }
    return mask;
}

static inline uint32_t throttled_mask(void)
{
    uint64_t g = __atomic_load_n(&vgpu_g.budget->generation, __ATOMIC_ACQUIRE);
    uint64_t st = atomic_load_explicit(&vgpu_gate.state, memory_order_relaxed);
    if (VGPU_LIKELY((st >> 16) == (g & GEN_MASK)))
        return (uint32_t)(st & 0xffff);
    return refresh(g);
}

/* ------------------------------------------------------------------- bucket */

static void flush_launches(void)
{
    if (tls_pending) {
        __atomic_fetch_add(&vgpu_g.usage->dev[tls_pending_sd].launches, tls_pending,
                           __ATOMIC_RELAXED);
        tls_pending = 0;
    }
}

static inline void count_launch(int sd)
{
    if (VGPU_UNLIKELY(tls_pending && tls_pending_sd != sd))
        flush_launches();
    tls_pending_sd = sd;
    if (VGPU_UNLIKELY(++tls_pending >= LAUNCH_BATCH))
        flush_launches();
}

/* Credits the wall time since the last refill at rate, up to spent + burst. The
 * interval is claimed by CAS on last_refill_ns, so two refillers never both credit it. */
static void refill(struct vgpu_usage_device *ud, const struct vgpu_budget_device *bd, uint64_t rate,
                   uint64_t now)
{
    uint64_t last = __atomic_load_n(&ud->last_refill_ns, __ATOMIC_RELAXED);
    if ((int64_t)(now - last) <= 0)
        return;
    if (!__atomic_compare_exchange_n(&ud->last_refill_ns, &last, now, false, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        return; /* another thread credited up to about now */
    uint64_t elapsed = now - last;
    uint64_t burst = __atomic_load_n(&bd->token_burst, __ATOMIC_RELAXED);
    if (!burst)
        burst = VGPU_DEFAULT_TOKEN_BURST(rate);
    /* A long idle spell fills the bucket anyway; skip the arithmetic (and overflow). */
    uint64_t add = elapsed >= 100000000000ull
                       ? UINT64_MAX / 4
                       : (uint64_t)((unsigned __int128)elapsed * rate / 1000000000u);
    uint64_t r = __atomic_load_n(&ud->token_refilled, __ATOMIC_RELAXED);
    for (;;) {
        uint64_t spent = __atomic_load_n(&ud->token_spent, __ATOMIC_RELAXED);
        uint64_t cap = spent + burst;
        if ((int64_t)(cap - r) <= 0)
            return; /* full */
        uint64_t room = cap - r;
        uint64_t nr = add >= room ? cap : r + add;
        if (__atomic_compare_exchange_n(&ud->token_refilled, &r, nr, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
            __atomic_store_n(&ud->tokens, (int64_t)(nr - spent), __ATOMIC_RELAXED);
            return;
        }
    }
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull),
                          .tv_nsec = (long)(ns % 1000000000ull)};
    /* EINTR: fine, the caller looks again. */
    clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
}

/* The bucket had no credit for this ticket: refill and sleep until the refills
 * pass it, or until throttling is lifted. */
__attribute__((noinline)) static void wait_turn(int sd, uint64_t ticket)
{
    struct vgpu_usage_device *ud = &vgpu_g.usage->dev[sd];
    const struct vgpu_budget_device *bd = &vgpu_g.budget->dev[sd];
    flush_launches();
    uint64_t start = now_ns(), t = start;
    for (;;) {
        uint64_t rate = __atomic_load_n(&bd->token_rate, __ATOMIC_RELAXED);
        if (!rate)
            break;
        refill(ud, bd, rate, t);
        int64_t need = (int64_t)(ticket - __atomic_load_n(&ud->token_refilled, __ATOMIC_RELAXED));
        if (need < 0)
            break;
        /* Time until the refills reach one past the ticket. */
        uint64_t ns = (uint64_t)(((unsigned __int128)(uint64_t)need + 1) * 1000000000u / rate) + 1;
        if (ns < MIN_SLEEP_NS)
            ns = MIN_SLEEP_NS;
        if (ns > MAX_SLEEP_NS)
            ns = MAX_SLEEP_NS;
        sleep_ns(ns);
        t = now_ns();
    }
    __atomic_fetch_add(&ud->throttled_ns, t - start, __ATOMIC_RELAXED);
}

_Static_assert((VGPU_MARKER_STRIDE & (VGPU_MARKER_STRIDE - 1)) == 0, "the stride is a power of 2");

/* Returns VGPU_MARK_* flags: RECORD when [ticket, ticket + cost) crosses a multiple
 * of VGPU_MARKER_STRIDE (one xor and compare: the hot path stays one atomic add
 * and one load), CHECK when the launch waited for tokens. */
static inline int take(int sd, uint64_t cost, uint64_t *ticket_end)
{
    struct vgpu_usage_device *ud = &vgpu_g.usage->dev[sd];
    uint64_t ticket = __atomic_fetch_add(&ud->token_spent, cost, __ATOMIC_RELAXED);
    uint64_t refilled = __atomic_load_n(&ud->token_refilled, __ATOMIC_RELAXED);
    count_launch(sd);
    *ticket_end = ticket + cost;
    int flags = (ticket ^ (ticket + cost)) >= VGPU_MARKER_STRIDE ? VGPU_MARK_RECORD : 0;
    if (VGPU_LIKELY((int64_t)(refilled - ticket) > 0))
        return flags;
    wait_turn(sd, ticket);
    return flags | VGPU_MARK_CHECK;
}

/* Nominal tokens (VGPU_TOKEN_WAVE_NS per wave) -> tokens charged now. */
static inline uint64_t scale_cost(uint64_t nominal)
{
    uint64_t w = atomic_load_explicit(&vgpu_wave_tokens, memory_order_relaxed);
    if (VGPU_LIKELY(w == VGPU_TOKEN_WAVE_NS))
        return nominal;
    unsigned __int128 c = (unsigned __int128)nominal * w / VGPU_TOKEN_WAVE_NS;
    return c > UINT64_MAX / 4 ? UINT64_MAX / 4 : (uint64_t)c;
}

static inline uint64_t kernel_waves(int sd, uint64_t blocks)
{
    uint64_t sms = vgpu_sms_of(sd);
    return (blocks + sms - 1) / sms;
}

/* ------------------------------------------------------------------- graphs */

/*
 * CUgraphExec -> cost, open addressing. Lookups (every graph launch) are lock-free:
 * a writer stores the cost before it publishes the key (release), and a handle is
 * looked up only after its instantiation returned. Writers (instantiate, destroy:
 * driver calls anyway) take a process-local mutex. Destroyed entries become
 * tombstones, reused by later instantiations.
 */
#define GRAPH_BITS 13
#define GRAPH_SLOTS (1u << GRAPH_BITS)
#define KEY_EMPTY 0ull
#define KEY_TOMB 1ull /* handles are pointers: never 0 or 1 */
struct graph_ent {
    _Atomic uint64_t key;
    _Atomic uint64_t cost;
};
static struct graph_ent graph_tab[GRAPH_SLOTS];
static pthread_mutex_t graph_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t graph_cost_max;

static inline uint32_t graph_hash(uint64_t key)
{
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> (64 - GRAPH_BITS));
}

uint64_t vgpu_graph_unknown_cost(void)
{
    uint64_t c = atomic_load_explicit(&graph_cost_max, memory_order_relaxed);
    uint64_t floor = UNKNOWN_GRAPH_WAVES * VGPU_TOKEN_WAVE_NS;
    return c > floor ? c : floor;
}

static uint64_t graph_cost(uint64_t key)
{
    uint32_t h = graph_hash(key);
    for (uint32_t i = 0; i < GRAPH_SLOTS; i++) {
        struct graph_ent *e = &graph_tab[(h + i) & (GRAPH_SLOTS - 1)];
        uint64_t k = atomic_load_explicit(&e->key, memory_order_acquire);
        if (k == key)
            return atomic_load_explicit(&e->cost, memory_order_relaxed);
        if (k == KEY_EMPTY)
            break;
    }
    VGPU_LOG_ONCE(logged_unknown_graph, VGPU_LOG_WARN,
                  "a graph was launched that libvgpu did not see instantiated; such launches "
                  "are charged as the largest graph seen (at least %llu waves)",
                  (unsigned long long)UNKNOWN_GRAPH_WAVES);
    return vgpu_graph_unknown_cost();
}

void vgpu_graph_cost_put(uint64_t key, uint64_t cost)
{
    pthread_mutex_lock(&graph_mu);
    uint32_t h = graph_hash(key);
    struct graph_ent *free_e = NULL;
    for (uint32_t i = 0; i < GRAPH_SLOTS; i++) {
        struct graph_ent *e = &graph_tab[(h + i) & (GRAPH_SLOTS - 1)];
        uint64_t k = atomic_load_explicit(&e->key, memory_order_relaxed);
        if (k == key) { /* a handle value reused after a destroy we did not see */
            atomic_store_explicit(&e->cost, cost, memory_order_relaxed);
            goto out;
        }
        if (k == KEY_TOMB && !free_e)
            free_e = e;
        if (k == KEY_EMPTY) {
            if (!free_e)
                free_e = e;
            break;
        }
    }
    if (free_e) {
        atomic_store_explicit(&free_e->cost, cost, memory_order_relaxed);
        atomic_store_explicit(&free_e->key, key, memory_order_release);
    } else {
        VGPU_LOG_ONCE(logged_graph_full, VGPU_LOG_WARN,
                      "more than %u live graphs; further ones are charged as the largest seen",
                      GRAPH_SLOTS);
    }
out:
    pthread_mutex_unlock(&graph_mu);
    uint64_t m = atomic_load_explicit(&graph_cost_max, memory_order_relaxed);
    while (cost > m && !atomic_compare_exchange_weak_explicit(
                           &graph_cost_max, &m, cost, memory_order_relaxed, memory_order_relaxed))
        ;
}

void vgpu_graph_cost_drop(uint64_t key)
{
    pthread_mutex_lock(&graph_mu);
    uint32_t h = graph_hash(key);
    for (uint32_t i = 0; i < GRAPH_SLOTS; i++) {
        struct graph_ent *e = &graph_tab[(h + i) & (GRAPH_SLOTS - 1)];
        uint64_t k = atomic_load_explicit(&e->key, memory_order_relaxed);
        if (k == key) {
            atomic_store_explicit(&e->key, KEY_TOMB, memory_order_release);
            break;
        }
        if (k == KEY_EMPTY)
            break;
    }
    pthread_mutex_unlock(&graph_mu);
}

/* ------------------------------------------------------------------- launch */

void vgpu_throttle_launch(enum vgpu_launch_kind kind, uint64_t arg, struct vgpu_mark *mk)
{
    if (atomic_load_explicit(&vgpu_g.mode, memory_order_acquire) != VGPU_MODE_ENFORCE)
        return;
    uint32_t mask = throttled_mask();
    if (!mask)
        return;
    /* The launch runs on the current context's device. A one-device slice (the
     * common case) needs no driver call to know which bucket pays. */
    int sd = 0;
    if (vgpu_g.ndev > 1) {
        CUresult err;
        sd = vgpu_current_target(NULL, NULL, &err);
        if (sd < 0)
            return; /* no context (the driver refuses the launch), or a device outside
                     * the slice, where the slice holds no memory */
    }
    if (!((mask >> sd) & 1))
        return;
    uint64_t nominal, cost;
    if (kind == VGPU_LAUNCH_GRAPH) {
        nominal = graph_cost(arg);
        cost = scale_cost(nominal);
    } else {
        if (!arg)
            return; /* malformed: the driver refuses it */
        uint64_t waves = kernel_waves(sd, arg);
        nominal = sat_mul(waves, VGPU_TOKEN_WAVE_NS);
        cost = sat_mul(waves, atomic_load_explicit(&vgpu_wave_tokens, memory_order_relaxed));
    }
    if (!cost)
        return;
    uint64_t ticket_end;
    int flags = take(sd, cost, &ticket_end);
    if (VGPU_LIKELY(!flags))
        return;
    mk->flags = flags;
    mk->sd = sd;
    mk->ticket_end = ticket_end;
    mk->cost = cost;
    mk->nominal = nominal;
}

static void throttle_fork_child(int mode)
{
    (void)mode;
    /* The forking thread's pending count belongs to the parent. Graph handles of the
     * parent are not valid in the child; stale entries are harmless (a reused
     * handle value is overwritten at its instantiation). */
    tls_pending = 0;
    pthread_mutex_init(&graph_mu, NULL);
}

const struct vgpu_module vgpu_module_throttle = {
    .name = "throttle",
    .init = throttle_init,
    .fork_child = throttle_fork_child,
};
