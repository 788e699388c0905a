package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// imageFile is one file of the image: its path in the image and its content's
// source on the host.
type imageFile struct {
	path string // absolute, inside the image
	src  string // host file (symlinks resolved)
	mode int64
}

// sharedLibs lists the shared libraries a program needs, as ldd resolves them
// on this host, except the driver libraries: those the runtime mounts into vGPU
// containers (as the NVIDIA toolkit does), so a container without a slice has
// no driver at all.
func sharedLibs(t *testing.T, bin string) []imageFile {
	t.Helper()
	out, err := exec.Command("ldd", bin).CombinedOutput()
	require.NoError(t, err, "ldd %s: %s", bin, out)
	var files []imageFile
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
		files = append(files, imageFile{path: p, src: real, mode: 0o755})
	}
	return files
}

// buildImage writes an OCI image layout tar (one uncompressed layer) holding
// the given programs under /bin and the libraries they need, and returns its
// path. The image is named ref. libsOf are libraries that will be loaded in
// the container (libvgpu, preloaded into every process): the image carries
// what they need, as any distribution image does.
func buildImage(t *testing.T, dir, ref string, programs []string, libsOf ...string) string {
	t.Helper()
	files := map[string]imageFile{}
	for _, p := range programs {
		files["/bin/"+filepath.Base(p)] = imageFile{path: "/bin/" + filepath.Base(p), src: p, mode: 0o755}
		for _, l := range sharedLibs(t, p) {
			files[l.path] = l
		}
	}
	for _, p := range libsOf {
		for _, l := range sharedLibs(t, p) {
			files[l.path] = l
		}
	}
	layer := layerTar(t, files)
	layerDigest := digest(layer)

	config, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Env": []string{"PATH=/bin"}, "WorkingDir": "/"},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	require.NoError(t, err)
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json",
			"digest": digest(config), "size": len(config)},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar",
			"digest": layerDigest, "size": len(layer)}},
	})
	require.NoError(t, err)
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json",
			"digest":    digest(manifest), "size": len(manifest),
			"platform": map[string]string{"architecture": "amd64", "os": "linux"},
			"annotations": map[string]string{
				"io.containerd.image.name":          ref,
				"org.opencontainers.image.ref.name": ref[strings.LastIndex(ref, ":")+1:],
			},
		}},
	})
	require.NoError(t, err)

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
		add("blobs/sha256/"+strings.TrimPrefix(digest(b), "sha256:"), b)
	}
	require.NoError(t, tw.Close())
	out := filepath.Join(dir, "image.tar")
	require.NoError(t, os.WriteFile(out, buf.Bytes(), 0o644))
	return out
}

// layerTar is the root filesystem: the files, their parent directories and the
// usual empty mount points.
func layerTar(t *testing.T, files map[string]imageFile) []byte {
	t.Helper()
	dirs := map[string]bool{}
	for _, d := range []string{"/bin", "/etc", "/tmp", "/proc", "/sys", "/dev", "/run", "/usr/lib"} {
		dirs[d] = true
	}
	var paths []string
	for p := range files {
		paths = append(paths, p)
		for d := filepath.Dir(p); d != "/"; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	var dirList []string
	for d := range dirs {
		for x := d; x != "/"; x = filepath.Dir(x) {
			dirs[x] = true
		}
	}
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList) // parents before children
	sort.Strings(paths)
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
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Sanity of the builder itself (no root needed).
func TestImageLayout(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	dir := t.TempDir()
	path := buildImage(t, dir, "docker.io/library/x:latest", []string{self})
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	names := map[string]bool{}
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names[h.Name] = true
	}
	require.True(t, names["oci-layout"] && names["index.json"], fmt.Sprint(names))
	require.Len(t, names, 5, "layout, index and three blobs")
}
