/*
 * testutil.c — the shared helpers of the C test programs (declared, with the
 * protocol they speak, in testutil.h), compiled once into
 * build/testutil/libtestutil.a. Nothing here references a driver symbol: the dl_*
 * programs, which are not linked to libcuda, link it too.
 */
#include "testutil.h"

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------ helpers */

const char *cu_name(CUresult r)
{
    switch ((int)r) {
    case 0: return "CUDA_SUCCESS";
    case 1: return "CUDA_ERROR_INVALID_VALUE";
    case 2: return "CUDA_ERROR_OUT_OF_MEMORY";
    case 3: return "CUDA_ERROR_NOT_INITIALIZED";
    case 100: return "CUDA_ERROR_NO_DEVICE";
    case 101: return "CUDA_ERROR_INVALID_DEVICE";
    case 201: return "CUDA_ERROR_INVALID_CONTEXT";
    case 400: return "CUDA_ERROR_INVALID_HANDLE";
    case 500: return "CUDA_ERROR_NOT_FOUND";
    case 800: return "CUDA_ERROR_NOT_PERMITTED";
    case 801: return "CUDA_ERROR_NOT_SUPPORTED";
    default: return "CUDA_ERROR_OTHER";
    }
}

void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

int phase(int step, const char *name)
{
    say("PHASE %s", name);
    if (!step)
        return 1;
    char buf[256];
    return fgets(buf, sizeof buf, stdin) != NULL;
}

uint64_t parse_size(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        fail("bad size %s", s);
    uint64_t mul = 1;
    switch (*end) {
    // clang-format off: a table of suffixes
    case 'K':
    case 'k':
        mul = 1024ull;
        end++;
        break;
    case 'M':
    case 'm':
        mul = MiB;
        end++;
        break;
    case 'G':
    case 'g':
        mul = GiB;
        end++;
        break;
    case 'T':
    case 't':
        mul = 1024ull * GiB;
        end++;
        break;
    // clang-format on
    case 0: break;
    default: fail("bad size %s", s);
    }
    if (*end == 'i')
        end++;
    if (*end == 'B')
        end++;
    if (*end)
        fail("bad size %s", s);
    return (uint64_t)v * mul;
}

/* ---------------------------------------------------- real symbol (no hooks) */

struct elf_find {
    const char *lib; /* substring of the loaded object's path */
    const char *path;
    uintptr_t base;
};

static int elf_find_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    struct elf_find *f = data;
    if (info->dlpi_name && strstr(info->dlpi_name, f->lib)) {
        f->path = info->dlpi_name;
        f->base = (uintptr_t)info->dlpi_addr;
        return 1;
    }
    return 0;
}

void *real_symbol(const char *lib, const char *name)
{
    struct elf_find f = {.lib = lib};
    dl_iterate_phdr(elf_find_cb, &f);
    if (!f.path)
        fail("real_symbol: %s is not loaded", lib);
    int fd = open(f.path, O_RDONLY);
    if (fd < 0)
        fail("real_symbol: open %s: %s", f.path, strerror(errno));
    struct stat st;
    fstat(fd, &st);
    const uint8_t *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        fail("real_symbol: mmap %s", f.path);
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)m;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(m + eh->e_shoff);
    void *out = NULL;
    for (int i = 0; i < eh->e_shnum && !out; i++) {
        if (sh[i].sh_type != SHT_DYNSYM)
            continue;
        const Elf64_Sym *sym = (const Elf64_Sym *)(m + sh[i].sh_offset);
        const char *strtab = (const char *)(m + sh[sh[i].sh_link].sh_offset);
        size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
        for (size_t k = 0; k < n; k++)
            if (sym[k].st_value && strcmp(strtab + sym[k].st_name, name) == 0) {
                out = (void *)(f.base + sym[k].st_value);
                break;
            }
    }
    munmap((void *)m, (size_t)st.st_size);
    if (!out)
        fail("real_symbol: %s not in %s", name, f.path);
    return out;
}

