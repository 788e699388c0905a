/*
 * vgpu_shm.h — the shared-memory contract between vgpud, libvgpu and the enforcer.
 *
 * This header is the single source of truth. The Go mirror in shm/layout.go is
 * checked against it field by field (shm/abi_test.go), so the two cannot drift.
 *
 * Each slice has two files, both mapped MAP_SHARED:
 *   budget  written only by vgpud (or `vgpuctl slice create`), mounted read-only in
 *           the container: limits, shares, priority, QoS, token rates, elastic grants.
 *           A container cannot raise its own limit by editing a file.
 *   usage   written by libvgpu in every process of the slice (read-write): per-device
 *           used bytes (the admission counter), per-process slots, token buckets,
 *           elastic requests. vgpud reads it and repairs it (dead processes).
 *
 * Rules every writer follows (DESIGN §3):
 *   - No lock of any kind lives in these files. Admission is a CAS loop on
 *     usage.dev[d].used_bytes against budget.dev[d].memory_limit: reserve first, call the
 *     driver, give back on failure. A SIGKILL at any instruction leaves the file usable.
 *   - Charge order is device counter first, then the slot. A kill between the two can
 *     only leak a charge (safe), never let a reclaim subtract more than was added.
 *   - Slots are claimed by CAS on `owner`; identity (pid, pid namespace, start time)
 *     lets the daemon tell a reused pid from the original process.
 *   - All arithmetic on limits is clamped: free = limit > used ? limit - used : 0.
 *
 * Versioning: readers accept the same ABI major and any minor. A minor bump may only
 * give meaning to reserved fields; anything else is a major bump. total_size must equal
 * both the file size and the size computed from device_count/slot_count capacity.
 */
#ifndef VGPU_SHM_H
#define VGPU_SHM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VGPU_BUDGET_MAGIC 0x5447444255504756ULL /* "VGPUBDGT" little-endian */
#define VGPU_USAGE_MAGIC 0x4741535555504756ULL  /* "VGPUUSAG" little-endian */
#define VGPU_ABI_MAJOR 1
/* Minor 1: token_spent / token_refilled (launch throttle);
 * minor 2: completion markers (token_done, sampled_*), F_MANAGED;
 * minor 3: elastic memory (memory_max, the request/grant protocol below). */
#define VGPU_ABI_MINOR 3

#define VGPU_MAX_DEVICES 16     /* devices one slice may span */
#define VGPU_DEFAULT_SLOTS 1024 /* process slots in a usage file */
#define VGPU_MAX_SLOTS 65536    /* readers refuse anything larger */
#define VGPU_UUID_LEN 64        /* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" + NUL fits */
#define VGPU_SLICE_ID_LEN 64

/* Region file names inside a slice directory. */
#define VGPU_BUDGET_FILE "budget"
#define VGPU_USAGE_FILE "usage"

/* Where the runtime mounts a container's slice; libvgpu looks here first. */
#define VGPU_CONTAINER_SLICE_DIR "/run/vgpu/slice"

/* QoS classes (DESIGN §5). */
#define VGPU_QOS_GUARANTEED 0
#define VGPU_QOS_BURSTABLE 1
#define VGPU_QOS_BEST_EFFORT 2

/* Launch throttle (token bucket, one per slice and device, in usage.dev[d]).
 *
 * A token is one "estimated device-ns". libvgpu charges each launch
 * ceil(blocks / SMs) * VGPU_TOKEN_WAVE_NS tokens (a graph: the sum over its kernel
 * nodes, learnt at instantiation). The estimate only needs to be proportional to the
 * real device time: vgpud measures the achieved share from the driver and scales
 * token_rate by feedback, so neither the nominal wave time nor the SM count enters
 * its gain. A slice without vgpud gets a static rate of share * 1e9 tokens/s.
 *
 * The bucket is two monotonic counters, so that the hot path is one atomic add and
 * the accounting is exact: token_spent (launchers fetch_add their cost: a ticket) and
 * token_refilled (advanced at token_rate per wall second by whichever waiter finds the
 * bucket empty, never past token_spent + token_burst). A launch whose ticket started
 * below token_refilled runs at once; otherwise it sleeps until token_refilled passes
 * its ticket (FIFO across the slice's processes). Credit = refilled - spent. */
