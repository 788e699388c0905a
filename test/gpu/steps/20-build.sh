# shellcheck shell=bash disable=SC2034  # globals the later steps read
# test/gpu/steps/20-build.sh — make clib, the Go binaries, driver_check against the real libcuda
# Sourced by test/gpu/run.sh (see its header): runs in its shell, with test/gpu/lib.sh's
# variables and functions; a step reports through result/note and never exits
# unless the run cannot go on.

# Rebuilt from scratch (-B) with this machine's gcc and glibc, whatever build/ was
# carried along; without -Werror, so that a newer compiler's new warning (kept in
# run.log) cannot stop a rare GPU run. GPU_RUN_FORCE_BUILD=0 (the rehearsal, which
# runs beside other tests using build/) only brings build/ up to date.
MAKE_FORCE=-B
if [ "${GPU_RUN_FORCE_BUILD:-1}" = 0 ]; then MAKE_FORCE=; fi
if ! step make-clib 300 make $MAKE_FORCE -j"$(nproc)" clib CWARN="-Wall -Wextra"; then
    result FAIL build "make clib failed (see run.log)"
    exit 1
fi
result PASS build "make $MAKE_FORCE clib: build/libvgpu.so and the test programs, with $(gcc --version | head -n 1)"

HAVE_GO_BINS=1
if [ ! -x bin/vgpuctl ] || [ ! -x bin/vgpu-bench ]; then
    if command -v go >/dev/null && step make-go 300 make go; then
        :
    else
        HAVE_GO_BINS=0
        note "bin/vgpuctl or bin/vgpu-bench missing and no Go toolchain: build them elsewhere (make go) and bring bin/ along"
    fi
fi

# The real driver libraries: found through the dynamic linker's cache, else the
# places drivers and container runtimes put them.
find_lib() {
    local name=$1 p
    p=$(ldconfig -p 2>/dev/null | awk -v n="$name" '$1 == n && /x86-64|64bit|AArch64/ {print $NF; exit}')
    if [ -z "$p" ]; then
        for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/aarch64-linux-gnu /usr/local/nvidia/lib64 /usr/lib/wsl/lib; do
            if [ -e "$d/$name" ]; then p=$d/$name; break; fi
        done
    fi
    echo "$p"
}
REAL_LIBCUDA=${GPU_RUN_LIBCUDA:-$(find_lib libcuda.so.1)}
REAL_LIBNVML=${GPU_RUN_LIBNVML:-$(find_lib libnvidia-ml.so.1)}
echo "## real driver libraries used for linking" >>"$OUT/env.txt"
echo "libcuda: ${REAL_LIBCUDA:-not found}, libnvidia-ml: ${REAL_LIBNVML:-not found}" >>"$OUT/env.txt"
DRIVER_CHECK=$GPUBUILD/driver_check
if [ -n "$REAL_LIBCUDA" ] && [ -n "$REAL_LIBNVML" ] &&
    step build-driver-check 120 gcc -std=gnu11 -O2 -g -Wall -Wextra -Ilibvgpu/include \
        -o "$DRIVER_CHECK" test/gpu/driver_check.c "$REAL_LIBCUDA" "$REAL_LIBNVML" -ldl; then
    result PASS build-driver-check "gcc test/gpu/driver_check.c against $REAL_LIBCUDA"
else
    result FAIL build-driver-check "could not build against the real libcuda (${REAL_LIBCUDA:-not found})"
    DRIVER_CHECK=
fi