/* ------------------------------------------------------------ the workload */

typedef CUresult (*gpa_fn)(const char *, void **, int, cuuint64_t);
typedef CUresult (*gpa2_fn)(const char *, void **, int, cuuint64_t,
                            CUdriverProcAddressQueryResult *);

struct resolver {
    enum { R_DLSYM, R_GPA, R_GPA2 } kind;
    void *handle;
    gpa_fn gpa;
    gpa2_fn gpa2;
    int version;
    int ptsz;
};

/* base: the name cuGetProcAddress takes; exact: the exported (versioned) name. */
static void *resolve(struct resolver *r, const char *base, const char *exact, int per_thread)
{
    void *p = NULL;
    if (r->kind == R_DLSYM) {
        char name[128];
        snprintf(name, sizeof name, "%s%s", exact, per_thread && r->ptsz ? "_ptsz" : "");
        p = dlsym(r->handle, name);
        if (!p)
            fail("dlsym(libcuda, %s): %s", name, dlerror());
        return p;
    }
    cuuint64_t flags = per_thread && r->ptsz ? CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
                                             : CU_GET_PROC_ADDRESS_DEFAULT;
    CUresult res;
    if (r->kind == R_GPA) {
        res = r->gpa(base, &p, r->version, flags);
    } else {
        CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
        res = r->gpa2(base, &p, r->version, flags, &st);
        if (res == CUDA_SUCCESS && st != CU_GET_PROC_ADDRESS_SUCCESS)
            fail("cuGetProcAddress_v2(%s, %d): status %d", base, r->version, (int)st);
    }
    if (res != CUDA_SUCCESS || !p)
        fail("cuGetProcAddress(%s, %d, flags %llu) = %d", base, r->version,
             (unsigned long long)flags, (int)res);
    return p;
}

#define RES(field, base, exact, pt) \
    memcpy(&api->field, &(void *){resolve(&r, base, exact, pt)}, sizeof(void *))

