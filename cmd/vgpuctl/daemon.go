package main

// The commands that talk to vgpud over its unix socket: devices, slices,
// alloc, release and top (run is in runcmd.go).

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
)

// requestTimeout bounds one API call: vgpud answers in milliseconds; a call
// that takes this long is a hung daemon, and the user should hear about it.
const requestTimeout = 30 * time.Second

// socketFlag adds --socket to fs, defaulting to $VGPU_SOCKET or api.DefaultSocket.
func socketFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("VGPU_SOCKET")
	if def == "" {
		def = api.DefaultSocket
	}
	return fs.String("socket", def, "vgpud's API socket `PATH` (env VGPU_SOCKET)")
}

// parseWithArgs is parseFlags for commands that take positional arguments:
// flags may come before or after them (the flag package alone stops at the
// first non-flag), except after "--", where everything is positional.
func parseWithArgs(fs *flag.FlagSet, help string, args []string, stdout io.Writer) ([]string, error) {
	var pos []string
	for {
		fs.SetOutput(io.Discard)
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, parseFlags(fs, help, []string{"--help"}, stdout) // prints the help
			}
			return nil, usageError{err}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// The flag package drops a "--" that ends the flags.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// jsonOut writes v as indented JSON.
func jsonOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// apiError turns a client error into vgpuctl's message: the server's text and,
// for a refused allocation, one line per reason.
func apiError(what string, err error) error {
	var se *api.StatusError
	if errors.As(err, &se) && len(se.Reasons) > 0 {
		return fmt.Errorf("%s: %s:\n  %s", what, se.Message, strings.Join(se.Reasons, "\n  "))
	}
	return fmt.Errorf("%s: %w", what, err)
}

func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), requestTimeout)
}

// ---------------------------------------------------------------- devices

const devicesHelp = `Usage:
  vgpuctl devices [--json] [--socket PATH]

Lists the node's GPUs as vgpud sees them, with what slices hold on each:
GUARANTEED is the guaranteed memory of the slices placed there (never more than
the device), ALLOCATED every slice's memory budget together (burstable and
best-effort slices may take it past the device), COMPUTE the guaranteed compute
shares summed.

Flags:
`

func devicesCommand() *command {
	return &command{name: "devices", run: func(args []string, stdout, _ io.Writer) error {
		fs := flag.NewFlagSet("vgpuctl devices", flag.ContinueOnError)
		socket := socketFlag(fs)
		asJSON := fs.Bool("json", false, "print JSON (sizes in bytes)")
		if err := parseFlags(fs, devicesHelp, args, stdout); err != nil {
			return err
		}
		ctx, cancel := callCtx()
		defer cancel()
		devs, err := api.NewClient(*socket).Devices(ctx)
		if err != nil {
			return apiError("devices", err)
		}
		if *asJSON {
			return jsonOut(stdout, devs)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "INDEX\tUUID\tNAME\tMEMORY\tGUARANTEED\tALLOCATED\tCOMPUTE\tSLICES\tPCI BUS\tNUMA")
		for _, d := range devs {
			numa := "-"
			if d.NUMANode >= 0 {
				numa = strconv.Itoa(d.NUMANode)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.Index, d.UUID, d.Name,
				units.HumanSize(d.MemoryBytes), units.HumanSize(d.GuaranteedBytes),
				units.HumanSize(d.AllocatedBytes), pct(d.ComputePercent), d.Slices, dash(d.PCIBusID), numa)
		}
		return tw.Flush()
	}}
}

func pct(p float64) string { return strconv.FormatFloat(p, 'f', -1, 64) + "%" }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ----------------------------------------------------------------- slices

const slicesHelp = `Usage:
  vgpuctl slices [--json] [--socket PATH]

Lists every slice: its devices (index:memory), compute share, compute policy
(cap: the share is a ceiling; share: a guarantee, idle capacity may be used),
QoS class, priority, owner (a process for 'vgpuctl run', a container for vgpu-runtime, '-'
for a slice released only by 'vgpuctl release') and directory.

Flags:
`

