package shm

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

func openTestUsage(t *testing.T, devices, slots int) *UsageRegion {
	t.Helper()
	dir := t.TempDir()
	spec := SliceSpec{Slots: slots}
	for d := 0; d < devices; d++ {
		spec.Devices = append(spec.Devices, DeviceBudget{Index: uint32(d), MemoryLimit: 1 << 40})
	}
	require.NoError(t, CreateSlice(dir, spec))
	u, err := OpenUsage(filepath.Join(dir, UsageFile))
	require.NoError(t, err)
	t.Cleanup(func() { u.Close() })
	return u
}

// TestReclaimFakeAlive: dead slots (LIVE and CLAIMING) give back exactly what
// they held on each device and become free; a live slot is untouched; alive sees
// the identity of each owned slot, with a CLAIMING slot's half-written identity
// withheld; garbage owner states are ignored; a second pass does nothing.
func TestReclaimFakeAlive(t *testing.T) {
	u := openTestUsage(t, 2, 6)

	dead, err := u.ClaimSlot(SlotIdentity{PID: 101, PIDNamespace: 5, StartTime: 1000})
	require.NoError(t, err)
	live, err := u.ClaimSlot(SlotIdentity{PID: 102, PIDNamespace: 5, StartTime: 2000})
	require.NoError(t, err)
	claiming, err := u.ClaimSlot(SlotIdentity{PID: 103, PIDNamespace: 5, StartTime: 3000})
	require.NoError(t, err)

	require.True(t, u.Charge(dead, 0, 100, 1<<40))
	require.True(t, u.Charge(dead, 1, 50, 1<<40))
	require.True(t, u.Charge(live, 0, 30, 1<<40))
	require.True(t, u.Charge(claiming, 0, 7, 1<<40))
	// Back to CLAIMING, as if the process died while (re)writing its identity.
	atomic.StoreUint64(&u.RawSlot(claiming).Owner, SlotOwner(103, SlotClaiming))
	// A slot with an unknown state (corrupt writer) is not owned.
	atomic.StoreUint64(&u.RawSlot(4).Owner, SlotOwner(104, 7))
	atomic.StoreUint64(&u.RawSlot(4).UsedBytes[0], 999)

	require.Equal(t, uint64(137), u.DeviceUsed(0))
	require.Equal(t, uint64(50), u.DeviceUsed(1))
	require.Len(t, u.Slots(), 3)

	var asked []SlotIdentity
	rep, err := u.Reclaim(func(id SlotIdentity) bool {
		asked = append(asked, id)
		return id.PID == 102
	})
	require.NoError(t, err)

	require.Equal(t, []SlotIdentity{
		{Index: dead, PID: 101, PIDNamespace: 5, StartTime: 1000},
		{Index: live, PID: 102, PIDNamespace: 5, StartTime: 2000},
		{Index: claiming, PID: 103, Claiming: true},
	}, asked)
	require.Equal(t, 3, rep.Owned)
	require.Equal(t, []ReclaimedSlot{
		{SlotIdentity: asked[0], Freed: []uint64{100, 50}, Released: true},
		{SlotIdentity: asked[2], Freed: []uint64{7, 0}, Released: true},
	}, rep.Slots)
	require.Equal(t, uint64(107), rep.Freed(0))
	require.Equal(t, uint64(50), rep.Freed(1))

	require.Equal(t, uint64(30), u.DeviceUsed(0))
	require.Zero(t, u.DeviceUsed(1))
	for _, i := range []int{dead, claiming} {
		s := u.RawSlot(i)
		require.Equal(t, ShmSlot{}, *s, "slot %d fully cleared", i)
	}
	info, ok := u.Slot(live)
	require.True(t, ok)
	require.Equal(t, SlotInfo{
		SlotIdentity: SlotIdentity{Index: live, PID: 102, PIDNamespace: 5, StartTime: 2000},
		UsedBytes:    []uint64{30, 0},
	}, info)
	require.Equal(t, uint64(999), atomic.LoadUint64(&u.RawSlot(4).UsedBytes[0]), "unknown state untouched")

	// Freed slots are claimable again; a second pass finds nothing to do.
	rep, err = u.Reclaim(func(id SlotIdentity) bool { return id.PID == 102 })
	require.NoError(t, err)
	require.Equal(t, 1, rep.Owned)
	require.Empty(t, rep.Slots)
	require.Equal(t, uint64(30), u.DeviceUsed(0))
	again, err := u.ClaimSlot(SlotIdentity{PID: 105})
	require.NoError(t, err)
	require.Equal(t, dead, again)
}

