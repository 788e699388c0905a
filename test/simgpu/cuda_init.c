//go:build ignore

// (The line above keeps the Go toolchain from treating this C file as part of
// package simgpu, which lives in the same directory; gcc sees a comment.)

/*
 * cuda_init.c — process state, cuInit, device queries and error strings of the
 * simulated driver (build/simgpu/libcuda.so.1; the rest is in cuda_*.c, shared
 * declarations in cuda_internal.h).
 */
#define _GNU_SOURCE
#include "cuda_internal.h"

/* Everything this process knows (cuda_internal.h); reset in a forked child. */
struct sim_proc_state G = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .slot = -1,
    .epoch = 1,
};

__thread struct sim_ctx *t_stack[CTX_STACK_MAX];
__thread int t_depth;
__thread _Atomic uint64_t t_ptds_end;

/* Device node path: the pattern with its first %d replaced by the minor number.
 * Done by hand so that a stray % in the pattern can never become a format bug. */
void node_path(char *out, size_t n, int dev)
{
    const char *pat = G.st->hdr.device_nodes;
    const char *pct = strstr(pat, "%d");
    if (pct == NULL) {
        snprintf(out, n, "%.*s", SIM_NODES_LEN, pat);
        return;
    }
    snprintf(out, n, "%.*s%u%s", (int)(pct - pat), pat, G.st->hdr.dev[dev].minor, pct + 2);
}

/* ------------------------------------------------------------------ init / fork / exit */

static void visible_devices(void)
{
    int n = (int)G.st->hdr.device_count;
    int cand[SIM_MAX_DEVICES], nc = 0;
    const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
    if (cvd == NULL) {
        for (int d = 0; d < n; d++)
            cand[nc++] = d;
    } else {
        /* Like the driver: a list of indices or UUID prefixes; the first entry that
         * names no device ends the list. */
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", cvd);
        char *save = NULL;
        for (char *tok = strtok_r(buf, ",", &save); tok != NULL && nc < SIM_MAX_DEVICES;
             tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ')
                tok++;
            int found = -1;
            if (strncmp(tok, "GPU-", 4) == 0) {
                for (int d = 0; d < n; d++)
                    if (strncmp(G.st->hdr.dev[d].uuid, tok, strlen(tok)) == 0)
                        found = d;
            } else {
                char *end;
                long v = strtol(tok, &end, 10);
                if (end != tok && *end == '\0' && v >= 0 && v < n)
                    found = (int)v;
            }
            if (found < 0)
                break;
            bool dup = false;
            for (int i = 0; i < nc; i++)
                dup |= cand[i] == found;
            if (dup)
                break;
            cand[nc++] = found;
        }
    }
    G.ndev = 0;
    for (int i = 0; i < nc; i++) {
        char path[SIM_NODES_LEN + 32];
        node_path(path, sizeof path, cand[i]);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
            continue; /* no access to the node: the device does not exist for us */
        close(fd);
        G.ord2dev[G.ndev++] = cand[i];
    }
}

static void fork_child(void)
{
    /* A child starts with no driver state: the parent's contexts, allocations and
     * slot are not its own. It must cuInit again and registers as itself. */
    pthread_mutex_init(&G.lock, NULL);
    atomic_store(&G.inited, 0);
    G.init_err = CUDA_SUCCESS;
    G.said_why = false;
    G.slot = -1;
    G.epoch++;
    G.ndev = 0;
    G.ctxs = NULL;
    G.pools = NULL;
    G.resv = NULL;
    G.vmaps = NULL;
    memset(G.primary, 0, sizeof G.primary);
    memset(G.default_pool, 0, sizeof G.default_pool);
    memset(G.cur_pool, 0, sizeof G.cur_pool);
    memset(G.at, 0, sizeof G.at);
    t_depth = 0;
    atomic_store(&t_ptds_end, 0);
}

__attribute__((constructor)) static void sim_cuda_ctor(void)
{
    pthread_atfork(NULL, NULL, fork_child);
}

__attribute__((destructor)) static void sim_cuda_dtor(void)
{
    /* A process that exits normally frees its entry; a killed one is reclaimed lazily. */
    if (G.st != NULL && G.slot >= 0 && G.pid == getpid()) {
        sim_proc_release(G.st, G.slot);
        G.slot = -1;
    }
}

