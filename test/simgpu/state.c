//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * state.c — the shared state file of the simulated node: mapping, process slots,
 * memory admission, the launch queue and utilization buckets.
 *
 * Linked into both simulated libraries. Everything here works on the MAP_SHARED
 * mapping with atomics only (see state.h for why there is no shared lock).
 */
#define _GNU_SOURCE
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ mapping */

static struct sim_state *g_map;
static const char *g_map_why = "simgpu: VGPU_SIM_STATE is not set";
static pthread_once_t g_map_once = PTHREAD_ONCE_INIT;

static void map_once(void)
{
    static char why[512];
    const char *path = getenv("VGPU_SIM_STATE");
    if (path == NULL || path[0] == '\0') {
        g_map_why = "simgpu: VGPU_SIM_STATE is not set (create a node with `vgpu-sim init`)";
        return;
    }
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, sizeof why, "simgpu: cannot open state file %s: %s", path, strerror(errno));
        g_map_why = why;
        return;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || (size_t)sb.st_size < sizeof(struct sim_state)) {
        snprintf(why, sizeof why, "simgpu: state file %s is truncated (%lld bytes, want %zu)", path,
                 (long long)sb.st_size, sizeof(struct sim_state));
        g_map_why = why;
        close(fd);
        return;
    }
    void *p = mmap(NULL, sizeof(struct sim_state), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd); /* the mapping keeps the file */
    if (p == MAP_FAILED) {
        snprintf(why, sizeof why, "simgpu: cannot map state file %s: %s", path, strerror(errno));
        g_map_why = why;
        return;
    }
    struct sim_state *st = p;
    const struct sim_hdr *h = &st->hdr;
    const char *bad = NULL;
    if (h->magic != SIM_MAGIC)
        bad = "bad magic (not a vgpu-sim state file)";
    else if (h->version != SIM_VERSION)
        bad = "unsupported version";
    else if (h->hdr_size != sizeof(struct sim_hdr) || h->file_size != sizeof(struct sim_state) ||
             h->max_procs != SIM_MAX_PROCS || h->max_devices != SIM_MAX_DEVICES ||
             h->nbuckets != SIM_NBUCKETS)
        bad = "layout mismatch (rebuild vgpu-sim and the simulated libraries together)";
    else if (h->bucket_ns < SIM_MIN_SAMPLE_NS || h->bucket_ns > SIM_MAX_SAMPLE_NS ||
             h->max_backlog_ns > SIM_MAX_BACKLOG_NS ||
             h->max_backlog_ns > SIM_BACKLOG_PERIODS * h->bucket_ns)
        bad = "invalid sample period or max backlog";
    else if (h->device_count < 1 || h->device_count > SIM_MAX_DEVICES)
        bad = "invalid device count";
    if (bad != NULL) {
        snprintf(why, sizeof why, "simgpu: state file %s: %s", path, bad);
        g_map_why = why;
        munmap(p, sizeof(struct sim_state));
        return;
    }
    g_map = st;
}

struct sim_state *sim_map(const char **why)
{
    pthread_once(&g_map_once, map_once);
    if (g_map == NULL && why != NULL)
        *why = g_map_why;
    return g_map;
}

/* ------------------------------------------------------------------ time */

uint64_t sim_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void sim_sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000ull),
                          .tv_nsec = (long)(t % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* ------------------------------------------------------------------ processes */

/* Reads /proc/<pid>/stat: the state letter (field 3) and starttime (field 22).
 * On failure errno tells why (ENOENT/ESRCH: no such process). */
int sim_proc_stat(int pid, char *state, uint64_t *start)
{
    char path[64], buf[1024];
    /* pid 0 is the caller, through /proc/self: right even when /proc belongs to an
     * ancestor pid namespace (where getpid() names another process). */
    if (pid == 0)
        snprintf(path, sizeof path, "/proc/self/stat");
    else
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int rerr = errno;
    close(fd);
    if (n <= 0) {
        errno = n < 0 ? rerr : EIO; /* empty: cannot tell (callers judge only ENOENT/ESRCH) */
        return -1;
    }
    buf[n] = '\0';
    /* comm may contain spaces and parentheses: fields restart after the last ')'. */
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ') {
        errno = EINVAL;
        return -1;
    }
    *state = p[2];
    p++;
    for (int field = 3; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (p == NULL) {
            errno = EINVAL;
            return -1;
        }
    }
    *start = strtoull(p + 1, NULL, 10);
    return 0;
}

