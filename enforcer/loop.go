package enforcer

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vgpu-project/vgpu/internal/procfs"
	"github.com/vgpu-project/vgpu/shm"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Mode is the setting of the enforcer's backstop.
type Mode string

const (
	// ModeOff: no backstop; the loop still reclaims and reports figures.
	ModeOff Mode = "off"
	// ModeReport: a process over its slice is logged and counted.
	ModeReport Mode = "report"
	// ModeEnforce: it is also killed (SIGKILL).
	ModeEnforce Mode = "enforce"
)

// ParseMode parses "off", "report" or "enforce".
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeOff, ModeReport, ModeEnforce:
		return m, nil
	}
	return "", fmt.Errorf("enforcer mode %q: want off, report or enforce", s)
}

// QoSName is the name of a budget QoS class, as the daemon's API spells it.
func QoSName(q uint32) string {
	switch q {
	case shm.QoSGuaranteed:
		return "guaranteed"
	case shm.QoSBurstable:
		return "burstable"
	case shm.QoSBestEffort:
		return "best-effort"
	}
	return fmt.Sprintf("unknown-%d", q)
}

// DriverProcess is one process as the driver (NVML) reports it on one device.
type DriverProcess struct {
	HostPID   int
	UsedBytes uint64
}

// DriverProcesses lists the processes holding memory on a device, by uuid
// (NVML's running compute processes). The loop calls it once per device per
// tick.
type DriverProcesses interface {
	Processes(uuid string) ([]DriverProcess, error)
}

// Attributor names the slice a process belongs to when the process has no
// slot: it bypassed libvgpu (static link, raw ioctls) or never loaded it. The
// daemon implements it (owner pid ancestry now, cgroups for containers later).
type Attributor interface {
	SliceOf(hostPID int) (sliceID string, ok bool)
}

// TrackedSlice is one slice the loop looks after.
type TrackedSlice struct {
	ID    string
	Slice *shm.Slice
	// UUIDs holds the device uuid of each slice device (budget order); an
	// empty or missing entry means the device has no driver figures.
	UUIDs []string
}

// Backstop actions.
const (
	ActionReported   = "reported"
	ActionKilled     = "killed"
	ActionKillFailed = "kill-failed"
)

// TickReport is what one tick saw and did. Every slice in it is freshly
// allocated: the caller may keep a report while later ticks run.
type TickReport struct {
	Seq      uint64 // tick number since the loop started, from 1
	Start    time.Time
	Duration time.Duration
	Mode     Mode
	Slices   []SliceSnapshot
	// Devices has one entry per device uuid the driver was asked about.
	Devices []DriverDevice
	// ReclaimedBytes is what this tick returned from dead processes, all
	// devices together; Reclaimed lists them.
	ReclaimedBytes uint64
	Reclaimed      []ReclaimEvent
	// Backstop lists the violations first seen in this tick.
	Backstop []BackstopEvent
	Errors   []TickError
	Totals   TickTotals
}

// TickTotals are cumulative over the loop's life.
type TickTotals struct {
	Ticks              uint64
	ReclaimedBytes     uint64
	ReclaimedProcesses uint64
	BackstopEvents     uint64
	Kills              uint64
	Errors             uint64
}

// SliceSnapshot is one slice as the tick left it.
type SliceSnapshot struct {
	ID        string
	QoS       uint32 // QoS* (QoSName)
	Priority  uint32
	Devices   []SliceDeviceSnapshot
	Processes []ProcessSnapshot
}

// SliceDeviceSnapshot is a slice's figures on one of its devices.
type SliceDeviceSnapshot struct {
	UUID          string
	LimitBytes    uint64
	UsedBytes     uint64 // libvgpu's admission counter
	PeakBytes     uint64
	RefusedAllocs uint64
	// DriverBytes is what the driver reports for the slice's processes
	// (those with a slot and those attributed to it); valid when DriverKnown.
	DriverBytes uint64
	DriverKnown bool
	// Cumulative over the loop's life.
	ReclaimedBytesTotal uint64
	BackstopEventsTotal uint64
}

