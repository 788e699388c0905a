package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Peer is another LD_PRELOAD interception library a benchmark runs beside bare and
// libvgpu (`--compare NAME=/path/lib.so[,ENV=V...]`), configured through Env.
type Peer struct {
	Name string   `json:"name"`
	Lib  string   `json:"lib"`
	Env  []string `json:"env,omitempty"` // KEY=VALUE, added to the peer's runs only
}

// ParsePeer parses NAME=/path/to/lib.so[,ENV=V...]. The library must exist.
func ParsePeer(spec string) (Peer, error) {
	parts := strings.Split(spec, ",")
	name, lib, ok := strings.Cut(parts[0], "=")
	name, lib = strings.TrimSpace(name), strings.TrimSpace(lib)
	if !ok || name == "" || lib == "" {
		return Peer{}, fmt.Errorf("--compare %q: want NAME=/path/to/lib.so[,ENV=V...]", spec)
	}
	for _, r := range name {
		if !nameRune(r) {
			return Peer{}, fmt.Errorf("--compare %q: name %q: letters, digits, '-', '_' and '.' only", spec, name)
		}
	}
	switch name {
	case ModeBare, ModeVGPUMem, ModeVGPUShare, "libvgpu":
		return Peer{}, fmt.Errorf("--compare %q: name %q is taken by the benchmark's own runs", spec, name)
	}
	abs, err := filepath.Abs(lib)
	if err != nil {
		return Peer{}, fmt.Errorf("--compare %q: %w", spec, err)
	}
	if !fileExists(abs) {
		return Peer{}, fmt.Errorf("--compare %q: %s is not a file", spec, abs)
	}
	p := Peer{Name: name, Lib: abs}
	for _, kv := range parts[1:] {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" || k == "LD_PRELOAD" {
			return Peer{}, fmt.Errorf("--compare %q: %q: want ENV=VALUE (not LD_PRELOAD)", spec, kv)
		}
		p.Env = append(p.Env, kv)
	}
	return p, nil
}

// ParsePeers parses every --compare value and rejects duplicate names.
func ParsePeers(specs []string) ([]Peer, error) {
	var peers []Peer
	seen := map[string]bool{}
	for _, s := range specs {
		p, err := ParsePeer(s)
		if err != nil {
			return nil, err
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("--compare: name %q given twice", p.Name)
		}
		seen[p.Name] = true
		peers = append(peers, p)
	}
	return peers, nil
}

// peerMarker is the substring a run of p expects in /proc/self/maps (the loaded
// library's file name): a preload that silently failed must not be measured.
func (p Peer) marker() string { return "/" + filepath.Base(p.Lib) }

// baseEnviron is the environment of a benchmark process on the simulated node
// (state != "") or the system's driver: the caller's, less LD_PRELOAD and VGPU_*
// (and LD_LIBRARY_PATH on the simulator), so no run is influenced by the shell.
func baseEnviron(simLibDir, state string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "LD_PRELOAD":
			continue
		case k == "VGPU_SIM_STATE" && state == "":
		case strings.HasPrefix(k, "VGPU_"):
			continue
		case k == "LD_LIBRARY_PATH" && state != "":
			continue
		}
		env = append(env, kv)
	}
	if state != "" {
		env = append(env, "LD_LIBRARY_PATH="+simLibDir, "VGPU_SIM_STATE="+state)
	}
	return env
}

// peerEnviron adds p's preload and configuration to base.
func peerEnviron(base []string, p Peer) []string {
	env := append(append([]string(nil), base...), "LD_PRELOAD="+p.Lib)
	return append(env, p.Env...)
}

// rotation returns round i's order of n runs: forward on even rounds, backward on
// odd ones (ABBA generalised: drift biases no run's position).
func rotation(n, i int) []int {
	idx := make([]int, n)
	for j := range idx {
		if i%2 == 0 {
			idx[j] = j
		} else {
			idx[j] = n - 1 - j
		}
	}
	return idx
}

// PeerRatio is a peer's added cost divided by libvgpu's; nil when libvgpu added
// nothing measurable (<= 0), where a ratio means nothing.
func PeerRatio(peerAdded, vgpuAdded float64) *float64 {
	if vgpuAdded <= 0 {
		return nil
	}
	r := peerAdded / vgpuAdded
	return &r
}

func ratioString(r *float64) string {
	if r == nil {
		return "— (libvgpu added ≤ 0)"
	}
	return fmt.Sprintf("%.2f×", *r)
}

func nameRune(r rune) bool {
	return r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
}