void resolve_api(struct cuapi *api, const char *path, int ptsz, linked_resolver linked)
{
    memset(api, 0, sizeof *api);
    if (linked != NULL && strcmp(path, "linked") == 0) {
        linked(api, ptsz);
        return;
    }
    struct resolver r = {.ptsz = ptsz};
    r.handle = dlopen("libcuda.so.1", RTLD_NOW);
    if (!r.handle)
        fail("dlopen libcuda.so.1: %s", dlerror());
    if (strcmp(path, "dlsym") == 0) {
        r.kind = R_DLSYM;
    } else if (strncmp(path, "gpa:", 4) == 0) {
        r.kind = R_GPA;
        r.version = atoi(path + 4);
        r.gpa = (gpa_fn)dlsym(r.handle, "cuGetProcAddress");
    } else if (strncmp(path, "gpa2:", 5) == 0) {
        r.kind = R_GPA2;
        r.version = atoi(path + 5);
        r.gpa2 = (gpa2_fn)dlsym(r.handle, "cuGetProcAddress_v2");
    } else if (strcmp(path, "gpaself") == 0) {
        /* cudart's way: cuGetProcAddress asked for itself at a CUDA 12 version
         * yields cuGetProcAddress_v2. */
        gpa_fn g = (gpa_fn)dlsym(r.handle, "cuGetProcAddress");
        if (!g)
            fail("dlsym cuGetProcAddress");
        void *p = NULL;
        CHECK(g("cuGetProcAddress", &p, 12000, 0));
        memcpy(&r.gpa2, &p, sizeof p);
        r.kind = R_GPA2;
        r.version = 12000;
    } else {
        fail("unknown --path %s", path);
    }
    if ((r.kind == R_GPA && !r.gpa) || (r.kind == R_GPA2 && !r.gpa2))
        fail("no cuGetProcAddress entry point");
    RES(init, "cuInit", "cuInit", 0);
    RES(retain, "cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRetain", 0);
    RES(release, "cuDevicePrimaryCtxRelease", "cuDevicePrimaryCtxRelease_v2", 0);
    /* cuGetProcAddress("cuCtxCreate") gives _v3 from CUDA 11.4 on (as the driver). */
    if (r.kind != R_DLSYM && r.version >= 11040)
        RES(ctx_create3, "cuCtxCreate", "cuCtxCreate_v3", 0);
    else
        RES(ctx_create, "cuCtxCreate", "cuCtxCreate_v2", 0);
    RES(ctx_destroy, "cuCtxDestroy", "cuCtxDestroy_v2", 0);
    RES(set_current, "cuCtxSetCurrent", "cuCtxSetCurrent", 0);
    RES(alloc, "cuMemAlloc", "cuMemAlloc_v2", 0);
    RES(pitch, "cuMemAllocPitch", "cuMemAllocPitch_v2", 0);
    RES(managed, "cuMemAllocManaged", "cuMemAllocManaged", 0);
    RES(mfree, "cuMemFree", "cuMemFree_v2", 0);
    RES(create, "cuMemCreate", "cuMemCreate", 0);
    RES(mrelease, "cuMemRelease", "cuMemRelease", 0);
    RES(reserve, "cuMemAddressReserve", "cuMemAddressReserve", 0);
    RES(addr_free, "cuMemAddressFree", "cuMemAddressFree", 0);
    RES(map, "cuMemMap", "cuMemMap", 0);
    RES(unmap, "cuMemUnmap", "cuMemUnmap", 0);
    RES(set_access, "cuMemSetAccess", "cuMemSetAccess", 0);
    RES(array_create, "cuArrayCreate", "cuArrayCreate_v2", 0);
    RES(array_destroy, "cuArrayDestroy", "cuArrayDestroy", 0);
    RES(alloc_async, "cuMemAllocAsync", "cuMemAllocAsync", 1);
    RES(free_async, "cuMemFreeAsync", "cuMemFreeAsync", 1);
    RES(alloc_pool, "cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync", 1);
    RES(pool_create, "cuMemPoolCreate", "cuMemPoolCreate", 0);
    RES(pool_destroy, "cuMemPoolDestroy", "cuMemPoolDestroy", 0);
    RES(pool_trim, "cuMemPoolTrimTo", "cuMemPoolTrimTo", 0);
    RES(pool_set, "cuMemPoolSetAttribute", "cuMemPoolSetAttribute", 0);
    RES(pool_get, "cuMemPoolGetAttribute", "cuMemPoolGetAttribute", 0);
    RES(stream_sync, "cuStreamSynchronize", "cuStreamSynchronize", 1);
    RES(ctx_sync, "cuCtxSynchronize", "cuCtxSynchronize", 0);
    RES(mem_info, "cuMemGetInfo", "cuMemGetInfo_v2", 0);
    RES(total_mem, "cuDeviceTotalMem", "cuDeviceTotalMem_v2", 0);
    RES(module_load, "cuModuleLoadData", "cuModuleLoadData", 0);
    RES(get_function, "cuModuleGetFunction", "cuModuleGetFunction", 0);
    RES(launch, "cuLaunchKernel", "cuLaunchKernel", 1);
    if (r.kind == R_DLSYM || r.version >= 11060) /* cuLaunchKernelEx is CUDA 11.6 */
        RES(launch_ex, "cuLaunchKernelEx", "cuLaunchKernelEx", 1);
    RES(launch_coop, "cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel", 1);
    RES(graph_launch, "cuGraphLaunch", "cuGraphLaunch", 1);
    RES(ctx_attach, "cuCtxAttach", "cuCtxAttach", 0);
    RES(ctx_detach, "cuCtxDetach", "cuCtxDetach", 0);
    RES(array3d_create, "cuArray3DCreate", "cuArray3DCreate_v2", 0);
    RES(mipmap_create, "cuMipmappedArrayCreate", "cuMipmappedArrayCreate", 0);
    RES(mipmap_destroy, "cuMipmappedArrayDestroy", "cuMipmappedArrayDestroy", 0);
    RES(stream_create, "cuStreamCreate", "cuStreamCreate", 0);
    if (r.kind == R_DLSYM || r.version >= 11040) { /* graph memory nodes are CUDA 11.4 */
        RES(graph_create, "cuGraphCreate", "cuGraphCreate", 0);
        RES(graph_add_alloc, "cuGraphAddMemAllocNode", "cuGraphAddMemAllocNode", 0);
        RES(graph_add_free, "cuGraphAddMemFreeNode", "cuGraphAddMemFreeNode", 0);
        RES(graph_instantiate, "cuGraphInstantiateWithFlags", "cuGraphInstantiateWithFlags", 0);
        RES(graph_exec_destroy, "cuGraphExecDestroy", "cuGraphExecDestroy", 0);
        RES(graph_destroy, "cuGraphDestroy", "cuGraphDestroy", 0);
    }
    RES(set_block_shape, "cuFuncSetBlockShape", "cuFuncSetBlockShape", 0);
    RES(launch_legacy, "cuLaunch", "cuLaunch", 0);
    RES(launch_grid, "cuLaunchGrid", "cuLaunchGrid", 0);
    RES(launch_grid_async, "cuLaunchGridAsync", "cuLaunchGridAsync", 0);
    RES(launch_multi, "cuLaunchCooperativeKernelMultiDevice",
        "cuLaunchCooperativeKernelMultiDevice", 0);
}

