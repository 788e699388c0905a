// Command vgpu-sim creates and inspects a simulated GPU node.
//
// A node is one state file shared by every process that loads the simulated
// libcuda.so.1 / libnvidia-ml.so.1 (build/simgpu) with VGPU_SIM_STATE pointing at it.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/vgpu-project/vgpu/internal/units"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

const usage = `vgpu-sim — a simulated GPU node for testing vgpu without a GPU

Usage:
  vgpu-sim init   --state FILE --memory SIZE [--devices N] [--sms N] [options]
  vgpu-sim status --state FILE [--json]
  vgpu-sim cdi-spec --state FILE --cdi-dir DIR [--lib-dir DIR]
  vgpu-sim help [COMMAND]

Programs see the node through the simulated driver:
  LD_LIBRARY_PATH=build/simgpu VGPU_SIM_STATE=FILE ./program

Sizes are Kubernetes quantities: plain bytes, Ki/Mi/Gi/Ti (binary: 1Gi = 1GiB =
1073741824 bytes) or k/M/G/T (decimal: 1G = 1GB = 10^9 bytes).
`

const initHelp = `Usage: vgpu-sim init --state FILE --memory SIZE [options]

Creates a simulated node in FILE (refused if FILE exists, unless --force).

Options:
  --state FILE            state file to create (required)
  --devices N             number of devices, 1..16 (default 1)
  --memory SIZE           memory per device, e.g. 80GiB (required)
  --sms N                 streaming multiprocessors per device (default 132)
  --ns-per-block NS       device ns per wave of blocks (default 10000); a launch of
                          B blocks takes ceil(B/sms)*NS ns of device time
  --context-memory SIZE   memory charged per CUDA context (default 256MiB)
  --device-nodes PATTERN  device node per device, one %d = minor number, e.g.
                          /dev/vgpusim%d (default: plain files FILE.dev/nvidia%d,
                          created by init)
  --max-backlog DURATION  the device queue depth: how far the launch queue may run
                          ahead before a launch blocks (default 1s, at most 5s and
                          at most 52 NVML sample periods)
  --nvml-sample-period DURATION
                          NVML's utilization sample period: work is reported per
                          period of the device timeline, once it has executed
                          (default 1/6s = 166.666666ms, the shortest period NVML
                          documents; 10ms..1s)
  --name NAME             device name (default "NVIDIA H100 80GB HBM3 (simulated)")
  --force                 replace an existing state file
  --cdi-dir DIR           also write the node's CDI spec into DIR (e.g. /etc/cdi;
                          see vgpu-sim help cdi-spec)
  --lib-dir DIR           the simulated driver's libraries, for the CDI spec
                          (default: build/simgpu next to vgpu-sim's bin/)
`

const statusHelp = `Usage: vgpu-sim status --state FILE [--json]

Prints the node's settings (device queue depth, NVML sample period, device time
per block wave), every device (total, used, free memory; utilization over the
last second of complete samples; queued work not yet run; busy time) and every
process on it (host pid, used bytes, busy device time).
Processes that have died are reclaimed first: their memory goes back to the device.

Options:
  --state FILE   the node's state file (required)
  --json         print JSON instead of a table
`

