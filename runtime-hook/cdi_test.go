package runtimehook

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestCreateAppliesNvidiaCTKSpec: a spec in the exact shape `nvidia-ctk cdi
// generate` writes (testdata/nvidia-ctk.yaml, its /dev moved to real char
// devices in a temp dir) is applied for the slice's device only: the common
// nodes and the slice's GPU as device nodes with cgroup allow rules, not the
// other GPU; the driver's mounts; nvidia-ctk's createContainer hooks; its env.
func TestCreateAppliesNvidiaCTKSpec(t *testing.T) {
	h := newHarness(t, map[string]string{"vgpu.io/memory": "1GiB"})
	dev := filepath.Join(h.dir, "dev")
	require.NoError(t, os.MkdirAll(filepath.Join(dev, "dri"), 0o755))
	nodes := map[string]uint32{"nvidia-modeset": 254, "nvidia-uvm": 0, "nvidia-uvm-tools": 1, "nvidiactl": 255,
		"nvidia0": 0, "nvidia1": 1, "dri/card1": 1, "dri/renderD128": 128, "dri/card2": 2, "dri/renderD129": 129}
	for name, minor := range nodes {
		err := unix.Mknod(filepath.Join(dev, name), unix.S_IFCHR|0o666, int(unix.Mkdev(195, minor)))
		if errors.Is(err, unix.EPERM) {
			t.Skip("mknod needs root (make test runs as root)")
		}
		require.NoError(t, err)
	}
	fixture, err := os.ReadFile("testdata/nvidia-ctk.yaml")
	require.NoError(t, err)
	cdiDir := filepath.Join(h.dir, "cdi")
	writeCDI(t, cdiDir, "nvidia.yaml", strings.ReplaceAll(string(fixture), "/dev/", dev+"/"))

	require.Equal(t, 0, h.run(h.createArgs("c1")...), h.stderr.String())
	s := h.spec()
	var paths []string
	for _, d := range s.Linux.Devices {
		paths = append(paths, strings.TrimPrefix(d.Path, dev+"/"))
		require.Equal(t, "c", d.Type)
	}
	require.ElementsMatch(t, []string{"nvidia-modeset", "nvidia-uvm", "nvidia-uvm-tools", "nvidiactl",
		"nvidia0", "dri/card1", "dri/renderD128"}, paths, "the common nodes and the slice's GPU, not nvidia1")
	allowed := 0
	for _, r := range s.Linux.Resources.Devices {
		if r.Allow && r.Major != nil && *r.Major == 195 {
			require.Equal(t, "rwm", r.Access)
			allowed++
		}
	}
	require.Equal(t, 7, allowed, "a cgroup allow rule per node")

	mounts := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
	}
	for _, dst := range []string{"/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15",
		"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15", "/usr/bin/nvidia-smi", "/run/nvidia-persistenced/socket",
		ContainerPreload, ContainerSliceDir + "/budget"} {
		require.Contains(t, mounts, dst)
	}
	require.Contains(t, mounts[ContainerSliceDir+"/budget"].Options, "ro", "the budget stays read-only")

	var hooks []string
	for _, hk := range s.Hooks.CreateContainer {
		require.Equal(t, "/usr/bin/nvidia-cdi-hook", hk.Path)
		hooks = append(hooks, hk.Args[1])
	}
	require.Equal(t, []string{"create-symlinks", "update-ldcache", "create-symlinks", "chmod"}, hooks)
	require.Len(t, s.Hooks.Poststop, 1, "the slice's release hook")
	require.Contains(t, s.Process.Env, "NVIDIA_VISIBLE_DEVICES=void")
	require.Contains(t, s.Process.Env, "VGPU_SLICE_ID=c1")
	require.Empty(t, h.vgpud.releases)
}

// TestCreateMatchesDeviceByIndex: a spec that names the GPUs only by index
// still serves a slice (vgpud answers the device's index and UUID).
func TestCreateMatchesDeviceByIndex(t *testing.T) {
	h := newHarness(t, map[string]string{"vgpu.io/memory": "1GiB"})
	node := filepath.Join(h.dir, "gpu0")
	writeCDI(t, filepath.Join(h.dir, "cdi"), "nvidia.yaml", `cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    mounts: [{hostPath: `+node+`, containerPath: /dev/by-index, options: [rw, bind]}]
`)
	require.Equal(t, 0, h.run(h.createArgs("c1")...), h.stderr.String())
	found := false
	for _, m := range h.spec().Mounts {
		found = found || m.Destination == "/dev/by-index"
	}
	require.True(t, found, "device 0 applied")
}

// TestCreateCDIFailures: a node without its NVIDIA spec, or with a malformed
// one, fails before a slice is taken; a spec without the slice's device, or
// whose device node is missing on the host, fails after, and the slice is
// released. Every error says what to do, config.json is left as it was.
func TestCreateCDIFailures(t *testing.T) {
	for _, c := range []struct {
		name, spec string
		want       []string
		allocated  bool
	}{
		{name: "no spec", want: []string{"no CDI device of kind nvidia.com/gpu",
			"generate it with `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"}},
		{name: "malformed spec", spec: "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: {name: [\n",
			want: []string{"nvidia-ctk cdi generate", "could not be loaded", "nvidia.yaml"}},
		{name: "unknown field", spec: "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevicez: []\n",
			want: []string{"could not be loaded", "devicez"}},
		{name: "device not described", spec: "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n" +
			"- name: \"7\"\n  containerEdits:\n    env: [A=b]\n",
			want: []string{"describe no nvidia.com/gpu device " + testUUID + " (index 0), only 7", "regenerate"}, allocated: true},
		{name: "device node missing", spec: "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n" +
			"- name: \"0\"\n  containerEdits:\n    deviceNodes: [{path: /nonexistent/nvidia0}]\n",
			want: []string{"apply CDI devices nvidia.com/gpu=0", "/nonexistent/nvidia0"}, allocated: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, map[string]string{"vgpu.io/memory": "1GiB"})
			cdiDir := filepath.Join(h.dir, "cdi")
			require.NoError(t, os.Remove(filepath.Join(cdiDir, "nvidia.yaml")))
			if c.spec != "" {
				writeCDI(t, cdiDir, "nvidia.yaml", c.spec)
			}
			before := h.config()
			require.Equal(t, exitFail, h.run(h.createArgs("c1")...))
			for _, w := range c.want {
				require.Contains(t, h.lastLogError(), w)
			}
			require.Empty(t, h.childs, "runc never ran")
			require.Equal(t, before, h.config())
			if c.allocated {
				require.Len(t, h.vgpud.allocs, 1)
				require.Equal(t, []string{"c1"}, h.vgpud.releases, "rolled back: no slice left")
			} else {
				require.Empty(t, h.vgpud.allocs, "no slice taken")
			}
		})
	}
}