#define VGPU_TOKEN_WAVE_NS 10000ull

/* Default bucket depth for a rate: 1/VGPU_TOKEN_BURST_DIV of a second of it (20 ms:
 * short enough that a tenant waking up cannot flood the queue in front of the others,
 * long enough to cover a sleep step of a waiting launcher), at least
 * VGPU_TOKEN_BURST_MIN_WAVES waves so a very low rate still passes one launch without
 * waiting on every call. vgpud writes it into token_burst; libvgpu uses the same
 * formula when a budget names no burst. */
#define VGPU_TOKEN_BURST_DIV 50ull
#define VGPU_TOKEN_BURST_MIN_WAVES 4ull
#define VGPU_DEFAULT_TOKEN_BURST(rate)                                               \
    ((rate) / VGPU_TOKEN_BURST_DIV > VGPU_TOKEN_BURST_MIN_WAVES * VGPU_TOKEN_WAVE_NS \
         ? (rate) / VGPU_TOKEN_BURST_DIV                                             \
         : VGPU_TOKEN_BURST_MIN_WAVES * VGPU_TOKEN_WAVE_NS)

/* Throttle policies. */
#define VGPU_POLICY_CAP 0   /* never above the share, even alone on the device */
#define VGPU_POLICY_SHARE 1 /* the share is a guarantee; idle capacity may be used */

/* budget.flags */
#define VGPU_BUDGET_F_ELASTIC 0x1 /* the slice may ask vgpud for more memory on OOM */
/* vgpud's controller sets this slice's token rates from the driver's measurements
 * (and scales them by what a token really buys): libvgpu charges launches at the
 * nominal wave cost. Without it (a slice made without vgpud) nobody corrects the
 * rate, so libvgpu charges what it measured itself: tokens become device-ns. */
#define VGPU_BUDGET_F_MANAGED 0x2

/* Elastic memory (ABI 1.3). A slice whose budget has VGPU_BUDGET_F_ELASTIC may hold
 * up to memory_max on a device; memory_limit is what vgpud has granted so far. An
 * allocation that does not fit memory_limit but would fit memory_max is not refused
 * at once: libvgpu stores in usage elastic_request_bytes what the slice asks to hold
 * on the device (used + the allocation: absolute, so a repeated request is the same
 * request), bumps elastic_request_seq and FUTEX_WAKEs the low 32 bits of that seq
 * (vgpud's doorbell; it also polls). vgpud answers by raising memory_limit (or not)
 * and then storing the seq it answered into the budget's elastic_grant_seq, and
 * FUTEX_WAKEs its low 32 bits; libvgpu FUTEX_WAITs there for a bounded time
 * (VGPU_ELASTIC_WAIT_MS, default 100) and retries the admission once answered.
 * Everything in usage is a request: vgpud bounds it by memory_max and by what the
 * device and the other slices can spare, and rate-limits it per slice. Futex words
 * are the low halves of 64-bit fields on these little-endian ABIs. */
#define VGPU_ELASTIC_WAIT_MS_DEFAULT 100

/* Completion markers (ABI 1.2). Whenever a launch's ticket crosses a multiple of
 * VGPU_MARKER_STRIDE tokens, libvgpu records an event before and after it, on the
 * launch's own stream, and later queries them without blocking (only on that slow
 * path). A completed marker tells that the slice's work up to its ticket has run
 * (token_done) and how long that one launch took on the device (sampled_ns for
 * sampled_tokens): the in-flight work is token_spent - token_done, and the device-ns
 * one token buys is sampled_ns / sampled_tokens. All tenant-written: vgpud uses them
 * to time its measurements and as a first guess, never as the truth of the share. */