// ProcessSnapshot is one process of a slice.
type ProcessSnapshot struct {
	PID     int // in its own pid namespace; 0 for a process without a slot
	HostPID int // 0: not mapped (yet)
	// Slot is the usage slot index, -1 for a process the driver reported and
	// the Attributor put in this slice.
	Slot      int
	UsedBytes []uint64 // per slice device, as libvgpu charged it
	// DriverBytes per slice device, as the driver reports it; nil when the
	// loop has no driver.
	DriverBytes []uint64
}

// DriverDevice is what the driver reported for one device.
type DriverDevice struct {
	UUID         string
	Processes    int
	ProcessBytes uint64 // all processes on the device, in a slice or not
	Err          string
}

// ReclaimEvent is a dead process whose charge was returned.
type ReclaimEvent struct {
	Slice      string
	PID        int
	HostPID    int
	FreedBytes []uint64 // per slice device
}

// BackstopEvent is a process found using more than its slice allows.
type BackstopEvent struct {
	Slice        string
	Device       string // uuid
	DeviceIndex  int    // slice device index
	PID          int    // 0 when the process has no slot
	HostPID      int
	DriverBytes  uint64 // the process's driver figure on the device
	ChargedBytes uint64 // what libvgpu charged it there
	SliceBytes   uint64 // the slice's driver total on the device
	LimitBytes   uint64
	Action       string // Action*
	Err          string // kill error
}

// TickError is something the tick could not do; it went on with the rest.
type TickError struct {
	Slice  string // "" when not about one slice
	Device string // uuid, "" when not about one device
	Err    string
}

func (e TickError) String() string {
	s := e.Err
	if e.Device != "" {
		s = "device " + e.Device + ": " + s
	}
	if e.Slice != "" {
		s = "slice " + e.Slice + ": " + s
	}
	return s
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
	unslotted  map[int]procRef
	violations map[violKey]uint64
	killed     map[int]struct{}
	tickStates []*sliceState // state of each slice of this tick (nil: unreadable)
	sizes      slabSizes
}

// sliceState is what the loop remembers of one usage region between ticks.
type sliceState struct {
	seen     uint64
	attach   uint64
	nextFull uint64
	// phase spreads the periodic full scans: this slice's fall on the ticks
	// t with t % FullScanEvery == phase, so that 1,000 slices never all scan
	// in one tick (they would if their first scans, all in the first tick,
	// set the schedule).
	phase uint64
	owned []ownedSlot
	// cumulative per slice device
	reclaimed [shm.MaxDevices]uint64
	backstop  [shm.MaxDevices]uint64
}

type ownedSlot struct {
	idx   int32
	owner uint64
	e     *procEntry // nil for a slot being claimed
}

// procEntry is one process the loop watches.
type procEntry struct {
	key      procKey
	hostPID  int
	fd       int // pidfd, -1 when none
	resolved bool
	dead     bool
	seen     uint64
}

type procRef struct{ slice, proc int32 }

