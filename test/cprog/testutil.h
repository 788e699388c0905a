/*
 * testutil.h — shared helpers of the C test programs (test/cprog/NAME.c).
 *
 * The programs are driven by the Go integration tests (test/integration): each one
 * prints what it did as "KEY k=v ..." lines on stdout, and, when asked to step
 * (--step), stops at named phases ("PHASE name") and waits for a line on stdin so
 * the test can inspect the usage region and the simulated driver while the process
 * holds memory. Failures print "FAIL ..." on stderr and exit 1.
 *
 * The same binaries run against the simulated driver (LD_LIBRARY_PATH=build/simgpu)
 * and a real one: nothing here depends on the simulation.
 *
 * Optional parts, enabled by defining before the include:
 *   VGPU_TEST_WORKLOAD  the allocation workload shared by alloc.c and dl_alloc.c
 *                       (entry points resolved through a chosen interception path;
 *                       vmm_escape.c uses only its resolve_api / report_hooks)
 *   VGPU_TEST_LINKED    the program is linked to libcuda (enables --path linked)
 *   VGPU_TEST_ELF       real_symbol(): a driver symbol's address read from the ELF
 *                       file, bypassing every interposer (to test what libvgpu does
 *                       with memory it never saw)
 */
#ifndef VGPU_TESTUTIL_H
#define VGPU_TESTUTIL_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vgpu_cuda.h"

#define MiB (1024ull * 1024ull)
#define GiB (1024ull * MiB)

/* --------------------------------------------------------------- prototypes */

/* Driver entry points under their exported (versioned) names: the real cuda.h
 * #defines cuMemAlloc -> cuMemAlloc_v2 etc.; we name the versions directly. Only
 * programs linked to libcuda (not dl_*) may call these. */