// TestReclaimClamps: when a device counter already holds less than the dead
// slot's share it stops at 0 instead of wrapping, and the report says so. Bytes
// a corrupt writer put in a slot past device_count are cleared, not subtracted.
// TestReclaimFinishesInterruptedReclaim: a slot left in RECLAIMING (its
// reclaimer died half-way) is finished by the next pass without asking alive,
// and a process cannot claim it meanwhile.
func TestReclaimFinishesInterruptedReclaim(t *testing.T) {
	u := openTestUsage(t, 1, 2)
	s, err := u.ClaimSlot(SlotIdentity{PID: 201, PIDNamespace: 5, StartTime: 10})
	require.NoError(t, err)
	require.True(t, u.Charge(s, 0, 4096, 1<<40))
	atomic.StoreUint64(&u.RawSlot(s).Owner, SlotOwner(201, SlotReclaiming))
	require.Empty(t, u.Slots(), "a slot being reclaimed belongs to no live process")

	other, err := u.ClaimSlot(SlotIdentity{PID: 202, PIDNamespace: 5, StartTime: 11})
	require.NoError(t, err)
	require.NotEqual(t, s, other, "a RECLAIMING slot cannot be claimed")

	rep, err := u.Reclaim(func(id SlotIdentity) bool {
		require.Equal(t, 202, id.PID, "alive is only asked about owned slots")
		return true
	})
	require.NoError(t, err)
	require.Len(t, rep.Slots, 1)
	require.Equal(t, []uint64{4096}, rep.Slots[0].Freed)
	require.Zero(t, u.DeviceUsed(0))
	require.Equal(t, uint64(SlotFree), atomic.LoadUint64(&u.RawSlot(s).Owner))
}

func TestReclaimClamps(t *testing.T) {
	u := openTestUsage(t, 1, 2)
	i, err := u.ClaimSlot(SlotIdentity{PID: 200})
	require.NoError(t, err)
	require.True(t, u.Charge(i, 0, 100, 1<<40))
	atomic.StoreUint64(&u.Raw().Dev[0].UsedBytes, 40)
	atomic.StoreUint64(&u.RawSlot(i).UsedBytes[5], 77)

	rep, err := u.Reclaim(func(SlotIdentity) bool { return false })
	require.NoError(t, err)
	require.Len(t, rep.Slots, 1)
	require.True(t, rep.Slots[0].Clamped)
	require.Equal(t, []uint64{100}, rep.Slots[0].Freed)
	require.Zero(t, u.DeviceUsed(0))
	require.Zero(t, atomic.LoadUint64(&u.Raw().Dev[5].UsedBytes))
	require.Equal(t, ShmSlot{}, *u.RawSlot(i))
}

// TestReclaimDoesNotAllocateWhenNothingDied: the daemon runs it every tick.
func TestReclaimDoesNotAllocateWhenNothingDied(t *testing.T) {
	u := openTestUsage(t, 2, DefaultSlots)
	for pid := 1; pid <= 64; pid++ {
		_, err := u.ClaimSlot(SlotIdentity{PID: pid})
		require.NoError(t, err)
	}
	alive := func(SlotIdentity) bool { return true }
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := u.Reclaim(alive); err != nil {
			panic(err)
		}
	})
	require.Zero(t, allocs)
}

// TestReclaimClosed: a closed region reports ErrClosed instead of faulting.
func TestReclaimClosed(t *testing.T) {
	u := openTestUsage(t, 1, 1)
	require.NoError(t, u.Close())
	_, err := u.Reclaim(func(SlotIdentity) bool { return true })
	require.ErrorIs(t, err, ErrClosed)
}

// TestReclaimFaultOnShrunkFile: a tenant truncating its usage file under the
// daemon's mapping turns into an ErrTruncated error, not a SIGBUS crash.
func TestReclaimFaultOnShrunkFile(t *testing.T) {
	u := openTestUsage(t, 1, 64)
	_, err := u.ClaimSlot(SlotIdentity{PID: 1})
	require.NoError(t, err)
	require.NoError(t, os.Truncate(u.Path(), 0))
	_, err = u.Reclaim(func(SlotIdentity) bool { return true })
	require.ErrorIs(t, err, ErrTruncated)
	require.Contains(t, err.Error(), u.Path())

	err = u.Guard(func() { u.Slots() })
	require.ErrorIs(t, err, ErrTruncated)
	require.NoError(t, u.Guard(func() {}))
	require.PanicsWithValue(t, "not a fault", func() { _ = u.Guard(func() { panic("not a fault") }) })
}

