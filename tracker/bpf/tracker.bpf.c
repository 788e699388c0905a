// SPDX-License-Identifier: GPL-2.0
/* vgpu tracker: which process opens which GPU character device, and when the
 * processes holding one fork and exit. Events go to user space through a ring
 * buffer; tracker/ebpf.go reads them.
 *
 * Hooks:
 *  - Device opens: the syscall exit tracepoints of open, openat and openat2
 *    (syscalls/sys_exit_open*). On success the returned fd is looked up in
 *    the task's fd table, and the open file's inode gives the device: a
 *    character device's number is i_rdev, so no path or name is matched (a
 *    renamed or bind-mounted /dev/nvidia0 is still major 195), and an open
 *    that failed (ENXIO for a major without a driver, EACCES) holds nothing
 *    and is not reported.
 *    Why not fexit/chrdev_open, which would run only for char devices and
 *    hand over the inode directly: fentry/fexit need BPF trampolines, and
 *    hardened kernels refuse them (the CI kernel answers EPERM to every
 *    fentry/fexit/LSM load under lockdown), and kprobes are compiled out of
 *    many of the same kernels (CONFIG_KPROBES=n there). Syscall tracepoints
 *    exist wherever CONFIG_FTRACE_SYSCALLS does, cost one fd-table read per
 *    open, and need tracefs only to look up their ids at attach time.
 *  - Forks and exits: tp_btf/sched_process_fork and tp_btf/sched_process_exit,
 *    the scheduler tracepoints, BTF-typed (raw tracepoints: no trampoline, no
 *    tracefs; the task pointers are read directly). Only processes already in
 *    `procs` (they opened a tracked device, or descend from one that did, or
 *    user space seeded them) are reported, so a fork or exit of any other
 *    process costs one hash lookup.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

/* Keep in sync with tracker.EventKind (tracker/tracker.go). */
enum event_kind {
    EVENT_OPEN = 1,
    EVENT_FORK = 2,
    EVENT_EXIT = 3,
};

struct event {
    u64 ts_ns;      /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
    u64 cgroup_id;  /* cgroup v2 id of the process */
    u64 start_ns;   /* group leader's start_boottime (ns since boot) */
    u64 pidns;      /* inode of the process's innermost pid namespace */
    u32 kind;       /* enum event_kind */
    u32 pid;        /* tgid */
    u32 tid;        /* thread */
    u32 ppid;       /* parent tgid */
    u32 major;
    u32 minor;
    u32 nspid; /* tgid as seen in that pid namespace */
    u32 pad;
};

/* The char-device majors to report (user space fills it from Config.Majors). */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, u32);
    __type(value, u8);
} majors SEC(".maps");

/* tgid -> 1 for every process known to hold a tracked device. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, u32);
    __type(value, u8);
} procs SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 20);
} events SEC(".maps");

/* Events that did not reach user space (ring buffer full, procs full). User
 * space polls the sum and rescans procfs when it grows. Per CPU: no atomics. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, u32);
    __type(value, u64);
} dropped SEC(".maps");

/* Keeps struct event in the object's BTF, for bpf2go's Go mirror of it
 * (-type event): the ring buffer API uses it only through sizeof. */
const struct event *unused_event __attribute__((unused));

/* Waking the reader costs the process that submits the event several
 * microseconds (irq_work, then a wake-up of the reader's thread: an IPI, an
 * exit to the hypervisor on a VM), more than the rest of a tracked open. So
 * an event wakes the reader only when none did in the last wake_gap_ns; the
 * events that follow are submitted without a wake-up, and the reader, once
 * woken, polls the ring every wake_gap_ns until it has found nothing for
 * that long (tracker/ebpf.go read). A first event is seen at once, a burst
 * costs one wake-up per gap, and an idle reader sleeps.
 * Set by user space before loading (Config.PollInterval). */
const volatile u64 wake_gap_ns = 2000000;

/* When an event last woke the reader. Racy across CPUs on purpose: two may
 * both wake (harmless), and one that skips the wake-up saw a time at which
 * another CPU's event wakes the reader, who then polls for a gap past it. */
u64 last_wake = 0;

static __always_inline u64 wake_flag(u64 now)
{
    if (now - last_wake < wake_gap_ns)
        return BPF_RB_NO_WAKEUP;
    last_wake = now;
    return BPF_RB_FORCE_WAKEUP;
}

static __always_inline void count_drop(void)
{
    u32 zero = 0;
    u64 *n = bpf_map_lookup_elem(&dropped, &zero);
    if (n)
        *n += 1;
}

static __always_inline u64 task_cgroup_id(struct task_struct *t)
{
    return BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
}

/* The process's identity in its own (innermost) pid namespace, read from the
 * group leader's struct pid: what a containerised process sees as its pid,
 * and the namespace's inode, which together with the start time is how
 * libvgpu names its process to vgpud. */