uint64_t sim_proc_start_time(int pid)
{
    char state;
    uint64_t start;
    return sim_proc_stat(pid, &state, &start) == 0 ? start : 0;
}

uint64_t sim_pidns_of(int pid)
{
    char path[64];
    struct stat sb;
    if (pid == 0)
        snprintf(path, sizeof path, "/proc/self/ns/pid"); /* see sim_proc_stat */
    else
        snprintf(path, sizeof path, "/proc/%d/ns/pid", pid);
    if (stat(path, &sb) != 0)
        return 0;
    return (uint64_t)sb.st_ino;
}

int sim_proc_dead(const struct sim_state *st, const struct sim_proc *p, uint64_t my_pidns)
{
    (void)st;
    uint64_t w = atomic_load(&((struct sim_proc *)p)->state);
    uint32_t phase = SIM_SLOT_PHASE(w);
    if (phase != SIM_PHASE_LIVE && phase != SIM_PHASE_CLAIMING)
        return 0;
    /* A pid means something only inside the namespace that registered it. */
    if (my_pidns == 0 || p->pidns != my_pidns)
        return 0;
    int pid = (int)SIM_SLOT_PID(w);
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return 1;
    char state;
    uint64_t start;
    if (sim_proc_stat(pid, &state, &start) != 0)
        return 0; /* cannot tell: keep it */
    /* A zombie has exited and closed its device files: the real driver has already
     * freed its memory even though nobody reaped it yet. */
    if (state == 'Z' || state == 'X')
        return 1;
    if (phase == SIM_PHASE_CLAIMING)
        return 0; /* start_time may not be written yet */
    return start != p->start_time;
}

static void zero_procdev(struct sim_proc *p)
{
    for (int d = 0; d < SIM_MAX_DEVICES; d++) {
        struct sim_procdev *pd = &p->dev[d];
        atomic_store(&pd->used, 0);
        atomic_store(&pd->busy_ns, 0);
        atomic_store(&pd->launches, 0);
        atomic_store(&pd->contexts, 0);
        for (int b = 0; b < SIM_NBUCKETS; b++)
            atomic_store(&pd->buckets[b], 0);
    }
}

/* Returns the slot's memory to the devices and frees it. The caller has moved the
 * slot to RECLAIMING, so nobody else touches it meanwhile. */
static void drain_and_free(struct sim_state *st, struct sim_proc *p, uint64_t reclaiming_word,
                           int credit)
{
    for (int d = 0; d < SIM_MAX_DEVICES; d++) {
        uint64_t u = atomic_exchange(&p->dev[d].used, 0);
        if (credit && u != 0 && d < (int)st->hdr.device_count)
            atomic_fetch_sub(&st->dev[d].used, u);
    }
    zero_procdev(p);
    atomic_store(&p->state, SIM_SLOT_WORD(SIM_SLOT_GEN(reclaiming_word), 0, SIM_PHASE_FREE));
}

static void read_comm(char out[16])
{
    memset(out, 0, 16);
    int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, out, 15);
    close(fd);
    if (n > 0 && out[n - 1] == '\n')
        out[n - 1] = '\0';
}

/* A LIVE slot with our own pid, pid namespace and start time belongs to the image
 * this process ran before exec(2). The real driver freed that memory at exec (its
 * device files are close-on-exec), so the new image returns it before it registers. */
static void reclaim_pre_exec_self(struct sim_state *st, int pid, uint64_t start, uint64_t ns)
{
    for (int i = 0; i < SIM_MAX_PROCS; i++) {
        struct sim_proc *p = &st->proc[i];
        uint64_t w = atomic_load(&p->state);
        if (SIM_SLOT_PHASE(w) != SIM_PHASE_LIVE || SIM_SLOT_PID(w) != (uint32_t)pid ||
            p->pidns != ns || p->start_time != start)
            continue;
        uint64_t r = SIM_SLOT_WORD(SIM_SLOT_GEN(w), SIM_SLOT_PID(w), SIM_PHASE_RECLAIMING);
        if (atomic_compare_exchange_strong(&p->state, &w, r))
            drain_and_free(st, p, r, 1);
    }
}

