package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/units"
	"github.com/vgpu-project/vgpu/shm"
)

// defaultContextOverhead is charged per CUDA context when --context-overhead is
// not given: a typical driver footprint on current GPUs.
const defaultContextOverhead = 256 << 20

const createHelp = `Usage:
  vgpuctl slice create --dir DIR --memory SIZE [--device N|UUID ...] [flags]

Writes a slice (DIR/budget and DIR/usage) with no daemon, for tests, debugging
and bare-metal use. Both files are written atomically; an existing slice is
refused unless --force is given (processes still running in the old slice keep
their old files and are no longer counted).

--memory applies to every --device. --device takes a CUDA ordinal / NVML index
(a number) or a device UUID (GPU-xxxxxxxx-...; matched with cuDeviceGetUuid); it
may be repeated, and defaults to device 0.

Sizes are Kubernetes quantities: bytes, or a number with Ki, Mi, Gi, Ti
(binary: 1Gi = 2^30) or k, M, G, T (decimal: 1G = 10^9), as in a pod spec;
the spellings KiB, MiB, GiB (binary) and kB, MB, GB (decimal) also do:
512Mi, 16GiB, 1.5Gi.

Examples:
  vgpuctl slice create --dir /tmp/slice --memory 2GiB
  vgpuctl slice create --dir /tmp/slice --memory 8GiB --device 0 --device 1 --slots 64
  vgpuctl slice create --dir /tmp/slice --memory 4Gi \
      --device GPU-5d3a1f2e-0c4b-4a6e-9f1d-2b7c8e9a0b1c --context-overhead 300MiB
  LD_PRELOAD=build/libvgpu.so VGPU_SLICE_DIR=/tmp/slice python train.py

Flags:
`

const showHelp = `Usage:
  vgpuctl slice show --dir DIR [--json]

Prints a slice's budget and usage: per device the limit, the bytes in use (every
charge libvgpu admitted, context footprints included), what is free (never
negative), the peak and the allocations refused; then every process holding a
slot with its bytes per device.

Examples:
  vgpuctl slice show --dir /tmp/slice
  vgpuctl slice show --dir /var/lib/vgpu/slices/job-1 --json | jq .devices

Flags:
`

// sizeFlag is a flag.Value holding a byte count (units.ParseSize).
type sizeFlag struct {
	bytes uint64
	set   bool
}

func (f *sizeFlag) String() string {
	if f == nil || !f.set && f.bytes == 0 {
		return ""
	}
	return units.FormatSize(f.bytes)
}

func (f *sizeFlag) Set(s string) error {
	n, err := units.ParseSize(s)
	if err != nil {
		return err
	}
	f.bytes, f.set = n, true
	return nil
}

// listFlag collects every occurrence of a repeatable flag.
type listFlag []string

func (f *listFlag) String() string     { return strings.Join(*f, ",") }
func (f *listFlag) Set(s string) error { *f = append(*f, s); return nil }

