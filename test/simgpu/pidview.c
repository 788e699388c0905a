//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * pidview.c — how the caller sees a process registered in the state file.
 *
 * A process registers with its own getpid() and the inode of its pid namespace.
 * The real kernel driver, though, knows every process by its pid in the namespace
 * of whoever asks: NVML running on the host (vgpud) reports HOST pids for
 * processes that live in containers. So when the caller is in another pid
 * namespace than the registered one, the registered (namespace, pid, start time)
 * is translated by scanning /proc for the process whose NSpid ends with that pid,
 * whose /proc/<p>/ns/pid is that namespace and whose start time (stat field 22,
 * the same in every namespace) matches.
 *
 * The translation is cached per caller process (one entry per slot, keyed by the
 * slot's state word, which carries a generation, so a reused slot never hits a
 * stale entry); /proc is rescanned only on a miss, and one scan resolves every
 * miss at once. The cache is process-local and guarded by a plain mutex: nothing
 * here touches the shared state file except to read it.
 *
 * Liveness follows from the same view. A foreign process is judged dead only when
 * the caller can certainly see its namespace: the process was found before and
 * its host pid is now gone, a zombie or a different process (start time); or a
 * scan saw the namespace (some /proc/<p>/ns/pid has its inode, now or earlier)
 * without the process. A process the caller cannot see at all (the caller sits in
 * a container, or a sibling namespace) keeps its registered pid and is never
 * judged: a live process must not lose its memory to a blind observer.
 */
#define _GNU_SOURCE
#include "state.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One cached translation per slot. */
struct xlate {
    uint64_t word;  /* the slot's state word when translated (0: empty) */
    uint64_t pidns; /* registered namespace and start time, re-checked on use */
    uint64_t start;
    int host_pid; /* >0: the pid as the caller sees it; 0: not found */
};

#define SEEN_NS 64

static struct {
    pthread_mutex_t mu;
    uint64_t my_ns; /* caller's namespace the entries were made from */
    struct xlate x[SIM_MAX_PROCS];
    uint64_t seen_ns[SEEN_NS]; /* foreign namespaces some scan saw a process in */
    unsigned seen_next;
} V = {.mu = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;

/* A fork while another thread holds the mutex must not leave the child with a
 * mutex nobody will unlock. */
static void atfork_prepare(void) { pthread_mutex_lock(&V.mu); }
static void atfork_release(void) { pthread_mutex_unlock(&V.mu); }
static void atfork_once(void) { pthread_atfork(atfork_prepare, atfork_release, atfork_release); }

static int ns_seen(uint64_t ns)
{
    for (unsigned i = 0; i < SEEN_NS; i++)
        if (V.seen_ns[i] == ns)
            return 1;
    return 0;
}

static void note_ns_seen(uint64_t ns)
{
    if (ns_seen(ns))
        return;
    V.seen_ns[V.seen_next++ % SEEN_NS] = ns;
}

/* The last NSpid entry of /proc/<pid>/status (the pid in its own namespace). */
static int read_last_nspid(int pid, uint32_t *out)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *l = strstr(buf, "\nNSpid:");
    if (l == NULL)
        return -1;
    l += 7;
    char *end = strchr(l, '\n');
    if (end != NULL)
        *end = '\0';
    char *last = NULL;
    for (char *tok = strtok(l, " \t"); tok != NULL; tok = strtok(NULL, " \t"))
        last = tok;
    if (last == NULL)
        return -1;
    *out = (uint32_t)strtoul(last, NULL, 10);
    return 0;
}

/* Marks every LIVE foreign slot without a valid entry as pending and resolves
 * them all with one /proc scan. Called with V.mu held. */
