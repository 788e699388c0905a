/*
 * table.c — the hook table and the three interception paths.
 *
 * 1. Linked symbols: every hook is exported under the real driver's name
 *    (cuMemAlloc_v2, cuLaunchKernel_ptsz, ...), so a program linked to libcuda binds
 *    to libvgpu first when libvgpu is preloaded.
 * 2. dlsym: a program (or libcudart, go-nvml, ...) that dlsym's a hooked name on any
 *    handle — a dlopen'ed libcuda, RTLD_DEFAULT, RTLD_NEXT — gets the hook, provided
 *    the real lookup succeeds (so "does the driver have X?" keeps its answer).
 *    Exceptions, so that interposing can never recurse or misroute: lookups made
 *    by the driver libraries themselves, and (once initialized) a same-named
 *    symbol of another library than the driver libvgpu wraps, get the real answer.
 * 3. cuGetProcAddress / cuGetProcAddress_v2 (how libcudart >= 11.3, PyTorch and
 *    vLLM obtain every entry point): the real one resolves the name for the
 *    requested version and flags (_v2, _v3, _ptsz, _ptds ...); if the pointer it
 *    returns is the real pointer of a hooked variant — each resolved from the
 *    libcuda handle by its exact symbol name — the matching hook is returned
 *    instead. Comparing pointers, not re-deriving versioned names, means libvgpu
 *    never has to reproduce the driver's version rules and never swaps in a hook
 *    of a different ABI than the one asked for. Asking for "cuGetProcAddress"
 *    itself yields our hook the same way.
 *
 * Every internal lookup uses the real dlsym (never our export).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>

#include "vgpu_internal.h"

#define VGPU_LIB_C 'C'
#define VGPU_LIB_N 'N'

/* Declarations of the hooks, with the exact driver types. */
#define VGPU_DECL_HOOK(lib, name) VGPU_EXPORT extern __typeof__(*(name##_fn)0) name;
VGPU_HOOKS(VGPU_DECL_HOOK)
#undef VGPU_DECL_HOOK

const struct vgpu_hook vgpu_hooks[] = {
#define VGPU_HOOK_ENTRY(lib, name) {#name, (void *)&name, (void **)&vgpu_real.name, VGPU_LIB_##lib},
    VGPU_HOOKS(VGPU_HOOK_ENTRY)
#undef VGPU_HOOK_ENTRY
};
const size_t vgpu_nhooks = sizeof vgpu_hooks / sizeof vgpu_hooks[0];

static const struct {
    const char *name;
    void **slot;
    char lib;
} vgpu_calls[] = {
#define VGPU_CALL_ENTRY(lib, name) {#name, (void **)&vgpu_real.name, VGPU_LIB_##lib},
    VGPU_CALLS(VGPU_CALL_ENTRY)
#undef VGPU_CALL_ENTRY
};

/* The real pointers are function pointers stored in typed fields; copying through
 * memcpy keeps the accesses free of aliasing assumptions. */
static inline void *load_real(void **slot)
{
    void *p;
    memcpy(&p, slot, sizeof p);
    return p;
}

void vgpu_resolve_reals(char lib, void *handle)
{
    dlsym_fn real = vgpu_real_dlsym();
    for (size_t i = 0; i < vgpu_nhooks; i++) {
        if (vgpu_hooks[i].lib != lib)
            continue;
        void *p = real(handle, vgpu_hooks[i].name);
        memcpy(vgpu_hooks[i].real, &p, sizeof p);
    }
    for (size_t i = 0; i < sizeof vgpu_calls / sizeof vgpu_calls[0]; i++) {
        if (vgpu_calls[i].lib != lib)
            continue;
        void *p = real(handle, vgpu_calls[i].name);
        memcpy(vgpu_calls[i].slot, &p, sizeof p);
    }
}

VGPU_NO_ASAN const struct vgpu_hook *vgpu_hook_by_name(const char *name)
{
    /* Cheap rejection: every hooked name starts with "cu" or "nvml". dlsym is
     * called for all kinds of names (Python extension init functions, ...). */
    if (!((name[0] == 'c' && name[1] == 'u') || (name[0] == 'n' && name[1] == 'v')))
        return NULL;
    for (size_t i = 0; i < vgpu_nhooks; i++)
        if (strcmp(vgpu_hooks[i].name, name) == 0)
            return &vgpu_hooks[i];
    return NULL;
}

