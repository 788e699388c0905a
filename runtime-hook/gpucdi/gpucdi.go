// Package gpucdi finds a node's GPUs in its CDI specs (Container Device
// Interface, tags.cncf.io/container-device-interface) and applies them: the
// driver reaches a vGPU container exactly as the NVIDIA container toolkit
// hands it over (`nvidia-ctk cdi generate`), on a real node and on the
// simulated one (`vgpu-sim init` writes its spec), so there is one code path.
//
// vgpu-runtime applies the devices of a slice; vgpud copies their edits into
// the CDI device it publishes per slice (vgpu.io/slice=<id>).
package gpucdi

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/vgpu-project/vgpu/daemon/api"
)

const (
	// DefaultKind is the kind nvidia-ctk gives the node's GPUs.
	DefaultKind = "nvidia.com/gpu"
	// GenerateHint says how a node gets its NVIDIA CDI spec.
	GenerateHint = "generate it with `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"
	// SliceKind is the kind of the CDI devices vgpud publishes, one per slice.
	SliceKind = "vgpu.io/slice"
)

// DefaultSpecDirs are CDI's standard spec directories, lowest priority first
// (a device in /var/run/cdi wins over one of the same name in /etc/cdi).
var DefaultSpecDirs = []string{cdi.DefaultStaticDir, cdi.DefaultDynamicDir}

// Node is what the node's CDI specs say about its GPUs at one moment.
type Node struct {
	kind    string
	dirs    []string
	devices map[string]*cdi.Device // by qualified name
	errs    map[string][]error     // by spec file
}

// SliceSpecPrefix starts the file name of every spec vgpud publishes
// (vgpu.io-slice_<id>.json, CDI's transient naming).
const SliceSpecPrefix = "vgpu.io-slice_"

// SpecName is the file name (without .json) of a slice's spec.
func SpecName(id string) string { return SliceSpecPrefix + id }

// ValidateKind checks a CDI kind ("vendor/class").
func ValidateKind(kind string) error {
	vendor, class := parser.ParseQualifier(kind)
	if vendor == "" || class == "" {
		return fmt.Errorf("CDI kind %q: want vendor/class, e.g. %s", kind, DefaultKind)
	}
	if err := parser.ValidateVendorName(vendor); err != nil {
		return fmt.Errorf("CDI kind %q: %w", kind, err)
	}
	if err := parser.ValidateClassName(class); err != nil {
		return fmt.Errorf("CDI kind %q: %w", kind, err)
	}
	return nil
}

// Load reads the specs in dirs (a device in a later dir wins over one of the
// same name in an earlier dir, as in CDI's own cache) and checks that some
// device of kind is described. It is CDI's directory scan, less the specs
// vgpud publishes per slice (never GPUs, and a node holds hundreds: parsing
// them made every create pay ~0.3 ms each), and without a file watch (each
// caller wants the specs as they are now).
func Load(dirs []string, kind string) (*Node, error) {
	if err := ValidateKind(kind); err != nil {
		return nil, err
	}
	n := &Node{kind: kind, dirs: dirs, devices: map[string]*cdi.Device{}, errs: map[string][]error{}}
	for prio, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			n.errs[dir] = append(n.errs[dir], err)
			continue
		}
		for _, e := range entries {
			if nodeSpecFile(e) {
				n.add(filepath.Join(dir, e.Name()), prio)
			}
		}
	}
	if len(n.names()) == 0 {
		return nil, fmt.Errorf("no CDI device of kind %s in %s: this node's GPUs have no CDI spec; %s%s",
			kind, strings.Join(dirs, ", "), GenerateHint, n.specErrors())
	}
	return n, nil
}

// nodeSpecFile: whether a spec dir's entry is a spec Load reads (a file
// CDI would read, not a slice's spec).
func nodeSpecFile(e fs.DirEntry) bool {
	name := e.Name()
	ext := filepath.Ext(name)
	return !e.IsDir() && (ext == ".json" || ext == ".yaml") && !strings.HasPrefix(name, SliceSpecPrefix)
}

