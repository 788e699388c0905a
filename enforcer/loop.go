package enforcer

import (
	"sync"
	"time"

	"github.com/vgpu-project/vgpu/internal/procfs"
	"github.com/vgpu-project/vgpu/shm"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// TrackedSlice is one slice the loop looks after.
type TrackedSlice struct {
	ID    string
	Slice *shm.Slice
	// UUIDs holds the device uuid of each slice device (budget order); an
	// empty or missing entry means the device has no driver figures.
	UUIDs []string
	// Allowance, per slice device (missing: 0), is what the backstop lets the
	// slice hold above its budget's limit: memory it held before its limit
	// was lowered under it (an elastic grant taken back), which it may keep
	// until it frees it or vgpud decides to evict it. The caller may change
	// the values between ticks.
	Allowance []uint64
}

// DefaultFullScanEvery is how often (in ticks) every slice's whole slot table
// is read even when nothing new attached.
const DefaultFullScanEvery = 100

// Loop is the enforcer loop. vgpud calls Tick every few tens of milliseconds
// with the slices it holds. Set the exported fields before the first Tick and
// do not change them afterwards; Tick calls are serialized.
//
// Liveness: a slot's process is found by its host pid (its own pid in the
// daemon's pid namespace, else through Mapper) and, once its start time is
// verified, watched through a pidfd, so that a tick tells every dead process
// apart with one poll(2) instead of reading /proc for each (a tick over 1,000
// slices must stay within a few ms of CPU). Without pidfds (old kernel, fd
// limit, DisablePidfd) it reads /proc/<pid>/stat each tick instead. A process
// is only declared dead when that is certain; a slot still being claimed, or
// whose process cannot be mapped, is left alone.
//
// Slot tables: each usage file's attach counter (bumped by libvgpu on every
// claim) tells whether a slice gained processes; only then, when a known
// process died, and every FullScanEvery ticks is the whole table read (a new
// slice nobody attached to is not read at all). Other ticks only look at the
// slots known to be owned. A writer that claims without bumping the counter
// (a crash in between, or a forged file) is found by the periodic scan.
//
// The loop holds one pidfd per watched process: call Close when done.
type Loop struct {
	// Mode of the backstop; "" means ModeReport.
	Mode       Mode
	Mapper     PIDMapper
	Driver     DriverProcesses
	Attributor Attributor
	// Kill kills a process by host pid; nil means SIGKILL.
	Kill func(hostPID int) error
	Log  *zap.Logger
	// Tolerance, in bytes, is what the driver's figure may exceed libvgpu's
	// (per process) and a slice's limit (per slice) before the backstop acts:
	// driver bookkeeping that libvgpu cannot see exactly.
	Tolerance uint64
	// FullScanEvery: ticks between full reads of a slice's slot table
	// (0 = DefaultFullScanEvery).
	FullScanEvery int
	// DisablePidfd makes liveness read /proc every tick instead of holding
	// pidfds.
	DisablePidfd bool

	mu      sync.Mutex
	started bool
	gen     uint64
	selfNS  uint64
	aliveFn func(shm.SlotIdentity) bool
	totals  TickTotals

	states map[*shm.UsageRegion]*sliceState
	procs  map[procKey]*procEntry
	// watch lists every procEntry once, in creation order; poll uses it.
	watch   []*procEntry
	pollfds []unix.PollFd
	pollIdx []int32
	noPidfd bool // pidfd_open failed with ENOSYS/EPERM: stop trying
	cur     *sliceState

	// per-tick scratch, reused
	uuids      []string
	uuidIdx    map[string]int
	driverProc [][]DriverProcess
	driverOK   []bool
	byHost     map[int]procRef
	byID       map[string]int
	byIDBuilt  bool // byID holds this tick's slices (sliceIndex)
	unslotted  map[int]procRef
	violations map[violKey]uint64
	killed     map[int]struct{}
	order      []int         // scratch of offenders
	tickStates []*sliceState // state of each slice of this tick (nil: unreadable)
	sizes      slabSizes
}

// slabSizes remembers how much of each kind the last tick used, so that the
// next one allocates each kind once.
type slabSizes struct{ devs, procs, words int }

// slab hands out sub-slices of bulk allocations; each sub-slice is capped so
// that appending to it never writes into a neighbour.
type slab[T any] struct {
	buf  []T
	used int
}

func (s *slab[T]) take(n, hint int) []T {
	if n == 0 {
		return nil
	}
	if len(s.buf)+n > cap(s.buf) {
		s.buf = make([]T, 0, max(hint, n, 2*cap(s.buf)))
	}
	lo := len(s.buf)
	s.buf = s.buf[:lo+n]
	s.used += n
	return s.buf[lo : lo+n : lo+n]
}

func (l *Loop) init() {
	if l.started {
		return
	}
	l.started = true
	l.selfNS = procfs.SelfPIDNamespace()
	l.aliveFn = l.alive
	l.states = make(map[*shm.UsageRegion]*sliceState)
	l.procs = make(map[procKey]*procEntry)
	l.uuidIdx = make(map[string]int)
	l.byHost = make(map[int]procRef)
	l.byID = make(map[string]int)
	l.unslotted = make(map[int]procRef)
	l.violations = make(map[violKey]uint64)
	l.killed = make(map[int]struct{})
	if l.Log == nil {
		l.Log = zap.NewNop()
	}
	l.noPidfd = l.DisablePidfd
}

// Close releases the pidfds the loop holds. The loop may be used again
// afterwards (it reopens what it needs).
func (l *Loop) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.watch {
		if e.fd >= 0 {
			_ = unix.Close(e.fd) // a pidfd: nothing to flush
			e.fd = -1
		}
	}
	l.watch = nil
	clear(l.procs)
	return nil
}

