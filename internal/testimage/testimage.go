// Package testimage builds container images for the tests that run containers
// (test/e2e through containerd and podman, test/k8s through Kubernetes): an OCI
// image layout tar with one uncompressed layer holding host programs and the
// shared libraries they need, so no registry or base image is involved.
package testimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/atomicfile"
)

// Image describes one image.
type Image struct {
	// Ref names it (io.containerd.image.name), e.g. docker.io/library/x:latest.
	Ref string
	// Programs are host programs copied to /bin/<base name>, with the shared
	// libraries they load (static programs need none).
	Programs []string
	// LibsOf are libraries that will be loaded in the container from outside
	// the image (libvgpu, preloaded into every process): the image carries what
	// they need, as any distribution image does.
	LibsOf []string
	// Links are symbolic links: path in the image -> target (e.g. /bin/sh ->
	// busybox).
	Links map[string]string
	// Entrypoint is the image's default command (empty: none).
	Entrypoint []string
}

// file is one file of the image: its path in the image and its content's
// source on the host.
type file struct {
	path string // absolute, inside the image
	src  string // host file (symlinks resolved)
	mode int64
}

// sharedLibs lists the shared libraries a program needs, as ldd resolves them
// on this host, except the driver libraries: those the runtime mounts into vGPU
// containers (as the NVIDIA toolkit does), so a container without a slice has
// no driver at all.
func sharedLibs(t testing.TB, bin string) []file {
	t.Helper()
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if strings.Contains(string(out), "not a dynamic executable") || strings.Contains(string(out), "statically linked") {
		return nil
	}
	require.NoError(t, err, "ldd %s: %s", bin, out)
	var files []file
	arrow := regexp.MustCompile(`=>\s+(/\S+)`)
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		var p string
		if m := arrow.FindStringSubmatch(line); m != nil {
			p = m[1]
		} else if strings.HasPrefix(line, "/") { // the loader: "/lib64/ld-linux-x86-64.so.2 (0x...)"
			p = strings.Fields(line)[0]
		}
		if p == "" || strings.Contains(p, "libcuda.so") || strings.Contains(p, "libnvidia-ml.so") {
			continue
		}
		real, err := filepath.EvalSymlinks(p)
		require.NoError(t, err)
		files = append(files, file{path: p, src: real, mode: 0o755})
	}
	return files
}

// Build writes the image as an OCI image layout tar to out and returns out.
func Build(t testing.TB, out string, img Image) string {
	t.Helper()
	files := map[string]file{}
	for _, p := range img.Programs {
		files["/bin/"+filepath.Base(p)] = file{path: "/bin/" + filepath.Base(p), src: p, mode: 0o755}
		for _, l := range sharedLibs(t, p) {
			files[l.path] = l
		}
	}
	for _, p := range img.LibsOf {
		for _, l := range sharedLibs(t, p) {
			files[l.path] = l
		}
	}
	layer := layerTar(t, files, img.Links)
	layerDigest := Digest(layer)

	cfg := map[string]any{"Env": []string{"PATH=/bin"}, "WorkingDir": "/"}
	if len(img.Entrypoint) > 0 {
		cfg["Entrypoint"] = img.Entrypoint
	}
	config := mustJSON(t, map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	manifest := mustJSON(t, map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json",
			"digest": Digest(config), "size": len(config)},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar",
			"digest": layerDigest, "size": len(layer)}},
	})
	index := mustJSON(t, map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json",
			"digest":    Digest(manifest), "size": len(manifest),
			"platform": map[string]string{"architecture": "amd64", "os": "linux"},
			"annotations": map[string]string{
				"io.containerd.image.name":          img.Ref,
				"org.opencontainers.image.ref.name": img.Ref[strings.LastIndex(img.Ref, ":")+1:],
			},
		}},
	})

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}))
		_, err := tw.Write(data)
		require.NoError(t, err)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	for _, b := range [][]byte{layer, config, manifest} {
		add("blobs/sha256/"+strings.TrimPrefix(Digest(b), "sha256:"), b)
	}
	require.NoError(t, tw.Close())
	require.NoError(t, atomicfile.Write(out, buf.Bytes(), 0o644, atomicfile.Volatile))
	return out
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// layerTar is the root filesystem: the files, the links, their parent
// directories and the usual empty mount points.
func layerTar(t testing.TB, files map[string]file, links map[string]string) []byte {
	t.Helper()
	dirs := map[string]bool{}
	for _, d := range []string{"/bin", "/etc", "/tmp", "/proc", "/sys", "/dev", "/run", "/usr/lib"} {
		dirs[d] = true
	}
	var paths, linkPaths []string
	for p := range files {
		paths = append(paths, p)
		dirs[filepath.Dir(p)] = true
	}
	for p := range links {
		linkPaths = append(linkPaths, p)
		dirs[filepath.Dir(p)] = true
	}
	for d := range dirs {
		for x := d; x != "/"; x = filepath.Dir(x) {
			dirs[x] = true
		}
	}
	delete(dirs, "/")
	var dirList []string
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList) // parents before children
	sort.Strings(paths)
	sort.Strings(linkPaths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range dirList {
		mode := int64(0o755)
		if d == "/tmp" {
			mode = 0o1777
		}
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(d, "/") + "/", Mode: mode, Typeflag: tar.TypeDir}))
	}
	for _, p := range paths {
		f := files[p]
		data, err := os.ReadFile(f.src)
		require.NoError(t, err)
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(p, "/"), Mode: f.mode,
			Size: int64(len(data)), Typeflag: tar.TypeReg}))
		_, err = tw.Write(data)
		require.NoError(t, err)
	}
	for _, p := range linkPaths {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(p, "/"), Linkname: links[p],
			Mode: 0o777, Typeflag: tar.TypeSymlink}))
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

// Digest is the OCI digest of b.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
