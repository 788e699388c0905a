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

// Node is what the node's CDI specs say at one moment.
type Node struct {
	cache *cdi.Cache
	kind  string
	dirs  []string
}

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

// Load reads the specs in dirs (later dirs win) and checks that some device
// of kind is described. No file watch: every caller wants the specs as they
// are now, and a watch would be a goroutine per create.
func Load(dirs []string, kind string) (*Node, error) {
	if err := ValidateKind(kind); err != nil {
		return nil, err
	}
	cache, err := cdi.NewCache(cdi.WithSpecDirs(dirs...), cdi.WithAutoRefresh(false))
	if err != nil {
		return nil, fmt.Errorf("read CDI specs in %s: %w", strings.Join(dirs, ", "), err)
	}
	n := &Node{cache: cache, kind: kind, dirs: dirs}
	if len(n.names()) == 0 {
		return nil, fmt.Errorf("no CDI device of kind %s in %s: this node's GPUs have no CDI spec; %s%s",
			kind, strings.Join(dirs, ", "), GenerateHint, n.specErrors())
	}
	return n, nil
}

// names lists the device names of the kind ("0", "GPU-…", "all").
func (n *Node) names() []string {
	var out []string
	for _, q := range n.cache.ListDevices() {
		if name, ok := strings.CutPrefix(q, n.kind+"="); ok {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// specErrors describes the spec files that could not be loaded (a malformed
// file is skipped by CDI: the device it describes is then missing, and this
// says why).
func (n *Node) specErrors() string {
	errs := n.cache.GetErrors()
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
			if name != "" && n.cache.GetDevice(q) != nil {
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

// Inject applies the devices (their spec's common edits and their own) to a
// container's OCI spec: device nodes with their cgroup rules, mounts, hooks,
// env.
func (n *Node) Inject(s *specs.Spec, names []string) error {
	if _, err := n.cache.InjectDevices(s, names...); err != nil {
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
		d := n.cache.GetDevice(q)
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
