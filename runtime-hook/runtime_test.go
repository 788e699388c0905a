package runtimehook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
)

const testUUID = "GPU-391f319a-ca6f-4092-8327-918d834bf021"

type fakeVGPUD struct {
	allocErr   error
	devicesErr error
	releaseErr error
	sliceDir   string
	allocs     []api.AllocRequest
	releases   []string
}

func (f *fakeVGPUD) Devices(context.Context) ([]api.Device, error) {
	return []api.Device{{Index: 0, UUID: testUUID, Minor: 3}}, f.devicesErr
}

func (f *fakeVGPUD) Alloc(_ context.Context, req api.AllocRequest) (api.Slice, error) {
	f.allocs = append(f.allocs, req)
	if f.allocErr != nil {
		return api.Slice{}, f.allocErr
	}
	return api.Slice{ID: req.ID, Dir: f.sliceDir, Owner: req.Owner,
		Devices: []api.SliceDevice{{Index: 0, UUID: testUUID, MemoryBytes: req.MemoryBytes}}}, nil
}

func (f *fakeVGPUD) Release(_ context.Context, id string) error {
	f.releases = append(f.releases, id)
	return f.releaseErr
}

// harness is a Runtime whose outside world is a temp dir and fakes.
type harness struct {
	t       *testing.T
	dir     string
	bundle  string
	log     string
	env     map[string]string
	vgpud   *fakeVGPUD
	stderr  bytes.Buffer
	execs   [][]string
	childs  [][]string
	childRC int
	r       *Runtime
}

func newHarness(t *testing.T, annotations map[string]string, env ...string) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, dir: dir, bundle: filepath.Join(dir, "bundle"), log: filepath.Join(dir, "bundle", "log.json")}
	require.NoError(t, os.MkdirAll(h.bundle, 0o755))
	data, err := os.ReadFile("testdata/containerd-1.6-ctr.json")
	require.NoError(t, err)
	var s map[string]any
	require.NoError(t, json.Unmarshal(data, &s))
	if annotations != nil {
		s["annotations"] = annotations
	}
	proc := s["process"].(map[string]any)
	proc["env"] = append([]any{"PATH=/usr/bin:/bin"}, toAny(env)...)
	data, err = json.MarshalIndent(s, "", "\t")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(h.bundle, "config.json"), data, 0o640))

	sliceDir := filepath.Join(dir, "slices", "c1")
	require.NoError(t, os.MkdirAll(sliceDir, 0o755))
	for _, f := range []string{"budget", "usage"} {
		require.NoError(t, os.WriteFile(filepath.Join(sliceDir, f), []byte("x"), 0o644))
	}
	lib := filepath.Join(dir, "libvgpu.so")
	require.NoError(t, os.WriteFile(lib, []byte("ELF"), 0o755))
	runc := filepath.Join(dir, "runc")
	require.NoError(t, os.WriteFile(runc, []byte("#!/bin/sh\n"), 0o755))
	self := filepath.Join(dir, "vgpu-runtime")
	require.NoError(t, os.WriteFile(self, []byte("#!/bin/sh\n"), 0o755))
	// The node's GPUs: a CDI spec naming the slice's device by UUID, with
	// a stand-in file for its node (no root needed; the nvidia-ctk fixture
	// test hands over real device nodes).
	node := filepath.Join(dir, "gpu0")
	require.NoError(t, os.WriteFile(node, nil, 0o666))
	writeCDI(t, filepath.Join(dir, "cdi"), "nvidia.yaml", fmt.Sprintf(`cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: %s
  containerEdits:
    mounts:
    - {hostPath: %s, containerPath: /dev/nvidia0, options: [rw, nosuid, nodev, bind]}
containerEdits:
  env: [NVIDIA_VISIBLE_DEVICES=void]
`, testUUID, node))

	h.env = map[string]string{
		EnvConfig: filepath.Join(dir, "none.json"), // absent: must be an error only when acting
		EnvRunc:   runc, EnvSocket: filepath.Join(dir, "vgpud.sock"), EnvLibVGPU: lib,
	}
	cfg := fmt.Sprintf(`{"state_dir": %q, "cdi_spec_dirs": [%q]}`, filepath.Join(dir, "state"), filepath.Join(dir, "cdi"))
	require.NoError(t, os.WriteFile(h.env[EnvConfig], []byte(cfg), 0o644))
	h.vgpud = &fakeVGPUD{sliceDir: sliceDir}
	h.r = &Runtime{
		Getenv:  func(k string) string { return h.env[k] },
		Environ: []string{"PATH=/usr/bin"},
		Stderr:  &h.stderr,
		Exec: func(path string, argv, env []string) error {
			h.execs = append(h.execs, argv)
			return errors.New("exec stub")
		},
		RunChild: func(path string, argv, env []string) (int, error) {
			h.childs = append(h.childs, argv)
			return h.childRC, nil
		},
		NewClient:  func(string) VGPUD { return h.vgpud },
		Executable: self,
	}
	return h
}