// parseFlags parses args with fs, turning --help into help on stdout and
// every other problem into a usage error.
func parseFlags(fs *flag.FlagSet, help string, args []string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var defaults bytes.Buffer
			fs.SetOutput(&defaults)
			fs.PrintDefaults()
			fmt.Fprint(stdout, help, defaults.String())
			return errHelpShown
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func flagNames(f uint32) []string {
	names := []string{}
	if f&shm.BudgetFlagElastic != 0 {
		names = append(names, "elastic")
		f &^= shm.BudgetFlagElastic
	}
	if f != 0 {
		names = append(names, fmt.Sprintf("%#x", f))
	}
	return names
}

func sliceCreateCommand() *command {
	return &command{
		name: "create",
		run:  runSliceCreate,
	}
}

func runSliceCreate(args []string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet("vgpuctl slice create", flag.ContinueOnError)
	var (
		dir      = fs.String("dir", "", "slice directory `DIR` to write (created 0755 if missing) (required)")
		memory   sizeFlag
		overhead = sizeFlag{bytes: defaultContextOverhead}
		devices  listFlag
		id       = fs.String("id", "", "slice name `ID` recorded in the budget (at most 63 bytes)")
		slots    = fs.Int("slots", shm.DefaultSlots, "`N` process slots: how many processes may use the slice at once (1..65536)")
		compute  = fs.Float64("compute", 0, "compute share in percent (`PCT`) of each device: launches are throttled to a static rate estimated from it (0 < PCT <= 100; absent or 100: not throttled)")
		priority = fs.Uint("priority", 0, "slice priority `N`; higher wins")
		qos      = fs.String("qos", "guaranteed", "QoS `class`: guaranteed, burstable or best-effort")
		policy   = fs.String("compute-policy", string(api.ComputePolicyCap), "what --compute means: `cap` (a ceiling; with no daemon, the static rate) or share (a guarantee; idle capacity may be used once vgpud's controller adjusts the rate)")
		force    = fs.Bool("force", false, "replace an existing slice in DIR")
	)
	fs.Var(&memory, "memory", "memory limit `SIZE` per device, e.g. 2GiB (required)")
	fs.Var(&devices, "device", "device index `N` or UUID; repeat for several devices (default 0)")
	fs.Var(&overhead, "context-overhead", "`SIZE` charged per CUDA context: set it to your driver's per-context footprint")
	if err := parseFlags(fs, createHelp, args, stdout); err != nil {
		return err
	}

	if *dir == "" {
		return usagef("--dir is required")
	}
	if !memory.set {
		return usagef("--memory is required")
	}
	if memory.bytes == 0 {
		return usagef("--memory must be more than 0")
	}
	if overhead.bytes >= memory.bytes {
		return usagef("--context-overhead %s leaves no memory in a %s slice",
			units.FormatSize(overhead.bytes), units.FormatSize(memory.bytes))
	}
	if *slots < 1 || *slots > shm.MaxSlots {
		return usagef("--slots %d out of range 1..%d", *slots, shm.MaxSlots)
	}
	if computeSet := flagGiven(fs, "compute"); computeSet && !(*compute > 0 && *compute <= 100) {
		return usagef("--compute %g out of range (0, 100]", *compute)
	}
	if *priority > math.MaxUint32 {
		return usagef("--priority %d too large", *priority)
	}
	q, err := api.ParseQoS(*qos)
	if err != nil || *qos == "" {
		return usagef("--qos %q: want guaranteed, burstable or best-effort", *qos)
	}
	pol, err := api.ParseComputePolicy(*policy)
	if err != nil || *policy == "" {
		return usagef("--compute-policy %q: want cap or share", *policy)
	}
	if len(devices) == 0 {
		devices = listFlag{"0"}
	}

	budget := api.SliceBudget{ID: *id, Slots: *slots, Priority: int(*priority), QoS: q,
		ComputePolicy: pol, ContextOverhead: overhead.bytes}
	if budget.Devices, err = budgetDevices(devices, memory.bytes, *compute); err != nil {
		return err
	}
	// No daemon adjusts this slice's rate: Spec starts it at the static rate
	// estimated from the share.
	spec, err := budget.Spec()
	if err != nil {
		return usageError{err}
	}

	if !*force && shm.SliceExists(*dir) {
		return fmt.Errorf("%s already holds a slice (use --force to replace it)", *dir)
	}
	if err := shm.CreateSlice(*dir, spec); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created slice %s: %d device(s), %s each, %d process slots\n",
		*dir, len(spec.Devices), units.FormatSize(memory.bytes), *slots)
	return nil
}

func sliceShowCommand() *command {
	return &command{
		name: "show",
		run:  runSliceShow,
	}
}

