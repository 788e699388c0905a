/*
 * state.h — the simulated GPU node's state file.
 *
 * One file (VGPU_SIM_STATE) is mapped MAP_SHARED by every process that uses the
 * simulated libcuda/libnvidia-ml and by `vgpu-sim status`: it is the node's single
 * truth (device memory in use, the launch queue of each device, the per-process
 * figures NVML reports).
 *
 * There is deliberately no process-shared mutex: a process SIGKILLed while holding
 * one would wedge the node. Every mutable field is a 64-bit atomic updated by
 * add/CAS, and a dead process's slot is reclaimed lazily by whoever notices it.
 *
 * The layout is fixed-size (SIM_MAX_DEVICES devices, SIM_MAX_PROCS process slots) so
 * the file never grows and every offset is a compile-time constant; the Go mirror
 * (test/simgpu/state.go) is checked against sim_layout (test/cprog/sim_layout.c).
 */
#ifndef VGPU_SIMGPU_STATE_H
#define VGPU_SIMGPU_STATE_H

#include <stdatomic.h>
#include <stdint.h>

#define SIM_MAGIC 0x314d495355504756ULL /* "VGPUSIM1" read as a little-endian u64 */
#define SIM_VERSION 2u
#define SIM_MAX_DEVICES 16
#define SIM_MAX_PROCS 256
/* Utilization samples. The device timeline is cut into sample periods of
 * hdr.bucket_ns (`vgpu-sim init --nvml-sample-period`; default 1/6 s, the shortest
 * period NVML documents: "Each sample period may be between 1 second and 1/6 second,
 * depending on the product being queried", nvmlUtilization_t in nvml.h). Each device
 * and each process has a ring of SIM_NBUCKETS periods holding the busy ns that
 * executed in them (a launch is spread over the periods its [start, end) on the
 * device timeline covers; a period is read only once it has ended, so work counts
 * when it runs, never when it is queued). NVML keeps the last SIM_HISTORY_SAMPLES
 * complete periods, as the kernel driver keeps a ring of 72 samples
 * (NV2080_CTRL_PERF_GPUMON_SAMPLE_COUNT_PERFMON_UTIL in open-gpu-kernel-modules'
 * ctrl2080perf.h, "wraps around after 10 seconds of sampling"). Launches are
 * credited at most SIM_FUTURE_BUCKETS periods ahead, so a write never lands in a
 * period a reader still wants (SIM_HISTORY_SAMPLES + SIM_FUTURE_BUCKETS + 1 <
 * SIM_NBUCKETS); max_backlog is therefore at most SIM_MAX_BACKLOG_NS and at most
 * SIM_BACKLOG_PERIODS periods. */
#define SIM_NBUCKETS 128
#define SIM_HISTORY_SAMPLES 72
#define SIM_FUTURE_BUCKETS 54
#define SIM_BACKLOG_PERIODS 52
#define SIM_MIN_SAMPLE_NS 10000000ull    /* 10 ms */
#define SIM_MAX_SAMPLE_NS 1000000000ull  /* 1 s */
#define SIM_MAX_BACKLOG_NS 5000000000ull /* 5 s */
_Static_assert(SIM_HISTORY_SAMPLES + SIM_FUTURE_BUCKETS + 1 < SIM_NBUCKETS, "ring too small");
_Static_assert(SIM_BACKLOG_PERIODS + 2 <= SIM_FUTURE_BUCKETS, "backlog beyond the horizon");

/* A bucket word packs the bucket's epoch (monotonic ns / bucket ns, low 24 bits) with
 * the busy ns credited to it (low 40 bits), so that "reset a stale bucket and add"
 * is one CAS and two writers can never lose each other's time. */
#define SIM_BUCKET_EPOCH_SHIFT 40
#define SIM_BUCKET_EPOCH_MASK 0xffffffull
#define SIM_BUCKET_BUSY_MASK ((1ull << SIM_BUCKET_EPOCH_SHIFT) - 1)

/* Process slot state word: generation (bits 40..63) | pid (bits 8..39) | phase. The
 * generation changes at every claim, so a cleaner that judged a slot dead can never
 * CAS away a newer owner that happens to have the same pid. */