CUresult cuInit(unsigned int);
CUresult cuDeviceGet(CUdevice *, int);
CUresult cuDeviceGetCount(int *);
CUresult cuDeviceTotalMem_v2(size_t *, CUdevice);
CUresult cuDevicePrimaryCtxRetain(CUcontext *, CUdevice);
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice);
CUresult cuCtxCreate_v2(CUcontext *, unsigned int, CUdevice);
CUresult cuCtxDestroy_v2(CUcontext);
CUresult cuCtxSetCurrent(CUcontext);
CUresult cuCtxGetCurrent(CUcontext *);
CUresult cuCtxSynchronize(void);
CUresult cuMemAlloc_v2(CUdeviceptr *, size_t);
CUresult cuMemAllocPitch_v2(CUdeviceptr *, size_t *, size_t, size_t, unsigned int);
CUresult cuMemAllocManaged(CUdeviceptr *, size_t, unsigned int);
CUresult cuMemFree_v2(CUdeviceptr);
CUresult cuMemGetInfo_v2(size_t *, size_t *);
CUresult cuMemAddressReserve(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
CUresult cuMemAddressFree(CUdeviceptr, size_t);
CUresult cuMemCreate(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                     unsigned long long);
CUresult cuMemRelease(CUmemGenericAllocationHandle);
CUresult cuMemMap(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
CUresult cuMemUnmap(CUdeviceptr, size_t);
CUresult cuMemSetAccess(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
CUresult cuArrayCreate_v2(CUarray *, const CUDA_ARRAY_DESCRIPTOR *);
CUresult cuArrayDestroy(CUarray);
CUresult cuMemAllocAsync(CUdeviceptr *, size_t, CUstream);
CUresult cuMemAllocAsync_ptsz(CUdeviceptr *, size_t, CUstream);
CUresult cuMemFreeAsync(CUdeviceptr, CUstream);
CUresult cuMemFreeAsync_ptsz(CUdeviceptr, CUstream);
CUresult cuMemAllocFromPoolAsync(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
CUresult cuMemPoolCreate(CUmemoryPool *, const CUmemPoolProps *);
CUresult cuMemPoolDestroy(CUmemoryPool);
CUresult cuMemPoolTrimTo(CUmemoryPool, size_t);
CUresult cuMemPoolSetAttribute(CUmemoryPool, CUmemPool_attribute, void *);
CUresult cuMemPoolGetAttribute(CUmemoryPool, CUmemPool_attribute, void *);
CUresult cuStreamSynchronize(CUstream);
CUresult cuStreamSynchronize_ptsz(CUstream);
CUresult cuModuleLoadData(CUmodule *, const void *);
CUresult cuModuleGetFunction(CUfunction *, CUmodule, const char *);
CUresult cuLaunchKernel(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                        unsigned int, unsigned int, unsigned int, CUstream, void **, void **);
CUresult cuLaunchKernel_ptsz(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                             unsigned int, unsigned int, unsigned int, CUstream, void **, void **);
CUresult cuLaunchKernelEx(const CUlaunchConfig *, CUfunction, void **, void **);
CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *, CUfunction, void **, void **);
CUresult cuLaunchCooperativeKernel(CUfunction, unsigned int, unsigned int, unsigned int,
                                   unsigned int, unsigned int, unsigned int, unsigned int,
                                   CUstream, void **);
CUresult cuLaunchCooperativeKernel_ptsz(CUfunction, unsigned int, unsigned int, unsigned int,
                                        unsigned int, unsigned int, unsigned int, unsigned int,
                                        CUstream, void **);
CUresult cuGraphLaunch(CUgraphExec, CUstream);
CUresult cuGraphLaunch_ptsz(CUgraphExec, CUstream);
CUresult cuGetProcAddress(const char *, void **, int, cuuint64_t);
CUresult cuGetProcAddress_v2(const char *, void **, int, cuuint64_t,
                             CUdriverProcAddressQueryResult *);

nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlShutdown(void);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t *);
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t, nvmlMemory_v2_t *);

/* ------------------------------------------------------------------ helpers */

/* Names of the codes the tests look at; kept here (not cuGetErrorName) so a
 * dl_* program can print them without resolving anything. */
static inline const char *cu_name(CUresult r)
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

__attribute__((format(printf, 1, 2), noreturn)) static inline void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

#define CHECK(call)                                                                     \
    do {                                                                                \
        CUresult r_ = (call);                                                           \
        if (r_ != CUDA_SUCCESS)                                                         \
            fail("%s:%d: %s = %d (%s)", __FILE__, __LINE__, #call, (int)r_, cu_name(r_)); \
    } while (0)

#define NVCHECK(call)                                                       \
    do {                                                                    \
        nvmlReturn_t r_ = (call);                                           \
        if (r_ != NVML_SUCCESS)                                             \
            fail("%s:%d: %s = %d", __FILE__, __LINE__, #call, (int)r_);     \
    } while (0)

/* Prints one protocol line and flushes it (stdout is a pipe in the tests). */
__attribute__((format(printf, 1, 2))) static inline void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* "PHASE name", then waits for one line on stdin when stepping. Returns 0 at EOF. */
static inline int phase(int step, const char *name)
{
    say("PHASE %s", name);
    if (!step)
        return 1;
    char buf[256];
    return fgets(buf, sizeof buf, stdin) != NULL;
}

/* "64MiB", "2GiB", "512K", "4096" -> bytes (binary units). */
static inline uint64_t parse_size(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        fail("bad size %s", s);
    uint64_t mul = 1;
    switch (*end) {
    case 'K': case 'k': mul = 1024ull; end++; break;
    case 'M': case 'm': mul = MiB; end++; break;
    case 'G': case 'g': mul = GiB; end++; break;
    case 'T': case 't': mul = 1024ull * GiB; end++; break;
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
#ifdef VGPU_TEST_ELF
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>

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

/* Address of `name` in the loaded library whose path contains `lib`, read from the
 * library's own .dynsym on disk: no dlsym, so no interposer sees the lookup. */
static inline void *real_symbol(const char *lib, const char *name)
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
#endif /* VGPU_TEST_ELF */

/* ------------------------------------------------------------ the workload */
#ifdef VGPU_TEST_WORKLOAD

/*
 * Entry points the workload calls, resolved through one interception path:
 *   linked     the symbols the program is linked against (VGPU_TEST_LINKED only)
 *   dlsym      dlsym on a dlopen("libcuda.so.1") handle, exact versioned names
 *   gpa:VER    cuGetProcAddress (itself from dlsym) with base names at CUDA VER
 *   gpa2:VER   cuGetProcAddress_v2 (from dlsym) with base names at CUDA VER
 *   gpaself    cuGetProcAddress("cuGetProcAddress", 12000) -> _v2, then as gpa2:12000
 * --ptsz selects the per-thread default stream variants (_ptsz names, or the
 * CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM flag).
 */
struct cuapi {
    CUresult (*init)(unsigned int);
    CUresult (*retain)(CUcontext *, CUdevice);
    CUresult (*release)(CUdevice);
    CUresult (*ctx_create)(CUcontext *, unsigned int, CUdevice);               /* _v2 form */
    CUresult (*ctx_create3)(CUcontext *, void *, int, unsigned int, CUdevice); /* _v3 form */
    CUresult (*ctx_destroy)(CUcontext);
    CUresult (*set_current)(CUcontext);
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*pitch)(CUdeviceptr *, size_t *, size_t, size_t, unsigned int);
    CUresult (*managed)(CUdeviceptr *, size_t, unsigned int);
    CUresult (*mfree)(CUdeviceptr);
    CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                       unsigned long long);
    CUresult (*mrelease)(CUmemGenericAllocationHandle);
    CUresult (*reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
    CUresult (*addr_free)(CUdeviceptr, size_t);
    CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
    CUresult (*unmap)(CUdeviceptr, size_t);
    CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
    CUresult (*array_create)(CUarray *, const CUDA_ARRAY_DESCRIPTOR *);
    CUresult (*array_destroy)(CUarray);
    CUresult (*alloc_async)(CUdeviceptr *, size_t, CUstream);
    CUresult (*free_async)(CUdeviceptr, CUstream);
    CUresult (*alloc_pool)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
    CUresult (*pool_create)(CUmemoryPool *, const CUmemPoolProps *);
    CUresult (*pool_destroy)(CUmemoryPool);
    CUresult (*pool_trim)(CUmemoryPool, size_t);
    CUresult (*pool_set)(CUmemoryPool, CUmemPool_attribute, void *);
    CUresult (*pool_get)(CUmemoryPool, CUmemPool_attribute, void *);
    CUresult (*stream_sync)(CUstream);
    CUresult (*ctx_sync)(void);
    CUresult (*mem_info)(size_t *, size_t *);
    CUresult (*total_mem)(size_t *, CUdevice);
    CUresult (*module_load)(CUmodule *, const void *);
    CUresult (*get_function)(CUfunction *, CUmodule, const char *);
    CUresult (*launch)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                       unsigned int, unsigned int, unsigned int, CUstream, void **, void **);
    CUresult (*launch_ex)(const CUlaunchConfig *, CUfunction, void **, void **);
    CUresult (*launch_coop)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                            unsigned int, unsigned int, unsigned int, CUstream, void **);
    CUresult (*graph_launch)(CUgraphExec, CUstream);
};

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

#define RES(field, base, exact, pt) memcpy(&api->field, &(void *){resolve(&r, base, exact, pt)}, sizeof(void *))

static void resolve_api(struct cuapi *api, const char *path, int ptsz)
{
    memset(api, 0, sizeof *api);
#ifdef VGPU_TEST_LINKED
    if (strcmp(path, "linked") == 0) {
        api->init = cuInit;
        api->retain = cuDevicePrimaryCtxRetain;
        api->release = cuDevicePrimaryCtxRelease_v2;
        api->ctx_create = cuCtxCreate_v2;
        api->ctx_destroy = cuCtxDestroy_v2;
        api->set_current = cuCtxSetCurrent;
        api->alloc = cuMemAlloc_v2;
        api->pitch = cuMemAllocPitch_v2;
        api->managed = cuMemAllocManaged;
        api->mfree = cuMemFree_v2;
        api->create = cuMemCreate;
        api->mrelease = cuMemRelease;
        api->reserve = cuMemAddressReserve;
        api->addr_free = cuMemAddressFree;
        api->map = cuMemMap;
        api->unmap = cuMemUnmap;
        api->set_access = cuMemSetAccess;
        api->array_create = cuArrayCreate_v2;
        api->array_destroy = cuArrayDestroy;
        api->alloc_async = ptsz ? cuMemAllocAsync_ptsz : cuMemAllocAsync;
        api->free_async = ptsz ? cuMemFreeAsync_ptsz : cuMemFreeAsync;
        api->alloc_pool = ptsz ? cuMemAllocFromPoolAsync_ptsz : cuMemAllocFromPoolAsync;
        api->pool_create = cuMemPoolCreate;
        api->pool_destroy = cuMemPoolDestroy;
        api->pool_trim = cuMemPoolTrimTo;
        api->pool_set = cuMemPoolSetAttribute;
        api->pool_get = cuMemPoolGetAttribute;
        api->stream_sync = ptsz ? cuStreamSynchronize_ptsz : cuStreamSynchronize;
        api->ctx_sync = cuCtxSynchronize;
        api->mem_info = cuMemGetInfo_v2;
        api->total_mem = cuDeviceTotalMem_v2;
        api->module_load = cuModuleLoadData;
        api->get_function = cuModuleGetFunction;
        api->launch = ptsz ? cuLaunchKernel_ptsz : cuLaunchKernel;
        api->launch_ex = ptsz ? cuLaunchKernelEx_ptsz : cuLaunchKernelEx;
        api->launch_coop = ptsz ? cuLaunchCooperativeKernel_ptsz : cuLaunchCooperativeKernel;
        api->graph_launch = ptsz ? cuGraphLaunch_ptsz : cuGraphLaunch;
        return;
    }
#endif
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
}

/* Which object each resolved entry point lives in:
 *   "HOOKS vgpu=field:symbol,... driver=field,..."
 * (symbol: the libvgpu export it resolved to, e.g. alloc_async:cuMemAllocAsync_ptsz).
 * The test checks that every entry point libvgpu hooks came back as the right
 * hook on this path, and the others as the driver's own. */
static void report_hooks(const struct cuapi *api)
{
    static const char *const names[] = {
        "init", "retain", "release", "ctx_create", "ctx_create3", "ctx_destroy", "set_current",
        "alloc", "pitch", "managed", "mfree", "create", "mrelease", "reserve", "addr_free",
        "map", "unmap", "set_access", "array_create", "array_destroy", "alloc_async",
        "free_async", "alloc_pool", "pool_create", "pool_destroy", "pool_trim", "pool_set",
        "pool_get", "stream_sync", "ctx_sync", "mem_info", "total_mem", "module_load",
        "get_function", "launch", "launch_ex", "launch_coop", "graph_launch"};
    _Static_assert(sizeof names / sizeof names[0] == sizeof(struct cuapi) / sizeof(void *),
                   "one name per entry point");
    char vg[2048] = "", drv[1024] = "";
    void *const *fp = (void *const *)api;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!fp[i])
            continue;
        Dl_info info;
        const char *obj = dladdr(fp[i], &info) && info.dli_fname ? info.dli_fname : "?";
        int ours = strstr(obj, "libvgpu") != NULL;
        char *dst = ours ? vg : drv;
        size_t len = strlen(dst);
        snprintf(dst + len, (ours ? sizeof vg : sizeof drv) - len, "%s%s%s%s", len ? "," : "", names[i], ours ? ":" : "",
                 ours ? (info.dli_sname ? info.dli_sname : "?") : "");
    }
    say("HOOKS vgpu=%s driver=%s", vg, drv);
}