const cdiSpecHelp = `Usage: vgpu-sim cdi-spec --state FILE --cdi-dir DIR [--lib-dir DIR]

Writes DIR/nvidia.json, the node's CDI spec (Container Device Interface), in
the shape nvidia-ctk cdi generate gives a real node: kind nvidia.com/gpu, each
device by index and by UUID with its device node (a stand-in file is bound
read-write), and as "the driver" the simulated libcuda.so.1 and
libnvidia-ml.so.1 (from the lib dir, mounted at /usr/lib/vgpu-sim, which
becomes LD_LIBRARY_PATH) and the state file (read-write, VGPU_SIM_STATE).
vgpu-runtime and vgpud apply it as they apply a real node's.

Options:
  --state FILE     the node's state file (required)
  --cdi-dir DIR    the CDI spec directory to write into (required; CDI reads
                   /etc/cdi and /var/run/cdi)
  --lib-dir DIR    where the simulated driver libraries are (default:
                   build/simgpu next to the bin/ holding vgpu-sim)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "init":
		err = cmdInit(args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(args[1:], stdout, stderr)
	case "cdi-spec":
		err = cmdCDISpec(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			switch args[1] {
			case "init":
				_, _ = io.WriteString(stdout, initHelp)
				return 0
			case "status":
				fmt.Fprint(stdout, statusHelp)
				return 0
			case "cdi-spec":
				fmt.Fprint(stdout, cdiSpecHelp)
				return 0
			}
		}
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "vgpu-sim: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "vgpu-sim: %v\n(see vgpu-sim help %s)\n", err, ue.cmd)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "vgpu-sim: %v\n", err)
		return 1
	}
	return 0
}

type usageError struct {
	cmd string
	err error
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// sizeFlag parses a size with internal/units.
type sizeFlag struct {
	v   uint64
	set bool
}

func (s *sizeFlag) String() string {
	if s == nil || !s.set {
		return ""
	}
	return units.FormatSize(s.v)
}

func (s *sizeFlag) Set(v string) error {
	n, err := units.ParseSize(v)
	if err != nil {
		return err
	}
	s.v, s.set = n, true
	return nil
}

func newFlagSet(name, help string, stdout io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by run
	fs.Usage = func() { _, _ = io.WriteString(stdout, help) }
	return fs
}

func parse(fs *flag.FlagSet, cmd string, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.Usage()
			return err
		}
		return usageError{cmd, err}
	}
	if fs.NArg() > 0 {
		return usageError{cmd, fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

func cmdInit(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("init", initHelp, stdout)
	state := fs.String("state", "", "")
	devices := fs.Int("devices", 1, "")
	var memory, ctxMem sizeFlag
	fs.Var(&memory, "memory", "")
	fs.Var(&ctxMem, "context-memory", "")
	sms := fs.Int("sms", simgpu.DefaultSMs, "")
	nsPerBlock := fs.Uint64("ns-per-block", simgpu.DefaultNsPerBlock, "")
	nodes := fs.String("device-nodes", "", "")
	backlog := fs.Duration("max-backlog", simgpu.DefaultMaxBacklog, "")
	period := fs.Duration("nvml-sample-period", simgpu.DefaultSamplePeriod, "")
	name := fs.String("name", simgpu.DefaultName, "")
	force := fs.Bool("force", false, "")
	cdiDir := fs.String("cdi-dir", "", "")
	libDir := fs.String("lib-dir", "", "")
	if err := parse(fs, "init", args); err != nil {
		return err
	}
	if *state == "" {
		return usageError{"init", errors.New("--state FILE is required")}
	}
	if !memory.set {
		return usageError{"init", errors.New("--memory SIZE is required (e.g. --memory 80GiB)")}
	}
	if *nsPerBlock == 0 {
		return usageError{"init", errors.New("--ns-per-block must be > 0")}
	}
	if *backlog <= 0 {
		return usageError{"init", errors.New("--max-backlog must be > 0")}
	}
	if *period <= 0 {
		return usageError{"init", errors.New("--nvml-sample-period must be > 0")}
	}
	cfg := simgpu.Config{
		Devices:      *devices,
		Memory:       memory.v,
		SMs:          *sms,
		NsPerBlock:   *nsPerBlock,
		DeviceNodes:  *nodes,
		MaxBacklog:   *backlog,
		SamplePeriod: *period,
		Name:         *name,
		Force:        *force,
	}
	if ctxMem.set {
		cfg.ContextMemory = &ctxMem.v
	}
	if err := simgpu.Init(*state, cfg); err != nil {
		return err
	}
	st, err := simgpu.Status(*state)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created %s: %d device(s) x %s, %d SMs, context memory %s, %s per block wave\n",
		*state, len(st.Devices), units.FormatSize(memory.v), *sms,
		units.FormatSize(st.ContextMemory), time.Duration(st.NsPerBlock))
	fmt.Fprintf(stdout, "device queue depth (max backlog) %s, NVML sample period %s\n",
		time.Duration(st.MaxBacklogNs), time.Duration(st.SamplePeriodNs))
	fmt.Fprintf(stdout, "device nodes: %s\n", st.DeviceNodes)
	fmt.Fprintf(stdout, "use: LD_LIBRARY_PATH=build/simgpu VGPU_SIM_STATE=%s <program>\n", *state)
	if *cdiDir != "" {
		return writeCDISpec(*state, *libDir, *cdiDir, stdout)
	}
	return nil
}

func cmdStatus(args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("status", statusHelp, stdout)
	state := fs.String("state", "", "")
	asJSON := fs.Bool("json", false, "")
	if err := parse(fs, "status", args); err != nil {
		return err
	}
	if *state == "" {
		return usageError{"status", errors.New("--state FILE is required")}
	}
	st, err := simgpu.Status(*state)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprintf(stdout, "device queue depth (max backlog) %s, NVML sample period %s, %s per block wave\n\n",
		time.Duration(st.MaxBacklogNs), time.Duration(st.SamplePeriodNs), time.Duration(st.NsPerBlock))
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEV\tNAME\tUUID\tTOTAL\tUSED\tFREE\tUTIL\tQUEUED\tBUSY\tLAUNCHES")
	for _, d := range st.Devices {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d%%\t%s\t%s\t%d\n", d.Index, d.Name, d.UUID,
			units.HumanSize(d.Total), units.HumanSize(d.Used), units.HumanSize(d.Free),
			d.Utilization, time.Duration(d.BacklogNs), time.Duration(d.BusyNs), d.Launches)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	fmt.Fprintln(stdout)
	tw = tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEV\tPID\tCOMM\tUSED\tBUSY\tLAUNCHES\tCONTEXTS")
	any := false
	for _, d := range st.Devices {
		for _, p := range d.Processes {
			any = true
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%d\t%d\n", d.Index, p.PID, p.Comm,
				units.HumanSize(p.UsedBytes), time.Duration(p.BusyNs), p.Launches, p.Contexts)
		}
	}
	if !any {
		fmt.Fprintln(tw, "-\t-\t(no processes)\t\t\t\t")
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if st.Reclaimed > 0 {
		fmt.Fprintf(stdout, "\nreclaimed %d dead process(es)\n", st.Reclaimed)
	}
	return nil
}