#define VGPU_MARKER_STRIDE (1ull << 21) /* ~2 ms of device time at the nominal cost */

// clang-format off: the contract's layout, laid out by hand (multi-line field comments)
/* slot.owner encoding: (pid << 8) | state. 0 means free. */
#define VGPU_SLOT_FREE 0u
#define VGPU_SLOT_CLAIMING 1u /* owned, identity being written */
#define VGPU_SLOT_LIVE 2u     /* owned, identity valid */
#define VGPU_SLOT_RECLAIMING \
    3u /* owner judged dead; a reclaimer is returning its charge.
                                 * Only a reclaimer moves a slot here (CAS from the exact
                                 * owner value it judged), so two reclaimers never both
                                 * return one slot and a process can never claim it
                                 * mid-reclaim. A reclaimer that dies leaves it here; the
                                 * next one finishes the job. */
#define VGPU_SLOT_STATE_MASK 0xffu
#define VGPU_SLOT_PID_SHIFT 8

/* Self-describing header shared by both files: 64 bytes. */
struct vgpu_header {
    uint64_t magic;
    uint16_t abi_major;
    uint16_t abi_minor;
    uint32_t header_size;  /* sizeof(struct vgpu_header) */
    uint64_t total_size;   /* bytes in the file; must equal the file's size */
    uint32_t device_count; /* devices this slice uses, <= max_devices */
    uint32_t slot_count;   /* usage: process slots that follow; budget: 0 */
    uint32_t max_devices;  /* length of the dev[] arrays (VGPU_MAX_DEVICES) */
    uint32_t reserved0;
    uint64_t reserved[3];
};

/* ------------------------------------------------------------------ budget file */

/* Per-device limits: 192 bytes. Written by vgpud only. */
struct vgpu_budget_device {
    char uuid[VGPU_UUID_LEN]; /* device UUID; empty: match by index */
    uint32_t index;           /* host device index (NVML index / CUDA ordinal) */
    uint32_t flags;
    uint64_t memory_limit;      /* bytes this slice may hold on the device now */
    uint64_t memory_guaranteed; /* bytes never lent away (elastic floor) */
    uint64_t context_overhead;  /* bytes charged per CUDA context (driver footprint) */
    uint32_t compute_share_bp;  /* compute share, basis points (10000 = whole GPU) */
    uint32_t compute_floor_bp;  /* share held to while a higher priority is active */
    uint64_t token_rate;        /* tokens (estimated device-ns) granted per wall second;
                                  * 0 = launches on this device are not throttled */
    uint64_t token_burst;       /* bucket depth, tokens */
    uint64_t elastic_grant_seq; /* = usage request seq once vgpud has answered it */
    uint64_t memory_max;        /* ABI 1.3: the most memory_limit may be raised to by
                                  * elastic grants; <= memory_limit: no growth */
    uint64_t reserved[7];
};

/* The budget file: 256-byte fixed part, then max_devices entries. */
struct vgpu_budget {
    struct vgpu_header hdr;
    uint64_t generation; /* seqlock: odd while vgpud changes fields, even when stable;
                                   * readers of several fields retry while odd or changed */
    char slice_id[VGPU_SLICE_ID_LEN];
    uint32_t priority; /* higher wins; 0 = default */
    uint32_t qos;      /* VGPU_QOS_* */
    uint32_t policy;   /* VGPU_POLICY_* */
    uint32_t flags;    /* VGPU_BUDGET_F_* */
    uint64_t created_unix_ns;
    uint64_t reserved[12];
    struct vgpu_budget_device dev[VGPU_MAX_DEVICES];
};

/* ------------------------------------------------------------------- usage file */