// TestConcurrentChargeNeverExceedsLimit: a Go model of libvgpu's admission.
// Goroutines charge and credit through the CAS accessors against one limit; an
// observer never sees the counter above the limit, each goroutine's slot holds
// exactly what it was admitted, and everything is back to 0 at the end.
func TestConcurrentChargeNeverExceedsLimit(t *testing.T) {
	const (
		workers = 8
		rounds  = 20000
		chunk   = 64 << 20
		limit   = 2<<30 + 32<<20 // not a multiple of chunk: the last chunk never fits
	)
	u := openTestUsage(t, 1, workers)
	slots := make([]int, workers)
	for w := range slots {
		var err error
		slots[w], err = u.ClaimSlot(SlotIdentity{PID: 1000 + w})
		require.NoError(t, err)
	}

	var over atomic.Uint64
	stop := make(chan struct{})
	observed := make(chan struct{})
	go func() {
		defer close(observed)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if v := u.DeviceUsed(0); v > limit {
				over.Store(v)
			}
		}
	}()

	var wg sync.WaitGroup
	var admitted, refused atomic.Uint64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(slot int) {
			defer wg.Done()
			held := 0
			for r := 0; r < rounds; r++ {
				// Grow until refused, then give some back: keeps the counter
				// pressed against the limit.
				if r%3 != 2 {
					if u.Charge(slot, 0, chunk, limit) {
						held++
						admitted.Add(1)
					} else {
						refused.Add(1)
					}
				} else if held > 0 {
					u.Credit(slot, 0, chunk)
					held--
				}
				if got := atomic.LoadUint64(&u.RawSlot(slot).UsedBytes[0]); got != uint64(held)*chunk {
					panic("slot share differs from what this worker holds")
				}
			}
			for ; held > 0; held-- {
				u.Credit(slot, 0, chunk)
			}
		}(slots[w])
	}
	wg.Wait()
	close(stop)
	<-observed

	require.Zero(t, over.Load(), "counter went over the limit")
	require.NotZero(t, refused.Load(), "the limit was reached")
	require.NotZero(t, admitted.Load())
	require.Zero(t, u.DeviceUsed(0), "nothing lost after all frees")
	d := u.Device(0)
	require.Equal(t, refused.Load(), d.RefusedAllocs)
	require.LessOrEqual(t, d.PeakBytes, uint64(limit))
	require.Equal(t, uint64(limit/chunk*chunk), d.PeakBytes, "the counter was pressed against the limit")
	for _, s := range slots {
		require.NoError(t, u.ReleaseSlot(s))
	}
	require.Empty(t, u.Slots())
}

// BenchmarkReclaimIdle: one daemon tick over a 1024-slot file with 64 live
// processes and nobody dead (liveness check excluded).
func BenchmarkReclaimIdle(b *testing.B) {
	dir := b.TempDir()
	require.NoError(b, CreateSlice(dir, SliceSpec{Devices: []DeviceBudget{{MemoryLimit: 1 << 30}}}))
	u, err := OpenUsage(filepath.Join(dir, UsageFile))
	require.NoError(b, err)
	defer u.Close()
	for pid := 1; pid <= 64; pid++ {
		_, err := u.ClaimSlot(SlotIdentity{PID: pid})
		require.NoError(b, err)
	}
	alive := func(SlotIdentity) bool { return true }
	b.ReportAllocs()
	for b.Loop() {
		if _, err := u.Reclaim(alive); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReturnUnowned: a charge leaked by a process killed between charging
// the device counter and its slot is returned once no slot is owned; while a
// slot is owned (a live process may be mid-allocation) nothing is touched.
func TestReturnUnowned(t *testing.T) {
	u := openTestUsage(t, 2, 4)
	freed, err := u.ReturnUnowned()
	require.NoError(t, err)
	require.Nil(t, freed, "nothing held")

	dead, err := u.ClaimSlot(SlotIdentity{PID: 201, StartTime: 1})
	require.NoError(t, err)
	require.True(t, u.Charge(dead, 0, 100, 1<<40))
	atomic.AddUint64(&u.Raw().Dev[1].UsedBytes, 64) // charged, killed before its slot said so
	freed, err = u.ReturnUnowned()
	require.NoError(t, err)
	require.Nil(t, freed, "a slot is owned: its process may be mid-allocation")

	_, err = u.Reclaim(func(SlotIdentity) bool { return false })
	require.NoError(t, err)
	require.Equal(t, uint64(0), u.DeviceUsed(0))
	require.Equal(t, uint64(64), u.DeviceUsed(1), "Reclaim cannot see the leak")
	freed, err = u.ReturnUnowned()
	require.NoError(t, err)
	require.Equal(t, []uint64{0, 64}, freed)
	require.Equal(t, uint64(0), u.DeviceUsed(1))
}