/* The hook standing in for a real driver pointer, or the pointer itself. */
static void *swap_for_hook(void *p)
{
    if (!p)
        return p;
    for (size_t i = 0; i < vgpu_nhooks; i++)
        if (load_real(vgpu_hooks[i].real) == p)
            return vgpu_hooks[i].hook;
    return p;
}

/* ------------------------------------------------------------------- dlsym */

/* The driver looking up its own symbols (the WSL2 libcuda.so.1 is a shim that
 * dlsym's its backend, and some drivers resolve their own entry points): it must
 * get its own functions, or our hook would call the shim which would call our
 * hook again, forever. Slow path only (hooked names). */
static bool called_from_driver(void *caller)
{
    Dl_info info;
    if (!dladdr(caller, &info) || !info.dli_fname)
        return false;
    const char *base = strrchr(info.dli_fname, '/');
    base = base ? base + 1 : info.dli_fname;
    return strncmp(base, "libcuda.", 8) == 0 || strncmp(base, "libnvidia-ml.", 13) == 0;
}

/* Not instrumented (VGPU_NO_ASAN): a sanitizer runtime calls it while it starts. */
VGPU_NO_ASAN VGPU_EXPORT void *dlsym(void *handle, const char *name)
{
    dlsym_fn real = vgpu_real_dlsym();
    const struct vgpu_hook *h = vgpu_hook_by_name(name);
    if (VGPU_LIKELY(!h))
        /* A sibling call (gcc -O2): glibc's dlsym still sees the caller's return
         * address, so RTLD_NEXT keeps meaning "after the caller". */
        return real(handle, name);
    void *caller = __builtin_return_address(0);
    void *p = real(handle, name);
    if (!p || p == h->hook)
        return p; /* absent; or RTLD_DEFAULT found our export itself */
    if (called_from_driver(caller))
        return p;
    /* Once the driver is resolved, a same-named symbol that is not the driver
     * function we wrap (another copy of the driver, a stub) is left alone: our
     * hook would call a different library than the one the program asked. Never
     * initializes from here — dlsym runs inside other libraries' constructors. */
    if (atomic_load_explicit(&vgpu_g.mode, memory_order_acquire) != VGPU_MODE_UNINIT) {
        void *ours = load_real(h->real);
        if (ours && ours != p) {
            VGPU_LOG_ONCE(logged_other, VGPU_LOG_WARN,
                          "dlsym(%s) found a driver other than the one "
                          "libvgpu wraps; calls through it are not intercepted",
                          name);
            return p;
        }
    }
    return h->hook;
}

/* ----------------------------------------------------------- cuGetProcAddress */

VGPU_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion,
                                      cuuint64_t flags)
{
    vgpu_mode(); /* resolves the real pointers we compare against */
    cuGetProcAddress_fn real = vgpu_real.cuGetProcAddress;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    CUresult r = real(symbol, pfn, cudaVersion, flags);
    if (r == CUDA_SUCCESS && pfn)
        *pfn = swap_for_hook(*pfn);
    return r;
}

VGPU_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion,
                                         cuuint64_t flags, CUdriverProcAddressQueryResult *status)
{
    vgpu_mode();
    cuGetProcAddress_v2_fn real = vgpu_real.cuGetProcAddress_v2;
    if (VGPU_UNLIKELY(!real))
        return CUDA_ERROR_NOT_FOUND;
    CUresult r = real(symbol, pfn, cudaVersion, flags, status);
    if (r == CUDA_SUCCESS && pfn)
        *pfn = swap_for_hook(*pfn);
    return r;
}

/* --------------------------------------------------------------------- cuInit */

VGPU_EXPORT CUresult cuInit(unsigned int flags)
{
    int m = vgpu_mode();
    if (VGPU_UNLIKELY(!vgpu_real.cuInit))
        return CUDA_ERROR_NOT_FOUND;
    if (m == VGPU_MODE_REFUSE)
        return CUDA_ERROR_NOT_PERMITTED;
    return vgpu_real.cuInit(flags);
}
