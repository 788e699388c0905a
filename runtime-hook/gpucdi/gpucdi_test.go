package gpucdi

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/stretchr/testify/require"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/vgpu-project/vgpu/daemon/api"
)

const gpuSpec = `cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    env: [GPU=0]
- name: GPU-aaaa
  containerEdits:
    env: [GPU=0]
containerEdits:
  env: [COMMON=1]
`

// TestWriteSpecValidatesAndLoads: a written spec is what CDI reads back, at
// the oldest version that carries it; an invalid one is refused and nothing
// is written.
func TestWriteSpecValidatesAndLoads(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nvidia.yaml"), []byte(gpuSpec), 0o644))
	spec := &cdispec.Spec{Kind: SliceKind, Devices: []cdispec.Device{{Name: "s1",
		ContainerEdits: cdispec.ContainerEdits{Env: []string{"A=b"}}}}}
	require.NoError(t, WriteSpec(dir, "vgpu.io-slice_s1", spec))
	require.Equal(t, "0.3.0", spec.Version)

	bad := &cdispec.Spec{Kind: SliceKind, Devices: []cdispec.Device{{Name: "bad name!"}}}
	require.Error(t, WriteSpec(dir, "vgpu.io-slice_bad", bad))
	require.NoFileExists(t, filepath.Join(dir, "vgpu.io-slice_bad.json"))
	staged, err := os.ReadDir(filepath.Join(dir, StagingDir))
	require.NoError(t, err)
	require.Empty(t, staged, "nothing left in the staging dir")

	n, err := Load([]string{dir}, DefaultKind)
	require.NoError(t, err)
	names, err := n.DeviceNames([]api.SliceDevice{{Index: 0, UUID: "GPU-aaaa"}, {Index: 0, UUID: "GPU-other"}})
	require.NoError(t, err)
	require.Equal(t, []string{"nvidia.com/gpu=GPU-aaaa", "nvidia.com/gpu=0"}, names, "by UUID, else by index")
	edits, err := n.Edits(names)
	require.NoError(t, err)
	require.Equal(t, []string{"COMMON=1", "GPU=0", "GPU=0"}, edits.Env, "the common edits once")

	require.NoError(t, RemoveSpec(dir, "vgpu.io-slice_s1"))
	require.NoError(t, RemoveSpec(dir, "vgpu.io-slice_s1"), "already gone")
	_, err = Load([]string{dir}, "bad")
	require.ErrorContains(t, err, "vendor/class")
}

// BenchmarkLoad: what a create pays to read the node's specs beside 200
// published slices.
func BenchmarkLoad(b *testing.B) {
	dir := b.TempDir()
	require.NoError(b, os.WriteFile(filepath.Join(dir, "nvidia.yaml"), []byte(gpuSpec), 0o644))
	for i := 0; i < 200; i++ {
		spec := &cdispec.Spec{Kind: SliceKind, Devices: []cdispec.Device{{Name: fmt.Sprintf("s%d", i),
			ContainerEdits: cdispec.ContainerEdits{Env: []string{"A=b"}, Mounts: []*cdispec.Mount{
				{HostPath: "/a", ContainerPath: "/b", Options: []string{"bind", "ro"}}}}}}}
		require.NoError(b, WriteSpec(dir, fmt.Sprintf("vgpu.io-slice_s%d", i), spec))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Load([]string{dir}, DefaultKind); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLoadPriorityAndConflicts: a device in a later dir wins; two specs of
// one dir naming the same device drop it, with both files in the error; a
// slice spec vgpud published is never read (not even when malformed).
func TestLoadPriorityAndConflicts(t *testing.T) {
	etc, run := t.TempDir(), t.TempDir()
	write := func(dir, name, env string) {
		spec := fmt.Sprintf("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    env: [%s]\n", env)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(spec), 0o644))
	}
	write(etc, "nvidia.yaml", "FROM=etc")
	write(run, "nvidia.yaml", "FROM=run")
	require.NoError(t, os.WriteFile(filepath.Join(run, SpecName("x")+".json"), []byte("{"), 0o644))
	n, err := Load([]string{etc, run}, DefaultKind)
	require.NoError(t, err)
	edits, err := n.Edits([]string{"nvidia.com/gpu=0"})
	require.NoError(t, err)
	require.Equal(t, []string{"FROM=run"}, edits.Env)
	require.Empty(t, n.errs, "the slice spec is skipped")

	write(etc, "other.yaml", "FROM=other")
	_, err = Load([]string{etc}, DefaultKind)
	require.ErrorContains(t, err, "conflicting device nvidia.com/gpu=0")
}