// sliceView is what `slice show` prints; its JSON form is the --json output.
type sliceView struct {
	Dir           string        `json:"dir"`
	ID            string        `json:"id"`
	ABI           string        `json:"abi"`
	Generation    uint64        `json:"generation"`
	CreatedUnixNs uint64        `json:"created_unix_ns"`
	Priority      uint32        `json:"priority"`
	QoS           string        `json:"qos"`
	Policy        string        `json:"policy"`
	Flags         []string      `json:"flags"`
	Slots         int           `json:"slots"`
	AttachCount   uint64        `json:"attach_count"`
	Devices       []deviceView  `json:"devices"`
	Processes     []processView `json:"processes"`
}

type deviceView struct {
	Index                uint32 `json:"index"`
	UUID                 string `json:"uuid,omitempty"`
	LimitBytes           uint64 `json:"limit_bytes"`
	UsedBytes            uint64 `json:"used_bytes"`
	FreeBytes            uint64 `json:"free_bytes"`
	PeakBytes            uint64 `json:"peak_bytes"`
	RefusedAllocs        uint64 `json:"refused_allocs"`
	GuaranteedBytes      uint64 `json:"guaranteed_bytes"`
	ContextOverheadBytes uint64 `json:"context_overhead_bytes"`
	ComputeShareBP       uint32 `json:"compute_share_bp"`
	ComputeFloorBP       uint32 `json:"compute_floor_bp"`
	TokenRate            uint64 `json:"token_rate"`
	TokenBurst           uint64 `json:"token_burst"`
	Launches             uint64 `json:"launches"`
	ThrottledNs          uint64 `json:"throttled_ns"`
}

type processView struct {
	Slot         int      `json:"slot"`
	PID          int      `json:"pid"`
	State        string   `json:"state"`
	PIDNamespace uint64   `json:"pid_namespace,omitempty"`
	StartTime    uint64   `json:"start_time,omitempty"`
	HostPID      int      `json:"host_pid,omitempty"`
	Contexts     uint64   `json:"contexts"`
	UsedBytes    []uint64 `json:"used_bytes"`
}

func loadView(dir string) (*sliceView, error) {
	s, err := shm.OpenSlice(dir)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	b, u := s.Budget, s.Usage
	v := &sliceView{
		Dir:           dir,
		ID:            b.SliceID(),
		ABI:           fmt.Sprintf("%d.%d", shm.ABIMajor, b.ABIMinor()),
		Generation:    b.Generation(),
		CreatedUnixNs: b.CreatedUnixNs(),
		Priority:      b.Priority(),
		QoS:           string(api.QoSOfCode(b.QoS())),
		Policy:        string(api.ComputePolicyOfCode(b.Policy())),
		Flags:         flagNames(b.Flags()),
		Slots:         u.SlotCount(),
		AttachCount:   u.AttachCount(),
		Devices:       []deviceView{},
		Processes:     []processView{},
	}
	for d := 0; d < b.DeviceCount(); d++ {
		bd, ud := b.Device(d), u.Device(d)
		free := uint64(0)
		if bd.MemoryLimit > ud.UsedBytes {
			free = bd.MemoryLimit - ud.UsedBytes
		}
		v.Devices = append(v.Devices, deviceView{
			Index:                bd.Index,
			UUID:                 bd.UUID,
			LimitBytes:           bd.MemoryLimit,
			UsedBytes:            ud.UsedBytes,
			FreeBytes:            free,
			PeakBytes:            ud.PeakBytes,
			RefusedAllocs:        ud.RefusedAllocs,
			GuaranteedBytes:      bd.MemoryGuaranteed,
			ContextOverheadBytes: bd.ContextOverhead,
			ComputeShareBP:       bd.ComputeShareBP,
			ComputeFloorBP:       bd.ComputeFloorBP,
			TokenRate:            bd.TokenRate,
			TokenBurst:           bd.TokenBurst,
			Launches:             ud.Launches,
			ThrottledNs:          ud.ThrottledNs,
		})
	}
	for _, si := range u.Slots() {
		state := "live"
		if si.Claiming {
			state = "claiming"
		}
		v.Processes = append(v.Processes, processView{
			Slot:         si.Index,
			PID:          si.PID,
			State:        state,
			PIDNamespace: si.PIDNamespace,
			StartTime:    si.StartTime,
			HostPID:      si.HostPID,
			Contexts:     si.Contexts,
			UsedBytes:    si.UsedBytes,
		})
	}
	return v, nil
}