/* Per-device counters: 128 bytes. Written by libvgpu (atomics), repaired by vgpud. */
struct vgpu_usage_device {
    uint64_t used_bytes;            /* admission counter: all charges on this device */
    uint64_t peak_bytes;            /* high-water mark of used_bytes */
    uint64_t refused_allocs;        /* allocations answered CUDA_ERROR_OUT_OF_MEMORY */
    uint64_t elastic_request_bytes; /* bytes the slice asks to hold (ABI 1.3: used +
                                     * the refused allocation, not the excess) */
    uint64_t elastic_request_seq;   /* bumped by libvgpu for each posted request */
    int64_t tokens;                 /* credit (refilled - spent) as of the last refill;
                                     * informational: the bucket is the two counters below */
    uint64_t last_refill_ns;        /* CLOCK_MONOTONIC of the last refill */
    uint64_t launches;              /* launches that went through the throttle (counted
                                     * per thread in batches: may lag by a few) */
    uint64_t throttled_ns;          /* time launches waited for tokens (summed over threads) */
    /* ABI 1.1 */
    uint64_t token_spent;    /* tokens charged by launches, cumulative */
    uint64_t token_refilled; /* tokens granted by refills, cumulative */
    /* ABI 1.2: completion markers (see VGPU_MARKER_STRIDE) */
    uint64_t token_done;         /* tokens of launches the device has completed, as the
                                  * markers showed (advances in steps; <= token_spent) */
    uint64_t sampled_tokens;     /* tokens of the launches libvgpu timed with events */
    uint64_t sampled_ns;         /* their device time (event elapsed time), ns */
    uint64_t inflight_waited_ns; /* time launchers waited for in-flight work to drain
                                  * (summed over threads) */
    uint64_t reserved[1];
};

/* One process: 256 bytes. Claimed by CAS on owner. */
struct vgpu_slot {
    uint64_t owner;      /* (pid << 8) | VGPU_SLOT_*; 0 = free */
    uint64_t pid;        /* pid in the process's own pid namespace */
    uint64_t pidns_ino;  /* inode of /proc/self/ns/pid, 0 if unknown */
    uint64_t start_time; /* /proc/self/stat field 22 (clock ticks since boot) */
    uint64_t host_pid;   /* filled by vgpud; 0 = not yet mapped */
    uint64_t contexts;   /* CUDA contexts the process holds (all devices) */
    uint64_t reserved0[2];
    uint64_t used_bytes[VGPU_MAX_DEVICES]; /* this process's share of dev[].used_bytes */
    uint64_t reserved[8];
};

/* The usage file: 256-byte fixed part, max_devices device entries, slot_count slots. */
struct vgpu_usage {
    struct vgpu_header hdr;
    uint64_t attach_count; /* processes that ever claimed a slot */
    uint64_t reserved[23];
    struct vgpu_usage_device dev[VGPU_MAX_DEVICES];
    struct vgpu_slot slots[]; /* slot_count entries */
};
// clang-format on

#define VGPU_BUDGET_SIZE ((uint64_t)sizeof(struct vgpu_budget))
#define VGPU_USAGE_SIZE(slots) \
    ((uint64_t)sizeof(struct vgpu_usage) + (uint64_t)(slots) * sizeof(struct vgpu_slot))

_Static_assert(sizeof(struct vgpu_header) == 64, "vgpu_header is 64 bytes");
_Static_assert(sizeof(struct vgpu_budget_device) == 192, "vgpu_budget_device is 192 bytes");
_Static_assert(sizeof(struct vgpu_usage_device) == 128, "vgpu_usage_device is 128 bytes");
_Static_assert(sizeof(struct vgpu_slot) == 256, "vgpu_slot is 256 bytes");
_Static_assert(sizeof(struct vgpu_budget) == 256 + VGPU_MAX_DEVICES * 192, "budget layout");
_Static_assert(sizeof(struct vgpu_usage) == 256 + VGPU_MAX_DEVICES * 128, "usage layout");

#ifdef __cplusplus
}
#endif

#endif /* VGPU_SHM_H */