// Tick runs one pass over slices: returns the charges of dead processes, maps
// processes to host pids (recorded in their slots), reads the driver's
// per-process memory once per device, and runs the backstop. It never stops
// at an error: errors are reported and the other slices and devices are still
// handled.
func (l *Loop) Tick(slices []TrackedSlice) TickReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	start := time.Now()
	l.init()
	l.gen++
	if ta, ok := l.Mapper.(TickAware); ok {
		ta.BeginTick()
	}
	mode := l.Mode
	if mode == "" {
		mode = ModeReport
	}
	rep := TickReport{Seq: l.gen, Start: start, Mode: mode}

	l.pollWatched()

	var (
		devSlab  slab[SliceDeviceSnapshot]
		procSlab slab[ProcessSnapshot]
		wordSlab slab[uint64]
	)
	rep.Slices = make([]SliceSnapshot, len(slices))
	if cap(l.tickStates) < len(slices) {
		l.tickStates = make([]*sliceState, len(slices))
	} else {
		l.tickStates = l.tickStates[:len(slices)]
		clear(l.tickStates)
	}
	for i := range slices {
		l.scanSlice(&rep, i, &slices[i], &devSlab, &procSlab, &wordSlab)
	}
	l.driverPass(&rep, slices, &procSlab, &wordSlab)
	if mode != ModeOff {
		l.backstop(&rep, slices, mode)
	}
	l.sizes = slabSizes{devs: devSlab.used, procs: procSlab.used, words: wordSlab.used}
	l.sweep(len(slices))

	l.totals.Ticks++
	l.totals.Errors += uint64(len(rep.Errors))
	rep.Totals = l.totals
	rep.Duration = time.Since(start)
	return rep
}

func (l *Loop) addErr(rep *TickReport, slice, device string, err error) {
	rep.Errors = append(rep.Errors, TickError{Slice: slice, Device: device, Err: err.Error()})
}

// sweep forgets slices that were not passed to this tick.
func (l *Loop) sweep(tracked int) {
	if len(l.states) <= tracked {
		return
	}
	for u, st := range l.states {
		if st.seen != l.gen {
			delete(l.states, u)
		}
	}
}
