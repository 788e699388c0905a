package runtimehook

import (
	"fmt"
	"strings"
)

// Invocation is what vgpu-runtime needs to know of a runc command line. The
// parse is deliberately shallow: it only has to find the command, the bundle,
// the container id and where runc logs; everything else travels to runc as it
// came.
type Invocation struct {
	// RuncArgs is the command line for runc (without argv[0]): the original
	// arguments minus vgpu-runtime's own --vgpu-* global flags.
	RuncArgs []string
	// Own are the --vgpu-* flags.
	Own Overrides

	// From runc's global flags.
	Log       string // --log: runc's log file ("" = stderr)
	LogFormat string // --log-format: "text" (default) or "json"
	Root      string // --root: runc's state dir ("" = runc's default)

	Command string // "" when none was found (runc --version, …)
	// For create: the bundle (--bundle/-b; "" = the working dir) and
	// the container id.
	Bundle      string
	ContainerID string
	// PreserveFDs is --preserve-fds: extra fds (from 3) runc hands to the container.
	PreserveFDs int
}

// runc's global flags that take a value (urfave/cli: --flag v, --flag=v, -flag v).
var runcGlobalValueFlags = map[string]bool{
	"log": true, "log-format": true, "root": true, "criu": true, "rootless": true,
}

// create's flags that take a value. Boolean ones (--no-pivot, --no-new-keyring)
// need no entry.
var runcCreateValueFlags = map[string]bool{
	"bundle": true, "b": true, "console-socket": true, "pidfd-socket": true,
	"pid-file": true, "preserve-fds": true,
}

// ParseArgs reads a runc command line (without argv[0]). It fails only on
// vgpu-runtime's own flags; anything it does not understand is left for runc.
func ParseArgs(args []string) (Invocation, error) {
	inv := Invocation{LogFormat: "text"}
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		name, val, hasVal := splitFlag(a)
		if strings.HasPrefix(name, "vgpu-") {
			if !hasVal {
				if i+1 >= len(args) {
					return inv, fmt.Errorf("flag --%s needs a value", name)
				}
				i++
				val = args[i] //nolint:gosec // G602: i+1 < len(args) is checked just above
			}
			switch name {
			case "vgpu-config":
				inv.Own.ConfigPath = val
			case "vgpu-runc":
				inv.Own.Runc = val
			case "vgpu-socket":
				inv.Own.Socket = val
			case "vgpu-libvgpu":
				inv.Own.LibVGPU = val
			default:
				return inv, fmt.Errorf("unknown flag --%s (vgpu-runtime knows --vgpu-config, --vgpu-runc, --vgpu-socket, --vgpu-libvgpu)", name)
			}
			continue
		}
		inv.RuncArgs = append(inv.RuncArgs, a)
		if !runcGlobalValueFlags[name] {
			// A boolean (--debug, --systemd-cgroup, --help, --version) or a
			// flag unknown to us: assume it takes no separate value.
			continue
		}
		if !hasVal && i+1 < len(args) {
			i++
			val = args[i]
			inv.RuncArgs = append(inv.RuncArgs, val)
		}
		switch name {
		case "log":
			inv.Log = val
		case "log-format":
			inv.LogFormat = val
		case "root":
			inv.Root = val
		}
	}
	inv.RuncArgs = append(inv.RuncArgs, args[i:]...)
	if i >= len(args) || args[i] == "--" {
		return inv, nil
	}
	inv.Command = args[i]
	if inv.Command == "create" {
		inv.parseCreate(args[i+1:])
	}
	return inv, nil
}

// parseCreate reads what vgpu-runtime needs from `create [flags] ID`: the
// container id, the bundle and --preserve-fds. urfave/cli stops at the first
// positional argument, so the id is the first non-flag word.
func (inv *Invocation) parseCreate(args []string) {
	for j := 0; j < len(args); j++ {
		a := args[j]
		if a == "--" {
			if j+1 < len(args) && inv.ContainerID == "" {
				inv.ContainerID = args[j+1]
			}
			return
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			if inv.ContainerID == "" {
				inv.ContainerID = a
			}
			continue
		}
		name, val, hasVal := splitFlag(a)
		if !runcCreateValueFlags[name] {
			continue
		}
		if !hasVal {
			if j+1 >= len(args) {
				return
			}
			j++
			val = args[j] //nolint:gosec // G602: j+1 < len(args) is checked just above
		}
		switch name {
		case "bundle", "b":
			inv.Bundle = val
		case "preserve-fds":
			var n int
			if _, err := fmt.Sscanf(val, "%d", &n); err == nil && n > 0 {
				inv.PreserveFDs = n
			}
		}
	}
}

// splitFlag turns "--name=v" / "-name" into its name and value.
func splitFlag(a string) (name, val string, hasVal bool) {
	name = strings.TrimLeft(a, "-")
	if k, v, ok := strings.Cut(name, "="); ok {
		return k, v, true
	}
	return name, "", false
}
