#!/bin/sh
# Fetch Debian 12's real, unmodified python3-pycuda (contrib) into a private
# prefix, build/clients/pycuda, without installing it or any NVIDIA driver
# library system-wide (a real libcuda.so.1 in the linker's path would shadow the
# simulated one). Idempotent: does nothing when the extracted package is there.
#
#   test/clients/fetch_pycuda.sh [BUILD_DIR]     (default: build)
#
# - python3-pycuda's ordinary Debian Python dependencies (numpy, pytools, ...)
#   are installed with apt-get install when missing (needs root, as make deps);
# - the package itself comes from a private sources list (bookworm main,
#   contrib and non-free) with private apt lists under BUILD_DIR/apt/pycuda, fetched
#   with `apt-get download` and unpacked with `dpkg -x`;
# - its Depends on libcuda1 / libnvidia-* / nvidia-cuda-toolkit are never
#   installed; libcurand10 (non-free), which _driver*.so links, is unpacked into
#   the same private prefix.
#
# Use: PYTHONPATH=BUILD_DIR/clients/pycuda/usr/lib/python3/dist-packages
#      LD_LIBRARY_PATH=BUILD_DIR/simgpu:BUILD_DIR/clients/pycuda/usr/lib/x86_64-linux-gnu
#      VGPU_SIM_STATE=... python3 ...
set -eu

BUILD=${1:-build}
PREFIX=$BUILD/clients/pycuda
APT=$BUILD/apt/pycuda
MIRROR=${VGPU_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Ordinary Debian packages (main) python3-pycuda (bookworm) depends on, besides
# the driver: installed system-wide when missing.
SYS_DEPS="python3 python3-numpy python3-pytools python3-appdirs python3-platformdirs python3-mako python3-decorator python3-typing-extensions libboost-python1.74.0 libboost-thread1.74.0"
# From non-free, unpacked into the private prefix with pycuda: libcurand10
# (_driver*.so links libcurand.so.10; a CUDA toolkit library, not the driver).
PRIVATE_DEBS="python3-pycuda libcurand10"

TAG=fetch_pycuda
# shellcheck source=test/clients/private_apt.sh
. "$(dirname "$0")/private_apt.sh"

have() {
	[ -f "$PREFIX/.fetched" ] || return 1
	for p in $PRIVATE_DEBS; do
		grep -q "\(^\| \)$p=" "$PREFIX/.fetched" || return 1
	done
	for p in $SYS_DEPS; do
		dpkg -s "$p" >/dev/null 2>&1 || return 1
	done
}
if have; then
	log "already fetched into $PREFIX: $(cat "$PREFIX/.fetched")"
	exit 0
fi

# shellcheck disable=SC2086 # a list of package names
install_missing $SYS_DEPS
# shellcheck disable=SC2086 # a list of package names
fetch_private "$APT" "$PREFIX" "main contrib non-free" $PRIVATE_DEBS
if command -v objdump >/dev/null 2>&1; then
	for so in "$PREFIX"/usr/lib/python3/dist-packages/pycuda/_driver*.so; do
		log "  $(basename "$so") needs: $(objdump -p "$so" | awk '/NEEDED/ {printf "%s ", $2}')"
	done
fi