// writeCDI writes a CDI spec file into dir.
func writeCDI(t *testing.T, dir, name, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (h *harness) createArgs(id string) []string {
	return []string{"--root", "/run/containerd/runc/ns", "--log", h.log, "--log-format", "json",
		"create", "--bundle", h.bundle, "--pid-file", filepath.Join(h.bundle, "init.pid"), id}
}

func (h *harness) run(args ...string) int {
	h.r.Args = args
	return h.r.Main()
}

func (h *harness) config() []byte {
	data, err := os.ReadFile(filepath.Join(h.bundle, "config.json"))
	require.NoError(h.t, err)
	return data
}

func (h *harness) spec() *specs.Spec {
	s, err := DecodeSpec(h.config())
	require.NoError(h.t, err)
	return s
}

// lastLogError is what containerd reports: the last error line of runc's log.
func (h *harness) lastLogError() string {
	data, err := os.ReadFile(h.log)
	require.NoError(h.t, err)
	last := ""
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var e struct{ Level, Msg, Time string }
		require.NoError(h.t, json.Unmarshal([]byte(line), &e), "log line %q is JSON", line)
		require.NotEmpty(h.t, e.Time)
		if e.Level == "error" {
			last = e.Msg
		}
	}
	return last
}

func TestPassThroughOtherCommands(t *testing.T) {
	h := newHarness(t, map[string]string{"vgpu.io/memory": "1GiB"})
	before := h.config()
	for _, args := range [][]string{
		{"--root", "/r", "start", "c1"},
		{"--root", "/r", "--log", "/l", "delete", "--force", "c1"},
		{"state", "c1"},
		{"--version"},
		{"run", "--bundle", h.bundle, "c1"},
	} {
		h.execs = nil
		require.Equal(t, exitFail, h.run(args...), "the exec stub returns, which is a failure")
		require.Equal(t, [][]string{append([]string{h.env[EnvRunc]}, args...)}, h.execs, "argv reaches runc untouched")
	}
	require.Empty(t, h.vgpud.allocs)
	require.Equal(t, before, h.config())
}

func TestPassThroughWithoutRequest(t *testing.T) {
	for name, c := range map[string]struct {
		ann map[string]string
		env []string
	}{
		"no request":     {map[string]string{"a": "b"}, nil},
		"no annotations": {nil, nil},
		"sandbox with pod annotations": {map[string]string{"io.kubernetes.cri.container-type": "sandbox",
			"vgpu.io/memory": "1GiB"}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, c.ann, c.env...)
			// A broken config must not break containers that ask for nothing.
			require.NoError(t, os.WriteFile(h.env[EnvConfig], []byte(`{"bogus": 1}`), 0o644))
			before := h.config()
			st0, err := os.Stat(filepath.Join(h.bundle, "config.json"))
			require.NoError(t, err)
			args := h.createArgs("c1")
			h.run(args...)
			require.Equal(t, [][]string{append([]string{h.env[EnvRunc]}, args...)}, h.execs)
			require.Empty(t, h.childs)
			require.Empty(t, h.vgpud.allocs)
			require.Equal(t, before, h.config(), "config.json byte-for-byte unchanged")
			st1, err := os.Stat(filepath.Join(h.bundle, "config.json"))
			require.NoError(t, err)
			require.True(t, os.SameFile(st0, st1), "not even rewritten")
			require.Equal(t, st0.ModTime(), st1.ModTime())
		})
	}
}

