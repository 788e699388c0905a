package tracker

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The eBPF tracker reports a stand-in device's open by a process born in a
// fresh cgroup, with its pid, cgroup id and /proc start time, within 100 ms;
// then the fork of a child that inherits the fd, the child's exit and the
// process's exit.
func TestEBPFOpenForkExit(t *testing.T) {
	requireBPF(t)
	dir := t.TempDir()
	node, dev := standIn(t, dir, "vgpusim0")
	cg, cgID := freshCgroup(t)
	tr := newTracker(t, Config{Majors: []uint32{dev.Major}})
	require.Equal(t, "ebpf", tr.Kind())
	events, cancel := tr.Subscribe(1024)
	defer cancel()

	h := startHolder(t, node, cg)
	ev, seen := waitEvent(t, events, 2*time.Second, is(EventOpen, h.pid))
	latency := seen.Sub(h.openedAt)
	t.Logf("open -> subscriber: %s (kernel -> subscriber %s)", latency, seen.Sub(ev.At))
	assert.Less(t, latency, 100*time.Millisecond, "open seen too late")
	assert.Equal(t, dev, ev.Device)
	assert.DirExists(t, filepath.Join("/proc", strconv.Itoa(h.pid), "task", strconv.Itoa(ev.TID)),
		"TID is a thread of the process (Go may open from any of its threads)")
	assert.Equal(t, cgID, ev.CgroupID, "cgroup id")
	assert.Equal(t, h.startTime, ev.StartTime, "start time must equal /proc/<pid>/stat field 22")
	assert.Equal(t, os.Getpid(), ev.PPID)
	assert.WithinDuration(t, h.openedAt, ev.At, 100*time.Millisecond)
	p, ok := tr.Lookup(h.pid)
	require.True(t, ok)
	assert.Equal(t, h.want(t, cg, cgID, dev), p)
	assert.Equal(t, h.pid, ev.NSPID)
	assert.Equal(t, p.PIDNamespace, ev.PIDNamespace)

	h.send(t, "fork")
	child, err := strconv.Atoi(h.line(t, "child")[1])
	require.NoError(t, err)
	fork, _ := waitEvent(t, events, 2*time.Second, is(EventFork, child))
	assert.Equal(t, h.pid, fork.PPID)
	assert.Equal(t, cgID, fork.CgroupID, "the child is born in its parent's cgroup")
	cp, ok := tr.Lookup(child)
	require.True(t, ok, "a forked child holds its parent's devices")
	assert.Equal(t, []Device{dev}, cp.Devices)
	assert.Equal(t, child, cp.NSPID, "the child's own pid, not its parent's")
	assert.Equal(t, p.PIDNamespace, cp.PIDNamespace)
	assert.Equal(t, p.CgroupPath, cp.CgroupPath)
	h.send(t, "reap")
	h.line(t, "reaped")
	waitEvent(t, events, 2*time.Second, is(EventExit, child))
	_, ok = tr.Lookup(child)
	assert.False(t, ok)

	h.stop()
	exit, _ := waitEvent(t, events, 2*time.Second, is(EventExit, h.pid))
	assert.Equal(t, h.startTime, exit.StartTime)
	_, ok = tr.Lookup(h.pid)
	assert.False(t, ok, "an exited process is forgotten")
	assert.Zero(t, tr.Lost())
}

// A process that opened the device before the tracker started is known at
// once (the procfs seed), and its exit is still reported (the seed puts it
// into the BPF map of tracked processes).
func TestEBPFSeed(t *testing.T) {
	requireBPF(t)
	node, dev := standIn(t, t.TempDir(), "vgpusim0")
	cg, cgID := freshCgroup(t)
	h := startHolder(t, node, cg)

	tr := newTracker(t, Config{Majors: []uint32{dev.Major}})
	require.Equal(t, "ebpf", tr.Kind())
	p, ok := tr.Lookup(h.pid)
	require.True(t, ok, "a process older than the tracker is found at start")
	assert.Equal(t, h.want(t, cg, cgID, dev), p)
	assert.Contains(t, tr.Processes(), p)

	events, cancel := tr.Subscribe(16)
	defer cancel()
	h.stop()
	waitEvent(t, events, 2*time.Second, is(EventExit, h.pid))
	_, ok = tr.Lookup(h.pid)
	assert.False(t, ok)
}

