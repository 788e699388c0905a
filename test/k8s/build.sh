#!/bin/sh
# Builds the pinned cluster binaries test/k8s runs, once, into a cache outside the
# checkout keyed by the versions:
#   ${VGPU_K8S_CACHE:-/var/cache/vgpu-k8s}/k8s-<v>-etcd-<v>-containerd-<v>/bin
# A no-op when every binary is there. Otherwise it builds into a temporary
# directory beside it and renames that into place, so an interrupted build never
# leaves a half-filled cache. Everything comes from the Go module proxy:
#  - Kubernetes: `go install k8s.io/kubernetes/...@v` refuses (replace directives),
#    so the module's source is copied, its staging replaces dropped for the
#    published v0.x modules, and the commands built from the copy.
#  - etcd: the same refusal; a wrapper module requiring etcd/server builds it.
#  - containerd v1.7: Debian 12 ships containerd 1.6, which has no CDI, so the
#    claim's CDI device (vgpu.io/slice=<id>) would never reach the container
#    (and kubelet >= 1.36 needs containerd >= 1.7 anyway). Its go.mod has no
#    replace directives; it is built from the downloaded source, cgo off.
# Prints the path of the bin directory last; each part's time on stderr.
set -eu

K8S_VERSION=v1.34.2
K8S_STAGING=v0.34.2
ETCD_VERSION=v3.5.21
CONTAINERD_VERSION=v1.7.29
GO=${GO:-go}

K8S_BINS="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"
CTRD_BINS="containerd containerd-shim-runc-v2 ctr"

parent=${VGPU_K8S_CACHE:-/var/cache/vgpu-k8s}
key="k8s-$K8S_VERSION-etcd-$ETCD_VERSION-containerd-$CONTAINERD_VERSION"
dest="$parent/$key"

missing() { # missing <bin dir> <names...>: true when any is absent
	d=$1; shift
	for b in "$@"; do [ -x "$d/$b" ] || return 0; done
	return 1
}

if ! missing "$dest/bin" $K8S_BINS etcd $CTRD_BINS; then
	echo "$dest/bin"
	exit 0
fi

mkdir -p "$parent"
# One build at a time (two test runs starting cold): the second waits, then
# finds the cache filled.
exec 9>"$parent/.lock"
flock 9
if ! missing "$dest/bin" $K8S_BINS etcd $CTRD_BINS; then
	echo "$dest/bin"
	exit 0
fi
tmp=$(mktemp -d "$parent/.build-$key.XXXXXX")
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"
# Whatever a previous (partial) cache holds is kept; only missing parts are built.
if [ -d "$dest/bin" ]; then cp -a "$dest/bin/." "$tmp/bin/"; fi

export CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod
step() { # step <name> <function>: runs it and prints its time
	t0=$(date +%s)
	echo "building $1 ..." >&2
	"$2"
	echo "== $1: $(( $(date +%s) - t0 ))s" >&2
}

# modsrc <module@version> <dir>: a writable copy of the module's source.
modsrc() {
	d=$("$GO" mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$d" ] || { echo "go mod download $1 gave no Dir" >&2; exit 1; }
	cp -r "$d" "$2"
	chmod -R u+w "$2"
}

build_etcd() {
	w="$tmp/etcd-wrapper"
	mkdir -p "$w"
	(cd "$w" && "$GO" mod init vgpu-k8s-etcd >/dev/null 2>&1 &&
		"$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 &&
		"$GO" build -trimpath -ldflags "-s -w" -o "$tmp/bin/etcd" go.etcd.io/etcd/server/v3)
}

build_kubernetes() {
	src="$tmp/kubernetes"
	modsrc "k8s.io/kubernetes@$K8S_VERSION" "$src"
	# vendor/ holds only an OWNERS file, but with `go 1.24` in go.mod its
	# presence would switch on -mod=vendor; go.work would pull in staging/.
	rm -rf "$src/vendor" "$src/go.work" "$src/go.work.sum"
	(
		cd "$src"
		edits=""
		for m in $(sed -n 's/^[[:space:]]*\(k8s\.io\/[^ ]*\) => \.\/staging.*/\1/p' go.mod); do
			edits="$edits -dropreplace=$m"
			# Only the ones go.mod requires (as v0.0.0) get a version.
			if grep -q "^[[:space:]]*$m v0.0.0" go.mod; then
				edits="$edits -require=$m@$K8S_STAGING"
			fi
		done
		[ -n "$edits" ] || { echo "no staging replaces found in k8s go.mod" >&2; exit 1; }
		# shellcheck disable=SC2086
		"$GO" mod edit $edits
		v=k8s.io/component-base/version
		cv=k8s.io/client-go/pkg/version
		ld="-s -w"
		for p in $v $cv; do
			ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=34"
			ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
		done
		for b in $K8S_BINS; do
			"$GO" build -trimpath -ldflags "$ld" -o "$tmp/bin/$b" "./cmd/$b"
		done
	)
}

build_containerd() {
	src="$tmp/containerd"
	modsrc "github.com/containerd/containerd@$CONTAINERD_VERSION" "$src"
	(
		cd "$src"
		ld="-s -w -X github.com/containerd/containerd/version.Version=$CONTAINERD_VERSION"
		tags="no_btrfs no_devmapper no_zfs no_aufs"
		for b in $CTRD_BINS; do
			"$GO" build -trimpath -tags "$tags" -ldflags "$ld" -o "$tmp/bin/$b" "./cmd/$b"
		done
	)
}

total0=$(date +%s)
missing "$tmp/bin" etcd && step "etcd $ETCD_VERSION" build_etcd
missing "$tmp/bin" $CTRD_BINS && step "containerd $CONTAINERD_VERSION" build_containerd
missing "$tmp/bin" $K8S_BINS && step "kubernetes $K8S_VERSION" build_kubernetes
missing "$tmp/bin" $K8S_BINS etcd $CTRD_BINS && { echo "build incomplete" >&2; exit 1; }

# Swap the finished directory in: rename is atomic within one filesystem.
final="$tmp/final"
mkdir "$final"
mv "$tmp/bin" "$final/bin"
if [ -d "$dest" ]; then mv "$dest" "$tmp/old"; fi
mv "$final" "$dest"
echo "== k8s binaries total: $(( $(date +%s) - total0 ))s" >&2
echo "$dest/bin"
