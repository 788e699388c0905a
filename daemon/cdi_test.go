package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// writeGPUSpec writes a node GPU spec naming each fake device by UUID, each
// with a stand-in node bound into the container.
func writeGPUSpec(t *testing.T, dir string, gpus *fakeGPUs) {
	t.Helper()
	spec := "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ncontainerEdits:\n  env: [NVIDIA_VISIBLE_DEVICES=void]\ndevices:\n"
	for _, d := range gpus.devs {
		spec += fmt.Sprintf("- name: %s\n  containerEdits:\n    mounts: [{hostPath: /host/gpu%d, containerPath: /dev/gpu%d, options: [rw, bind]}]\n",
			d.UUID, d.Index, d.Index)
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nvidia.yaml"), []byte(spec), 0o644))
}

// sliceInjected applies vgpu.io/slice=id from dir to an empty OCI spec, as
// podman does, and returns its mounts by destination.
func sliceInjected(t *testing.T, dir, id string) (*specs.Spec, map[string]specs.Mount) {
	t.Helper()
	cache, err := cdi.NewCache(cdi.WithSpecDirs(dir), cdi.WithAutoRefresh(false))
	require.NoError(t, err)
	s := &specs.Spec{Process: &specs.Process{}}
	_, err = cache.InjectDevices(s, "vgpu.io/slice="+id)
	require.NoError(t, err, "%v", cache.GetErrors())
	m := map[string]specs.Mount{}
	for _, mt := range s.Mounts {
		m[mt.Destination] = mt
	}
	return s, m
}

// TestSlicesPublishedAsCDIDevices: a slice is a CDI device with libvgpu, the
// preload, the read-only budget, the usage and its GPU's edits (only its
// own GPU); release removes it; a restart rewrites held slices' specs and
// removes stale ones.
func TestSlicesPublishedAsCDIDevices(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	gpus := newFakeGPUs(2, 8*GiB)
	writeGPUSpec(t, cfg.CDIDir, gpus)
	ts := startServer(t, cfg, gpus)

	sl, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "s1", MemoryBytes: GiB, UUIDs: []string{gpus.devs[1].UUID}})
	require.NoError(t, err)
	file := filepath.Join(cfg.CDIDir, "vgpu.io-slice_s1.json")
	require.FileExists(t, file)
	s, m := sliceInjected(t, cfg.CDIDir, "s1")
	require.Equal(t, cfg.LibVGPU, m["/usr/lib/vgpu/libvgpu.so"].Source)
	require.Contains(t, m["/etc/ld.so.preload"].Options, "ro")
	preload, err := os.ReadFile(m["/etc/ld.so.preload"].Source)
	require.NoError(t, err)
	require.Equal(t, "/usr/lib/vgpu/libvgpu.so\n", string(preload))
	require.Contains(t, m["/run/vgpu"].Options, "ro")
	require.Equal(t, filepath.Join(sl.Dir, "budget"), m["/run/vgpu/slice/budget"].Source)
	require.Contains(t, m["/run/vgpu/slice/budget"].Options, "ro")
	require.Contains(t, m["/run/vgpu/slice/usage"].Options, "rw")
	require.Equal(t, "/host/gpu1", m["/dev/gpu1"].Source, "its GPU's edits")
	require.NotContains(t, m, "/dev/gpu0", "not another GPU's")
	require.Contains(t, s.Process.Env, "VGPU_SLICE_DIR=/run/vgpu/slice")
	require.Contains(t, s.Process.Env, "NVIDIA_VISIBLE_DEVICES=void")

	require.NoError(t, ts.client.Release(ts.ctx, "s1"))
	require.NoFileExists(t, file)

	_, err = ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "s2", MemoryBytes: GiB})
	require.NoError(t, err)
	ts.stop(t)
	kept := filepath.Join(cfg.CDIDir, "vgpu.io-slice_s2.json")
	require.NoError(t, os.Remove(kept))
	stale := filepath.Join(cfg.CDIDir, "vgpu.io-slice_gone.json")
	require.NoError(t, os.WriteFile(stale, []byte(`{"hostPath":"`+filepath.Join(cfg.StateDir, "cdi-files", "ld.so.preload")+`"}`), 0o644))
	others := filepath.Join(cfg.CDIDir, "vgpu.io-slice_other.json")
	require.NoError(t, os.WriteFile(others, []byte(`{"hostPath":"/elsewhere/cdi-files/ld.so.preload"}`), 0o644))
	startServer(t, cfg, gpus)
	require.FileExists(t, kept, "rewritten for the re-adopted slice")
	require.NoFileExists(t, stale, "a slice vgpud does not hold")
	require.FileExists(t, others, "another vgpud's slice")
	require.FileExists(t, filepath.Join(cfg.CDIDir, "nvidia.yaml"), "others' specs untouched")
}

// TestSliceWithoutGPUSpecNotPublished: without the node's GPU spec the slice
// is still allocated (vgpu-runtime needs no spec), but not published.
func TestSliceWithoutGPUSpecNotPublished(t *testing.T) {
	cfg := testConfig(t.TempDir())
	ts := startServer(t, cfg, newFakeGPUs(1, 8*GiB))
	_, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "s1", MemoryBytes: GiB})
	require.NoError(t, err)
	require.NoFileExists(t, filepath.Join(cfg.CDIDir, "vgpu.io-slice_s1.json"))
}

// TestCDIFilesKeptAcrossRestarts: a restarted vgpud keeps the preload file
// and the skeleton's mount points (same inodes): containers have mounts on
// them, which replacing the files would detach. A preload file with stale
// content is rewritten in place.
func TestCDIFilesKeptAcrossRestarts(t *testing.T) {
	cfg := DefaultConfig()
	cfg.StateDir = t.TempDir()
	cfg.CDIDir = t.TempDir()
	first := newCDIPublisher(cfg, zap.NewNop())
	require.NotEmpty(t, first.dir, "publishing is on")
	files := []string{first.preload, filepath.Join(first.skeleton, "slice", "budget"), filepath.Join(first.skeleton, "slice", "usage")}
	inodes := make([]uint64, len(files))
	for i, f := range files {
		inodes[i] = inodeOf(t, f)
	}
	require.NoError(t, os.WriteFile(first.preload, []byte("/stale/libvgpu.so\n"), 0o644))

	second := newCDIPublisher(cfg, zap.NewNop())
	require.NotEmpty(t, second.dir)
	for i, f := range files {
		require.Equal(t, inodes[i], inodeOf(t, f), "%s replaced", f)
	}
	data, err := os.ReadFile(second.preload)
	require.NoError(t, err)
	require.Equal(t, cdiContainerLibVGPU+"\n", string(data))
}

func inodeOf(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(path, &st))
	return st.Ino
}