void report_hooks(const struct cuapi *api)
{
    static const char *const names[] = {"init",
                                        "retain",
                                        "release",
                                        "ctx_create",
                                        "ctx_create3",
                                        "ctx_destroy",
                                        "set_current",
                                        "alloc",
                                        "pitch",
                                        "managed",
                                        "mfree",
                                        "create",
                                        "mrelease",
                                        "reserve",
                                        "addr_free",
                                        "map",
                                        "unmap",
                                        "set_access",
                                        "array_create",
                                        "array_destroy",
                                        "alloc_async",
                                        "free_async",
                                        "alloc_pool",
                                        "pool_create",
                                        "pool_destroy",
                                        "pool_trim",
                                        "pool_set",
                                        "pool_get",
                                        "stream_sync",
                                        "ctx_sync",
                                        "mem_info",
                                        "total_mem",
                                        "module_load",
                                        "get_function",
                                        "launch",
                                        "launch_ex",
                                        "launch_coop",
                                        "graph_launch",
                                        "ctx_attach",
                                        "ctx_detach",
                                        "array3d_create",
                                        "mipmap_create",
                                        "mipmap_destroy",
                                        "stream_create",
                                        "graph_create",
                                        "graph_add_alloc",
                                        "graph_add_free",
                                        "graph_instantiate",
                                        "graph_exec_destroy",
                                        "graph_destroy",
                                        "set_block_shape",
                                        "launch_legacy",
                                        "launch_grid",
                                        "launch_grid_async",
                                        "launch_multi"};
    _Static_assert(sizeof names / sizeof names[0] == sizeof(struct cuapi) / sizeof(void *),
                   "one name per entry point");
    char vg[4096] = "", drv[2048] = "";
    void *const *fp = (void *const *)api;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!fp[i])
            continue;
        Dl_info info;
        const char *obj = dladdr(fp[i], &info) && info.dli_fname ? info.dli_fname : "?";
        int ours = strstr(obj, "libvgpu") != NULL;
        char *dst = ours ? vg : drv;
        size_t len = strlen(dst);
        snprintf(dst + len, (ours ? sizeof vg : sizeof drv) - len, "%s%s%s%s", len ? "," : "",
                 names[i], ours ? ":" : "", ours ? (info.dli_sname ? info.dli_sname : "?") : "");
    }
    say("HOOKS vgpu=%s driver=%s", vg, drv);
}

/* One live allocation of the workload, whatever API made it. */
struct block {
    CUdeviceptr ptr;
    CUmemGenericAllocationHandle handle; /* vmm */
    CUarray array;                       /* array, array3d */
    CUmipmappedArray mipmap;
    CUgraph graph; /* graphmem */
    CUgraphExec exec;
    size_t size;
};

