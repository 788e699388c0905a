// Command vgpud is the vgpu node daemon: it carves the node's GPUs into
// slices, records them on disk, runs the enforcer loop and serves the API
// (unix socket) and Prometheus metrics. See `vgpud --help` and DESIGN §5.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/vgpu-project/vgpu/daemon"
	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/logging"
)

const help = `vgpud — the vgpu node daemon.

Usage:
  vgpud [--config FILE] [flags]

vgpud discovers the node's GPUs through NVML, carves them into slices on
request (vgpuctl, vgpu-runtime), records every slice under the state dir so that
it survives crashes and restarts, runs the enforcer loop (returns dead
processes' memory, releases slices whose owner is gone, and the backstop: a
process whose real GPU memory exceeds its slice is reported, or killed in
enforce mode), and serves:
  - the API, HTTP+JSON on a unix socket (mode 0600)   see package daemon/api
  - Prometheus metrics on --metrics-addr: /metrics and /healthz

Settings come from the built-in defaults, then the config file (--config), then
the flags given on the command line (a flag always wins). SIGTERM or SIGINT stop
vgpud cleanly; its slices stay on disk and are re-adopted at the next start
(processes keep being capped by libvgpu while vgpud is down).

Config file (JSON; every key optional, unknown keys are an error):
  {
    "state_dir": "/var/lib/vgpu",
    "socket": "/run/vgpu/vgpud.sock",
    "metrics_addr": "127.0.0.1:9410",
    "placement": "binpack",
    "enforcer_mode": "report",
    "enforcer_interval": "50ms",
    "context_overhead": "256MiB",
    "backstop_tolerance": "64MiB",
    "nvml_library": "",
    "log_format": "json",
    "log_level": "info",
    "containerd_socket": "",
    "container_check_interval": "10s",
    "container_grace": "30s",
    "compute_policy": "cap"
  }
Sizes are strings, Kubernetes quantities (256Mi or 256MiB = 256·2^20 bytes,
1G = 10^9 bytes), or plain bytes;
durations are Go durations (50ms, 1s). "metrics_addr": "" turns metrics off.
"nvml_library": "" lets the dynamic loader find libnvidia-ml.so.1.
"containerd_socket" (e.g. /run/containerd/containerd.sock) makes vgpud follow
containerd's events and release a deleted container's slice at once; with or
without it, a check every container_check_interval releases the slices of
containers whose runc state is gone (slices younger than container_grace are
left alone: their container is still being created).
"compute_policy" is what a slice's compute share means when its request names
no policy: cap (a ceiling, never exceeded even alone on the device) or share (a
guarantee; the slice may use capacity others leave idle). A slice keeps the
policy it was created with.

Exit status: 0 after a clean stop, 1 on an error, 2 on a bad command line or
config.

Flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// flagKeys maps each flag to its config key (for error messages and help).
var flagKeys = map[string]string{
	"state-dir":                "state_dir",
	"socket":                   "socket",
	"metrics-addr":             "metrics_addr",
	"placement":                "placement",
	"enforcer-mode":            "enforcer_mode",
	"enforcer-interval":        "enforcer_interval",
	"context-overhead":         "context_overhead",
	"backstop-tolerance":       "backstop_tolerance",
	"nvml-lib":                 "nvml_library",
	"log-format":               "log_format",
	"log-level":                "log_level",
	"containerd-socket":        "containerd_socket",
	"container-check-interval": "container_check_interval",
	"container-grace":          "container_grace",
	"compute-policy":           "compute_policy",
	"tracker":                  "tracker",
	"tracker-majors":           "tracker_majors",
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, code, err := loadConfig(args, stdout)
	if err != nil {
		if code != 0 {
			fmt.Fprintf(stderr, "vgpud: %v\n", err)
		}
		return code
	}
	log, err := logging.New(cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		fmt.Fprintf(stderr, "vgpud: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }() // stderr may not sync (EINVAL): nothing to do about it

	// Errors that end vgpud are printed plainly (not as a log record): they are
	// the last thing an operator reads, in a terminal or in journalctl.
	srv, err := daemon.New(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "vgpud: %v\n", err)
		return 1
	}
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "vgpud: %v\n", err)
		return 1
	}
	return 0
}

// loadConfig builds the configuration from defaults, the config file and the
// flags. With --help it prints the help and returns code 0 and a nil config
// error marker (errHelp).
func loadConfig(args []string, stdout io.Writer) (daemon.Config, int, error) {
	def := daemon.DefaultConfig()
	fs := flag.NewFlagSet("vgpud", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configPath := fs.String("config", "", "JSON config `FILE` (see above); flags override it")
	fs.String("state-dir", def.StateDir, "`DIR` of the slice records and region files")
	fs.String("socket", def.Socket, "`PATH` of the API's unix socket (mode 0600; its directory is created 0755)")
	fs.String("metrics-addr", def.MetricsAddr, "`HOST:PORT` of the Prometheus endpoint; \"\" turns it off")
	fs.String("placement", def.Placement, "node-wide placement `POLICY`: binpack (fill one GPU first) or spread")
	fs.String("enforcer-mode", def.EnforcerMode, "`MODE` of the backstop: off, report (log and count) or enforce (also kill)")
	fs.String("enforcer-interval", def.EnforcerInterval.String(), "enforcer loop `PERIOD` (1ms..1m)")
	fs.String("context-overhead", def.ContextOverhead.String(), "`SIZE` charged per CUDA context: the driver's per-context footprint")
	fs.String("backstop-tolerance", def.BackstopTolerance.String(), "`SIZE` by which a process's real usage may exceed its charge before the backstop acts")
	fs.String("nvml-lib", def.NVMLLibrary, "`PATH` of libnvidia-ml.so.1 (default: found by the dynamic loader)")
	fs.String("log-format", def.LogFormat, "log `FORMAT`: json (one object a line) or console")
	fs.String("log-level", def.LogLevel, "log `LEVEL`: debug, info, warn or error")
	fs.String("containerd-socket", def.ContainerdSocket, "containerd's `SOCKET`: its events release a deleted container's slice at once (\"\": periodic runc-state checks only)")
	fs.String("container-check-interval", def.ContainerCheckInterval.String(), "`PERIOD` of the check that releases slices of containers that are gone")
	fs.String("container-grace", def.ContainerGrace.String(), "`AGE` a container's slice must reach before that check judges it")
	fs.String("tracker", def.Tracker, "how vgpud learns which process holds which GPU: `auto` (eBPF, else the procfs scanner), ebpf (or refuse to start), procfs or off")
	fs.String("tracker-majors", joinMajors(def.TrackerMajors), "character-device `MAJORS` the tracker follows, comma-separated (NVIDIA: 195)")
	fs.String("compute-policy", string(def.ComputePolicy), "`POLICY` of a slice whose request names none: cap (its compute share is a ceiling) or share (a guarantee; idle capacity may be used)")
	version := fs.Bool("version", false, "print the version and exit")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var b bytes.Buffer
			fs.SetOutput(&b)
			fs.PrintDefaults()
			fmt.Fprint(stdout, help, b.String())
			return def, 0, errHelp
		}
		return def, 2, fmt.Errorf("%w (see vgpud --help)", err)
	}
	if fs.NArg() > 0 {
		return def, 2, fmt.Errorf("unexpected argument %q (see vgpud --help)", fs.Arg(0))
	}
	if *version {
		fmt.Fprintf(stdout, "vgpud %s (API socket default %s)\n", daemon.Version, api.DefaultSocket)
		return def, 0, errHelp
	}

	cfg := def
	if *configPath != "" {
		if err := daemon.LoadConfigFile(*configPath, &cfg); err != nil {
			return def, 2, err
		}
	}
	var errs []error
	fs.Visit(func(f *flag.Flag) {
		if key, ok := flagKeys[f.Name]; ok {
			if err := setKey(&cfg, key, f.Value.String()); err != nil {
				errs = append(errs, fmt.Errorf("--%s: %w", f.Name, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return def, 2, err
	}
	if err := cfg.Validate(); err != nil {
		return def, 2, fmt.Errorf("config:\n%w", err)
	}
	return cfg, 0, nil
}

// errHelp: --help or --version was shown; exit 0 without running.
var errHelp = errors.New("help shown")

func setKey(cfg *daemon.Config, key, v string) error {
	switch key {
	case "state_dir", "socket":
		// A relative path on the command line means the working directory.
		if v != "" {
			abs, err := filepath.Abs(v)
			if err != nil {
				return err
			}
			v = abs
		}
		if key == "state_dir" {
			cfg.StateDir = v
		} else {
			cfg.Socket = v
		}
	case "metrics_addr":
		cfg.MetricsAddr = v
	case "placement":
		cfg.Placement = v
	case "enforcer_mode":
		cfg.EnforcerMode = v
	case "enforcer_interval":
		return cfg.EnforcerInterval.Set(v)
	case "context_overhead":
		return cfg.ContextOverhead.Set(v)
	case "backstop_tolerance":
		return cfg.BackstopTolerance.Set(v)
	case "nvml_library":
		cfg.NVMLLibrary = v
	case "log_format":
		cfg.LogFormat = v
	case "log_level":
		cfg.LogLevel = v
	case "containerd_socket":
		if v != "" {
			abs, err := filepath.Abs(v)
			if err != nil {
				return err
			}
			v = abs
		}
		cfg.ContainerdSocket = v
	case "container_check_interval":
		return cfg.ContainerCheckInterval.Set(v)
	case "container_grace":
		return cfg.ContainerGrace.Set(v)
	case "compute_policy":
		cfg.ComputePolicy = api.ComputePolicy(v)
	case "tracker":
		cfg.Tracker = v
	case "tracker_majors":
		majors, err := parseMajors(v)
		if err != nil {
			return err
		}
		cfg.TrackerMajors = majors
	default:
		return fmt.Errorf("unknown setting %q", key)
	}
	return nil
}

// parseMajors parses "195" or "195,203".
func parseMajors(v string) ([]uint32, error) {
	var out []uint32
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%q: want device majors, comma-separated (e.g. 195)", v)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

func joinMajors(ms []uint32) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = strconv.FormatUint(uint64(m), 10)
	}
	return strings.Join(parts, ",")
}