func TestCreateWithRequest(t *testing.T) {
	h := newHarness(t, map[string]string{"vgpu.io/memory": "1GiB", "other": "x"},
		"VGPU_CORES=50", "LD_LIBRARY_PATH=/opt/lib")
	args := h.createArgs("c1")
	require.Equal(t, 0, h.run(append([]string{"--vgpu-socket", "/s.sock"}, args...)...), h.stderr.String())
	require.Empty(t, h.execs)
	require.Equal(t, [][]string{append([]string{h.env[EnvRunc]}, args...)}, h.childs, "runc create with the original argv")
	require.Equal(t, []api.AllocRequest{{ID: "c1", MemoryBytes: 1 << 30, ComputePercent: 50,
		Owner: api.Owner{Kind: api.OwnerContainer, ContainerID: "c1", RuncRoot: "/run/containerd/runc/ns"}}}, h.vgpud.allocs)
	require.Empty(t, h.vgpud.releases)
	require.Empty(t, h.stderr.String(), "nothing said on success")

	s := h.spec()
	st, err := os.Stat(filepath.Join(h.bundle, "config.json"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), st.Mode().Perm())
	mounts := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
	}
	state := filepath.Join(h.dir, "state")
	sliceDir := h.vgpud.sliceDir
	for dst, want := range map[string]struct {
		src string
		ro  bool
	}{
		ContainerLibVGPU:              {h.env[EnvLibVGPU], true},
		ContainerPreload:              {filepath.Join(state, "ld.so.preload"), true},
		ContainerVGPUDir:              {filepath.Join(state, "skeleton"), true},
		ContainerSliceDir + "/budget": {filepath.Join(sliceDir, "budget"), true},
		ContainerSliceDir + "/usage":  {filepath.Join(sliceDir, "usage"), false},
	} {
		m, ok := mounts[dst]
		require.True(t, ok, "mount %s", dst)
		require.Equal(t, want.src, m.Source, dst)
		require.Equal(t, "bind", m.Type)
		require.Contains(t, m.Options, map[bool]string{true: "ro", false: "rw"}[want.ro], dst)
	}
	// Ours come after the spec's own mounts (ctr's /run tmpfs), so they win
	// over them: CDI sorts the mounts by depth, stably, which keeps that.
	at := map[string]int{}
	for i, m := range s.Mounts {
		at[m.Destination] = i
	}
	require.Less(t, at["/run"], at[ContainerVGPUDir])
	require.Less(t, at[ContainerVGPUDir], at[ContainerSliceDir+"/budget"])
	preload, err := os.ReadFile(filepath.Join(state, "ld.so.preload"))
	require.NoError(t, err)
	require.Equal(t, ContainerLibVGPU+"\n", string(preload))
	for _, f := range []string{"budget", "usage"} {
		st, err := os.Stat(filepath.Join(state, "skeleton", "slice", f))
		require.NoError(t, err)
		require.True(t, st.Mode().IsRegular(), "mount point %s exists in the read-only skeleton", f)
	}
	require.Contains(t, s.Process.Env, "VGPU_SLICE_ID=c1")
	require.Contains(t, s.Process.Env, "LD_LIBRARY_PATH=/opt/lib", "untouched: the node's CDI spec sets none")
	require.Contains(t, s.Process.Env, "NVIDIA_VISIBLE_DEVICES=void", "the CDI spec's env")
	require.Equal(t, filepath.Join(h.dir, "gpu0"), mounts["/dev/nvidia0"].Source, "the CDI device's mount")
	require.Contains(t, s.Process.Env, "VGPU_CORES=50")

	require.Len(t, s.Hooks.Poststop, 1)
	hook := s.Hooks.Poststop[0]
	require.Equal(t, h.r.Executable, hook.Path)
	require.Equal(t, []string{"vgpu-runtime", "hook", "poststop", "--socket", "/s.sock", "--id", "c1"}, hook.Args)
	require.Equal(t, []string{HookPATH}, hook.Env, "the hook's env is explicit: never the container's")
	require.NotNil(t, hook.Timeout)
	require.Empty(t, s.Linux.Devices, "the CDI spec names no device node")
}

