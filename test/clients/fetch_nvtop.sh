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

log() { echo "clients/fetch_nvtop: $*"; }

missing=""
for p in $SYS_DEPS; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	log "installing Debian packages:$missing"
	if [ "$(id -u)" != 0 ]; then
		echo "clients/fetch_nvtop: need root to install:$missing" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi

if [ -x "$PREFIX/usr/bin/nvtop" ] && [ -f "$PREFIX/.fetched" ]; then
	log "already fetched into $PREFIX: $(cat "$PREFIX/.fetched")"
	exit 0
fi

mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/debs"
APT_ABS=$(cd "$APT" && pwd)
cat >"$APT_ABS/sources.list" <<EOS
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bookworm contrib
EOS
set -- -o Dir::Etc::SourceList="$APT_ABS/sources.list" -o Dir::Etc::SourceParts=/dev/null \
	-o Dir::State::Lists="$APT_ABS/lists" -o Dir::Cache="$APT_ABS/cache" \
	-o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="" \
	-o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
	-o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false \
	-o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false \
	-o Debug::NoLocking=1 -o APT::Sandbox::User=root

log "apt-get update (private lists: $APT/lists, sources: $APT/sources.list)"
apt-get "$@" -qq update

rm -f "$APT_ABS/debs/"*.deb
(cd "$APT_ABS/debs" && apt-get "$@" -q download nvtop)

rm -rf "$PREFIX"
mkdir -p "$PREFIX"
deb=$(ls "$APT_ABS/debs/"nvtop_*.deb)
ver=$(dpkg-deb -f "$deb" Version)
log "downloaded $(basename "$deb"); Depends: $(dpkg-deb -f "$deb" Depends)"
dpkg -x "$deb" "$PREFIX"
rm -f "$deb"
echo "nvtop=$ver" >"$PREFIX/.fetched"
log "extracted nvtop=$ver into $PREFIX (not installed; no driver package installed)"
log "  nvtop needs: $(objdump -p "$PREFIX/usr/bin/nvtop" | awk '/NEEDED/ {printf "%s ", $2}')"
