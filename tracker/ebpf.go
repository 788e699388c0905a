package tracker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/internal/procfs"
)

var (
	errNoBTF  = errors.New("no kernel BTF")
	errAttach = errors.New("attaching a BPF program")
)

const (
	// btfPath is the running kernel's type information; fexit and tp_btf
	// programs and the CO-RE relocations need it.
	btfPath = "/sys/kernel/btf/vmlinux"
	tracefs = "/sys/kernel/tracing"
	// dropPoll bounds how long a lost event goes unnoticed (the reader reads
	// the counter this often).
	dropPoll = 100 * time.Millisecond
	// nsPerTick converts task->start_boottime (ns) to /proc/<pid>/stat's
	// clock ticks: the kernel divides by NSEC_PER_SEC/USER_HZ, and USER_HZ is
	// 100 on every architecture vgpu runs on.
	nsPerTick = 10_000_000
	// eventSize is sizeof(struct event) in bpf/tracker.bpf.c.
	eventSize = 64
)

// ebpfTracker applies the events of the BPF programs to the state.
type ebpfTracker struct {
	*state
	sc    *scanner
	log   *zap.Logger
	objs  trackerObjects
	links []link.Link
	rd    *ringbuf.Reader
	rec   ringbuf.Record // the reader goroutine's buffer
	poll  time.Duration
	// dropCheck is how often the reader checks the drop counter (Config).
	dropCheck time.Duration
	// mono0 (CLOCK_MONOTONIC ns, bpf_ktime_get_ns's clock) and wall0 were
	// read together: an event's time is wall0 + (ts - mono0).
	mono0    int64
	wall0    time.Time
	bpfLost  uint64 // the dropped counter's last sum (reader goroutine only)
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closeErr error
	once     sync.Once
}

func newEBPF(ctx context.Context, cfg Config) (*ebpfTracker, error) {
	if _, err := os.Stat(btfPath); err != nil {
		return nil, fmt.Errorf("%w: %w", errNoBTF, err)
	}
	t := &ebpfTracker{state: newState(), sc: newScanner(cfg), log: cfg.Log, poll: cfg.PollInterval,
		dropCheck: cfg.dropCheck}
	// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (the ring buffer
	// alone is 1 MiB); later ones charge the memory cgroup, and this is a no-op.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("tracker: raising RLIMIT_MEMLOCK: %w", err)
	}
	if err := t.load(); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			cfg.Log.Error("tracker: the verifier rejected a program", zap.String("log", fmt.Sprintf("%+v", ve)))
		}
		return nil, fmt.Errorf("tracker: loading the BPF programs: %w", err)
	}
	if err := t.start(ctx, cfg); err != nil {
		if rerr := t.release(); rerr != nil {
			cfg.Log.Warn("tracker: releasing after a failed start", zap.Error(rerr))
		}
		return nil, err
	}
	return t, nil
}

// load loads the programs and maps, with the reader's poll period as the
// programs' minimum gap between two wake-ups of the reader.
func (t *ebpfTracker) load() error {
	spec, err := loadTracker()
	if err != nil {
		return err
	}
	if err := spec.Variables[trackerVarWakeGapNs].Set(uint64(t.poll.Nanoseconds())); err != nil {
		return fmt.Errorf("setting %s: %w", trackerVarWakeGapNs, err)
	}
	return spec.LoadAndAssign(&t.objs, nil)
}

// start attaches the programs, seeds the state from procfs and starts the
// reader. Attaching comes first so that nothing that happens during the
// seed scan is missed: its events wait in the ring buffer and are applied
// after the seed, in order.
func (t *ebpfTracker) start(ctx context.Context, cfg Config) error {
	for _, maj := range cfg.Majors {
		if err := t.objs.Majors.Put(maj, uint8(1)); err != nil {
			return fmt.Errorf("tracker: setting major %d: %w", maj, err)
		}
	}
	if err := t.attach(); err != nil {
		return err
	}
	rd, err := ringbuf.NewReader(t.objs.Events)
	if err != nil {
		return fmt.Errorf("tracker: ring buffer reader: %w", err)
	}
	t.rd = rd
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("tracker: reading the monotonic clock: %w", err)
	}
	t.mono0, t.wall0 = ts.Nano(), time.Now()
	if err := t.rescan(); err != nil {
		return err
	}
	ctx, t.cancel = context.WithCancel(ctx)
	t.wg.Add(2)
	go func() {
		defer t.wg.Done()
		<-ctx.Done()
		// Interrupts a blocked ReadInto (os.ErrClosed is not used: the ring
		// stays mapped until the reader has returned, as it reads it directly).
		_ = t.rd.Flush() // fails only on a closed reader
	}()
	go t.read(ctx)
	return nil
}