type violKey struct {
	slice   string
	hostPID int
	dev     int
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

// nextPhase is the first tick after gen that is ≡ phase (mod every).
func nextPhase(gen, phase, every uint64) uint64 {
	d := (phase + every - gen%every) % every
	if d == 0 {
		d = every
	}
	return gen + d
}

func (l *Loop) fullScanEvery() uint64 {
	if l.FullScanEvery > 0 {
		return uint64(l.FullScanEvery)
	}
	return DefaultFullScanEvery
}

// Close releases the pidfds the loop holds. The loop may be used again
// afterwards (it reopens what it needs).
func (l *Loop) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.watch {
		if e.fd >= 0 {
			unix.Close(e.fd)
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

// ---------------------------------------------------------------------------
// Liveness.

// pollWatched refreshes the dead flag of every watched process: one poll(2)
// over the pidfds (a pidfd turns readable when its process exits, zombie or
// not), /proc for the ones without a pidfd. Entries no slot referred to in the
// previous tick are dropped here.
func (l *Loop) pollWatched() {
	l.pollfds = l.pollfds[:0]
	l.pollIdx = l.pollIdx[:0]
	n := 0
	for _, e := range l.watch {
		if e.seen+1 < l.gen {
			// No slot named this process last tick: its slot was freed or
			// reclaimed.
			if e.fd >= 0 {
				unix.Close(e.fd)
			}
			delete(l.procs, e.key)
			continue
		}
		l.watch[n] = e
		n++
		switch {
		case e.dead || !e.resolved:
		case e.fd >= 0:
			l.pollfds = append(l.pollfds, unix.PollFd{Fd: int32(e.fd), Events: unix.POLLIN})
			l.pollIdx = append(l.pollIdx, int32(n-1))
		default:
			e.dead = !l.hostAlive(e)
		}
	}
	clear(l.watch[n:])
	l.watch = l.watch[:n]
	if len(l.pollfds) == 0 {
		return
	}
	for {
		_, err := unix.Poll(l.pollfds, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// Cannot poll: judge them through /proc this time.
			for _, i := range l.pollIdx {
				e := l.watch[i]
				e.dead = !l.hostAlive(e)
			}
			return
		}
		break
	}
	for k, pfd := range l.pollfds {
		if pfd.Revents&(unix.POLLIN|unix.POLLHUP|unix.POLLNVAL|unix.POLLERR) != 0 {
			l.watch[l.pollIdx[k]].dead = true
		}
	}
}

// hostAlive judges a resolved process through /proc.
func (l *Loop) hostAlive(e *procEntry) bool {
	if e.key.ns == 0 || e.key.ns == l.selfNS {
		return ProcessAlive(shm.SlotIdentity{PID: e.key.pid, PIDNamespace: e.key.ns, StartTime: e.key.start})
	}
	var buf [procfs.StatBufSize]byte
	st, err := procfs.ReadStat(procfs.Root, e.hostPID, buf[:])
	switch {
	case err != nil:
		return !procfs.IsGone(err)
	case st.Dead():
		return false
	case e.key.start != 0 && st.StartTime != e.key.start:
		return false
	}
	return true
}

// alive is the liveness function handed to Reclaim; it also records the slots
// judged alive as the slice's owned set.
func (l *Loop) alive(id shm.SlotIdentity) bool {
	var e *procEntry
	ok := true
	if !id.Claiming {
		e = l.entry(id)
		ok = !e.dead
	}
	if ok && l.cur != nil {
		l.cur.owned = append(l.cur.owned, ownedSlot{idx: int32(id.Index), e: e})
	}
	return ok
}

// entry returns the watch entry of id's process, creating (and resolving) it
// when new, and retrying the resolution of one not resolved yet.
func (l *Loop) entry(id shm.SlotIdentity) *procEntry {
	key := procKey{ns: id.PIDNamespace, pid: id.PID, start: id.StartTime}
	e := l.procs[key]
	if e == nil {
		e = &procEntry{key: key, fd: -1}
		l.procs[key] = e
		l.watch = append(l.watch, e)
	}
	e.seen = l.gen
	if !e.resolved && !e.dead {
		l.resolve(e, id)
	}
	return e
}

// resolve finds e's host pid and opens its pidfd.
func (l *Loop) resolve(e *procEntry, id shm.SlotIdentity) {
	if id.PID <= 0 {
		e.dead = true // a LIVE slot without a pid: garbage, return its charge
		return
	}
	same := id.PIDNamespace == 0 || id.PIDNamespace == l.selfNS
	hp := id.PID
	if !same {
		switch r := l.Mapper.(type) {
		case nil:
			return // cannot map: never judged dead
		case Resolver:
			var res MapResult
			hp, res = r.Resolve(id)
			if res == MapGone {
				e.dead = true
				return
			}
			if res != MapFound {
				return
			}
		default:
			var ok bool
			if hp, ok = r.HostPID(id); !ok {
				return
			}
		}
	}
	e.hostPID = hp
	// pidfd first, then check the start time: if it matches, the pidfd
	// refers to this very process (a pid reused in between would show a
	// newer start time).
	fd := -1
	if !l.noPidfd {
		var err error
		fd, err = unix.PidfdOpen(hp, 0)
		switch {
		case err == nil:
		case errors.Is(err, unix.ESRCH):
			e.dead = true
			return
		case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM):
			l.noPidfd = true
			l.Log.Warn("enforcer: pidfds unavailable, judging liveness through /proc each tick", zap.Error(err))
			fd = -1
		default:
			// EMFILE and friends: watch this one through /proc.
			fd = -1
		}
	}
	e.resolved = true
	e.fd = fd
	if !l.hostAlive(e) {
		e.dead = true
	}
}

// ---------------------------------------------------------------------------
// Slices.

// scanSlice reclaims the dead processes of one slice and fills its snapshot.
func (l *Loop) scanSlice(rep *TickReport, i int, ts *TrackedSlice, devSlab *slab[SliceDeviceSnapshot],
	procSlab *slab[ProcessSnapshot], wordSlab *slab[uint64]) {
	snap := &rep.Slices[i]
	snap.ID = ts.ID
	if ts.Slice == nil || ts.Slice.Usage == nil || ts.Slice.Budget == nil {
		l.addErr(rep, ts.ID, "", errors.New("slice regions not open"))
		return
	}
	u, b := ts.Slice.Usage, ts.Slice.Budget
	st := l.states[u]
	if st == nil {
		// attach starts at 0: a slice nobody ever attached to (a new one)
		// costs no scan of its slot table; any other is scanned whole now.
		// The periodic full scans are spread over the ticks.
		st = &sliceState{phase: uint64(len(l.states)) % l.fullScanEvery()}
		st.nextFull = nextPhase(l.gen, st.phase, l.fullScanEvery())
		l.states[u] = st
	}
	st.seen = l.gen
	l.tickStates[i] = st
	snap.QoS = b.QoS()
	snap.Priority = b.Priority()
	ndev := min(u.DeviceCount(), b.DeviceCount())

	err := u.Guard(func() {
		l.refreshOwned(rep, ts, u, st)
		snap.Devices = devSlab.take(ndev, l.sizes.devs)
		for d := range snap.Devices {
			ud := &u.Raw().Dev[d]
			sd := &snap.Devices[d]
			if d < len(ts.UUIDs) {
				sd.UUID = ts.UUIDs[d]
			}
			sd.LimitBytes = b.MemoryLimit(d)
			sd.UsedBytes = atomic.LoadUint64(&ud.UsedBytes)
			sd.PeakBytes = atomic.LoadUint64(&ud.PeakBytes)
			sd.RefusedAllocs = atomic.LoadUint64(&ud.RefusedAllocs)
			sd.ReclaimedBytesTotal = st.reclaimed[d]
			sd.BackstopEventsTotal = st.backstop[d]
		}
		snap.Processes = procSlab.take(len(st.owned), l.sizes.procs)
		perProc := ndev
		if l.Driver != nil {
			perProc *= 2
		}
		for k, o := range st.owned {
			s := u.RawSlot(int(o.idx))
			p := &snap.Processes[k]
			p.PID = int(o.owner >> shm.SlotPIDShift)
			p.Slot = int(o.idx)
			if o.e != nil && o.e.resolved {
				p.HostPID = o.e.hostPID
				if atomic.LoadUint64(&s.HostPID) != uint64(p.HostPID) {
					atomic.StoreUint64(&s.HostPID, uint64(p.HostPID))
				}
			}
			w := wordSlab.take(perProc, l.sizes.words)
			p.UsedBytes = w[:ndev:ndev]
			for d := range p.UsedBytes {
				p.UsedBytes[d] = atomic.LoadUint64(&s.UsedBytes[d])
			}
			if l.Driver != nil {
				p.DriverBytes = w[ndev:]
			}
		}
	})
	if err != nil {
		st.attach = ^uint64(0) // rescan it whole next time
		st.owned = st.owned[:0]
		snap.Processes = nil
		l.addErr(rep, ts.ID, "", err)
	}
}

// refreshOwned brings st.owned up to date (see Loop: attach counter, full
// scans) and reclaims the slice's dead processes.
func (l *Loop) refreshOwned(rep *TickReport, ts *TrackedSlice, u *shm.UsageRegion, st *sliceState) {
	attach := atomic.LoadUint64(&u.Raw().AttachCount)
	full := attach != st.attach || l.gen >= st.nextFull
	if !full {
		n := 0
		for _, o := range st.owned {
			if int(o.idx) >= u.SlotCount() {
				full = true
				break
			}
			s := u.RawSlot(int(o.idx))
			owner := atomic.LoadUint64(&s.Owner)
			if !shm.OwnedState(owner) {
				continue // released (or being reclaimed by someone else)
			}
			if owner != o.owner {
				full = true // re-claimed, or CLAIMING became LIVE
				break
			}
			id := shm.DecodeSlotIdentity(int(o.idx), owner, s)
			var e *procEntry
			if !id.Claiming {
				e = l.entry(id)
				if e.dead {
					full = true
					break
				}
			}
			st.owned[n] = ownedSlot{idx: o.idx, owner: owner, e: e}
			n++
		}
		if !full {
			st.owned = st.owned[:n]
			return
		}
	}
	st.attach = attach
	st.nextFull = nextPhase(l.gen, st.phase, l.fullScanEvery())
	st.owned = st.owned[:0]
	l.cur = st
	rr, err := u.Reclaim(l.aliveFn)
	l.cur = nil
	if err != nil {
		st.attach = ^uint64(0)
		l.addErr(rep, ts.ID, "", fmt.Errorf("reclaim: %w", err))
	}
	// Owner words as Reclaim left them (alive() could not see them).
	for k := range st.owned {
		st.owned[k].owner = atomic.LoadUint64(&u.RawSlot(int(st.owned[k].idx)).Owner)
	}
	for _, rs := range rr.Slots {
		ev := ReclaimEvent{Slice: ts.ID, PID: rs.PID, FreedBytes: rs.Freed}
		if e := l.procs[procKey{ns: rs.PIDNamespace, pid: rs.PID, start: rs.StartTime}]; e != nil {
			ev.HostPID = e.hostPID
		}
		var total uint64
		for d, n := range rs.Freed {
			total += n
			st.reclaimed[d] += n
		}
		rep.ReclaimedBytes += total
		l.totals.ReclaimedBytes += total
		l.totals.ReclaimedProcesses++
		rep.Reclaimed = append(rep.Reclaimed, ev)
		l.Log.Info("enforcer: reclaimed a dead process's charge",
			zap.String("slice", ts.ID), zap.Int("pid", rs.PID), zap.Int("host_pid", ev.HostPID),
			zap.Uint64s("freed_bytes", rs.Freed), zap.Bool("clamped", rs.Clamped))
	}
}

// ---------------------------------------------------------------------------
// Driver figures and the backstop.

// driverPass asks the driver about every device once and adds each process's
// figure to the slice it belongs to.
func (l *Loop) driverPass(rep *TickReport, slices []TrackedSlice, procSlab *slab[ProcessSnapshot],
	wordSlab *slab[uint64]) {
	if l.Driver == nil {
		return
	}
	l.uuids = l.uuids[:0]
	clear(l.uuidIdx)
	for i := range slices {
		for _, u := range slices[i].UUIDs {
			if u == "" {
				continue
			}
			if _, ok := l.uuidIdx[u]; !ok {
				l.uuidIdx[u] = len(l.uuids)
				l.uuids = append(l.uuids, u)
			}
		}
	}
	if len(l.uuids) == 0 {
		return
	}
	l.driverProc = l.driverProc[:0]
	l.driverOK = l.driverOK[:0]
	rep.Devices = make([]DriverDevice, len(l.uuids))
	for k, u := range l.uuids {
		dd := &rep.Devices[k]
		dd.UUID = u
		procs, err := l.Driver.Processes(u)
		if err != nil {
			dd.Err = err.Error()
			l.addErr(rep, "", u, fmt.Errorf("driver processes: %w", err))
			procs = nil
		}
		l.driverProc = append(l.driverProc, procs)
		l.driverOK = append(l.driverOK, err == nil)
		dd.Processes = len(procs)
		for _, p := range procs {
			dd.ProcessBytes += p.UsedBytes
		}
	}
	for i := range rep.Slices {
		for d := range rep.Slices[i].Devices {
			sd := &rep.Slices[i].Devices[d]
			if k, ok := l.uuidIdx[sd.UUID]; ok && sd.UUID != "" {
				sd.DriverKnown = l.driverOK[k]
			}
		}
	}

	clear(l.byHost)
	clear(l.unslotted)
	for i := range rep.Slices {
		for j := range rep.Slices[i].Processes {
			if hp := rep.Slices[i].Processes[j].HostPID; hp > 0 {
				l.byHost[hp] = procRef{slice: int32(i), proc: int32(j)}
			}
		}
	}
	byIDBuilt := false
	for k, u := range l.uuids {
		for _, p := range l.driverProc[k] {
			ref, ok := l.byHost[p.HostPID]
			if !ok {
				ref, ok = l.unslotted[p.HostPID]
			}
			if !ok && l.Attributor != nil && p.HostPID > 0 {
				id, found := l.Attributor.SliceOf(p.HostPID)
				if found {
					if !byIDBuilt {
						clear(l.byID)
						for i := range slices {
							l.byID[slices[i].ID] = i
						}
						byIDBuilt = true
					}
					if si, known := l.byID[id]; known {
						ref, ok = l.addUnslotted(rep, si, p.HostPID, procSlab, wordSlab), true
					}
				}
			}
			if !ok {
				continue // not in any slice we know
			}
			snap := &rep.Slices[ref.slice]
			d := deviceOf(slices[ref.slice].UUIDs, u)
			if d < 0 || d >= len(snap.Devices) {
				continue // a device outside the slice
			}
			proc := &snap.Processes[ref.proc]
			proc.DriverBytes[d] += p.UsedBytes
			snap.Devices[d].DriverBytes += p.UsedBytes
		}
	}
}

// addUnslotted adds a slotless process to slice si's snapshot.
func (l *Loop) addUnslotted(rep *TickReport, si, hostPID int, procSlab *slab[ProcessSnapshot],
	wordSlab *slab[uint64]) procRef {
	snap := &rep.Slices[si]
	ndev := len(snap.Devices)
	w := wordSlab.take(2*ndev, l.sizes.words)
	// The slice's process list is capped: this append copies it rather than
	// overwrite a neighbour's.
	snap.Processes = append(snap.Processes, ProcessSnapshot{HostPID: hostPID, Slot: -1,
		UsedBytes: w[:ndev:ndev], DriverBytes: w[ndev:]})
	ref := procRef{slice: int32(si), proc: int32(len(snap.Processes) - 1)}
	l.unslotted[hostPID] = ref
	return ref
}

func deviceOf(uuids []string, uuid string) int {
	for d, u := range uuids {
		if u == uuid {
			return d
		}
	}
	return -1
}

// backstop finds, on every slice device whose driver total is over the limit
// (plus Tolerance), the processes responsible: those whose driver figure is
// above their charge (plus Tolerance) and those without a slot. A violation
// is logged and counted when first seen; in enforce mode its process is
// killed on every tick it is still there.
func (l *Loop) backstop(rep *TickReport, slices []TrackedSlice, mode Mode) {
	clear(l.killed)
	for i := range rep.Slices {
		snap := &rep.Slices[i]
		for d := range snap.Devices {
			sd := &snap.Devices[d]
			if !sd.DriverKnown || sd.DriverBytes <= sd.LimitBytes+l.Tolerance {
				continue
			}
			for j := range snap.Processes {
				p := &snap.Processes[j]
				if p.DriverBytes == nil || p.DriverBytes[d] == 0 || p.HostPID <= 0 {
					continue
				}
				if p.Slot >= 0 && p.DriverBytes[d] <= p.UsedBytes[d]+l.Tolerance {
					continue
				}
				l.violation(rep, i, d, p, mode)
			}
		}
	}
	for k, g := range l.violations {
		if g != l.gen {
			delete(l.violations, k)
		}
	}
}

func (l *Loop) violation(rep *TickReport, i, d int, p *ProcessSnapshot, mode Mode) {
	snap := &rep.Slices[i]
	sd := &snap.Devices[d]
	key := violKey{slice: snap.ID, hostPID: p.HostPID, dev: d}
	// Violations not seen in a tick are forgotten at its end, so a known one
	// was there in the previous tick too.
	_, known := l.violations[key]
	fresh := !known
	l.violations[key] = l.gen
	ev := BackstopEvent{
		Slice: snap.ID, Device: sd.UUID, DeviceIndex: d, PID: p.PID, HostPID: p.HostPID,
		DriverBytes: p.DriverBytes[d], ChargedBytes: p.UsedBytes[d], SliceBytes: sd.DriverBytes,
		LimitBytes: sd.LimitBytes, Action: ActionReported,
	}
	if mode == ModeEnforce {
		if _, done := l.killed[p.HostPID]; !done {
			l.killed[p.HostPID] = struct{}{}
			kill := l.Kill
			if kill == nil {
				kill = sigkill
			}
			if err := kill(p.HostPID); err != nil {
				ev.Action, ev.Err = ActionKillFailed, err.Error()
			} else {
				ev.Action = ActionKilled
				l.totals.Kills++
			}
		} else {
			ev.Action = ActionKilled // killed for another device this tick
		}
	}
	fields := []zap.Field{
		zap.String("slice", ev.Slice), zap.String("device", ev.Device), zap.Int("pid", ev.PID),
		zap.Int("host_pid", ev.HostPID), zap.Uint64("driver_bytes", ev.DriverBytes),
		zap.Uint64("charged_bytes", ev.ChargedBytes), zap.Uint64("slice_driver_bytes", ev.SliceBytes),
		zap.Uint64("limit_bytes", ev.LimitBytes), zap.Uint64("tolerance_bytes", l.Tolerance),
		zap.String("action", ev.Action),
	}
	if ev.Err != "" {
		fields = append(fields, zap.String("error", ev.Err))
	}
	if !fresh {
		// Still there (a SIGKILLed process can take a while to release the
		// GPU): act again, but count and warn only once.
		if mode == ModeEnforce {
			l.Log.Debug("enforcer backstop: process still over its slice", fields...)
		}
		return
	}
	sd.BackstopEventsTotal++
	if st := l.tickStates[i]; st != nil {
		st.backstop[d]++
	}
	l.totals.BackstopEvents++
	rep.Backstop = append(rep.Backstop, ev)
	if ev.Action == ActionKillFailed {
		l.Log.Error("enforcer backstop: process over its slice, kill failed", fields...)
	} else {
		l.Log.Warn("enforcer backstop: process over its slice", fields...)
	}
}

func sigkill(hostPID int) error {
	if err := syscall.Kill(hostPID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %d: %w", hostPID, err)
	}
	return nil
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
