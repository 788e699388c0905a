// Command vgpuctl inspects and manages vGPU slices.
//
//	vgpuctl devices|slices [--json]                  what vgpud has
//	vgpuctl alloc --memory SIZE|PCT% [flags]         a slice from vgpud
//	vgpuctl release ID...
//	vgpuctl update ID --compute PCT [--compute-policy cap|share]   a running slice's share
//	vgpuctl top [--watch]                            live usage per slice and process
//	vgpuctl ps [--json]                              the processes holding a GPU (vgpud's tracker)
//	vgpuctl events [--json]                          the latest elastic-memory decisions
//	vgpuctl run --memory SIZE|PCT% [flags] -- CMD    CMD in a fresh slice
//	vgpuctl quarantine list|release|restore          slices whose record vgpud could not load
//	vgpuctl slice create --dir DIR --memory SIZE [--device N|UUID ...] [flags]
//	vgpuctl slice show --dir DIR [--json]
//	vgpuctl install containerd [--config PATH] [--runtime-path PATH] [--dry-run]
//
// The daemon commands talk to vgpud on its unix socket (--socket, env
// VGPU_SOCKET, default /run/vgpu/vgpud.sock). `slice create` writes a
// budget/usage pair with no daemon: for tests, debugging and bare-metal users,
// who then run CUDA programs with
// LD_PRELOAD=libvgpu.so VGPU_SLICE_DIR=DIR. Exit status: 0 success, 1 runtime
// error, 2 usage error (`run`: the command's own status); messages go to stderr
// prefixed "vgpuctl: ".
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError marks an error caused by the command line (exit status 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// command is one node of the subcommand tree: either it has children or it
// runs.
type command struct {
	name     string
	help     string // full help of a leaf or group
	children []*command
	run      func(args []string, stdout, stderr io.Writer) error
}

func rootCommand() *command {
	return &command{
		name: "vgpuctl",
		help: `vgpuctl inspects and manages vGPU slices.

Usage:
  vgpuctl <command> [arguments]

Commands (vgpud):
  devices  list the GPUs and what slices hold on each
  slices   list the slices
  alloc    allocate a slice; prints its id and directory
  release  free slices
  update   change a running slice's compute share or policy
  top      live memory use per slice and process
  ps       the processes holding a GPU device, as vgpud's tracker knows them
  events   the latest elastic-memory decisions (grants, refusals, call-backs,
           evictions)
  run      run a command in a fresh slice, released when it exits
  quarantine
           list, release or restore the slices whose record vgpud could not
           load (what they hold stays booked until you do)

Commands (no daemon):
  slice    create or show a slice's budget/usage files
  install  register vgpu-runtime with containerd (install containerd)

The vgpud commands take --socket PATH, before or after the command name
(default $VGPU_SOCKET, else /run/vgpu/vgpud.sock; the socket is mode 0600, so
usually: run as root).

Run 'vgpuctl <command> --help' for details.
`,
		children: []*command{devicesCommand(), slicesCommand(), allocCommand(), releaseCommand(),
			updateCommand(), topCommand(), psCommand(), eventsCommand(), runCommand(), quarantineCommand(), sliceCommand(), installCommand()},
	}
}

func sliceCommand() *command {
	return &command{
		name: "slice",
		help: `Usage:
  vgpuctl slice create --dir DIR --memory SIZE [--device N|UUID ...] [flags]
  vgpuctl slice show --dir DIR [--json]

A slice is a directory holding two files: "budget" (limits, written by vgpud or
'slice create', read-only for tenants) and "usage" (counters written by libvgpu in
every process of the slice).

Run 'vgpuctl slice <create|show> --help' for details.
`,
		children: []*command{sliceCreateCommand(), sliceShowCommand()},
	}
}

// run executes vgpuctl with args (without the program name) and returns the
// exit status. It never calls os.Exit, so tests can drive it directly.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := rootCommand()
	path := cmd.name
	// `vgpuctl --socket PATH devices` is accepted as well as
	// `vgpuctl devices --socket PATH`: the global form is handed to the leaf
	// command, whose own flag set parses (and validates) it.
	var global []string
	for len(args) > 0 && (args[0] == "--socket" || args[0] == "-socket" ||
		strings.HasPrefix(args[0], "--socket=") || strings.HasPrefix(args[0], "-socket=")) {
		if strings.Contains(args[0], "=") {
			global, args = append(global, args[0]), args[1:]
			continue
		}
		if len(args) < 2 {
			fmt.Fprintln(stderr, "vgpuctl: --socket needs a path")
			return exitUsage
		}
		global, args = append(global, args[0], args[1]), args[2:]
	}
	for cmd.run == nil {
		if len(args) == 0 {
			fmt.Fprint(stderr, cmd.help)
			return exitUsage
		}
		name := args[0]
		if name == "-h" || name == "-help" || name == "--help" || name == "help" {
			fmt.Fprint(stdout, cmd.help)
			return exitOK
		}
		var next *command
		for _, c := range cmd.children {
			if c.name == name {
				next = c
			}
		}
		if next == nil {
			fmt.Fprintf(stderr, "vgpuctl: unknown command %q for %q\nRun '%s --help' for usage.\n", name, path, path)
			return exitUsage
		}
		cmd, path, args = next, path+" "+name, args[1:]
	}
	err := cmd.run(append(global, args...), stdout, stderr)
	var ee childExit
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		if ee.err != nil {
			fmt.Fprintf(stderr, "vgpuctl: %v\n", ee.err)
		}
		return ee.code
	case errors.Is(err, errHelpShown):
		return exitOK
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "vgpuctl: %v\nRun '%s --help' for usage.\n", err, path)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "vgpuctl: %v\n", err)
		return exitError
	}
}

// errHelpShown: --help was asked for and printed.
var errHelpShown = errors.New("help shown")