// attach attaches the fork and exit programs (raw BTF tracepoints) and the
// open programs (syscall tracepoints; their ids are read from tracefs, which
// is mounted if absent). open(2) is absent on some architectures: skipped.
func (t *ebpfTracker) attach() error {
	for _, p := range []*ebpf.Program{t.objs.OnFork, t.objs.OnExit} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return fmt.Errorf("%w %s: %w", errAttach, p, err)
		}
		t.links = append(t.links, l)
	}
	if err := ensureTracefs(); err != nil {
		return err
	}
	opens := []struct {
		name string
		prog *ebpf.Program
	}{{"sys_exit_openat", t.objs.OnOpenat}, {"sys_exit_openat2", t.objs.OnOpenat2}, {"sys_exit_open", t.objs.OnOpen}}
	for _, o := range opens {
		l, err := link.Tracepoint("syscalls", o.name, o.prog, nil)
		if errors.Is(err, os.ErrNotExist) && o.name == "sys_exit_open" {
			continue
		}
		if err != nil {
			return fmt.Errorf("%w syscalls/%s: %w", errAttach, o.name, err)
		}
		t.links = append(t.links, l)
	}
	return nil
}

// ensureTracefs mounts tracefs at its usual place when no tracefs is there
// (a minimal host or VM mounts neither it nor debugfs): the tracepoint ids
// are only published there.
func ensureTracefs() error {
	if _, err := os.Stat(tracefs + "/events"); err == nil {
		return nil
	}
	if _, err := os.Stat("/sys/kernel/debug/tracing/events"); err == nil {
		return nil
	}
	if err := unix.Mount("tracefs", tracefs, "tracefs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("%w: mounting tracefs at %s: %w", errAttach, tracefs, err)
	}
	return nil
}

// rescan replaces the state with a procfs scan (publishing the differences)
// and puts every process found into the BPF map of tracked processes, so
// that their forks and exits are reported. A process that exited before it
// was in the map left no exit event: it is dropped after the fact.
func (t *ebpfTracker) rescan() error {
	found, err := t.sc.scan()
	if err != nil {
		return fmt.Errorf("tracker: procfs scan: %w", err)
	}
	for pid := range found {
		if err := t.objs.Procs.Put(uint32(pid), uint8(1)); err != nil {
			t.log.Warn("tracker: BPF process map full", zap.Int("pid", pid), zap.Error(err))
		}
	}
	for pid, p := range found {
		if !procfs.Alive(procfs.Identity{PID: pid, StartTime: p.StartTime}) {
			delete(found, pid)
			_ = t.objs.Procs.Delete(uint32(pid)) // may already be gone: its exit deleted it
		}
	}
	t.reconcile(found, time.Now())
	return nil
}

// read applies ring-buffer events until ctx ends, and checks the drop
// counter every t.dropCheck. The programs submit an event without waking the
// reader when one woke it less than t.poll before (wake_flag in
// bpf/tracker.bpf.c, last_wake), so such an event sits in the ring
// unannounced: the reader may block only after a drain made at least t.poll
// past last_wake, with last_wake unchanged across that drain. Then any later
// event either finds last_wake older than t.poll and wakes the reader, or
// finds a newer last_wake, whose event woke it. (Blocking right after the
// drain that followed a wake-up, as an earlier version did, left an event
// submitted meanwhile unread until the next drop check: ~100 ms at p99.)
func (t *ebpfTracker) read(ctx context.Context) {
	defer t.wg.Done()
	nextCheck := time.Now().Add(t.dropCheck)
	for ctx.Err() == nil {
		if t.quiet(ctx) {
			t.wait(nextCheck)
		}
		t.drain()
		// epoll's deadline is in whole ms, so a wait ends up to 1 ms early.
		if now := time.Now(); now.After(nextCheck.Add(-time.Millisecond)) {
			t.checkDrops()
			nextCheck = now.Add(t.dropCheck)
		}
	}
}

// quiet reports whether the reader may block: it waits until t.poll has
// passed since the programs last woke it, drains the ring, and answers true
// when no event woke the reader meanwhile (false: events are flowing, drain
// again after the next gap).
func (t *ebpfTracker) quiet(ctx context.Context) bool {
	lastWake, ok := t.lastWake()
	if !ok {
		return true // cannot tell: block, the drop check's deadline bounds it (see lastWake)
	}
	if d := time.Duration(lastWake + t.poll.Nanoseconds() - monoNow()); d > 0 {
		sleepCtx(ctx, d)
		return false
	}
	t.drain()
	again, ok := t.lastWake()
	return !ok || again == lastWake
}

// lastWake is the programs' last_wake (bpf_ktime_get_ns, CLOCK_MONOTONIC).
// Reading it fails only if the map cannot be read at all; the reader then
// blocks between drains and relies on the drop check's deadline.
func (t *ebpfTracker) lastWake() (int64, bool) {
	var v uint64
	if err := t.objs.LastWake.Get(&v); err != nil {
		return 0, false
	}
	return int64(v), true
}