int sim_proc_register(struct sim_state *st)
{
    int pid = getpid();
    uint64_t start = sim_proc_start_time(0);
    uint64_t ns = sim_pidns_of(0);
    reclaim_pre_exec_self(st, pid, start, ns);
    for (int attempt = 0; attempt < 2; attempt++) {
        for (int i = 0; i < SIM_MAX_PROCS; i++) {
            struct sim_proc *p = &st->proc[i];
            uint64_t w = atomic_load(&p->state);
            if (SIM_SLOT_PHASE(w) != SIM_PHASE_FREE)
                continue;
            uint64_t claiming = SIM_SLOT_WORD(SIM_SLOT_GEN(w) + 1, pid, SIM_PHASE_CLAIMING);
            if (!atomic_compare_exchange_strong(&p->state, &w, claiming))
                continue;
            zero_procdev(p);
            p->start_time = start;
            p->pidns = ns;
            p->registered_ns = sim_now_ns();
            read_comm(p->comm);
            uint64_t live = SIM_SLOT_WORD(SIM_SLOT_GEN(claiming), pid, SIM_PHASE_LIVE);
            /* CAS, not store: a cleaner may (wrongly but harmlessly) have taken it. */
            if (atomic_compare_exchange_strong(&p->state, &claiming, live))
                return i;
        }
        if (sim_reclaim_dead(st) == 0)
            break;
    }
    return -1;
}

void sim_proc_release(struct sim_state *st, int slot)
{
    if (slot < 0 || slot >= SIM_MAX_PROCS)
        return;
    struct sim_proc *p = &st->proc[slot];
    uint64_t w = atomic_load(&p->state);
    if (SIM_SLOT_PHASE(w) != SIM_PHASE_LIVE || SIM_SLOT_PID(w) != (uint32_t)getpid())
        return;
    uint64_t r = SIM_SLOT_WORD(SIM_SLOT_GEN(w), SIM_SLOT_PID(w), SIM_PHASE_RECLAIMING);
    if (!atomic_compare_exchange_strong(&p->state, &w, r))
        return;
    drain_and_free(st, p, r, 1);
}

int sim_reclaim_dead(struct sim_state *st)
{
    uint64_t my_ns = sim_pidns_of(0);
    int pid;
    int n = 0;
    for (int i = 0; i < SIM_MAX_PROCS; i++) {
        struct sim_proc *p = &st->proc[i];
        uint64_t w = atomic_load(&p->state);
        uint32_t phase = SIM_SLOT_PHASE(w);
        if (phase != SIM_PHASE_LIVE && phase != SIM_PHASE_CLAIMING)
            continue;
        /* Judged as the caller sees it: processes of other pid namespaces too
         * when the caller can see them (pidview.c). */
        if (sim_proc_view(st, p, w, my_ns, &pid) != SIM_VIEW_DEAD)
            continue;
        uint64_t r = SIM_SLOT_WORD(SIM_SLOT_GEN(w), SIM_SLOT_PID(w), SIM_PHASE_RECLAIMING);
        if (!atomic_compare_exchange_strong(&p->state, &w, r))
            continue; /* changed under us: someone else handled it */
        /* A claiming slot never held a charge. */
        drain_and_free(st, p, r, phase == SIM_PHASE_LIVE);
        n++;
    }
    return n;
}

/* ------------------------------------------------------------------ memory */

int sim_charge(struct sim_state *st, int slot, int d, uint64_t bytes)
{
    struct sim_devstate *ds = &st->dev[d];
    uint64_t total = st->hdr.dev[d].total_mem;
    int reclaimed = 0;
    uint64_t u = atomic_load(&ds->used);
    for (;;) {
        if (u > total || bytes > total - u) {
            /* Before a real OOM, give back what dead processes still hold. */
            if (!reclaimed) {
                reclaimed = 1;
                if (sim_reclaim_dead(st) > 0) {
                    u = atomic_load(&ds->used);
                    continue;
                }
            }
            return -1;
        }
        if (atomic_compare_exchange_weak(&ds->used, &u, u + bytes))
            break;
    }
    uint64_t now_used = u + bytes;
    uint64_t hw = atomic_load(&ds->used_high);
    while (hw < now_used && !atomic_compare_exchange_weak(&ds->used_high, &hw, now_used)) {
    }
    /* Device first, process second: a SIGKILL between the two leaks this charge on
     * the device until restart instead of letting reclaim credit bytes twice. */
    if (slot >= 0)
        atomic_fetch_add(&st->proc[slot].dev[d].used, bytes);
    return 0;
}

void sim_credit(struct sim_state *st, int slot, int d, uint64_t bytes)
{
    if (bytes == 0)
        return;
    if (slot >= 0)
        atomic_fetch_sub(&st->proc[slot].dev[d].used, bytes);
    atomic_fetch_sub(&st->dev[d].used, bytes);
}