func slicesCommand() *command {
	return &command{name: "slices", run: func(args []string, stdout, _ io.Writer) error {
		fs := flag.NewFlagSet("vgpuctl slices", flag.ContinueOnError)
		socket := socketFlag(fs)
		asJSON := fs.Bool("json", false, "print JSON (sizes in bytes)")
		if err := parseFlags(fs, slicesHelp, args, stdout); err != nil {
			return err
		}
		ctx, cancel := callCtx()
		defer cancel()
		slices, err := api.NewClient(*socket).Slices(ctx)
		if err != nil {
			return apiError("slices", err)
		}
		sort.Slice(slices, func(i, j int) bool { return slices[i].ID < slices[j].ID })
		if *asJSON {
			return jsonOut(stdout, slices)
		}
		if len(slices) == 0 {
			_, err := fmt.Fprintln(stdout, "no slices")
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tDEVICES\tELASTIC\tCOMPUTE\tPOLICY\tQOS\tPRIORITY\tOWNER\tAGE\tREGIONS\tDIR")
		now := time.Now()
		for _, s := range slices {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", s.ID, sliceDevices(s), sliceElastic(s),
				sliceCompute(s), dash(string(s.ComputePolicy)), s.QoS, s.Priority, ownerString(s.Owner),
				age(now.Sub(s.CreatedAt)), regionState(s), s.Dir)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		return printTampered(stdout, slices)
	}}
}

// regionState is the REGIONS column: "ok", or "TAMPERED" when vgpud found a
// region file changed behind its back (printTampered says how).
func regionState(s api.Slice) string {
	if s.Tampered != "" {
		return "TAMPERED"
	}
	return "ok"
}

// printTampered lists, after a table, how each tampered slice's regions were
// changed; nothing when none was.
func printTampered(w io.Writer, slices []api.Slice) error {
	for _, s := range slices {
		if s.Tampered == "" {
			continue
		}
		if _, err := fmt.Fprintf(w, "slice %s: region tampered with: %s\n", s.ID, s.Tampered); err != nil {
			return err
		}
	}
	return nil
}

// sliceElastic is the ELASTIC column: per elastic device its ceiling and what
// was granted ("-" for a slice that cannot grow).
func sliceElastic(s api.Slice) string {
	var parts []string
	for _, d := range s.Devices {
		if d.Elastic() {
			parts = append(parts, fmt.Sprintf("%d:%s", d.Index, elasticString(d)))
		}
	}
	if parts == nil {
		return "-"
	}
	return strings.Join(parts, ",")
}

// elasticString says a device's ceiling, grant and loans: "max 8GiB +1GiB
// (512MiB from g1)".
func elasticString(d api.SliceDevice) string {
	if !d.Elastic() {
		return "-"
	}
	s := "max " + units.HumanSize(d.MemoryMaxBytes)
	if d.GrantedBytes > 0 {
		s += " +" + units.HumanSize(d.GrantedBytes)
	}
	if len(d.Loans) > 0 {
		loans := make([]string, len(d.Loans))
		for i, l := range d.Loans {
			loans[i] = units.HumanSize(l.Bytes) + " from " + l.From
		}
		s += " (" + strings.Join(loans, ", ") + ")"
	}
	return s
}

func sliceDevices(s api.Slice) string {
	parts := make([]string, len(s.Devices))
	for i, d := range s.Devices {
		parts[i] = fmt.Sprintf("%d:%s", d.Index, units.HumanSize(d.MemoryBytes))
	}
	return strings.Join(parts, ",")
}

func sliceCompute(s api.Slice) string {
	if len(s.Devices) == 0 {
		return "-"
	}
	c := s.Devices[0].ComputePercent
	for _, d := range s.Devices[1:] {
		if d.ComputePercent != c {
			parts := make([]string, len(s.Devices))
			for i, d := range s.Devices {
				parts[i] = share(d.ComputePercent)
			}
			return strings.Join(parts, ",")
		}
	}
	return share(c)
}

// share shows a slice's compute share; 0 asked for none (not throttled, nothing
// reserved), shown as "-".
func share(p float64) string {
	if p == 0 {
		return "-"
	}
	return pct(p)
}

func ownerString(o api.Owner) string {
	switch o.Kind {
	case api.OwnerPID:
		return "pid " + strconv.Itoa(o.PID)
	case api.OwnerContainer:
		id := o.ContainerID
		if len(id) > 12 {
			id = id[:12]
		}
		return "container " + id
	case api.OwnerClaim:
		return "claim " + o.ClaimNamespace + "/" + o.ClaimName
	case api.OwnerNone:
		return "-"
	}
	return o.Kind
}

// age renders a duration like kubectl does: 45s, 12m, 3h, 5d.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h"
	}
	return strconv.Itoa(int(d.Hours()/24)) + "d"
}