#define SIM_PHASE_FREE 0u
#define SIM_PHASE_CLAIMING 1u
#define SIM_PHASE_LIVE 2u
#define SIM_PHASE_RECLAIMING 3u
// clang-format off: clang-format 14 takes (w) & for a cast
#define SIM_SLOT_PHASE(w) ((uint32_t)((w)&0xffu))
#define SIM_SLOT_PID(w) ((uint32_t)(((w) >> 8) & 0xffffffffu))
#define SIM_SLOT_GEN(w) ((w) >> 40)
#define SIM_SLOT_WORD(gen, pid, phase) \
    ((((uint64_t)(gen)&0xffffffull) << 40) | ((uint64_t)(uint32_t)(pid) << 8) | (uint64_t)(phase))
// clang-format on

#define SIM_NAME_LEN 96
#define SIM_UUID_LEN 80
#define SIM_BUSID_LEN 32
#define SIM_NODES_LEN 256

/* Immutable device description, written once by `vgpu-sim init`. */
struct sim_devcfg {
    char name[SIM_NAME_LEN];        /* "NVIDIA H100 80GB HBM3 (simulated)" */
    char uuid[SIM_UUID_LEN];        /* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" */
    char pci_bus_id[SIM_BUSID_LEN]; /* "00000000:01:00.0" (NVML busId format) */
    uint64_t total_mem;
    uint32_t sms;
    uint32_t minor;
    uint32_t pci_domain;
    uint32_t pci_bus;
    uint32_t pci_device;
    uint32_t pci_device_id; /* (device id << 16) | vendor 0x10de */
    uint32_t pci_subsys_id;
    uint32_t cc_major;
    uint32_t cc_minor;
    uint32_t pad0;
};

struct sim_hdr {
    uint64_t magic;
    uint32_t version;
    uint32_t hdr_size;  /* sizeof(struct sim_hdr) */
    uint64_t file_size; /* sizeof(struct sim_state) */
    uint32_t device_count;
    uint32_t max_procs;      /* SIM_MAX_PROCS */
    uint32_t max_devices;    /* SIM_MAX_DEVICES */
    uint32_t nbuckets;       /* SIM_NBUCKETS */
    uint64_t bucket_ns;      /* the NVML sample period (SIM_MIN_SAMPLE_NS..SIM_MAX_SAMPLE_NS) */
    uint64_t ns_per_block;   /* device ns per wave of blocks */
    uint64_t context_memory; /* bytes charged per CUDA context */
    uint64_t max_backlog_ns; /* a launch blocks while the queue is this far ahead */
    uint64_t created_unix_ns;
    char device_nodes[SIM_NODES_LEN]; /* printf pattern with one %d: the device node */
    uint64_t reserved[16];
    struct sim_devcfg dev[SIM_MAX_DEVICES];
};

/* Mutable per-device state. */
struct sim_devstate {
    _Atomic uint64_t used;       /* bytes in use (admission by CAS against total_mem) */
    _Atomic uint64_t busy_until; /* CLOCK_MONOTONIC ns at which the queue drains */
    _Atomic uint64_t busy_total; /* cumulative device ns of all launches */
    _Atomic uint64_t launches;   /* kernels launched */
    _Atomic uint64_t va_cursor;  /* next fake device address (offset within the device's VA) */
    _Atomic uint64_t used_high;  /* high-water mark of used */
    uint64_t pad[2];
    _Atomic uint64_t buckets[SIM_NBUCKETS];
};

/* A process's figures on one device. */
struct sim_procdev {
    _Atomic uint64_t used;    /* bytes charged (allocations + context footprints) */
    _Atomic uint64_t busy_ns; /* cumulative device ns of its launches */
    _Atomic uint64_t launches;
    _Atomic uint64_t contexts; /* live contexts on this device */
    _Atomic uint64_t buckets[SIM_NBUCKETS];
};