EXPORT CUresult cuInit(unsigned int flags)
{
    if (flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (ready())
        return CUDA_SUCCESS;
    pthread_mutex_lock(&G.lock);
    CUresult r = CUDA_SUCCESS;
    if (ready())
        goto out;
    if (G.init_err != CUDA_SUCCESS) {
        r = G.init_err;
        goto out;
    }
    const char *why = NULL;
    G.st = sim_map(&why);
    if (G.st == NULL) {
        fprintf(stderr, "%s\n", why);
        r = G.init_err = CUDA_ERROR_NO_DEVICE;
        goto out;
    }
    visible_devices();
    if (G.ndev == 0) {
        fprintf(stderr, "simgpu: no device node could be opened (pattern %s)\n",
                G.st->hdr.device_nodes);
        r = G.init_err = CUDA_ERROR_NO_DEVICE;
        goto out;
    }
    G.pid = getpid();
    G.slot = sim_proc_register(G.st);
    if (G.slot < 0) {
        fprintf(stderr, "simgpu: process table full (%d processes)\n", SIM_MAX_PROCS);
        r = G.init_err = CUDA_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    atomic_store_explicit(&G.inited, 1, memory_order_release);
out:
    pthread_mutex_unlock(&G.lock);
    return r;
}

EXPORT CUresult cuDriverGetVersion(int *v)
{
    if (v == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *v = DRIVER_VERSION;
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------ devices */

EXPORT CUresult cuDeviceGetCount(int *count)
{
    CHECK_INIT();
    if (count == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *count = G.ndev;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGet(CUdevice *dev, int ordinal)
{
    CHECK_INIT();
    if (dev == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(ordinal))
        return CUDA_ERROR_INVALID_DEVICE;
    *dev = ordinal;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice d)
{
    CHECK_INIT();
    if (name == NULL || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, (size_t)len, "%s", G.st->hdr.dev[G.ord2dev[d]].name);
    return CUDA_SUCCESS;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void uuid_bytes(int dev, CUuuid *u)
{
    memset(u, 0, sizeof *u);
    const char *s = G.st->hdr.dev[dev].uuid;
    if (strncmp(s, "GPU-", 4) == 0)
        s += 4;
    int i = 0;
    while (*s != '\0' && i < 32) {
        int v = hexval(*s++);
        if (v < 0)
            continue; /* dashes */
        u->bytes[i / 2] = (char)(u->bytes[i / 2] | (v << ((i % 2) ? 0 : 4)));
        i++;
    }
}

EXPORT CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice d)
{
    CHECK_INIT();
    if (uuid == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    uuid_bytes(G.ord2dev[d], uuid);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice d) { return cuDeviceGetUuid(uuid, d); }

EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d)
{
    CHECK_INIT();
    if (bytes == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    *bytes = G.st->hdr.dev[G.ord2dev[d]].total_mem;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice d)
{
    CHECK_INIT();
    if (pi == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    const struct sim_devcfg *cfg = &G.st->hdr.dev[G.ord2dev[d]];
    int v = 0;
    switch ((int)attrib) {
    // clang-format off: one attribute per line, a table
    case 1: v = 1024; break; /* max threads per block */
    case 2:
    case 3: v = 1024; break;       /* max block dim x, y */
    case 4: v = 64; break;         /* max block dim z */
    case 5: v = 2147483647; break; /* max grid dim x */
    case 6:
    case 7: v = 65535; break;          /* max grid dim y, z */
    case 8: v = 49152; break;          /* shared memory per block */
    case 9: v = 65536; break;          /* constant memory */
    case 10: v = 32; break;            /* warp size */
    case 11: v = 2147483647; break;    /* max pitch */
    case 12: v = 65536; break;         /* registers per block */
    case 13: v = 1980000; break;       /* clock rate kHz */
    case 14: v = 512; break;           /* texture alignment */
    case 15: v = 1; break;             /* gpu overlap */
    case 16: v = (int)cfg->sms; break; /* multiprocessor count */
    case 19: v = 1; break;             /* can map host memory */
    case 31: v = 1; break;             /* concurrent kernels */
    case 32: v = 1; break;             /* ECC enabled */
    case 33: v = (int)cfg->pci_bus; break;
    case 34: v = (int)cfg->pci_device; break;
    case 36: v = 2619000; break;          /* memory clock kHz */
    case 37: v = 5120; break;             /* memory bus width */
    case 38: v = 50 * 1024 * 1024; break; /* L2 */
    case 39: v = 2048; break;             /* max threads per SM */
    case 40: v = 3; break;                /* async engines */
    case 41: v = 1; break;                /* unified addressing */
    case 50: v = (int)cfg->pci_domain; break;
    case 75: v = (int)cfg->cc_major; break;
    case 76: v = (int)cfg->cc_minor; break;
    case 81: v = 233472; break; /* shared memory per SM */
    case 82: v = 65536; break;  /* registers per SM */
    case 83: v = 1; break;      /* managed memory */
    case 89: v = 1; break;      /* concurrent managed access */
    case 95: v = 1; break;      /* cooperative launch */
    case 97: v = 232448; break; /* shared memory per block opt-in */
    case 102: v = 1; break;     /* virtual memory management */
    case 106: v = MAX_BLOCKS_PER_SM; break;
    case 115:
        v = 1;
        break; /* memory pools */
    // clang-format on
    default:
        if ((int)attrib <= 0 || (int)attrib > 140)
            return CUDA_ERROR_INVALID_VALUE;
        v = 0;
    }
    *pi = v;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceComputeCapability(int *major, int *minor, CUdevice d)
{
    CHECK_INIT();
    if (major == NULL || minor == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    *major = (int)G.st->hdr.dev[G.ord2dev[d]].cc_major;
    *minor = (int)G.st->hdr.dev[G.ord2dev[d]].cc_minor;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetPCIBusId(char *pciBusId, int len, CUdevice d)
{
    CHECK_INIT();
    if (pciBusId == NULL || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ord_ok(d))
        return CUDA_ERROR_INVALID_DEVICE;
    const struct sim_devcfg *cfg = &G.st->hdr.dev[G.ord2dev[d]];
    snprintf(pciBusId, (size_t)len, "%04X:%02X:%02X.0", cfg->pci_domain, cfg->pci_bus,
             cfg->pci_device);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetByPCIBusId(CUdevice *dev, const char *pciBusId)
{
    CHECK_INIT();
    if (dev == NULL || pciBusId == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    unsigned dom = 0, bus = 0, devn = 0, fn = 0;
    if (sscanf(pciBusId, "%x:%x:%x.%x", &dom, &bus, &devn, &fn) != 4) {
        dom = 0;
        if (sscanf(pciBusId, "%x:%x.%x", &bus, &devn, &fn) != 3)
            return CUDA_ERROR_INVALID_VALUE;
    }
    for (int o = 0; o < G.ndev; o++) {
        const struct sim_devcfg *cfg = &G.st->hdr.dev[G.ord2dev[o]];
        if (cfg->pci_domain == dom && cfg->pci_bus == bus && cfg->pci_device == devn) {
            *dev = o;
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_INVALID_DEVICE;
}

/* ------------------------------------------------------------------ errors */

struct err_ent {
    int code;
    const char *name;
    const char *str;
};

static const struct err_ent k_errors[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {4, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {200, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {202, "CUDA_ERROR_CONTEXT_ALREADY_CURRENT", "context already current"},
    {215, "CUDA_ERROR_UNSUPPORTED_LIMIT", "limit is not supported on this architecture"},
    {217, "CUDA_ERROR_PEER_ACCESS_UNSUPPORTED",
     "peer access is not supported between these two devices"},
    {218, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {219, "CUDA_ERROR_INVALID_GRAPHICS_CONTEXT", "invalid OpenGL or DirectX context"},
    {300, "CUDA_ERROR_INVALID_SOURCE", "device kernel image is invalid"},
    {301, "CUDA_ERROR_FILE_NOT_FOUND", "file not found"},
    {304, "CUDA_ERROR_OPERATING_SYSTEM", "OS call failed or operation not supported on this OS"},
    {400, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {600, "CUDA_ERROR_NOT_READY", "device not ready"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {705, "CUDA_ERROR_PEER_ACCESS_NOT_ENABLED", "peer access has not been enabled"},
    {708, "CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE", "primary context active"},
    {709, "CUDA_ERROR_CONTEXT_IS_DESTROYED", "context is destroyed"},
    {712, "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED",
     "part or all of the requested memory range is already mapped"},
    {713, "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED",
     "pointer does not correspond to a registered memory region"},
    {720, "CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE", "too many blocks in cooperative launch"},
    {800, "CUDA_ERROR_NOT_PERMITTED", "operation not permitted"},
    {801, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {999, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

static const struct err_ent *err_lookup(CUresult e)
{
    for (size_t i = 0; i < sizeof k_errors / sizeof k_errors[0]; i++)
        if (k_errors[i].code == (int)e)
            return &k_errors[i];
    return NULL;
}

EXPORT CUresult cuGetErrorString(CUresult error, const char **pStr)
{
    if (pStr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    const struct err_ent *e = err_lookup(error);
    *pStr = e ? e->str : NULL;
    return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuGetErrorName(CUresult error, const char **pStr)
{
    if (pStr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    const struct err_ent *e = err_lookup(error);
    *pStr = e ? e->name : NULL;
    return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
