package tracker

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// When the programs count a dropped event, the tracker counts it as lost and
// repairs its state with a procfs rescan, publishing what it had missed.
func TestEBPFLossRepair(t *testing.T) {
	requireBPF(t)
	node, dev := standIn(t, t.TempDir(), "vgpusim0")
	h := startHolder(t, node, "")
	tr := newTracker(t, Config{Majors: []uint32{dev.Major}})
	et, ok := tr.(*ebpfTracker)
	require.True(t, ok, "kind %s", tr.Kind())
	events, cancel := tr.Subscribe(1024)
	defer cancel()

	// As if the open had never reached user space: forget the process, and
	// count one drop on CPU 0 the way the programs do when the ring is full.
	et.mu.Lock()
	delete(et.procs, h.pid)
	et.mu.Unlock()
	_, ok = tr.Lookup(h.pid)
	require.False(t, ok)
	ncpu, err := ebpf.PossibleCPU()
	require.NoError(t, err)
	perCPU := make([]uint64, ncpu)
	perCPU[0] = 1
	bumped := time.Now()
	require.NoError(t, et.objs.Dropped.Put(uint32(0), perCPU))

	ev, seen := waitEvent(t, events, 2*time.Second, is(EventOpen, h.pid))
	t.Logf("drop counted -> state repaired in %s", seen.Sub(bumped))
	assert.Equal(t, dev, ev.Device)
	assert.Equal(t, uint64(1), tr.Lost())
	p, ok := tr.Lookup(h.pid)
	require.True(t, ok)
	assert.Equal(t, []Device{dev}, p.Devices)
}