struct workload {
    struct cuapi api;
    const char *kind; /* alloc pitch managed vmm array array3d mipmap graphmem async pool
                         pooltrim */
    CUmemoryPool pool;
    CUstream stream; /* NULL: the default stream (legacy, or per-thread with --ptsz) */
};

static CUresult wl_alloc(struct workload *w, struct block *b, size_t size)
{
    struct cuapi *a = &w->api;
    memset(b, 0, sizeof *b);
    b->size = size;
    const char *k = w->kind;
    if (strcmp(k, "alloc") == 0)
        return a->alloc(&b->ptr, size);
    if (strcmp(k, "managed") == 0)
        return a->managed(&b->ptr, size, CU_MEM_ATTACH_GLOBAL);
    if (strcmp(k, "pitch") == 0) {
        /* width 4000 B -> pitch 4096 B: size/4096 rows make exactly `size` bytes. */
        size_t pitch = 0;
        CUresult r = a->pitch(&b->ptr, &pitch, 4000, size / 4096, 4);
        if (r == CUDA_SUCCESS && pitch * (size / 4096) != size)
            fail("pitch %zu for width 4000: footprint %zu != %zu", pitch, pitch * (size / 4096),
                 size);
        return r;
    }
    if (strcmp(k, "array") == 0) {
        /* float4 (16 B) x 4096 wide = 64 KiB rows: size/64KiB rows. */
        CUDA_ARRAY_DESCRIPTOR d = {
            .Width = 4096, .Height = size / 65536, .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 4};
        return a->array_create(&b->array, &d);
    }
    if (strcmp(k, "array3d") == 0) {
        /* float4 x 4096 wide = 64 KiB rows, 32 rows: 2 MiB per slice; size/2MiB deep. */
        CUDA_ARRAY3D_DESCRIPTOR d = {.Width = 4096,
                                     .Height = 32,
                                     .Depth = size / (2 * MiB),
                                     .Format = CU_AD_FORMAT_FLOAT,
                                     .NumChannels = 4};
        return a->array3d_create(&b->array, &d);
    }
    if (strcmp(k, "mipmap") == 0) {
        /* A layered 4096 x 1 float4 mipmap of 9 levels: rows of 64, 32, ..., 1 KiB,
         * then 512 B twice (a row never takes less) = 128 KiB per layer; size/128KiB
         * layers (512 for 64 MiB). */
        CUDA_ARRAY3D_DESCRIPTOR d = {.Width = 4096,
                                     .Height = 1,
                                     .Depth = size / (128 * 1024),
                                     .Format = CU_AD_FORMAT_FLOAT,
                                     .NumChannels = 4,
                                     .Flags = CUDA_ARRAY3D_LAYERED};
        return a->mipmap_create(&b->mipmap, &d, 9);
    }
    if (strcmp(k, "graphmem") == 0) {
        /* A graph that allocates `size` bytes and frees them, instantiated and
         * launched once: the executable graph then holds its memory. */
        if (!a->graph_create)
            fail("--api graphmem needs CUDA 11.4 entry points (this path has none)");
        CHECK(a->graph_create(&b->graph, 0));
        CUDA_MEM_ALLOC_NODE_PARAMS mp;
        memset(&mp, 0, sizeof mp);
        mp.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
        mp.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        mp.poolProps.location.id = 0;
        mp.bytesize = size;
        CUgraphNode an, fn;
        CHECK(a->graph_add_alloc(&an, b->graph, NULL, 0, &mp));
        CHECK(a->graph_add_free(&fn, b->graph, &an, 1, mp.dptr));
        CUresult r = a->graph_instantiate(&b->exec, b->graph, 0);
        if (r == CUDA_SUCCESS)
            r = a->graph_launch(b->exec, w->stream);
        if (r == CUDA_SUCCESS)
            r = a->stream_sync(w->stream);
        if (r != CUDA_SUCCESS) {
            if (b->exec)
                a->graph_exec_destroy(b->exec);
            a->graph_destroy(b->graph);
        }
        return r;
    }
    if (strcmp(k, "vmm") == 0) {
        CUmemAllocationProp prop;
        memset(&prop, 0, sizeof prop);
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = 0;
        CUresult r = a->create(&b->handle, size, &prop, 0);
        if (r != CUDA_SUCCESS)
            return r;
        /* As PyTorch's expandable segments do: reserve VA, map, grant access. */
        CHECK(a->reserve(&b->ptr, size, 0, 0, 0));
        CHECK(a->map(b->ptr, size, 0, b->handle, 0));
        CUmemAccessDesc acc = {.location = {CU_MEM_LOCATION_TYPE_DEVICE, 0},
                               .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
        CHECK(a->set_access(b->ptr, size, &acc, 1));
        return r;
    }
    if (strcmp(k, "async") == 0)
        return a->alloc_async(&b->ptr, size, w->stream);
    if (strcmp(k, "pool") == 0 || strcmp(k, "pooltrim") == 0)
        return a->alloc_pool(&b->ptr, size, w->pool, w->stream);
    fail("unknown --api %s", k);
}

static void wl_free(struct workload *w, struct block *b)
{
    struct cuapi *a = &w->api;
    const char *k = w->kind;
    if (strcmp(k, "array") == 0 || strcmp(k, "array3d") == 0) {
        CHECK(a->array_destroy(b->array));
    } else if (strcmp(k, "mipmap") == 0) {
        CHECK(a->mipmap_destroy(b->mipmap));
    } else if (strcmp(k, "graphmem") == 0) {
        CHECK(a->graph_exec_destroy(b->exec));
        CHECK(a->graph_destroy(b->graph));
    } else if (strcmp(k, "vmm") == 0) {
        CHECK(a->unmap(b->ptr, b->size));
        CHECK(a->mrelease(b->handle));
        CHECK(a->addr_free(b->ptr, b->size));
    } else if (strcmp(k, "async") == 0 || strcmp(k, "pool") == 0 || strcmp(k, "pooltrim") == 0) {
        CHECK(a->free_async(b->ptr, w->stream));
    } else {
        CHECK(a->mfree(b->ptr));
    }
}

static void wl_setup(struct workload *w)
{
    struct cuapi *a = &w->api;
    if (strcmp(w->kind, "pool") == 0 || strcmp(w->kind, "pooltrim") == 0) {
        CUmemPoolProps props;
        memset(&props, 0, sizeof props);
        props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
        props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        props.location.id = 0;
        CHECK(a->pool_create(&w->pool, &props));
        if (strcmp(w->kind, "pooltrim") == 0) {
            /* Keep freed memory reserved across synchronizations, as caching
             * allocators configure their pools; only a trim gives it back. */
            cuuint64_t keep = UINT64_MAX;
            CHECK(a->pool_set(w->pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep));
        }
    }
}

static uint64_t wl_pool_reserved(struct workload *w)
{
    cuuint64_t v = 0;
    if (w->pool)
        CHECK(w->api.pool_get(w->pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &v));
    return v;
}

static void wl_usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--path P] [--ptsz] --api A [--chunk SIZE] [--count N | --until-oom]\n"
            "          [--ctx primary|create|attach] [--step] [--no-free] [--launch]\n"
            "          [--ignore-init] [--drop-ctx] [--destroy-pool-first]\n"
            "  P: linked dlsym gpa:VER gpa2:VER gpaself\n"
            "  A: alloc pitch managed vmm array array3d mipmap graphmem async pool pooltrim\n",
            prog);
    exit(2);
}