/* One live allocation of the workload, whatever API made it. */
struct block {
    CUdeviceptr ptr;
    CUmemGenericAllocationHandle handle; /* vmm */
    CUarray array;
    size_t size;
};

struct workload {
    struct cuapi api;
    const char *kind; /* alloc pitch managed vmm array async pool pooltrim */
    CUmemoryPool pool;
    CUstream stream;  /* NULL: the default stream (legacy, or per-thread with --ptsz) */
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
            fail("pitch %zu for width 4000: footprint %zu != %zu", pitch, pitch * (size / 4096), size);
        return r;
    }
    if (strcmp(k, "array") == 0) {
        /* float4 (16 B) x 4096 wide = 64 KiB rows: size/64KiB rows. */
        CUDA_ARRAY_DESCRIPTOR d = {.Width = 4096, .Height = size / 65536,
                                   .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 4};
        return a->array_create(&b->array, &d);
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
    if (strcmp(k, "array") == 0) {
        CHECK(a->array_destroy(b->array));
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
            "          [--ctx primary|create] [--step] [--no-free] [--launch] [--ignore-init]\n"
            "          [--drop-ctx] [--destroy-pool-first]\n"
            "  P: linked dlsym gpa:VER gpa2:VER gpaself\n"
            "  A: alloc pitch managed vmm array async pool pooltrim\n",
            prog);
    exit(2);
}