func TestCreateFailures(t *testing.T) {
	t.Run("malformed request", func(t *testing.T) {
		h := newHarness(t, map[string]string{"vgpu.io/memory": "lots"})
		before := h.config()
		require.Equal(t, exitFail, h.run(h.createArgs("c1")...))
		require.Contains(t, h.lastLogError(), `container c1: malformed vGPU request: annotation vgpu.io/memory="lots"`)
		require.Contains(t, h.stderr.String(), "vgpu-runtime: container c1: malformed")
		require.Empty(t, h.vgpud.allocs)
		require.Empty(t, h.childs)
		require.Equal(t, before, h.config())
	})
	t.Run("vgpud down", func(t *testing.T) {
		h := newHarness(t, nil, "VGPU_MEMORY=1GiB")
		h.vgpud.allocErr = fmt.Errorf("%w at /x.sock: connection refused", api.ErrNotRunning)
		before := h.config()
		require.Equal(t, exitFail, h.run(h.createArgs("c1")...))
		require.Contains(t, h.lastLogError(), "vgpud did not give a slice (memory 1073741824 bytes): vgpud is not running")
		require.Empty(t, h.childs)
		require.Empty(t, h.vgpud.releases, "nothing was allocated")
		require.Equal(t, before, h.config())
	})
	t.Run("impossible request", func(t *testing.T) {
		h := newHarness(t, map[string]string{"vgpu.io/memory": "1TiB"})
		h.vgpud.allocErr = &api.StatusError{StatusCode: http.StatusUnprocessableEntity, Message: "no device fits",
			Reasons: []string{testUUID + ": 16GiB free, 1TiB asked"}}
		require.Equal(t, exitFail, h.run(h.createArgs("c1")...))
		require.Contains(t, h.lastLogError(), "no device fits: "+testUUID+": 16GiB free, 1TiB asked")
	})
	t.Run("slice files missing: rolled back", func(t *testing.T) {
		h := newHarness(t, map[string]string{"vgpu.io/memory": "1GiB"})
		require.NoError(t, os.Remove(filepath.Join(h.vgpud.sliceDir, "usage")))
		require.Equal(t, exitFail, h.run(h.createArgs("c1")...))
		require.Contains(t, h.lastLogError(), "slice usage")
		require.Equal(t, []string{"c1"}, h.vgpud.releases)
	})
	t.Run("runc create fails: released", func(t *testing.T) {
		h := newHarness(t, map[string]string{"vgpu.io/memory": "1GiB"})
		h.childRC = 1
		require.Equal(t, 1, h.run(h.createArgs("c1")...))
		require.Equal(t, []string{"c1"}, h.vgpud.releases)
	})
	t.Run("unknown spec field", func(t *testing.T) {
		h := newHarness(t, map[string]string{"vgpu.io/memory": "1GiB"})
		data := bytes.Replace(h.config(), []byte(`"ociVersion"`), []byte(`"fromTheFuture": 1, "ociVersion"`), 1)
		require.NoError(t, os.WriteFile(filepath.Join(h.bundle, "config.json"), data, 0o644))
		require.Equal(t, exitFail, h.run(h.createArgs("c1")...))
		require.Contains(t, h.lastLogError(), `unknown field "fromTheFuture"`)
		require.Empty(t, h.vgpud.allocs)
		require.Equal(t, data, h.config())
	})
	t.Run("libvgpu missing", func(t *testing.T) {
		h := newHarness(t, map[string]string{"vgpu.io/memory": "1GiB"})
		require.NoError(t, os.Remove(h.env[EnvLibVGPU]))
		require.Equal(t, exitFail, h.run(h.createArgs("c1")...))
		require.Contains(t, h.lastLogError(), "libvgpu: stat")
		require.Empty(t, h.vgpud.allocs)
	})
	t.Run("broken config with a request", func(t *testing.T) {
		h := newHarness(t, map[string]string{"vgpu.io/memory": "1GiB"})
		require.NoError(t, os.WriteFile(h.env[EnvConfig], []byte(`{"sockett": "/x"}`), 0o644))
		require.Equal(t, exitFail, h.run(h.createArgs("c1")...))
		require.Contains(t, h.lastLogError(), `runtime config is broken`)
		require.Contains(t, h.lastLogError(), `unknown field "sockett"`)
	})
	t.Run("runc is vgpu-runtime", func(t *testing.T) {
		h := newHarness(t, nil)
		h.env[EnvRunc] = h.r.Executable
		require.Equal(t, exitFail, h.run("--log", h.log, "state", "c1"))
		require.Contains(t, h.stderr.String(), "is vgpu-runtime itself")
		require.Empty(t, h.execs)
	})
}

func TestHookPoststop(t *testing.T) {
	h := newHarness(t, nil)
	h.r.Stdin = strings.NewReader(`{"ociVersion":"1.0.2","id":"c1","status":"stopped"}`)
	require.Equal(t, 0, h.run("hook", "poststop", "--socket", "/s", "--id", "c1"))
	require.Equal(t, []string{"c1"}, h.vgpud.releases)

	h.vgpud.releaseErr = &api.StatusError{StatusCode: http.StatusNotFound, Message: "no slice c1"}
	require.Equal(t, 0, h.run("hook", "poststop", "--id", "c1"), "already released is fine")
	require.Empty(t, h.stderr.String())

	h.vgpud.releaseErr = fmt.Errorf("%w: refused", api.ErrNotRunning)
	require.Equal(t, 0, h.run("hook", "poststop", "--id", "c1"), "a poststop failure must not fail runc delete")
	require.Contains(t, h.stderr.String(), "release slice c1")

	require.Equal(t, exitUsage, h.run("hook", "poststop"))
	require.Equal(t, exitUsage, h.run("hook", "prestart", "--id", "c1"))
}