// add reads one spec file and takes its devices of the node's kind. Two
// specs of one priority naming the same device: the device is dropped and
// both files are in error, as CDI's cache does.
func (n *Node) add(path string, prio int) {
	sp, err := cdi.ReadSpec(path, prio)
	if err != nil {
		n.errs[path] = append(n.errs[path], err)
		return
	}
	if sp.Kind != n.kind {
		return
	}
	for _, d := range sp.Devices {
		q := n.kind + "=" + d.Name
		dev := sp.GetDevice(d.Name)
		if old, ok := n.devices[q]; ok && old != nil && old.GetSpec().GetPriority() == prio {
			err := fmt.Errorf("conflicting device %s (also in %s)", q, old.GetSpec().GetPath())
			n.errs[path] = append(n.errs[path], err)
			n.devices[q] = nil
			continue
		}
		n.devices[q] = dev
	}
}

// names lists the device names of the kind ("0", "GPU-…", "all").
func (n *Node) names() []string {
	var out []string
	for q, d := range n.devices {
		if d != nil {
			out = append(out, strings.TrimPrefix(q, n.kind+"="))
		}
	}
	sort.Strings(out)
	return out
}

// specErrors describes the spec files that could not be loaded (a malformed
// file is skipped by CDI: the device it describes is then missing, and this
// says why).
func (n *Node) specErrors() string {
	errs := n.errs
	if len(errs) == 0 {
		return ""
	}
	paths := make([]string, 0, len(errs))
	for p := range errs {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var b strings.Builder
	b.WriteString("; CDI specs that could not be loaded:")
	for _, p := range paths {
		fmt.Fprintf(&b, " %s: %v;", p, errors.Join(errs[p]...))
	}
	return strings.TrimSuffix(b.String(), ";")
}

// DeviceNames are the qualified CDI names of the slice's devices: each one by
// its UUID where the spec names it so (nvidia-ctk names every GPU by index and
// by UUID), else by its index.
func (n *Node) DeviceNames(devs []api.SliceDevice) ([]string, error) {
	out := make([]string, 0, len(devs))
	for _, d := range devs {
		found := ""
		for _, name := range []string{d.UUID, strconv.Itoa(d.Index)} {
			q := n.kind + "=" + name
			if name != "" && n.devices[q] != nil {
				found = q
				break
			}
		}
		if found == "" {
			return nil, fmt.Errorf("the CDI specs in %s describe no %s device %s (index %d), only %s: regenerate the spec (%s)%s",
				strings.Join(n.dirs, ", "), n.kind, d.UUID, d.Index, strings.Join(n.names(), ", "), GenerateHint, n.specErrors())
		}
		out = append(out, found)
	}
	return out, nil
}

// Inject applies the devices (their spec's common edits once, then their
// own) to a container's OCI spec: device nodes with their cgroup rules,
// mounts, hooks, env — what CDI's cache does for a runtime.
func (n *Node) Inject(s *specs.Spec, names []string) error {
	edits, err := n.Edits(names)
	if err != nil {
		return err
	}
	if err := (&cdi.ContainerEdits{ContainerEdits: &edits}).Apply(s); err != nil {
		return fmt.Errorf("apply CDI devices %s: %w", strings.Join(names, ", "), err)
	}
	return nil
}

// Edits are the edits Inject would apply, merged into one: each spec's common
// edits once, then every device's own.
func (n *Node) Edits(names []string) (cdispec.ContainerEdits, error) {
	merged := &cdi.ContainerEdits{ContainerEdits: &cdispec.ContainerEdits{}}
	seen := map[*cdi.Spec]bool{}
	for _, q := range names {
		d := n.devices[q]
		if d == nil {
			return cdispec.ContainerEdits{}, fmt.Errorf("no CDI device %s", q)
		}
		if sp := d.GetSpec(); !seen[sp] {
			seen[sp] = true
			merged.Append(&cdi.ContainerEdits{ContainerEdits: &sp.ContainerEdits})
		}
		merged.Append(&cdi.ContainerEdits{ContainerEdits: &d.ContainerEdits})
	}
	return *merged.ContainerEdits, nil
}
