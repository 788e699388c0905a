# shellcheck shell=sh
# test/clients/private_apt.sh — what the fetch_*.sh scripts share: installing
# ordinary Debian packages that are missing, and downloading packages from a
# private sources list into a private prefix (never installed: no NVIDIA driver
# library may land in the system's paths, where it would shadow the simulator).
# Sourced; the caller sets TAG (its name in messages) and MIRROR, and runs with
# `set -eu`.

log() { echo "clients/$TAG: $*"; }

# install_missing PKG...: apt-get install those not installed (needs root).
install_missing() {
	missing=""
	for p in "$@"; do
		dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
	done
	[ -n "$missing" ] || return 0
	log "installing Debian packages:$missing"
	if [ "$(id -u)" != 0 ]; then
		echo "clients/$TAG: need root to install:$missing" >&2
		exit 1
	fi
	apt-get update -qq
	# shellcheck disable=SC2086 # a list of package names
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
}

# fetch_private APT PREFIX COMPONENTS PKG...: apt-get update of bookworm's
# COMPONENTS ("contrib", "main contrib non-free") into private lists under
# APT, apt-get download of the PKGs, dpkg -x of each into a fresh PREFIX, and
# PREFIX/.fetched listing "pkg=version" for each.
fetch_private() {
	apt_dir=$1 prefix=$2 components=$3
	shift 3
	mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
	apt_abs=$(cd "$apt_dir" && pwd)
	cat >"$apt_abs/sources.list" <<EOS
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bookworm $components
EOS
	opts="-o Dir::Etc::SourceList=$apt_abs/sources.list -o Dir::Etc::SourceParts=/dev/null
		-o Dir::State::Lists=$apt_abs/lists -o Dir::Cache=$apt_abs/cache
		-o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
		-o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
		-o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
		-o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
		-o Debug::NoLocking=1 -o APT::Sandbox::User=root"
	log "apt-get update (private lists: $apt_dir/lists, sources: $apt_dir/sources.list)"
	# shellcheck disable=SC2086 # the options are words (no spaces in the paths)
	apt-get $opts -qq update
	rm -f "$apt_abs/debs/"*.deb
	# shellcheck disable=SC2086
	(cd "$apt_abs/debs" && apt-get $opts -q download "$@")

	rm -rf "$prefix"
	mkdir -p "$prefix"
	what=""
	for deb in "$apt_abs/debs/"*.deb; do
		log "downloaded $(basename "$deb"); Depends: $(dpkg-deb -f "$deb" Depends)"
		dpkg -x "$deb" "$prefix"
		what="$what $(dpkg-deb -f "$deb" Package)=$(dpkg-deb -f "$deb" Version)"
	done
	rm -f "$apt_abs/debs/"*.deb # not needed once unpacked
	echo "${what# }" >"$prefix/.fetched"
	log "extracted${what} into $prefix (not installed; no driver package installed)"
}
