#!/bin/sh
# Fetch Debian 12's real, unmodified nvtop (bookworm contrib) into a private
# prefix, build/clients/nvtop, without installing it or any NVIDIA driver library
# system-wide (a real libnvidia-ml.so.1 in the linker's path would shadow the
# simulated one). Idempotent: does nothing when the extracted package is there and
# the system packages are installed.
#
#   test/clients/fetch_nvtop.sh [BUILD_DIR]     (default: build)
#
# - nvtop's ordinary Debian dependencies (libncursesw6, libtinfo6, libsystemd0,
#   libudev1, libdrm2) and tmux, which the test drives it in, are installed with
#   apt-get install when missing (needs root, as make deps);
# - nvtop itself comes from a private sources list (bookworm contrib) with private
#   apt lists under BUILD_DIR/apt/nvtop, fetched with `apt-get download` and
#   unpacked with `dpkg -x`. nvtop dlopens libnvidia-ml.so.1 at run time; no
#   libnvidia-* / libcuda1 package is ever installed.
#
# Use: LD_LIBRARY_PATH=BUILD_DIR/simgpu VGPU_SIM_STATE=... BUILD_DIR/clients/nvtop/usr/bin/nvtop
set -eu

BUILD=${1:-build}
PREFIX=$BUILD/clients/nvtop
APT=$BUILD/apt/nvtop
MIRROR=${VGPU_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SYS_DEPS="libncursesw6 libtinfo6 libsystemd0 libudev1 libdrm2 tmux"

TAG=fetch_nvtop
# shellcheck source=test/clients/private_apt.sh
. "$(dirname "$0")/private_apt.sh"

# shellcheck disable=SC2086 # a list of package names
install_missing $SYS_DEPS

if [ -x "$PREFIX/usr/bin/nvtop" ] && [ -f "$PREFIX/.fetched" ]; then
	log "already fetched into $PREFIX: $(cat "$PREFIX/.fetched")"
	exit 0
fi

fetch_private "$APT" "$PREFIX" contrib nvtop
log "  nvtop needs: $(objdump -p "$PREFIX/usr/bin/nvtop" | awk '/NEEDED/ {printf "%s ", $2}')"
