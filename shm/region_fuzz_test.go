package shm

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fuzzSeeds returns a valid budget/usage pair (two devices, four slots, one
// live process holding memory on each) for the fuzzer to mutate.
func fuzzSeeds(f *testing.F) (budget, usage []byte) {
	f.Helper()
	dir := f.TempDir()
	spec := SliceSpec{
		ID: "fuzz-1",
		Devices: []DeviceBudget{
			{Index: 0, MemoryLimit: 2 << 30, MemoryGuaranteed: 1 << 30, ContextOverhead: 256 << 20,
				ComputeShareBP: 5000, ComputeFloorBP: 2500, TokenRate: 500_000_000, TokenBurst: 50_000_000},
			{UUID: "GPU-01234567-89ab-cdef-0123-456789abcdef", Index: 3, MemoryLimit: 1 << 30},
		},
		Slots:    4,
		Priority: 7,
	}
	if err := CreateSlice(dir, spec); err != nil {
		f.Fatal(err)
	}
	u, err := OpenUsage(filepath.Join(dir, UsageFile))
	if err != nil {
		f.Fatal(err)
	}
	slot, err := u.ClaimSlot(SlotIdentity{PID: 4242, PIDNamespace: 1, StartTime: 9})
	if err != nil {
		f.Fatal(err)
	}
	u.Charge(slot, 0, 1<<20, 2<<30)
	u.Charge(slot, 1, 3<<20, 1<<30)
	u.Close()
	if budget, err = os.ReadFile(filepath.Join(dir, BudgetFile)); err != nil {
		f.Fatal(err)
	}
	if usage, err = os.ReadFile(filepath.Join(dir, UsageFile)); err != nil {
		f.Fatal(err)
	}
	return budget, usage
}

// FuzzOpenRegions: whatever bytes the budget and usage files hold (the usage
// file is the tenant's to write), OpenBudget, OpenUsage and OpenSlice either
// refuse them with an error or give regions whose accessors stay inside the
// mapping; and a usage file cut short under a live mapping (cut > 0: its new
// length) makes the accessors run under Guard fail with ErrTruncated, never
// crash the reader.
func FuzzOpenRegions(f *testing.F) {
	budget, usage := fuzzSeeds(f)
	f.Add(budget, usage, uint32(0))
	f.Add(budget, usage, uint32(100))          // cut inside the header
	f.Add(budget, usage, uint32(len(usage)-1)) // cut inside the last slot
	f.Add(budget, usage[:len(usage)-1], uint32(0))
	f.Add(usage, budget, uint32(0)) // swapped
	f.Add(budget[:headerSize], usage[:headerSize], uint32(0))
	f.Add([]byte{}, []byte{}, uint32(0))
	corrupt := append([]byte(nil), usage...)
	corrupt[headerSize] = 0xff // first device's counter: fine, only a number
	for i := 0; i < 8; i++ {
		corrupt[16+i] = 0xff // header fields past the magic
	}
	f.Add(budget, corrupt, uint32(0))

	f.Fuzz(func(t *testing.T, budget, usage []byte, cut uint32) {
		dir := t.TempDir()
		bpath, upath := filepath.Join(dir, BudgetFile), filepath.Join(dir, UsageFile)
		if err := os.WriteFile(bpath, budget, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(upath, usage, 0o666); err != nil {
			t.Fatal(err)
		}
		if b, err := OpenBudget(bpath, false); err == nil {
			readBudget(b)
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if s, err := OpenSlice(dir); err == nil {
			readBudget(s.Budget)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		u, err := OpenUsage(upath)
		if err != nil {
			return
		}
		defer u.Close()
		if err := u.Guard(func() { readUsage(u) }); err != nil {
			t.Fatalf("intact usage file: %v", err)
		}
		if cut == 0 || int(cut) >= len(usage) {
			return
		}
		if err := os.Truncate(upath, int64(cut)); err != nil {
			t.Fatal(err)
		}
		// Pages wholly past the new end fault; the page holding it does not,
		// so reading may also succeed.
		if err := u.Guard(func() { readUsage(u) }); err != nil && !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut usage file: %v", err)
		}
		if _, err := u.Reclaim(func(SlotIdentity) bool { return false }); err != nil && !errors.Is(err, ErrTruncated) {
			t.Fatalf("reclaim on a cut usage file: %v", err)
		}
	})
}

// readBudget reads every field through the accessors.
func readBudget(b *BudgetRegion) {
	_ = b.Spec()
	_ = b.Generation()
	_ = b.CreatedUnixNs()
	_ = b.ABIMinor()
	for d := 0; d < b.DeviceCount(); d++ {
		_ = b.MemoryLimit(d)
	}
}

// readUsage reads every field through the accessors, as vgpud's loop does,
// and reclaims the slots of dead processes (every one is dead here).
func readUsage(u *UsageRegion) {
	_ = u.AttachCount()
	_ = u.ABIMinor()
	for d := 0; d < u.DeviceCount(); d++ {
		_ = u.DeviceUsed(d)
		_ = u.Device(d)
	}
	for _, s := range u.Slots() {
		if s.Index < 0 || s.Index >= u.SlotCount() || len(s.UsedBytes) != u.DeviceCount() {
			panic("slot snapshot out of the region's bounds")
		}
	}
	_, _ = u.Reclaim(func(id SlotIdentity) bool { return id.PID%2 == 0 })
}
