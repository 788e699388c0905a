package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/vgpu-project/vgpu/internal/atomicfile"
)

// ---------------------------------------------------------------- install

const installHelp = `Usage:
  vgpuctl install containerd [--config PATH] [--runtime-path PATH] [--runtime-name NAME]
                             [--config-version 2|3] [--dry-run]

Registers vgpu-runtime with containerd as the runtime "vgpu" (a runtime class
Kubernetes selects with runtimeClassName: vgpu, see deploy/runtimeclass.yaml):

  config version 2 (containerd 1.6, 1.7):
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vgpu]
  config version 3 (containerd 2.x):
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.vgpu]

with runtime_type "io.containerd.runc.v2", everything else (options such as
SystemdCgroup) copied from the runc runtime, options.BinaryName = the runtime
path, and pod_annotations / container_annotations ["vgpu.io/*"] so that the
vGPU request annotations reach the runtime. The config's version decides the
layout; a missing file is created for the installed containerd's major version
(containerd --version), or --config-version.

Idempotent: when the runtime is already there as it would be written, nothing
changes. Otherwise the old file is kept as PATH.vgpu-backup-<time>, and the new
one replaces it atomically. The file is re-encoded: comments and formatting are
not kept (the backup has them). Restart containerd afterwards
(systemctl restart containerd).

Flags:
`

func installCommand() *command {
	return &command{
		name: "install",
		help: `Usage:
  vgpuctl install containerd [flags]   register vgpu-runtime with containerd

Run 'vgpuctl install containerd --help' for details.
`,
		children: []*command{installContainerdCommand()},
	}
}

func installContainerdCommand() *command {
	return &command{name: "containerd", run: func(args []string, stdout, stderr io.Writer) error {
		fs := flag.NewFlagSet("vgpuctl install containerd", flag.ContinueOnError)
		o := installOptions{}
		fs.StringVar(&o.ConfigPath, "config", "/etc/containerd/config.toml", "containerd's config `FILE`")
		fs.StringVar(&o.RuntimePath, "runtime-path", defaultRuntimePath(), "absolute `PATH` of vgpu-runtime")
		fs.StringVar(&o.RuntimeName, "runtime-name", "vgpu", "runtime (handler) `NAME`")
		fs.IntVar(&o.Version, "config-version", 0, "config `VERSION` for a new file: 2 (containerd 1.x) or 3 (2.x); default: from containerd --version")
		fs.BoolVar(&o.DryRun, "dry-run", false, "print the resulting config on stdout, change nothing")
		if err := parseFlags(fs, installHelp, args, stdout); err != nil {
			return err
		}
		res, err := installContainerd(o)
		if err != nil {
			return err
		}
		switch {
		case o.DryRun:
			_, err = stdout.Write(res.Output)
			return err
		case !res.Changed:
			fmt.Fprintf(stdout, "runtime %q is already in %s (config version %d): nothing to do\n",
				o.RuntimeName, o.ConfigPath, res.Version)
		default:
			fmt.Fprintf(stdout, "added runtime %q (%s) to %s (config version %d)\n",
				o.RuntimeName, o.RuntimePath, o.ConfigPath, res.Version)
			if res.Backup != "" {
				fmt.Fprintf(stdout, "previous config kept as %s\n", res.Backup)
			}
			fmt.Fprintln(stdout, "restart containerd to use it: systemctl restart containerd")
		}
		return nil
	}}
}

// defaultRuntimePath is vgpu-runtime next to this vgpuctl, where `make
// install` (and bin/ in the repository) put them.
func defaultRuntimePath() string {
	if exe, err := os.Executable(); err == nil {
		if p, err := filepath.EvalSymlinks(exe); err == nil {
			return filepath.Join(filepath.Dir(p), "vgpu-runtime")
		}
	}
	return "/usr/local/bin/vgpu-runtime"
}

type installOptions struct {
	ConfigPath  string
	RuntimePath string
	RuntimeName string
	Version     int // for a missing file; 0 = detect
	DryRun      bool
	// Now and DetectVersion are replaced by tests.
	Now           func() time.Time
	DetectVersion func() (int, error)
}

type installResult struct {
	Changed bool
	Version int
	Backup  string
	Output  []byte // the resulting config
}

// criRuntimes is where the CRI plugin's runtimes live, per config version.
var criRuntimes = map[int][]string{
	2: {"plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"},
	3: {"plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"},
}

// containerdConfig is containerd's config file as found: its bytes, mode and
// decoded tables (empty when it does not exist yet).
type containerdConfig struct {
	data   []byte
	exists bool
	mode   os.FileMode
	cfg    map[string]any
}