func TestConfigLoad(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }

	// The default path is absent on a test machine (or holds a real config):
	// point at a missing named file first, which is an error.
	env[EnvConfig] = filepath.Join(dir, "missing.json")
	_, err := LoadConfig(getenv, Overrides{})
	require.ErrorContains(t, err, "missing.json")

	p := filepath.Join(dir, "runtime.json")
	require.NoError(t, os.WriteFile(p, []byte(`{"runc": "/usr/sbin/runc", "socket": "/a.sock", "timeout": "3s",
		"cdi_spec_dirs": ["/etc/cdi"], "cdi_kind": "example.com/gpu"}`), 0o644))
	env[EnvConfig] = p
	cfg, err := LoadConfig(getenv, Overrides{})
	require.NoError(t, err)
	require.Equal(t, "/usr/sbin/runc", cfg.Runc)
	require.Equal(t, "/a.sock", cfg.Socket)
	require.Equal(t, DefaultLibVGPU, cfg.LibVGPU)
	require.Equal(t, []string{"/etc/cdi"}, cfg.CDISpecDirs)
	require.Equal(t, "example.com/gpu", cfg.CDIKind)
	require.Equal(t, p, cfg.Source)

	env[EnvSocket] = "/env.sock"
	env[EnvLibVGPU] = "/env/libvgpu.so"
	cfg, err = LoadConfig(getenv, Overrides{Socket: "/flag.sock"})
	require.NoError(t, err)
	require.Equal(t, "/flag.sock", cfg.Socket, "flags win over env")
	require.Equal(t, "/env/libvgpu.so", cfg.LibVGPU, "env wins over the file")

	require.NoError(t, os.WriteFile(p, []byte(`{"libvgpu": "relative.so"}`), 0o644))
	_, err = LoadConfig(getenv, Overrides{LibVGPU: "rel"})
	require.ErrorContains(t, err, "not an absolute path")
	require.NoError(t, os.WriteFile(p, []byte(`{"cdi_kind": "gpu"}`), 0o644))
	_, err = LoadConfig(getenv, Overrides{})
	require.ErrorContains(t, err, "cdi_kind")
	require.NoError(t, os.WriteFile(p, []byte(`{"cdi_spec_dirs": ["cdi"]}`), 0o644))
	_, err = LoadConfig(getenv, Overrides{})
	require.ErrorContains(t, err, "cdi_spec_dirs")
	require.NoError(t, os.WriteFile(p, []byte(`{"timeout": "soon"}`), 0o644))
	_, err = LoadConfig(getenv, Overrides{})
	require.ErrorContains(t, err, "duration")
}

func TestRuncLogFormats(t *testing.T) {
	tm := mustTime(t, "2026-01-02T03:04:05Z")
	require.Equal(t, `{"level":"error","msg":"vgpu-runtime: x \"y\"","time":"2026-01-02T03:04:05Z"}`+"\n",
		FormatRuncLogLine("json", "error", `vgpu-runtime: x "y"`, tm))
	require.Equal(t, `time="2026-01-02T03:04:05Z" level=error msg="vgpu-runtime: bad thing"`+"\n",
		FormatRuncLogLine("text", "error", "vgpu-runtime: bad thing", tm))

	dir := t.TempDir()
	var stderr bytes.Buffer
	l := &RuncLog{Path: filepath.Join(dir, "log"), Format: "text", Stderr: &stderr}
	l.Error("one")
	l.Warn("two")
	data, err := os.ReadFile(l.Path)
	require.NoError(t, err)
	require.Contains(t, string(data), `level=error msg="vgpu-runtime: one"`)
	require.Contains(t, string(data), `level=warning msg="vgpu-runtime: two"`)
	require.Equal(t, "vgpu-runtime: one\nvgpu-runtime: two\n", stderr.String())
}

// deploy/vgpu-runtime.json is the documented example: every key at its default.
func TestDeployConfigIsDefaults(t *testing.T) {
	cfg, err := LoadConfig(func(k string) string {
		if k == EnvConfig {
			return "../deploy/vgpu-runtime.json"
		}
		return ""
	}, Overrides{})
	require.NoError(t, err)
	want := DefaultConfig()
	want.Source = "../deploy/vgpu-runtime.json"
	require.Equal(t, want, cfg)
}