// ------------------------------------------------------------------ alloc

// requestFlags are the flags of alloc and run that make an api.AllocRequest.
type requestFlags struct {
	memory    string
	compute   float64
	devices   int
	uuids     listFlag
	priority  int
	qos       string
	placement string
	id        string
	policy    string
	idle      time.Duration
	memMax    string
}

func (r *requestFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.memory, "memory", "", "memory per device: a `SIZE` as a Kubernetes quantity (2Gi or 2GiB = 2·2^30 bytes; 2G = 2·10^9) or a percent of the device (25%) (required)")
	fs.Float64Var(&r.compute, "compute", 0, "compute share per device in percent, 0 < `PCT` <= 100 (default 100)")
	fs.IntVar(&r.devices, "devices", 0, "number of devices `N` the slice spans (default 1, or the number of --uuid)")
	fs.Var(&r.uuids, "uuid", "place the slice on the device with this `UUID`; repeat for several")
	fs.IntVar(&r.priority, "priority", 0, "slice priority `N`; higher wins")
	fs.StringVar(&r.qos, "qos", "", "QoS `class`: guaranteed (default), burstable or best-effort")
	fs.StringVar(&r.policy, "compute-policy", "", "what the compute share means: `cap` (a ceiling, even alone on the device) or share (a guarantee; idle capacity may be used) (default: vgpud's, cap unless set)")
	fs.StringVar(&r.placement, "placement", "", "placement `policy` for this slice: binpack or spread (default: vgpud's)")
	fs.StringVar(&r.id, "id", "", "slice `ID` (letters, digits, '_', '.', '-'; default: generated)")
	fs.StringVar(&r.memMax, "memory-max", "", "elastic ceiling per device, a `SIZE` >= --memory: an allocation over the memory may be granted more, up to this, from memory no slice reserved or that idle guaranteed slices lend (default: none, the memory is the cap)")
	fs.DurationVar(&r.idle, "release-when-idle", 0, "release the slice once it has been empty (no process holding its devices) this `long` after its last process (0: keep it)")
}

// request builds the AllocRequest, checking what can be checked here; vgpud
// checks the rest.
func (r *requestFlags) request() (api.AllocRequest, error) {
	req := api.AllocRequest{
		ID:             r.id,
		ComputePercent: r.compute,
		DeviceCount:    r.devices,
		UUIDs:          r.uuids,
		Priority:       r.priority,
		QoS:            api.QoS(r.qos),
		Placement:      r.placement,
		ComputePolicy:  api.ComputePolicy(r.policy),
		IdleRelease:    units.Duration(r.idle),
	}
	if r.idle < 0 || r.idle > api.MaxIdleRelease {
		return req, usagef("--release-when-idle %v out of range [0, %v]", r.idle, api.MaxIdleRelease)
	}
	mem := strings.TrimSpace(r.memory)
	switch {
	case mem == "":
		return req, usagef("--memory is required (a size like 2GiB or a percent like 25%%)")
	case strings.HasSuffix(mem, "%"):
		p, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(mem, "%")), 64)
		if err != nil || !(p > 0 && p <= 100) {
			return req, usagef("--memory %q: a percent must be in (0, 100]", r.memory)
		}
		req.MemoryPercent = p
	default:
		n, err := units.ParseSize(mem)
		if err != nil {
			return req, usagef("--memory: %v", err)
		}
		if n == 0 {
			return req, usagef("--memory must be more than 0")
		}
		req.MemoryBytes = n
	}
	if m := strings.TrimSpace(r.memMax); m != "" {
		n, err := units.ParseSize(m)
		if err != nil {
			return req, usagef("--memory-max: %v", err)
		}
		req.MemoryMaxBytes = n // at least --memory: vgpud checks, for a percent once placed
	}
	if r.compute < 0 || r.compute > 100 {
		return req, usagef("--compute %g out of range (0, 100]", r.compute)
	}
	if r.devices < 0 {
		return req, usagef("--devices %d: want 1 or more", r.devices)
	}
	if _, err := api.ParseComputePolicy(r.policy); err != nil {
		return req, usagef("--compute-policy %q: want cap or share", r.policy)
	}
	return req, nil
}