/* Lets the workload's context go: destroyed (--ctx create), its two usage counts
 * detached (--ctx attach: "detached_once" between them), or the primary released. */
static void wl_drop_ctx(struct cuapi *a, const char *ctxmode, CUcontext ctx, int step)
{
    if (!strcmp(ctxmode, "create")) {
        CHECK(a->ctx_destroy(ctx));
    } else if (!strcmp(ctxmode, "attach")) {
        CHECK(a->ctx_detach(ctx));
        phase(step, "detached_once");
        CHECK(a->ctx_detach(ctx));
    } else {
        CHECK(a->release(0));
    }
}

/* The workload (testutil.h). */
int workload_main(int argc, char **argv, linked_resolver linked)
{
    const char *path = "dlsym", *ctxmode = "primary";
    struct workload w;
    memset(&w, 0, sizeof w);
    uint64_t chunk = 64 * MiB;
    long count = 1;
    int until_oom = 0, step = 0, ptsz = 0, no_free = 0, launch = 0, ignore_init = 0;
    int drop_ctx = 0, destroy_pool_first = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        // clang-format off: one option per line
        if (!strcmp(a, "--path") && v) {
            path = v;
            i++;
        } else if (!strcmp(a, "--api") && v) {
            w.kind = v;
            i++;
        } else if (!strcmp(a, "--chunk") && v) {
            chunk = parse_size(v);
            i++;
        } else if (!strcmp(a, "--count") && v) {
            count = atol(v);
            i++;
        } else if (!strcmp(a, "--ctx") && v) {
            ctxmode = v;
            i++;
        } else if (!strcmp(a, "--until-oom"))
            until_oom = 1;
        else if (!strcmp(a, "--step"))
            step = 1;
        else if (!strcmp(a, "--ptsz"))
            ptsz = 1;
        else if (!strcmp(a, "--no-free"))
            no_free = 1;
        else if (!strcmp(a, "--launch"))
            launch = 1;
        else if (!strcmp(a, "--ignore-init"))
            ignore_init = 1;
        else if (!strcmp(a, "--drop-ctx"))
            drop_ctx = 1;
        else if (!strcmp(a, "--destroy-pool-first"))
            destroy_pool_first = 1;
        else
            wl_usage(argv[0]);
        // clang-format on
    }
    if (!w.kind)
        wl_usage(argv[0]);
    resolve_api(&w.api, path, ptsz, linked);
    struct cuapi *a = &w.api;
    report_hooks(a);

    CUresult r = a->init(0);
    if (r != CUDA_SUCCESS) {
        say("INIT err=%d name=%s", (int)r, cu_name(r));
        if (!ignore_init)
            return 4;
        /* Refuse mode: every hooked allocation must now say OUT_OF_MEMORY. */
        CUdeviceptr p = 0;
        r = a->alloc(&p, chunk);
        say("RESULT admitted=0 count=0 err=%d name=%s", (int)r, cu_name(r));
        return 4;
    }
    CUcontext ctx = NULL;
    int created = !strcmp(ctxmode, "create") || !strcmp(ctxmode, "attach");
    if (created) {
        if (a->ctx_create3)
            CHECK(a->ctx_create3(&ctx, NULL, 0, 0, 0));
        else
            CHECK(a->ctx_create(&ctx, 0, 0));
        if (!strcmp(ctxmode, "attach")) {
            /* pycuda's way: one more usage count, dropped by cuCtxDetach. */
            CUcontext again = NULL;
            CHECK(a->ctx_attach(&again, 0));
            if (again != ctx)
                fail("cuCtxAttach handed back %p, not the current context %p", (void *)again,
                     (void *)ctx);
        }
    } else {
        CHECK(a->retain(&ctx, 0));
        CHECK(a->set_current(ctx));
    }
    wl_setup(&w);
    if (!phase(step, "ready"))
        return 0;

    size_t cap = until_oom ? 4096 : (size_t)count;
    struct block *blocks = calloc(cap ? cap : 1, sizeof *blocks);
    size_t n = 0;
    uint64_t admitted = 0;
    r = CUDA_SUCCESS;
    while (n < cap) {
        r = wl_alloc(&w, &blocks[n], chunk);
        if (r != CUDA_SUCCESS)
            break;
        admitted += chunk;
        n++;
        if (!until_oom && (long)n == count)
            break;
    }
    if (!until_oom && r != CUDA_SUCCESS)
        fail("allocation %zu of %llu bytes (--api %s --path %s) = %d (%s)", n + 1,
             (unsigned long long)chunk, w.kind, path, (int)r, cu_name(r));
    say("RESULT admitted=%llu count=%zu err=%d name=%s pool_reserved=%llu",
        (unsigned long long)admitted, n, (int)r, cu_name(r),
        (unsigned long long)wl_pool_reserved(&w));
    if (launch) {
        CUmodule mod;
        CUfunction fn;
        static const char image[] = "vgpu-test-kernel";
        CHECK(a->module_load(&mod, image));
        CHECK(a->get_function(&fn, mod, "k"));
        CHECK(a->launch(fn, 4, 1, 1, 32, 1, 1, 0, w.stream, NULL, NULL));
        CUlaunchConfig cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.gridDimX = cfg.gridDimY = cfg.gridDimZ = 1;
        cfg.blockDimX = 32;
        cfg.blockDimY = cfg.blockDimZ = 1;
        cfg.hStream = w.stream;
        int nl = 2;
        if (a->launch_ex) {
            CHECK(a->launch_ex(&cfg, fn, NULL, NULL));
            nl++;
        }
        CHECK(a->launch_coop(fn, 2, 1, 1, 32, 1, 1, 0, w.stream, NULL));
        /* The pre-4.0 launches and the multi-device cooperative launch (one device,
         * on a created stream, as it requires). */
        CHECK(a->set_block_shape(fn, 32, 1, 1));
        CHECK(a->launch_legacy(fn));
        CHECK(a->launch_grid(fn, 2, 1));
        CHECK(a->launch_grid_async(fn, 2, 1, w.stream));
        CUstream ms;
        CHECK(a->stream_create(&ms, 0));
        CUDA_LAUNCH_PARAMS lp = {.function = fn,
                                 .gridDimX = 2,
                                 .gridDimY = 1,
                                 .gridDimZ = 1,
                                 .blockDimX = 32,
                                 .blockDimY = 1,
                                 .blockDimZ = 1,
                                 .hStream = ms};
        CHECK(a->launch_multi(&lp, 1, 0));
        nl += 4;
        CHECK(a->stream_sync(ms));
        CHECK(a->stream_sync(w.stream));
        say("LAUNCHED n=%d", nl);
    }
    if (!phase(step, "allocated"))
        return 0;
    if (no_free)
        return 0; /* exit holding everything: the exit path must return it */
    if (drop_ctx) {
        /* Tear the context down with the blocks still allocated: the driver frees
         * them with it. */
        wl_drop_ctx(a, ctxmode, ctx, step);
        phase(step, "released");
        return 0;
    }
    if (destroy_pool_first && w.pool) {
        /* A pool destroyed with blocks still out lives on until they come back. */
        CHECK(a->pool_destroy(w.pool));
        w.pool = NULL;
        if (!phase(step, "pool_destroyed"))
            return 0;
    }

    for (size_t i = 0; i < n; i++)
        wl_free(&w, &blocks[i]);
    CHECK(a->stream_sync(w.stream));
    say("FREED pool_reserved=%llu", (unsigned long long)wl_pool_reserved(&w));
    if (!phase(step, "freed"))
        return 0;
    if (w.pool && !strcmp(w.kind, "pooltrim")) {
        CHECK(a->pool_trim(w.pool, 0));
        say("TRIMMED pool_reserved=%llu", (unsigned long long)wl_pool_reserved(&w));
        if (!phase(step, "trimmed"))
            return 0;
    }
    if (w.pool)
        CHECK(a->pool_destroy(w.pool));
    wl_drop_ctx(a, ctxmode, ctx, step);
    phase(step, "released");
    free(blocks);
    if (until_oom && r != CUDA_ERROR_OUT_OF_MEMORY)
        return 3;
    return 0;
}