// monoNow is CLOCK_MONOTONIC in ns, the programs' clock.
func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// wait blocks until an event arrives (true, it is applied) or until.
func (t *ebpfTracker) wait(until time.Time) bool {
	t.rd.SetDeadline(until)
	err := t.rd.ReadInto(&t.rec)
	switch {
	case err == nil:
		t.handle(t.rec.RawSample)
		return true
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed):
	default:
		t.log.Warn("tracker: reading the ring buffer", zap.Error(err))
	}
	return false
}

// drain applies every event in the ring without blocking (with a deadline
// already past, ReadInto returns what is there, written with or without a
// wake-up, then os.ErrDeadlineExceeded); it says whether there was any.
func (t *ebpfTracker) drain() bool {
	t.rd.SetDeadline(time.Now())
	found := false
	for {
		err := t.rd.ReadInto(&t.rec)
		switch {
		case err == nil:
			t.handle(t.rec.RawSample)
			found = true
			continue
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed):
		default:
			t.log.Warn("tracker: reading the ring buffer", zap.Error(err))
		}
		return found
	}
}

// sleepCtx sleeps d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}

// checkDrops repairs the state with a procfs rescan when the programs
// counted events that never reached the ring buffer.
func (t *ebpfTracker) checkDrops() {
	var perCPU []uint64
	if err := t.objs.Dropped.Lookup(uint32(0), &perCPU); err != nil {
		t.log.Warn("tracker: reading the drop counter", zap.Error(err))
		return
	}
	var sum uint64
	for _, n := range perCPU {
		sum += n
	}
	if sum == t.bpfLost {
		return
	}
	t.lost.Add(sum - t.bpfLost)
	t.log.Warn("tracker: events lost in the kernel, rescanning procfs", zap.Uint64("lost", sum-t.bpfLost))
	t.bpfLost = sum
	if err := t.rescan(); err != nil {
		t.log.Warn("tracker: repair scan failed", zap.Error(err))
	}
}

// handle decodes one struct event and applies it.
func (t *ebpfTracker) handle(raw []byte) {
	if len(raw) < eventSize {
		t.log.Warn("tracker: short event", zap.Int("len", len(raw)))
		return
	}
	ne := binary.NativeEndian
	e := trackerEvent{
		TsNs: ne.Uint64(raw[0:]), CgroupId: ne.Uint64(raw[8:]), StartNs: ne.Uint64(raw[16:]),
		Pidns: ne.Uint64(raw[24:]), Kind: ne.Uint32(raw[32:]), Pid: ne.Uint32(raw[36:]),
		Tid: ne.Uint32(raw[40:]), Ppid: ne.Uint32(raw[44:]), Major: ne.Uint32(raw[48:]),
		Minor: ne.Uint32(raw[52:]), Nspid: ne.Uint32(raw[56:]),
	}
	ev := Event{
		Kind: EventKind(e.Kind), PID: int(e.Pid), TID: int(e.Tid), PPID: int(e.Ppid),
		NSPID: int(e.Nspid), PIDNamespace: e.Pidns,
		CgroupID: e.CgroupId, StartTime: e.StartNs / nsPerTick,
		At: t.wall0.Add(time.Duration(int64(e.TsNs) - t.mono0)),
	}
	if ev.Kind == EventOpen {
		ev.Device = Device{Major: e.Major, Minor: e.Minor}
	}
	var info procInfo
	if ev.Kind != EventExit {
		// The cgroup path and container id are read once per process (they
		// are not in the event): only for a process not yet known.
		if !t.knows(ev.PID, ev.StartTime) {
			info = t.sc.cgroupOf(ev.PID).procInfo()
		}
	}
	t.apply(ev, info)
}

func (t *ebpfTracker) Kind() string                             { return kindEBPF }
func (t *ebpfTracker) Processes() []Process                     { return t.processes() }
func (t *ebpfTracker) Lookup(pid int) (Process, bool)           { return t.lookup(pid) }
func (t *ebpfTracker) Subscribe(buf int) (<-chan Event, func()) { return t.subscribe(buf) }
func (t *ebpfTracker) Lost() uint64                             { return t.lost.Load() }

func (t *ebpfTracker) FindInNamespace(pidNS uint64, nspid int, start uint64) (Process, bool) {
	return t.findInNamespace(pidNS, nspid, start)
}

func (t *ebpfTracker) SawExit(pidNS uint64, nspid int, start uint64) bool {
	return t.sawExit(pidNS, nspid, start)
}

// Close detaches the programs, stops the reader and closes every
// subscription.
func (t *ebpfTracker) Close() error {
	t.once.Do(func() {
		t.cancel()
		t.wg.Wait()
		t.closeErr = t.release()
		t.closeSubscribers()
	})
	return t.closeErr
}

// release detaches and frees what start and load created.
func (t *ebpfTracker) release() error {
	var errs []error
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	if t.rd != nil {
		if err := t.rd.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, t.objs.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tracker: closing: %w", err)
	}
	return nil
}