func readContainerdConfig(path string) (containerdConfig, error) {
	c := containerdConfig{mode: 0o644, cfg: map[string]any{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read containerd config: %w", err)
	}
	c.data, c.exists = data, true
	if st, err := os.Stat(path); err == nil {
		c.mode = st.Mode().Perm()
	}
	if err := toml.Unmarshal(data, &c.cfg); err != nil {
		return c, fmt.Errorf("parse %s: %w", path, err)
	}
	return c, nil
}

// runtimeEntry is the vgpu runtime's table: runc's own (so its options, e.g.
// SystemdCgroup, carry over) with vgpu-runtime as the binary and the vgpu.io
// annotations allowed through (CRI passes only allow-listed annotations to the
// runtime).
func runtimeEntry(runtimes map[string]any, runtimePath string) map[string]any {
	want := map[string]any{}
	if runc, ok := runtimes["runc"].(map[string]any); ok {
		want = deepCopy(runc).(map[string]any)
	}
	want["runtime_type"] = "io.containerd.runc.v2"
	opts, _ := want["options"].(map[string]any)
	if opts == nil {
		opts = map[string]any{}
	}
	opts["BinaryName"] = runtimePath
	want["options"] = opts
	want["pod_annotations"] = mergeList(want["pod_annotations"], "vgpu.io/*")
	want["container_annotations"] = mergeList(want["container_annotations"], "vgpu.io/*")
	return want
}

func installContainerd(o installOptions) (installResult, error) {
	if o.RuntimeName == "" || !regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`).MatchString(o.RuntimeName) {
		return installResult{}, usagef("--runtime-name %q: want letters, digits, '_', '.', '-'", o.RuntimeName)
	}
	if !filepath.IsAbs(o.RuntimePath) {
		return installResult{}, usagef("--runtime-path %q is not absolute (containerd needs the full path)", o.RuntimePath)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DetectVersion == nil {
		o.DetectVersion = containerdConfigVersion
	}
	var res installResult
	cur, err := readContainerdConfig(o.ConfigPath)
	if err != nil {
		return res, err
	}
	data, exists, mode, cfg := cur.data, cur.exists, cur.mode, cur.cfg
	version, err := configVersion(cfg, exists, o)
	if err != nil {
		return res, fmt.Errorf("%s: %w", o.ConfigPath, err)
	}
	res.Version = version
	cfg["version"] = int64(version)

	runtimes, err := table(cfg, criRuntimes[version])
	if err != nil {
		return res, fmt.Errorf("%s: %w", o.ConfigPath, err)
	}
	want := runtimeEntry(runtimes, o.RuntimePath)

	if cur, ok := runtimes[o.RuntimeName]; ok && reflect.DeepEqual(normalize(cur), normalize(want)) {
		res.Output = data
		return res, nil
	}
	runtimes[o.RuntimeName] = want
	var out bytes.Buffer
	out.WriteString("# containerd config; runtime \"" + o.RuntimeName + "\" added by vgpuctl install containerd\n")
	enc := toml.NewEncoder(&out)
	enc.SetIndentTables(true)
	if err := enc.Encode(cfg); err != nil {
		return res, fmt.Errorf("encode containerd config: %w", err)
	}
	res.Output = out.Bytes()
	res.Changed = true
	if o.DryRun {
		return res, nil
	}
	if exists {
		res.Backup = o.ConfigPath + ".vgpu-backup-" + o.Now().UTC().Format("20060102T150405Z")
		if err := atomicfile.Write(res.Backup, data, mode, atomicfile.Durable); err != nil {
			return res, fmt.Errorf("back up %s: %w", o.ConfigPath, err)
		}
	} else if err := os.MkdirAll(filepath.Dir(o.ConfigPath), 0o755); err != nil {
		return res, fmt.Errorf("create config dir: %w", err)
	}
	// Durable: a half-written containerd config would stop containerd from starting.
	if err := atomicfile.Write(o.ConfigPath, res.Output, mode, atomicfile.Durable); err != nil {
		return res, err
	}
	return res, nil
}

// configVersion is the config's layout version. A file without "version" is
// containerd 1.x's version 1, whose layout (plugins.cri) this does not write.
func configVersion(cfg map[string]any, exists bool, o installOptions) (int, error) {
	if !exists {
		if o.Version != 0 {
			if _, ok := criRuntimes[o.Version]; !ok {
				return 0, usagef("--config-version %d: want 2 or 3", o.Version)
			}
			return o.Version, nil
		}
		v, err := o.DetectVersion()
		if err != nil {
			return 0, fmt.Errorf("no config file, and %w (give --config-version 2 or 3)", err)
		}
		return v, nil
	}
	raw, ok := cfg["version"]
	if !ok {
		return 0, errors.New("no \"version\": a version 1 config (containerd 1.x's old layout); " +
			"convert it first: containerd config migrate > new.toml (containerd >= 1.7), or add version = 2 and move its tables")
	}
	v, ok := raw.(int64)
	if !ok {
		return 0, fmt.Errorf("version %v is not an integer", raw)
	}
	if _, ok := criRuntimes[int(v)]; !ok {
		return 0, fmt.Errorf("config version %d is not supported (2: containerd 1.6/1.7, 3: containerd 2.x)", v)
	}
	if o.Version != 0 && o.Version != int(v) {
		return 0, usagef("--config-version %d, but the file is version %d", o.Version, v)
	}
	return int(v), nil
}

// containerdConfigVersion maps the installed containerd to its config version.
func containerdConfigVersion() (int, error) {
	out, err := exec.Command("containerd", "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("cannot run containerd --version: %w", err)
	}
	m := regexp.MustCompile(`\sv?(\d+)\.(\d+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("cannot read the version in %q", bytes.TrimSpace(out))
	}
	major, _ := strconv.Atoi(string(m[1]))
	if major >= 2 {
		return 3, nil
	}
	return 2, nil
}

// table walks (creating) nested tables.
func table(cfg map[string]any, path []string) (map[string]any, error) {
	cur := cfg
	for i, k := range path {
		next, ok := cur[k]
		if !ok {
			m := map[string]any{}
			cur[k] = m
			cur = m
			continue
		}
		m, ok := next.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%v is a %T, not a table", path[:i+1], next)
		}
		cur = m
	}
	return cur, nil
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = deepCopy(e)
		}
		return s
	}
	return v
}

// normalize makes values comparable after a TOML round trip ([]string vs []any).
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = normalize(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = normalize(e)
		}
		return s
	case []string:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = e
		}
		return s
	}
	return v
}

// mergeList adds item to a TOML string list unless it is there.
func mergeList(v any, item string) []any {
	var out []any
	if l, ok := v.([]any); ok {
		out = append(out, l...)
	}
	for _, e := range out {
		if e == item {
			return out
		}
	}
	return append(out, item)
}
