// Package tracker knows which host processes hold which GPU character
// devices open, in which cgroup and container, and tells subscribers (the
// enforcer, vgpud's attribution) when such a process opens a device, forks or
// exits. The kernel is the source: eBPF programs on the char-device open path
// and on the scheduler's fork/exit tracepoints (bpf/tracker.bpf.c), with a
// procfs scanner behind the same interface where BPF cannot load.
package tracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// EventKind says what happened to a process.
type EventKind uint8

// The kinds of Event. The values match enum event_kind in bpf/tracker.bpf.c.
const (
	// EventOpen: the process opened a tracked device (Event.Device).
	EventOpen EventKind = 1
	// EventFork: a tracked process (PPID) created a process (PID) that
	// inherits its open devices. Only the eBPF tracker sees forks.
	EventFork EventKind = 2
	// EventExit: the last thread of a tracked process exited.
	EventExit EventKind = 3
)

func (k EventKind) String() string {
	switch k {
	case EventOpen:
		return "open"
	case EventFork:
		return "fork"
	case EventExit:
		return "exit"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// DefaultPollInterval is Config.PollInterval's default. Measured on a
// 2-core VM: open -> subscriber p99 1.5-2.4 ms (goal 10 ms), a tracked open
// +0.8 µs of CPU (about one wake-up per 2 ms of a burst), the idle tracker
// 0.5% of a core; 1 ms buys little latency for twice the polls while events
// flow, 5 ms makes a burst's p99 ~5 ms.
const DefaultPollInterval = 2 * time.Millisecond

// NvidiaMajor is the character-device major of /dev/nvidia0..N and
// /dev/nvidiactl.
const NvidiaMajor = 195

// Device is a character device number.
type Device struct{ Major, Minor uint32 }

// Event is one open, fork or exit of a process that holds a tracked device.
type Event struct {
	Kind EventKind
	// PID is the process id (tgid) in the host pid namespace.
	PID int
	// TID is the thread that opened (open) or the process itself (fork, exit).
	TID int
	// PPID is the parent's process id (fork: the process that forked).
	PPID int
	// NSPID is the process id (tgid) as the process sees it: in its own,
	// innermost pid namespace (the host pid when it is in the host's).
	NSPID int
	// PIDNamespace is the inode number of that pid namespace, what
	// readlink /proc/<pid>/ns/pid shows as pid:[<inode>]; 0 when unknown.
	PIDNamespace uint64
	// CgroupID is the cgroup v2 id of the process: the inode number of its
	// directory under the cgroup2 mount.
	CgroupID uint64
	// StartTime is the process's start in clock ticks since boot, as field 22
	// of /proc/<pid>/stat (internal/procfs.Identity.StartTime).
	StartTime uint64
	// Device is the opened device (EventOpen only).
	Device Device
	// At is when the kernel saw it (eBPF) or the scan found it (procfs).
	At time.Time
}

// Process is a live process known to hold a tracked device.
type Process struct {
	PID int
	// NSPID and PIDNamespace are its pid in its own innermost pid namespace
	// and that namespace's inode (as Event's): with StartTime, the identity
	// libvgpu reports from inside a container. 0 when unknown.
	NSPID        int
	PIDNamespace uint64
	CgroupID     uint64
	// CgroupPath is its cgroup v2 path (the "0::" line of /proc/<pid>/cgroup,
	// e.g. /system.slice/docker-<id>.scope), read when it was first seen; a
	// forked child whose own could not be read has its parent's. "" when
	// unknown.
	CgroupPath string
	// ContainerID is the 64-hex container id found in the process's cgroup
	// path (containerd, cri-containerd-<id>.scope, docker-<id>.scope); "" when
	// none.
	ContainerID string
	StartTime   uint64
	// Devices are the tracked devices it opened or inherited, sorted.
	Devices []Device
}

// Config configures New.
type Config struct {
	// Majors are the character-device majors to track; default {195}
	// (NVIDIA). Tests use a stand-in major.
	Majors []uint32
	// ForceProcfs skips eBPF and runs the procfs scanner.
	ForceProcfs bool
	// ProcfsInterval is the procfs scanner's period (default 250ms).
	ProcfsInterval time.Duration
	// PollInterval (default DefaultPollInterval) is the eBPF tracker's
	// least gap between two wake-ups of its reader, and how often the reader
	// polls the ring while events flow: a wake-up costs the process whose
	// event causes it several µs, so within a burst events are submitted
	// without one and reach subscribers up to one interval later.
	PollInterval time.Duration
	// Log receives the fallback notice and errors; default zap.NewNop().
	Log *zap.Logger
	// ProcRoot is where procfs is mounted (default /proc); tests only.
	ProcRoot string
	// dropCheck is how often the eBPF reader checks the drop counter
	// (default dropPoll); tests lengthen it so that it cannot stand in for a
	// missed event.
	dropCheck time.Duration
}

// Tracker is the process-to-device map and its event stream.
type Tracker interface {
	// Kind is "ebpf" or "procfs".
	Kind() string
	// Processes returns every live process known to hold a tracked device.
	Processes() []Process
	// Lookup returns the process with host pid pid, if it holds a tracked device.
	Lookup(pid int) (Process, bool)
	// Subscribe returns a channel of the events from now on, buffered buf
	// deep, and the function that ends the subscription (closes the channel).
	// A subscriber that falls behind loses events (counted in Lost); the
	// tracker never waits for it.
	Subscribe(buf int) (events <-chan Event, cancel func())
	// FindInNamespace returns the live tracked process whose pid in its own
	// innermost pid namespace is nspid, in pid namespace pidNS (its inode),
	// started at start (clock ticks, /proc/<pid>/stat field 22). All three
	// must match; a 0 pidNS or start never does.
	FindInNamespace(pidNS uint64, nspid int, start uint64) (Process, bool)
	// SawExit says whether the tracker saw the tracked process with that
	// identity exit. The last 4096 exits are remembered.
	SawExit(pidNS uint64, nspid int, start uint64) bool
	// Lost counts events lost: BPF ring buffer full, slow subscribers.
	Lost() uint64
	// Close detaches the programs and stops the tracker.
	Close() error
}

const (
	kindEBPF   = "ebpf"
	kindProcfs = "procfs"
)

func (c Config) withDefaults() Config {
	if len(c.Majors) == 0 {
		c.Majors = []uint32{NvidiaMajor}
	}
	if c.ProcfsInterval <= 0 {
		c.ProcfsInterval = 250 * time.Millisecond
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	if c.ProcRoot == "" {
		c.ProcRoot = "/proc"
	}
	if c.dropCheck <= 0 {
		c.dropCheck = dropPoll
	}
	return c
}

// New starts the eBPF tracker, or, where BPF cannot load or attach (or
// cfg.ForceProcfs), logs one line saying why and starts the procfs scanner.
// Both seed themselves from procfs before returning, so processes older than
// the tracker are known at once. Cancelling ctx stops the tracker's
// goroutines (no more events); Close detaches the programs and frees the maps.
func New(ctx context.Context, cfg Config) (Tracker, error) {
	cfg = cfg.withDefaults()
	if !cfg.ForceProcfs {
		t, err := newEBPF(ctx, cfg)
		if err == nil {
			return t, nil
		}
		cfg.Log.Warn("eBPF tracker unavailable, falling back to the procfs scanner",
			zap.String("why", whyNoBPF(err)), zap.Error(err),
			zap.Duration("scan_interval", cfg.ProcfsInterval))
	}
	return newProcfs(ctx, cfg)
}

// whyNoBPF turns a load or attach error into the operator's reason.
func whyNoBPF(err error) string {
	switch {
	case errors.Is(err, errNoBTF):
		return "the kernel has no BTF (/sys/kernel/btf/vmlinux missing: CONFIG_DEBUG_INFO_BTF)"
	case errors.Is(err, unix.EPERM), errors.Is(err, os.ErrPermission):
		if os.Geteuid() != 0 {
			return "not root: loading BPF needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"
		}
		return "permission denied loading BPF (CAP_BPF/CAP_PERFMON dropped, or locked down)"
	case errors.Is(err, ebpf.ErrNotSupported):
		return "the kernel is too old for the programs (tp_btf, ring buffer, BTF: 5.8+)"
	case errors.Is(err, errAttach):
		return "a program did not attach (no syscall tracepoints: CONFIG_FTRACE_SYSCALLS, or tracefs not mountable)"
	}
	return "loading the BPF programs failed"
}