const allocHelp = `Usage:
  vgpuctl alloc --memory SIZE|PCT% [request flags] [--json] [--socket PATH]

Asks vgpud for a slice and prints "<id> <dir>": the slice's id and the directory
of its budget and usage files. Run CUDA programs in it with
  LD_PRELOAD=/usr/lib/vgpu/libvgpu.so VGPU_SLICE_DIR=<dir> program
and free it with 'vgpuctl release <id>' (or use 'vgpuctl run', which does all
three). The slice has no owner: it lives until released, across vgpud restarts.

A request that does not fit is refused with what each device lacked.

Examples:
  vgpuctl alloc --memory 4GiB --compute 50
  vgpuctl alloc --memory 25% --devices 2 --qos burstable --placement spread
  vgpuctl alloc --memory 4GiB --compute 30 --compute-policy share
  vgpuctl alloc --memory 8Gi --uuid GPU-5d3a1f2e-0c4b-4a6e-9f1d-2b7c8e9a0b1c --id train-1

Flags:
`

func allocCommand() *command {
	return &command{name: "alloc", run: func(args []string, stdout, _ io.Writer) error {
		fs := flag.NewFlagSet("vgpuctl alloc", flag.ContinueOnError)
		socket := socketFlag(fs)
		var rf requestFlags
		rf.register(fs)
		asJSON := fs.Bool("json", false, "print the slice as JSON")
		if err := parseFlags(fs, allocHelp, args, stdout); err != nil {
			return err
		}
		req, err := rf.request()
		if err != nil {
			return err
		}
		ctx, cancel := callCtx()
		defer cancel()
		s, err := api.NewClient(*socket).Alloc(ctx, req)
		if err != nil {
			return apiError("alloc", err)
		}
		if *asJSON {
			return jsonOut(stdout, s)
		}
		_, err = fmt.Fprintf(stdout, "%s %s\n", s.ID, s.Dir)
		return err
	}}
}

// ---------------------------------------------------------------- release

const releaseHelp = `Usage:
  vgpuctl release ID... [--socket PATH]

Frees slices: their records and region files are removed and their memory and
compute return to the devices. Processes still running in a released slice keep
their mapped files but are no longer counted or enforced.

Flags:
`

func releaseCommand() *command {
	return &command{name: "release", run: func(args []string, stdout, _ io.Writer) error {
		fs := flag.NewFlagSet("vgpuctl release", flag.ContinueOnError)
		socket := socketFlag(fs)
		ids, err := parseWithArgs(fs, releaseHelp, args, stdout)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			return usagef("release: which slice? (vgpuctl release ID)")
		}
		c := api.NewClient(*socket)
		defer c.Close()
		var errs []error
		for _, id := range ids {
			ctx, cancel := callCtx()
			err := c.Release(ctx, id)
			cancel()
			if err != nil {
				errs = append(errs, apiError("release "+id, err))
				if errors.Is(err, api.ErrNotRunning) {
					break
				}
				continue
			}
			fmt.Fprintf(stdout, "released %s\n", id)
		}
		return errors.Join(errs...)
	}}
}

// -------------------------------------------------------------------- top
