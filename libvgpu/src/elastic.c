/*
 * elastic.c — elastic memory (ABI 1.3; the protocol is in vgpu_shm.h above
 * VGPU_ELASTIC_WAIT_MS_DEFAULT): an allocation the budget refused, in a slice that
 * may grow, asks vgpud for more and waits a bounded time for the answer.
 *
 * Only the refusal path comes here (vgpu_reserve's CAS loop refused: account.c),
 * so the admission fast path is unchanged. Nothing here allocates or takes a lock;
 * the syscalls (clock_gettime, futex, a 1 ms nanosleep where futexes are missing)
 * are all on this path. The request is what the slice asks: vgpud bounds it. The
 * answer comes through the read-only budget, which the tenant cannot forge.
 *
 * The wait: FUTEX_WAIT (shared: vgpud is another process) on the low 32 bits of the
 * budget's elastic_grant_seq, for the time left until the deadline; after each wake
 * (or spurious wake, EINTR, EAGAIN: the word moved) the full 64-bit seq is compared
 * with the request's. The deadline is VGPU_ELASTIC_WAIT_MS after the first request
 * of one admission, on CLOCK_MONOTONIC, across every request it posts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "vgpu_internal.h"

/* VGPU_ELASTIC_WAIT_MS, read once at initialization; 0: never ask. */
static uint32_t wait_ms = VGPU_ELASTIC_WAIT_MS_DEFAULT;
/* Set once a futex call said ENOSYS: wait in 1 ms sleeps from then on. */
static _Atomic int no_futex;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The futex word of a 64-bit protocol field: its low half (little-endian ABIs). */
static inline uint32_t *futex_word(const uint64_t *p) { return (uint32_t *)(uintptr_t)p; }

/* Posts a request to hold `want` bytes on slice device sd: bytes, then the seq,
 * then the doorbell. Returns the request's seq. */
static uint64_t post(int sd, uint64_t want)
{
    struct vgpu_usage_device *u = &vgpu_g.usage->dev[sd];
    __atomic_store_n(&u->elastic_request_bytes, want, __ATOMIC_RELEASE);
    uint64_t seq = __atomic_add_fetch(&u->elastic_request_seq, 1, __ATOMIC_ACQ_REL);
    if (!atomic_load_explicit(&no_futex, memory_order_relaxed)) {
        /* Shared, not FUTEX_PRIVATE: vgpud maps the file in its own process. Its
         * poll picks the request up anyway where the wake fails. */
        if (syscall(SYS_futex, futex_word(&u->elastic_request_seq), FUTEX_WAKE, INT32_MAX, NULL,
                    NULL, 0) < 0 &&
            errno == ENOSYS)
            atomic_store_explicit(&no_futex, 1, memory_order_relaxed);
    }
    return seq;
}

/* Waits until vgpud answered request seq on sd or the deadline passed. True when
 * answered. */
static bool wait_answer(int sd, uint64_t seq, uint64_t deadline, uint64_t want)
{
    const uint64_t *g = &vgpu_g.budget->dev[sd].elastic_grant_seq;
    for (;;) {
        /* Acquire: vgpud stores the limit before the seq, so the limit read after
         * this is the one that answered. */
        uint64_t got = __atomic_load_n(g, __ATOMIC_ACQUIRE);
        if (got >= seq)
            return true;
        uint64_t now = mono_ns();
        if (now >= deadline)
            break;
        uint64_t left = deadline - now;
        if (!atomic_load_explicit(&no_futex, memory_order_relaxed)) {
            struct timespec ts = {.tv_sec = (time_t)(left / 1000000000ull),
                                  .tv_nsec = (long)(left % 1000000000ull)};
            /* Returns at a wake, a timeout, a signal (EINTR) or when the word
             * already moved (EAGAIN): each case re-reads the seq above. */
            if (syscall(SYS_futex, futex_word(g), FUTEX_WAIT, (uint32_t)got, &ts, NULL, 0) < 0 &&
                errno == ENOSYS)
                atomic_store_explicit(&no_futex, 1, memory_order_relaxed);
            continue;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = left < 1000000ull ? (long)left : 1000000l};
        nanosleep(&ts, NULL);
    }
    VGPU_LOG_ONCE(logged_unanswered, VGPU_LOG_WARN,
                  "elastic request for %llu bytes on device %d not answered in %u ms (is vgpud "
                  "running?)",
                  (unsigned long long)want, sd, wait_ms);
    return false;
}

bool vgpu_elastic_ask(int sd, uint64_t bytes, struct vgpu_elastic *st)
{
    if (!wait_ms)
        return false;
    const struct vgpu_budget *b = vgpu_g.budget;
    if (!(__atomic_load_n(&b->flags, __ATOMIC_RELAXED) & VGPU_BUDGET_F_ELASTIC))
        return false;
    const struct vgpu_budget_device *bd = &b->dev[sd];
    uint64_t limit = __atomic_load_n(&bd->memory_limit, __ATOMIC_ACQUIRE);
    uint64_t now = mono_ns();
    if (!st->deadline)
        st->deadline = now + (uint64_t)wait_ms * 1000000ull;
    else if (now >= st->deadline)
        return false;
    /* Answered, and the retry still did not fit. Unless the limit moved since the
     * request (a grant to another request of the slice, which a newer request of
     * ours may share in), the answer was no. */
    if (st->posted && limit == st->limit)
        return false;
    uint64_t max = __atomic_load_n(&bd->memory_max, __ATOMIC_RELAXED);
    uint64_t used = vgpu_used(sd);
    /* Beyond the ceiling no grant can help: refuse at once, ask nothing. */
    if (max <= limit || bytes > max || used > max - bytes)
        return false;
    /* It fits now (memory freed, or a grant landed since the refusal): retry
     * without asking; vgpud would answer a request it already meets with no. */
    if (bytes <= limit && used <= limit - bytes)
        return true;
    st->limit = limit;
    st->posted = true;
    uint64_t want = used + bytes;
    return wait_answer(sd, post(sd, want), st->deadline, want);
}

bool vgpu_reserve_elastic(int sd, uint64_t bytes)
{
    struct vgpu_elastic st = {0};
    while (vgpu_elastic_ask(sd, bytes, &st))
        if (vgpu_reserve_now(sd, bytes))
            return true;
    return false;
}

static void elastic_init(int mode)
{
    if (mode != VGPU_MODE_ENFORCE)
        return;
    const char *s = getenv("VGPU_ELASTIC_WAIT_MS");
    if (s && *s) {
        char *end;
        unsigned long long ms = strtoull(s, &end, 10);
        if (*end == '\0' && ms <= 600000)
            wait_ms = (uint32_t)ms;
        else
            VGPU_LOG(VGPU_LOG_WARN,
                     "VGPU_ELASTIC_WAIT_MS=%s is not a number of ms (0..600000); keeping %u", s,
                     wait_ms);
    }
}

const struct vgpu_module vgpu_module_elastic = {
    .name = "elastic",
    .init = elastic_init,
};