// ForceProcfs runs the scanner: same interface, opens and exits from the
// difference between scans.
func TestProcfsFallback(t *testing.T) {
	node, dev := standIn(t, t.TempDir(), "vgpusim0")
	cg, cgID := freshCgroup(t)
	tr := newTracker(t, Config{Majors: []uint32{dev.Major}, ForceProcfs: true, ProcfsInterval: 20 * time.Millisecond})
	require.Equal(t, "procfs", tr.Kind())
	events, cancel := tr.Subscribe(1024)
	defer cancel()

	h := startHolder(t, node, cg)
	ev, seen := waitEvent(t, events, 2*time.Second, is(EventOpen, h.pid))
	t.Logf("procfs: open -> subscriber %s", seen.Sub(h.openedAt))
	assert.Equal(t, dev, ev.Device)
	assert.Equal(t, cgID, ev.CgroupID)
	assert.Equal(t, h.startTime, ev.StartTime)
	p, ok := tr.Lookup(h.pid)
	require.True(t, ok)
	assert.Equal(t, h.want(t, cg, cgID, dev), p)

	h.stop()
	waitEvent(t, events, 2*time.Second, is(EventExit, h.pid))
	_, ok = tr.Lookup(h.pid)
	assert.False(t, ok)
}

// Where BPF cannot load (here: not root), New logs why and runs the procfs
// scanner.
func TestFallbackWhenNotRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a process as another user")
	}
	// The test binary's own directory is root's alone: a copy nobody can run.
	dir, err := os.MkdirTemp("", "vgpu-tracker-")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	require.NoError(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "tracker.test")
	data, err := os.ReadFile(os.Args[0])
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, data, 0o755))
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), helperEnv+"=newtracker")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "kind procfs")
	assert.Contains(t, string(out), "falling back to the procfs scanner")
	assert.Contains(t, string(out), "not root")
}

// A subscriber that does not read loses events (counted); the tracker goes on.
func TestSlowSubscriber(t *testing.T) {
	node, dev := standIn(t, t.TempDir(), "vgpusim0")
	tr := newTracker(t, Config{Majors: []uint32{dev.Major}, ForceProcfs: true, ProcfsInterval: 20 * time.Millisecond})
	_, cancelSlow := tr.Subscribe(0)
	defer cancelSlow()
	events, cancel := tr.Subscribe(64)
	defer cancel()
	h := startHolder(t, node, "")
	waitEvent(t, events, 2*time.Second, is(EventOpen, h.pid))
	// The slow one's drop may be counted just after the fast one got it.
	require.Eventually(t, func() bool { return tr.Lost() > 0 }, time.Second, 5*time.Millisecond)
}

func TestContainerIDOf(t *testing.T) {
	id := strings.Repeat("0123456789abcdef", 4)
	for path, want := range map[string]string{
		"/k8s.io/" + id: id,
		"/kubepods.slice/kubepods-pod1.slice/cri-containerd-" + id + ".scope": id,
		"/system.slice/docker-" + id + ".scope":                               id,
		"/default/" + id + "/sub":                                             id,
		"/user.slice/user-0.slice/session-1.scope":                            "",
		"/":                              "",
		"/k8s.io/" + strings.ToUpper(id): "",
	} {
		assert.Equal(t, want, containerIDOf(path), path)
	}
}

// The stand-in node is found by its device number, whatever its name.
func TestScanMatchesDeviceNumberNotName(t *testing.T) {
	dir := t.TempDir()
	node, dev := standIn(t, dir, "not-nvidia")
	f, err := os.Open(node)
	require.NoError(t, err)
	defer f.Close()
	sc := newScanner(Config{Majors: []uint32{dev.Major}, ProcRoot: "/proc"})
	found, err := sc.scan()
	require.NoError(t, err)
	p, ok := found[os.Getpid()]
	require.True(t, ok)
	assert.Equal(t, []Device{dev}, p.Devices)
}

// An event submitted without a wake-up (less than PollInterval after one that
// woke the reader) is delivered by the reader's next poll, not left in the
// ring until something else wakes it. Poll interval 1 s; the drop check
// (which also drains the ring) is pushed out of the test's reach. Once the
// reader is idle, two opens back to back (the first wakes the reader, which
// finds the second already there and drains both), then a fork less than a
// second later, submitted without a wake-up: an earlier reader blocked after
// that drain's poll and never saw the fork.
func TestEBPFEventWithoutWakeUpIsDelivered(t *testing.T) {
	requireBPF(t)
	node, dev := standIn(t, t.TempDir(), "vgpusim0")
	tr := newTracker(t, Config{Majors: []uint32{dev.Major}, PollInterval: time.Second, dropCheck: time.Hour})
	require.Equal(t, "ebpf", tr.Kind())
	events, cancel := tr.Subscribe(1024)
	defer cancel()

	h := startHolder(t, node, "")
	waitEvent(t, events, 5*time.Second, is(EventOpen, h.pid))
	time.Sleep(1100 * time.Millisecond) // the next open wakes the reader
	h.send(t, "reopen")
	h.line(t, "reopened")
	waitEvent(t, events, 5*time.Second, is(EventOpen, h.pid))
	waitEvent(t, events, 5*time.Second, is(EventOpen, h.pid))
	h.send(t, "fork")
	child, err := strconv.Atoi(h.line(t, "child")[1])
	require.NoError(t, err)
	waitEvent(t, events, 10*time.Second, is(EventFork, child))
	h.send(t, "reap")
	h.line(t, "reaped")
}