static void refresh_locked(struct sim_state *st, uint64_t my_ns)
{
    if (V.my_ns != my_ns) {
        memset(V.x, 0, sizeof V.x);
        memset(V.seen_ns, 0, sizeof V.seen_ns);
        V.my_ns = my_ns;
    }
    int pending[SIM_MAX_PROCS];
    uint32_t want_pid[SIM_MAX_PROCS];
    int npending = 0;
    for (int i = 0; i < SIM_MAX_PROCS; i++) {
        struct sim_proc *p = &st->proc[i];
        uint64_t w = atomic_load(&p->state);
        if (SIM_SLOT_PHASE(w) != SIM_PHASE_LIVE || p->pidns == 0 || p->pidns == my_ns)
            continue;
        struct xlate *e = &V.x[i];
        if (e->word == w && e->pidns == p->pidns && e->start == p->start_time)
            continue;
        e->word = w;
        e->pidns = p->pidns;
        e->start = p->start_time;
        e->host_pid = 0;
        want_pid[npending] = SIM_SLOT_PID(w);
        pending[npending++] = i;
    }
    if (npending == 0)
        return;
    DIR *d = opendir("/proc");
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        char path[64];
        struct stat sb;
        int host = atoi(de->d_name);
        snprintf(path, sizeof path, "/proc/%d/ns/pid", host);
        if (stat(path, &sb) != 0 || (uint64_t)sb.st_ino == my_ns)
            continue;
        uint64_t ns = (uint64_t)sb.st_ino;
        int match = 0;
        for (int k = 0; k < npending; k++)
            if (V.x[pending[k]].pidns == ns)
                match = 1;
        if (!match)
            continue;
        note_ns_seen(ns);
        uint32_t nspid;
        if (read_last_nspid(host, &nspid) != 0)
            continue;
        uint64_t start = sim_proc_start_time(host);
        for (int k = 0; k < npending; k++) {
            struct xlate *e = &V.x[pending[k]];
            if (e->pidns == ns && want_pid[k] == nspid && e->start == start)
                e->host_pid = host;
        }
    }
    closedir(d);
}

int sim_proc_view(struct sim_state *st, const struct sim_proc *p, uint64_t w, uint64_t my_ns,
                  int *pid)
{
    int slot = (int)(p - st->proc);
    *pid = (int)SIM_SLOT_PID(w);
    uint32_t phase = SIM_SLOT_PHASE(w);
    if (phase != SIM_PHASE_LIVE && phase != SIM_PHASE_CLAIMING)
        return SIM_VIEW_UNKNOWN;
    if (my_ns == 0 || p->pidns == 0)
        return SIM_VIEW_UNKNOWN;
    if (p->pidns == my_ns)
        return sim_proc_dead(st, p, my_ns) ? SIM_VIEW_DEAD : SIM_VIEW_ALIVE;
    /* A claiming slot's start time may not be written yet: nothing to match. */
    if (phase != SIM_PHASE_LIVE)
        return SIM_VIEW_UNKNOWN;

    pthread_once(&g_atfork_once, atfork_once);
    pthread_mutex_lock(&V.mu);
    struct xlate *e = &V.x[slot];
    if (V.my_ns != my_ns || e->word != w || e->pidns != p->pidns || e->start != p->start_time)
        refresh_locked(st, my_ns);
    int host = 0, hit = e->word == w && e->pidns == p->pidns && e->start == p->start_time;
    int visible_ns = 0;
    if (hit) {
        host = e->host_pid;
        visible_ns = ns_seen(p->pidns);
    }
    pthread_mutex_unlock(&V.mu);
    if (!hit)
        return SIM_VIEW_UNKNOWN; /* the slot changed under us */

    if (host == 0)
        /* Not found: dead if we can see its namespace, otherwise out of our sight. */
        return visible_ns ? SIM_VIEW_DEAD : SIM_VIEW_UNKNOWN;
    *pid = host;
    char state;
    uint64_t start;
    if (sim_proc_stat(host, &state, &start) != 0)
        return errno == ENOENT || errno == ESRCH ? SIM_VIEW_DEAD : SIM_VIEW_ALIVE;
    /* A zombie has closed its device files; a different start time is pid reuse. */
    if (state == 'Z' || state == 'X' || start != p->start_time)
        return SIM_VIEW_DEAD;
    return SIM_VIEW_ALIVE;
}
