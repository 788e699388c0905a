/*
 * vgpu_glibc.h — libvgpu loads on every glibc a CUDA base image may have (>= 2.17).
 *
 * libvgpu is preloaded into every process of a container, whatever the image; the
 * glibc of CUDA base images goes back to 2.17 (CentOS 7, UBI 7). A symbol linked
 * against a newer glibc gets the newest version tag (dlopen@GLIBC_2.34,
 * stat@GLIBC_2.33, ...), and an older loader refuses the whole library ("version
 * `GLIBC_2.34' not found"), so the process would not start at all.
 *
 * This header is forced into every libvgpu source (-include in the Makefile, so it
 * comes before the source's _GNU_SOURCE: it includes nothing) and pins each such symbol to the oldest version the architecture has: GLIBC_2.2.5 on
 * x86_64, GLIBC_2.17 (the first aarch64 glibc) on aarch64.
 *  - dlopen, dlvsym, dladdr (libdl before 2.34) and pthread_once (libpthread
 *    before 2.34) moved into libc in 2.34 and got a GLIBC_2.34 default version; the
 *    old versions stay exported by libc for old binaries. libvgpu links libdl.so.2
 *    and libpthread.so.0 by name (--no-as-needed, see the Makefile) so that on an
 *    older glibc, where only those libraries define them, they are loaded; on 2.34+
 *    they are empty stubs. (The dynamic linker matches a versioned reference by
 *    version name in any loaded object, not only in the one it was linked against.)
 *  - stat and fstat exist as functions only since 2.33 (before, the headers inlined
 *    them to __xstat/__fxstat, which 2.33+ keeps only as compat symbols). init.c,
 *    their one user, makes the system calls directly where VGPU_GLIBC_BASE is set
 *    (vgpu_stat / vgpu_fstat: newfstatat, fstat; on x86_64 and aarch64 glibc's
 *    struct stat is the kernel's). Do the same for any new stat call.
 *  - dlsym is never linked (libvgpu defines its own dlsym and finds the real one
 *    with dlvsym at VGPU_GLIBC_BASE or GLIBC_2.34, see init.c).
 * test/integration/glibc_test.go fails if build/libvgpu.so needs any GLIBC_ version
 * above 2.17; a new libc call that only exists in a newer version needs a pin here.
 * Other architectures get no pins (and the plain libc calls).
 */
#ifndef VGPU_GLIBC_H
#define VGPU_GLIBC_H

#if defined(__x86_64__)
#define VGPU_GLIBC_BASE "GLIBC_2.2.5"
#elif defined(__aarch64__)
#define VGPU_GLIBC_BASE "GLIBC_2.17"
#endif

#ifdef VGPU_GLIBC_BASE
#define VGPU_PIN(sym) __asm__(".symver " #sym "," #sym "@" VGPU_GLIBC_BASE)
VGPU_PIN(dlopen);
VGPU_PIN(dlvsym);
VGPU_PIN(dladdr);
VGPU_PIN(pthread_once);
#undef VGPU_PIN
#endif

#endif