// TestNodeCache: the node's specs are read once while no spec file changes;
// a rewritten, replaced or removed spec is read again; an error is not kept.
// Slice specs and the staging directory beside them are not the node's.
func TestNodeCache(t *testing.T) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "nvidia.yaml")
	require.NoError(t, os.WriteFile(spec, []byte(gpuSpec), 0o644))
	c := NewNodeCache([]string{dir}, DefaultKind)
	n1, err := c.Load()
	require.NoError(t, err)
	require.NoError(t, WriteSpec(dir, "vgpu.io-slice_s1", &cdispec.Spec{Kind: SliceKind,
		Devices: []cdispec.Device{{Name: "s1", ContainerEdits: cdispec.ContainerEdits{Env: []string{"A=b"}}}}}))
	n2, err := c.Load()
	require.NoError(t, err)
	require.Same(t, n1, n2, "a slice's spec and the staging dir are not the node's: nothing read again")

	// Another GPU added (a longer file, written in place).
	more := strings.Replace(gpuSpec, "devices:\n", "devices:\n- name: \"7\"\n  containerEdits:\n    env: [GPU=7]\n", 1)
	require.NoError(t, os.WriteFile(spec, []byte(more), 0o644))
	n3, err := c.Load()
	require.NoError(t, err)
	require.NotSame(t, n1, n3)
	_, err = n3.DeviceNames([]api.SliceDevice{{Index: 7, UUID: "GPU-seven"}})
	require.NoError(t, err, "the new device is known")

	require.NoError(t, os.Remove(spec))
	_, err = c.Load()
	require.ErrorContains(t, err, "no CDI device of kind nvidia.com/gpu")
	require.NoError(t, os.WriteFile(spec, []byte(gpuSpec), 0o644))
	n4, err := c.Load()
	require.NoError(t, err, "the error was not kept")
	_, err = n4.DeviceNames([]api.SliceDevice{{Index: 7, UUID: "GPU-seven"}})
	require.Error(t, err, "the spec as it is now: no device 7")
}

// TestWriteSpecSeenByWatchers: container runtimes' CDI caches watch the spec
// dir and refresh on a write or a rename in it; older ones (containerd 1.7's)
// ignore a file that is only moved in from elsewhere (fsnotify's Create for
// the destination). A spec WriteSpec publishes must give such a watcher an
// event it refreshes on.
func TestWriteSpecSeenByWatchers(t *testing.T) {
	dir := t.TempDir()
	w, err := fsnotify.NewWatcher()
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.Add(dir))
	require.NoError(t, WriteSpec(dir, "vgpu.io-slice_s1", &cdispec.Spec{Kind: SliceKind,
		Devices: []cdispec.Device{{Name: "s1", ContainerEdits: cdispec.ContainerEdits{Env: []string{"A=b"}}}}}))
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-w.Events:
			if ev.Op&(fsnotify.Write|fsnotify.Rename) != 0 {
				require.FileExists(t, filepath.Join(dir, "vgpu.io-slice_s1.json"))
				return
			}
		case err := <-w.Errors:
			require.NoError(t, err)
		case <-deadline:
			t.Fatal("no write or rename event in the spec dir: an older CDI cache would not see the spec")
		}
	}
}