struct sim_proc {
    _Atomic uint64_t state; /* SIM_SLOT_WORD(gen, pid, phase) */
    uint64_t start_time;    /* /proc/<pid>/stat field 22 (clock ticks since boot) */
    uint64_t pidns;         /* inode of /proc/<pid>/ns/pid: the pid means something there */
    uint64_t registered_ns; /* CLOCK_MONOTONIC at claim */
    char comm[16];
    uint64_t pad[2];
    struct sim_procdev dev[SIM_MAX_DEVICES];
};

struct sim_state {
    struct sim_hdr hdr;
    struct sim_devstate dev[SIM_MAX_DEVICES];
    struct sim_proc proc[SIM_MAX_PROCS];
};

/* ------------------------------------------------------------------ library side */

/* Maps VGPU_SIM_STATE (once per process; thread-safe). Returns NULL and sets *why
 * to a static message when the file is missing or invalid. */
struct sim_state *sim_map(const char **why);

/* Current time on the clock the launch queue uses. */
uint64_t sim_now_ns(void);
/* Sleeps until CLOCK_MONOTONIC reaches t. */
void sim_sleep_until(uint64_t t);

/* Identity of a process: start time and pid namespace. 0 when unreadable; pid 0 is
 * the caller (via /proc/self). */
uint64_t sim_proc_start_time(int pid);
uint64_t sim_pidns_of(int pid);
/* 1 when the process registered as (pid, start) is certainly gone, judged from the
 * given pid namespace (only slots from that namespace; sim_proc_view covers others). */
int sim_proc_dead(const struct sim_state *st, const struct sim_proc *p, uint64_t my_pidns);

/* /proc/<pid>/stat: state letter and start time; -1 with errno on failure. */
int sim_proc_stat(int pid, char *state, uint64_t *start);

/* How the caller sees the process of a slot whose state word is w (pidview.c):
 * *pid is its pid in the caller's pid namespace — the registered pid for the
 * caller's own namespace, the translated one (via /proc NSpid) for a process in
 * another namespace the caller can see, and the registered pid unchanged for one
 * it cannot see (then the result is SIM_VIEW_UNKNOWN and it is never judged). */
#define SIM_VIEW_UNKNOWN 0
#define SIM_VIEW_ALIVE 1
#define SIM_VIEW_DEAD 2
int sim_proc_view(struct sim_state *st, const struct sim_proc *p, uint64_t w, uint64_t my_ns,
                  int *pid);

/* Claims a process slot for the calling process (pid, start time). Returns the slot
 * index or -1 when the table is full. */
int sim_proc_register(struct sim_state *st);
/* Returns every byte the slot holds to its devices and frees it (normal exit). */
void sim_proc_release(struct sim_state *st, int slot);
/* Reclaims the slots of dead processes, returning their memory to the devices as
 * the real driver does on process exit. Returns the number of slots reclaimed. */
int sim_reclaim_dead(struct sim_state *st);

/* Charges bytes to device d for process slot p: CAS admission against total_mem.
 * On a would-be OOM, dead processes are reclaimed and admission retried once.
 * Returns 0 or -1 (out of memory). */
int sim_charge(struct sim_state *st, int slot, int d, uint64_t bytes);
void sim_credit(struct sim_state *st, int slot, int d, uint64_t bytes);

/* Duration in device ns of a launch of `blocks` blocks on device d. */
uint64_t sim_launch_duration(const struct sim_state *st, int d, uint64_t blocks);
/* Queues `dur` device ns on device d (blocking while the backlog exceeds the node's
 * max backlog), records it for slot and returns the end time (CLOCK_MONOTONIC). */
uint64_t sim_queue_launch(struct sim_state *st, int slot, int d, uint64_t dur);

/* Busy ns that executed in sample period e (CLOCK_MONOTONIC [e*P, (e+1)*P), P the
 * node's sample period); 0 when the ring no longer (or not yet) holds it. */
uint64_t sim_ring_sample(_Atomic uint64_t *ring, uint64_t e);

/* Fake device addresses: unique node-wide per device. */
uint64_t sim_va_alloc(struct sim_state *st, int d, uint64_t size, uint64_t align);

#endif /* VGPU_SIMGPU_STATE_H */
