/*
 * passthrough_interposer — the smallest LD_PRELOAD interception library: it
 * interposes cuLaunchKernel, cuMemAlloc_v2 and cuMemFree_v2, finds the next
 * definition with dlsym(RTLD_NEXT) and forwards. `vgpu-bench ... --compare` is
 * demonstrated with it (bench/compare_test.go) as the "other" library.
 *
 * Build it as a shared object:
 *   cc -shared -fPIC -DPASSTHROUGH_SHARED -Ilibvgpu/include -o passthrough.so \
 *      test/cprog/passthrough_interposer.c -ldl
 * The Makefile builds every C file of test/cprog as a program (build/test/<name>); without
 * PASSTHROUGH_SHARED this file is one that says so.
 *
 * Configuration (environment, read once): PASSTHROUGH_COUNT=1 counts the forwarded
 * calls (an atomic increment each) and prints them on stderr at exit.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu_cuda.h"

typedef CUresult (*launch_fn)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                              unsigned int, unsigned int, unsigned int, CUstream, void **, void **);
typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t);
typedef CUresult (*free_fn)(CUdeviceptr);

CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                        unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared,
                        CUstream s, void **params, void **extra);
CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes);
CUresult cuMemFree_v2(CUdeviceptr dptr);

static int counting = -1;
static atomic_ulong forwarded;

static void *next(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (p == NULL) {
        fprintf(stderr, "passthrough_interposer: no next %s\n", name);
        abort();
    }
    return p;
}

static void report(void)
{
    fprintf(stderr, "passthrough_interposer: %lu calls forwarded\n", atomic_load(&forwarded));
}

static void count(void)
{
    if (counting < 0) {
        const char *v = getenv("PASSTHROUGH_COUNT");
        counting = v != NULL && strcmp(v, "1") == 0;
        if (counting)
            atexit(report);
    }
    if (counting)
        atomic_fetch_add_explicit(&forwarded, 1, memory_order_relaxed);
}

CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                        unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared,
                        CUstream s, void **params, void **extra)
{
    static launch_fn real;
    if (real == NULL)
        real = (launch_fn)next("cuLaunchKernel");
    count();
    return real(f, gx, gy, gz, bx, by, bz, shared, s, params, extra);
}

CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes)
{
    static alloc_fn real;
    if (real == NULL)
        real = (alloc_fn)next("cuMemAlloc_v2");
    count();
    return real(dptr, bytes);
}

CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    static free_fn real;
    if (real == NULL)
        real = (free_fn)next("cuMemFree_v2");
    count();
    return real(dptr);
}

#ifndef PASSTHROUGH_SHARED
int main(void)
{
    fputs("passthrough_interposer: an LD_PRELOAD library; build it with -shared -fPIC "
          "-DPASSTHROUGH_SHARED (see its source)\n",
          stderr);
    return 2;
}
#endif