func runSliceShow(args []string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet("vgpuctl slice show", flag.ContinueOnError)
	dir := fs.String("dir", "", "slice directory `DIR` (required)")
	asJSON := fs.Bool("json", false, "print JSON (sizes in bytes)")
	if err := parseFlags(fs, showHelp, args, stdout); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("--dir is required")
	}
	v, err := loadView(*dir)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return printView(stdout, v)
}

func printView(w io.Writer, v *sliceView) error {
	flags := "none"
	if len(v.Flags) > 0 {
		flags = strings.Join(v.Flags, ",")
	}
	id := v.ID
	if id == "" {
		id = "-"
	}
	created := time.Unix(0, int64(v.CreatedUnixNs)).UTC().Format(time.RFC3339)
	fmt.Fprintf(w, "slice %s\n", v.Dir)
	fmt.Fprintf(w, "  id %s  abi %s  generation %d  created %s\n", id, v.ABI, v.Generation, created)
	fmt.Fprintf(w, "  priority %d  qos %s  policy %s  flags %s\n", v.Priority, v.QoS, v.Policy, flags)
	fmt.Fprintf(w, "  processes %d of %d slots (%d attached since creation)\n\n",
		len(v.Processes), v.Slots, v.AttachCount)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tMATCH\tLIMIT\tUSED\tFREE\tPEAK\tREFUSED\tCONTEXT\tCOMPUTE")
	for d, dv := range v.Devices {
		match := fmt.Sprintf("index %d", dv.Index)
		if dv.UUID != "" {
			match = dv.UUID
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d, match,
			units.HumanSize(dv.LimitBytes), units.HumanSize(dv.UsedBytes), units.HumanSize(dv.FreeBytes),
			units.HumanSize(dv.PeakBytes), dv.RefusedAllocs, units.HumanSize(dv.ContextOverheadBytes),
			strconv.FormatFloat(float64(dv.ComputeShareBP)/100, 'f', -1, 64)+"%")
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	if len(v.Processes) == 0 {
		_, err := fmt.Fprintln(w, "\nno processes")
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := "SLOT\tPID\tSTATE\tHOST PID\tCONTEXTS"
	for d := range v.Devices {
		header += fmt.Sprintf("\tUSED[%d]", d)
	}
	fmt.Fprintln(tw, header)
	for _, p := range v.Processes {
		host := "-"
		if p.HostPID != 0 {
			host = strconv.Itoa(p.HostPID)
		}
		line := fmt.Sprintf("%d\t%d\t%s\t%s\t%d", p.Slot, p.PID, p.State, host, p.Contexts)
		for _, n := range p.UsedBytes {
			line += "\t" + units.HumanSize(n)
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

// flagGiven reports whether the flag name was set on the command line (a
// default and an explicit value may mean different things).
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// budgetDevices turns the --device arguments (indexes or UUIDs) into the
// slice's devices, each with the same memory and compute share.
func budgetDevices(args []string, memory uint64, compute float64) ([]api.SliceDevice, error) {
	devs := make([]api.SliceDevice, 0, len(args))
	for _, arg := range args {
		d := api.SliceDevice{MemoryBytes: memory, ComputePercent: compute}
		if n, err := strconv.ParseUint(arg, 10, 32); err == nil {
			d.Index = int(n)
		} else if arg == "" || strings.ContainsAny(arg, " \t\n") {
			return nil, usagef("--device %q: want a device index or a UUID", arg)
		} else {
			d.UUID = arg
		}
		devs = append(devs, d)
	}
	return devs, nil
}