/*
 * The workload: initialize, take a context, allocate --count chunks (or until the
 * first error with --until-oom), report, free everything (synchronizing so pools
 * give memory back), drop the context, exit. Phases (with --step the program
 * waits for a line on stdin at each):
 *   ready      context held, nothing allocated
 *   allocated  the chunks are held ("RESULT ..." printed just before)
 *   pool_destroyed  --destroy-pool-first: the pool destroyed, its blocks still out
 *   freed      everything freed and synchronized (context still held)
 *   trimmed    pooltrim only: after cuMemPoolTrimTo(pool, 0)
 *   released   context released (with --drop-ctx: right after "allocated", the
 *              blocks never freed — destroying the context frees them)
 * Exit status: 0 when the run went as asked (with --until-oom: it stopped on
 * CUDA_ERROR_OUT_OF_MEMORY), 3 when --until-oom stopped on another error, 4 when
 * cuInit failed (the error is printed as "INIT err=N name=...").
 */
/* unused: a program may include the workload only for resolve_api / report_hooks. */
__attribute__((unused)) static int workload_main(int argc, char **argv)
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
        if (!strcmp(a, "--path") && v) { path = v; i++; }
        else if (!strcmp(a, "--api") && v) { w.kind = v; i++; }
        else if (!strcmp(a, "--chunk") && v) { chunk = parse_size(v); i++; }
        else if (!strcmp(a, "--count") && v) { count = atol(v); i++; }
        else if (!strcmp(a, "--ctx") && v) { ctxmode = v; i++; }
        else if (!strcmp(a, "--until-oom")) until_oom = 1;
        else if (!strcmp(a, "--step")) step = 1;
        else if (!strcmp(a, "--ptsz")) ptsz = 1;
        else if (!strcmp(a, "--no-free")) no_free = 1;
        else if (!strcmp(a, "--launch")) launch = 1;
        else if (!strcmp(a, "--ignore-init")) ignore_init = 1;
        else if (!strcmp(a, "--drop-ctx")) drop_ctx = 1;
        else if (!strcmp(a, "--destroy-pool-first")) destroy_pool_first = 1;
        else wl_usage(argv[0]);
    }
    if (!w.kind)
        wl_usage(argv[0]);
    resolve_api(&w.api, path, ptsz);
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
    if (!strcmp(ctxmode, "create")) {
        if (a->ctx_create3)
            CHECK(a->ctx_create3(&ctx, NULL, 0, 0, 0));
        else
            CHECK(a->ctx_create(&ctx, 0, 0));
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
        if (!strcmp(ctxmode, "create"))
            CHECK(a->ctx_destroy(ctx));
        else
            CHECK(a->release(0));
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
    if (!strcmp(ctxmode, "create"))
        CHECK(a->ctx_destroy(ctx));
    else
        CHECK(a->release(0));
    phase(step, "released");
    free(blocks);
    if (until_oom && r != CUDA_ERROR_OUT_OF_MEMORY)
        return 3;
    return 0;
}

#endif /* VGPU_TEST_WORKLOAD */

#endif /* VGPU_TESTUTIL_H */