uint64_t sim_va_alloc(struct sim_state *st, int d, uint64_t size, uint64_t align)
{
    /* Each device owns a 256 TiB window, so addresses never collide across devices
     * and a pointer alone tells which device it lives on. */
    uint64_t base = (uint64_t)(d + 1) << 48;
    uint64_t cur = atomic_load(&st->dev[d].va_cursor);
    uint64_t len = (size + 511) & ~511ull;
    if (len == 0)
        len = 512;
    for (;;) {
        uint64_t start = (cur + align - 1) & ~(align - 1);
        if (atomic_compare_exchange_weak(&st->dev[d].va_cursor, &cur, start + len))
            return base + start;
    }
}

/* ------------------------------------------------------------------ launches */

uint64_t sim_launch_duration(const struct sim_state *st, int d, uint64_t blocks)
{
    uint64_t sms = st->hdr.dev[d].sms ? st->hdr.dev[d].sms : 1;
    uint64_t waves = (blocks + sms - 1) / sms;
    return waves * st->hdr.ns_per_block;
}

static void bucket_add(_Atomic uint64_t *ring, uint64_t epoch, uint64_t ns)
{
    _Atomic uint64_t *b = &ring[epoch % SIM_NBUCKETS];
    uint64_t tag = epoch & SIM_BUCKET_EPOCH_MASK;
    uint64_t w = atomic_load(b);
    for (;;) {
        uint64_t nw;
        if ((w >> SIM_BUCKET_EPOCH_SHIFT) == tag) {
            uint64_t busy = (w & SIM_BUCKET_BUSY_MASK) + ns;
            if (busy > SIM_BUCKET_BUSY_MASK)
                busy = SIM_BUCKET_BUSY_MASK;
            nw = (tag << SIM_BUCKET_EPOCH_SHIFT) | busy;
        } else {
            nw = (tag << SIM_BUCKET_EPOCH_SHIFT) | (ns & SIM_BUCKET_BUSY_MASK);
        }
        if (atomic_compare_exchange_weak(b, &w, nw))
            return;
    }
}

/* Spreads [start, end) over the sample periods it covers (bounded to the ring's future
 * horizon so that no write can land in a period a reader still wants). */
static void ring_credit(_Atomic uint64_t *ring, uint64_t period, uint64_t now, uint64_t start,
                        uint64_t end)
{
    uint64_t horizon = (now / period + SIM_FUTURE_BUCKETS + 1) * period;
    if (end > horizon)
        end = horizon;
    while (start < end) {
        uint64_t e = start / period;
        uint64_t bend = (e + 1) * period;
        uint64_t stop = end < bend ? end : bend;
        bucket_add(ring, e, stop - start);
        start = stop;
    }
}

uint64_t sim_queue_launch(struct sim_state *st, int slot, int d, uint64_t dur)
{
    struct sim_devstate *ds = &st->dev[d];
    uint64_t backlog = st->hdr.max_backlog_ns;
    uint64_t start, end, now;
    for (;;) {
        now = sim_now_ns();
        uint64_t bu = atomic_load(&ds->busy_until);
        start = bu > now ? bu : now;
        if (backlog != 0 && start - now > backlog) {
            /* A full hardware queue blocks the launching thread. */
            sim_sleep_until(start - backlog);
            continue;
        }
        end = start + dur;
        if (atomic_compare_exchange_weak(&ds->busy_until, &bu, end))
            break;
    }
    atomic_fetch_add(&ds->busy_total, dur);
    atomic_fetch_add(&ds->launches, 1);
    /* The work is placed on the device timeline now but counts in the periods in
     * which it executes: readers see a period only after it has ended. */
    uint64_t period = st->hdr.bucket_ns;
    ring_credit(ds->buckets, period, now, start, end);
    if (slot >= 0) {
        struct sim_procdev *pd = &st->proc[slot].dev[d];
        atomic_fetch_add(&pd->busy_ns, dur);
        atomic_fetch_add(&pd->launches, 1);
        ring_credit(pd->buckets, period, now, start, end);
    }
    return end;
}

uint64_t sim_ring_sample(_Atomic uint64_t *ring, uint64_t e)
{
    uint64_t w = atomic_load(&ring[e % SIM_NBUCKETS]);
    if ((w >> SIM_BUCKET_EPOCH_SHIFT) != (e & SIM_BUCKET_EPOCH_MASK))
        return 0;
    return w & SIM_BUCKET_BUSY_MASK;
}