static __always_inline void pidns_of(struct task_struct *t, u32 *nspid, u64 *ns)
{
    struct pid *pid = BPF_CORE_READ(t, group_leader, thread_pid);
    unsigned int level = BPF_CORE_READ(pid, level);
    *nspid = BPF_CORE_READ(pid, numbers[level].nr);
    *ns = BPF_CORE_READ(pid, numbers[level].ns, ns.inum);
}

/* with_ns: read the pid namespace identity. A process already tracked has
 * it in user space (tracker/state.go fills the event in): skipping the six
 * reads took 0.1-0.2 µs off each repeated open of a device here. */
static __always_inline void emit(u32 kind, struct task_struct *t, u64 cgroup_id, u32 major,
                                 u32 minor, bool with_ns)
{
    struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e) {
        count_drop();
        return;
    }
    e->ts_ns = bpf_ktime_get_ns();
    e->cgroup_id = cgroup_id;
    e->start_ns = BPF_CORE_READ(t, group_leader, start_boottime);
    e->kind = kind;
    e->pid = BPF_CORE_READ(t, tgid);
    e->tid = BPF_CORE_READ(t, pid);
    e->ppid = BPF_CORE_READ(t, real_parent, tgid);
    e->major = major;
    e->minor = minor;
    e->nspid = 0;
    e->pidns = 0;
    if (with_ns)
        pidns_of(t, &e->nspid, &e->pidns);
    e->pad = 0;
    bpf_ringbuf_submit(e, wake_flag(e->ts_ns));
}

#define S_IFMT 00170000
#define S_IFCHR 0020000

/* The ctx of a syscalls/sys_exit_* tracepoint (its format file): the common
 * header, the syscall number, the return value. */
struct sys_exit_ctx {
    u64 common;
    s32 nr;
    s32 pad;
    long ret;
};

/* fd was just returned by an open: report it if it is a tracked char device. */
static __always_inline int opened(long fd)
{
    if (fd < 0)
        return 0;
    struct task_struct *t = (struct task_struct *)bpf_get_current_task();
    struct file **fds = BPF_CORE_READ(t, files, fdt, fd);
    struct file *f = NULL;
    if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) != 0 || !f)
        return 0;
    struct inode *inode = BPF_CORE_READ(f, f_inode);
    if ((BPF_CORE_READ(inode, i_mode) & S_IFMT) != S_IFCHR)
        return 0;
    /* The kernel's internal dev_t: 12 bits of major above 20 bits of minor. */
    dev_t dev = BPF_CORE_READ(inode, i_rdev);
    u32 major = dev >> 20;
    if (!bpf_map_lookup_elem(&majors, &major))
        return 0;
    u32 tgid = BPF_CORE_READ(t, tgid);
    u8 one = 1;
    /* Look up first: an update of a present key still swaps in a fresh
     * element under the bucket lock, and a process opens several devices. */
    bool known = bpf_map_lookup_elem(&procs, &tgid) != NULL;
    if (!known && bpf_map_update_elem(&procs, &tgid, &one, BPF_NOEXIST) != 0)
        count_drop();
    emit(EVENT_OPEN, t, bpf_get_current_cgroup_id(), major, dev & 0xfffff, !known);
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int on_openat(struct sys_exit_ctx *ctx)
{
    return opened(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int on_openat2(struct sys_exit_ctx *ctx)
{
    return opened(ctx->ret);
}

/* open(2) exists on x86-64, not on arm64 (user space skips what is absent). */
SEC("tracepoint/syscalls/sys_exit_open")
int on_open(struct sys_exit_ctx *ctx)
{
    return opened(ctx->ret);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
    u32 ptgid = BPF_CORE_READ(parent, tgid);
    u32 pid = BPF_CORE_READ(child, pid);
    /* A new thread shares its process's fds: nothing new to track. */
    if (pid != (u32)BPF_CORE_READ(child, tgid))
        return 0;
    if (!bpf_map_lookup_elem(&procs, &ptgid))
        return 0;
    /* The child inherits its parent's open device fds. */
    u8 one = 1;
    if (bpf_map_update_elem(&procs, &pid, &one, BPF_ANY) != 0)
        count_drop();
    /* The child's own cgroup: with CLONE_INTO_CGROUP it is not the parent's. */
    emit(EVENT_FORK, child, task_cgroup_id(child), 0, 0, 1);
    return 0;
}

/* Not the args' group_dead (added in 6.16; older kernels pass only the task):
 * do_exit decrements signal->live before this tracepoint, so 0 means the
 * last thread of the group is exiting on every kernel version. Two threads
 * exiting at once may both see 0; the map delete lets only one report. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
    if (BPF_CORE_READ(p, signal, live.counter) != 0)
        return 0;
    u32 tgid = BPF_CORE_READ(p, tgid);
    if (bpf_map_delete_elem(&procs, &tgid) != 0)
        return 0;
    emit(EVENT_EXIT, p, task_cgroup_id(p), 0, 0, 0);
    return 0;
}
