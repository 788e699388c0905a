package shm

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
)

func testSpec() SliceSpec {
	return SliceSpec{
		ID: "tenant-a/job-1",
		Devices: []DeviceBudget{
			{Index: 0, MemoryLimit: 2 << 30, MemoryGuaranteed: 1 << 30, ContextOverhead: 256 << 20,
				ComputeShareBP: 5000, ComputeFloorBP: 2500, TokenRate: 500_000_000, TokenBurst: 50_000_000},
			{UUID: "GPU-01234567-89ab-cdef-0123-456789abcdef", Index: 3, MemoryLimit: 1 << 30},
		},
		Slots:    8,
		Priority: 7,
		QoS:      QoSBurstable,
		Policy:   PolicyShare,
		Flags:    BudgetFlagElastic,
	}
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestCreateOpenRoundTrip: a created slice opens, reads back exactly the spec,
// has the documented sizes and modes (despite a restrictive umask), and leaves
// no temporary file behind.
func TestCreateOpenRoundTrip(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)

	root := t.TempDir()
	dir := filepath.Join(root, "a", "b")
	spec := testSpec()
	before := time.Now()
	require.NoError(t, CreateSlice(dir, spec))

	require.ElementsMatch(t, []string{BudgetFile, UsageFile}, dirEntries(t, dir))
	for _, c := range []struct {
		path string
		mode os.FileMode
		size int64
	}{
		{filepath.Join(root, "a"), os.ModeDir | 0o755, -1},
		{dir, os.ModeDir | 0o755, -1},
		{filepath.Join(dir, BudgetFile), 0o644, int64(BudgetSize)},
		{filepath.Join(dir, UsageFile), 0o666, int64(UsageSize(8))},
	} {
		fi, err := os.Stat(c.path)
		require.NoError(t, err)
		require.Equal(t, c.mode, fi.Mode(), c.path)
		if c.size >= 0 {
			require.Equal(t, c.size, fi.Size(), c.path)
		}
	}

	s, err := OpenSlice(dir)
	require.NoError(t, err)
	defer s.Close()

	got := s.Budget.Spec()
	want := spec
	want.Slots = 0
	require.Equal(t, want, got)
	require.Equal(t, uint64(2), s.Budget.Generation())
	require.Equal(t, uint16(ABIMinor), s.Budget.ABIMinor())
	created := time.Unix(0, int64(s.Budget.CreatedUnixNs()))
	require.False(t, created.Before(before.Add(-time.Second)))
	require.False(t, created.After(time.Now().Add(time.Second)))
	require.Equal(t, uint64(2<<30), s.Budget.MemoryLimit(0))

	require.Equal(t, 2, s.Usage.DeviceCount())
	require.Equal(t, 8, s.Usage.SlotCount())
	require.Zero(t, s.Usage.DeviceUsed(0))
	require.Zero(t, s.Usage.DeviceUsed(1))
	require.Empty(t, s.Usage.Slots())
	require.Zero(t, s.Usage.AttachCount())
	require.Panics(t, func() { s.Usage.DeviceUsed(2) }, "device index past device_count")
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "closing twice is harmless")
}

// TestCreateDefaultsAndReplace: Slots 0 means DefaultSlots; creating again
// replaces the pair.
func TestCreateDefaultsAndReplace(t *testing.T) {
	dir := t.TempDir()
	spec := SliceSpec{Devices: []DeviceBudget{{MemoryLimit: 1 << 20}}}
	require.NoError(t, CreateSlice(dir, spec))
	require.True(t, SliceExists(dir))

	u, err := OpenUsage(filepath.Join(dir, UsageFile))
	require.NoError(t, err)
	require.Equal(t, DefaultSlots, u.SlotCount())
	require.NoError(t, u.Close())

	spec.Devices[0].MemoryLimit = 3 << 20
	spec.Slots = 1
	require.NoError(t, CreateSlice(dir, spec))
	s, err := OpenSlice(dir)
	require.NoError(t, err)
	defer s.Close()
	require.Equal(t, uint64(3<<20), s.Budget.MemoryLimit(0))
	require.Equal(t, 1, s.Usage.SlotCount())
	require.ElementsMatch(t, []string{BudgetFile, UsageFile}, dirEntries(t, dir))
}

// TestBadSpecsLeaveNothing: every invalid spec is refused with ErrInvalidSpec
// and creates nothing, neither files nor directories.
func TestBadSpecsLeaveNothing(t *testing.T) {
	ok := DeviceBudget{MemoryLimit: 1 << 20}
	long := make([]byte, UUIDLen)
	for i := range long {
		long[i] = 'x'
	}
	many := make([]DeviceBudget, MaxDevices+1)
	for i := range many {
		many[i] = DeviceBudget{Index: uint32(i), MemoryLimit: 1}
	}
	cases := map[string]SliceSpec{
		"no devices":          {},
		"17 devices":          {Devices: many},
		"zero limit":          {Devices: []DeviceBudget{{}}},
		"guaranteed > limit":  {Devices: []DeviceBudget{{MemoryLimit: 1, MemoryGuaranteed: 2}}},
		"share > 10000":       {Devices: []DeviceBudget{{MemoryLimit: 1, ComputeShareBP: 10001}}},
		"floor > 10000":       {Devices: []DeviceBudget{{MemoryLimit: 1, ComputeFloorBP: 10001}}},
		"uuid too long":       {Devices: []DeviceBudget{{MemoryLimit: 1, UUID: string(long)}}},
		"uuid with NUL":       {Devices: []DeviceBudget{{MemoryLimit: 1, UUID: "GPU-\x00"}}},
		"duplicate index":     {Devices: []DeviceBudget{ok, ok}},
		"duplicate uuid":      {Devices: []DeviceBudget{{UUID: "GPU-1", MemoryLimit: 1}, {UUID: "GPU-1", Index: 1, MemoryLimit: 1}}},
		"negative slots":      {Devices: []DeviceBudget{ok}, Slots: -1},
		"too many slots":      {Devices: []DeviceBudget{ok}, Slots: MaxSlots + 1},
		"id too long":         {Devices: []DeviceBudget{ok}, ID: string(make([]byte, SliceIDLen))},
		"unknown qos":         {Devices: []DeviceBudget{ok}, QoS: 3},
		"unknown policy":      {Devices: []DeviceBudget{ok}, Policy: 2},
		"unknown budget flag": {Devices: []DeviceBudget{ok}, Flags: 0x4},
	}
	for name, spec := range cases {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			err := CreateSlice(filepath.Join(root, "new", "slice"), spec)
			require.ErrorIs(t, err, ErrInvalidSpec)
			require.Empty(t, dirEntries(t, root))

			err = CreateSlice(root, spec)
			require.ErrorIs(t, err, ErrInvalidSpec)
			require.Empty(t, dirEntries(t, root))
		})
	}
	// The limits themselves are accepted.
	edge := SliceSpec{Devices: many[:MaxDevices], Slots: MaxSlots, ID: string(long[:SliceIDLen-1])}
	edge.Devices[0].UUID = string(long[:UUIDLen-1])
	edge.Devices[1].ComputeShareBP = MaxShareBP
	require.NoError(t, CreateSlice(t.TempDir(), edge))
}

// TestCreateFailureLeavesNothing: a failure after files were written (the
// budget name is taken by a directory) removes the temporaries, the usage file
// already renamed into place and the directories the call created.
func TestCreateFailureLeavesNothing(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "slice")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, BudgetFile, "occupied"), 0o755))
	err := CreateSlice(dir, SliceSpec{Devices: []DeviceBudget{{MemoryLimit: 1}}})
	require.Error(t, err)
	require.Contains(t, err.Error(), dir)
	require.Equal(t, []string{BudgetFile}, dirEntries(t, dir))

	// A path through a regular file cannot become a directory.
	file := filepath.Join(root, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	require.Error(t, CreateSlice(filepath.Join(file, "slice"), SliceSpec{Devices: []DeviceBudget{{MemoryLimit: 1}}}))
	require.ElementsMatch(t, []string{"slice", "file"}, dirEntries(t, root))
}

// corrupt copies the good file at src to a fresh path, applies mutate to its
// bytes and returns the path.
func corrupt(t *testing.T, src string, mutate func([]byte) []byte) string {
	t.Helper()
	data, err := os.ReadFile(src)
	require.NoError(t, err)
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	require.NoError(t, os.WriteFile(dst, mutate(data), 0o644))
	return dst
}

func put16(off int, v uint16) func([]byte) []byte {
	return func(b []byte) []byte { binary.LittleEndian.PutUint16(b[off:], v); return b }
}

func put32(off int, v uint32) func([]byte) []byte {
	return func(b []byte) []byte { binary.LittleEndian.PutUint32(b[off:], v); return b }
}

func put64(off int, v uint64) func([]byte) []byte {
	return func(b []byte) []byte { binary.LittleEndian.PutUint64(b[off:], v); return b }
}

func truncTo(n int) func([]byte) []byte { return func(b []byte) []byte { return b[:n] } }

func grow(n int) func([]byte) []byte {
	return func(b []byte) []byte { return append(b, make([]byte, n)...) }
}

var (
	offMagic       = int(unsafe.Offsetof(ShmHeader{}.Magic))
	offABIMajor    = int(unsafe.Offsetof(ShmHeader{}.ABIMajor))
	offABIMinor    = int(unsafe.Offsetof(ShmHeader{}.ABIMinor))
	offHeaderSize  = int(unsafe.Offsetof(ShmHeader{}.HeaderSize))
	offTotalSize   = int(unsafe.Offsetof(ShmHeader{}.TotalSize))
	offDeviceCount = int(unsafe.Offsetof(ShmHeader{}.DeviceCount))
	offSlotCount   = int(unsafe.Offsetof(ShmHeader{}.SlotCount))
	offMaxDevices  = int(unsafe.Offsetof(ShmHeader{}.MaxDevices))
)

// TestCorruptRegions: every damaged file is refused with the right sentinel and
// a message naming the file; a newer minor version is accepted.
func TestCorruptRegions(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, CreateSlice(dir, SliceSpec{Devices: []DeviceBudget{{MemoryLimit: 1 << 30}}, Slots: 4}))
	budget := filepath.Join(dir, BudgetFile)
	usage := filepath.Join(dir, UsageFile)
	budgetLen, usageLen := int(BudgetSize), int(UsageSize(4))

	type tc struct {
		name   string
		src    string
		mutate func([]byte) []byte
		want   error  // nil: must open
		msg    string // extra text the message must contain
	}
	var cases []tc
	for _, f := range []struct {
		src   string
		size  int
		other string
	}{{budget, budgetLen, usage}, {usage, usageLen, budget}} {
		cases = append(cases,
			tc{"wrong magic", f.src, put64(offMagic, 0x1122334455667788), ErrBadMagic, ""},
			tc{"major+1", f.src, put16(offABIMajor, ABIMajor+1), ErrABIVersion, fmt.Sprintf("%d.%d", ABIMajor+1, ABIMinor)},
			tc{"major 0", f.src, put16(offABIMajor, 0), ErrABIVersion, ""},
			tc{"minor+1 accepted", f.src, put16(offABIMinor, ABIMinor+1), nil, ""},
			tc{"empty", f.src, truncTo(0), ErrTruncated, ""},
			tc{"10 bytes", f.src, truncTo(10), ErrTruncated, ""},
			tc{"header only", f.src, truncTo(int(headerSize)), ErrTruncated, ""},
			tc{"total-1", f.src, truncTo(f.size - 1), ErrTruncated, ""},
			tc{"one byte over", f.src, grow(1), ErrOversized, ""},
			tc{"a page over", f.src, grow(4096), ErrOversized, ""},
			tc{"device_count 0", f.src, put32(offDeviceCount, 0), ErrCorrupt, "device_count"},
			tc{"device_count 17", f.src, put32(offDeviceCount, MaxDevices+1), ErrCorrupt, "device_count"},
			tc{"header_size", f.src, put32(offHeaderSize, 63), ErrCorrupt, "header_size"},
			tc{"max_devices", f.src, put32(offMaxDevices, 8), ErrCorrupt, "max_devices"},
			tc{"total_size", f.src, put64(offTotalSize, uint64(f.size)+8), ErrCorrupt, "total_size"},
		)
		// The other file's magic: says which file it is.
		cases = append(cases, tc{"other file's magic", f.src, func(b []byte) []byte {
			o, err := os.ReadFile(f.other)
			require.NoError(t, err)
			copy(b[offMagic:offMagic+8], o[offMagic:offMagic+8])
			return b
		}, ErrBadMagic, "this is a"})
	}
	cases = append(cases,
		tc{"budget with slots", budget, put32(offSlotCount, 1), ErrCorrupt, "slot_count"},
		tc{"usage slot_count 0", usage, put32(offSlotCount, 0), ErrCorrupt, "slot_count"},
		tc{"usage slot_count > max", usage, put32(offSlotCount, MaxSlots+1), ErrCorrupt, "slot_count"},
		tc{"usage slot_count vs total_size", usage, put32(offSlotCount, 5), ErrCorrupt, "total_size"},
	)

	for _, c := range cases {
		kind := filepath.Base(c.src)
		t.Run(kind+"/"+c.name, func(t *testing.T) {
			path := corrupt(t, c.src, c.mutate)
			var err error
			if kind == BudgetFile {
				var r *BudgetRegion
				if r, err = OpenBudget(path, false); err == nil {
					require.Equal(t, uint16(ABIMinor+1), r.ABIMinor())
					require.NoError(t, r.Close())
				}
			} else {
				var r *UsageRegion
				if r, err = OpenUsage(path); err == nil {
					require.Equal(t, uint16(ABIMinor+1), r.ABIMinor())
					require.NoError(t, r.Close())
				}
			}
			if c.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, c.want)
			require.Contains(t, err.Error(), path, "message names the file")
			require.Contains(t, err.Error(), c.msg)
		})
	}

	// The other file's magic names that file precisely.
	_, err := OpenBudget(usage, false)
	require.ErrorIs(t, err, ErrBadMagic)
	require.Contains(t, err.Error(), "this is a usage file")
	_, err = OpenUsage(budget)
	require.ErrorIs(t, err, ErrBadMagic)
	require.Contains(t, err.Error(), "this is a budget file")

	// Not a file at all.
	_, err = OpenUsage(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = OpenBudget(t.TempDir(), false)
	require.Error(t, err)
}

// TestOpenSliceMismatch: a budget and a usage file of different slices (device
// counts differ) are refused as a pair, and a bad file inside is named.
func TestOpenSliceMismatch(t *testing.T) {
	one, two := t.TempDir(), t.TempDir()
	require.NoError(t, CreateSlice(one, SliceSpec{Devices: []DeviceBudget{{MemoryLimit: 1}}}))
	require.NoError(t, CreateSlice(two, SliceSpec{Devices: []DeviceBudget{{MemoryLimit: 1}, {Index: 1, MemoryLimit: 1}}}))
	data, err := os.ReadFile(filepath.Join(two, UsageFile))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(one, UsageFile), data, 0o666))
	_, err = OpenSlice(one)
	require.ErrorIs(t, err, ErrCorrupt)
	require.Contains(t, err.Error(), "budget has 1 devices, usage has 2")

	require.NoError(t, os.Truncate(filepath.Join(two, UsageFile), 100))
	_, err = OpenSlice(two)
	require.ErrorIs(t, err, ErrTruncated)
	require.Contains(t, err.Error(), filepath.Join(two, UsageFile))

	_, err = OpenSlice(t.TempDir())
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestBudgetSetters: a writable mapping's changes are seen through another
// (read-only) mapping of the same file, each bumps the generation once, invalid
// values change nothing, and a read-only mapping refuses to write.
func TestBudgetSetters(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, CreateSlice(dir, testSpec()))
	path := filepath.Join(dir, BudgetFile)
	w, err := OpenBudget(path, true)
	require.NoError(t, err)
	defer w.Close()
	r, err := OpenBudget(path, false)
	require.NoError(t, err)
	defer r.Close()

	gen := r.Generation()
	steps := []func() error{
		func() error { return w.SetMemoryLimit(1, 5<<30) },
		func() error { return w.SetMemoryGuaranteed(1, 1<<30) },
		func() error { return w.SetContextOverhead(0, 300<<20) },
		func() error { return w.SetComputeShare(0, 7000, 1000) },
		func() error { return w.SetTokenBucket(1, 123, 456) },
		func() error { return w.SetPriority(42) },
		func() error { return w.SetQoS(QoSBestEffort) },
		func() error { return w.SetPolicy(PolicyCap) },
		func() error { return w.SetFlags(0) },
	}
	for i, step := range steps {
		require.NoError(t, step())
		require.Equal(t, gen+2*uint64(i+1), r.Generation(), "step %d is one seqlock write (odd, then even)", i)
	}
	d0, d1 := r.Device(0), r.Device(1)
	require.Equal(t, uint64(5<<30), d1.MemoryLimit)
	require.Equal(t, uint64(1<<30), d1.MemoryGuaranteed)
	require.Equal(t, uint64(300<<20), d0.ContextOverhead)
	require.Equal(t, uint32(7000), d0.ComputeShareBP)
	require.Equal(t, uint32(1000), d0.ComputeFloorBP)
	require.Equal(t, uint64(123), d1.TokenRate)
	require.Equal(t, uint64(456), d1.TokenBurst)
	require.Equal(t, uint32(42), r.Priority())
	require.Equal(t, uint32(QoSBestEffort), r.QoS())
	require.Equal(t, uint32(PolicyCap), r.Policy())
	require.Zero(t, r.Flags())

	gen = r.Generation()
	require.ErrorIs(t, w.SetMemoryLimit(0, 0), ErrInvalidSpec)
	require.ErrorIs(t, w.SetComputeShare(0, 10001, 0), ErrInvalidSpec)
	require.ErrorIs(t, w.SetQoS(9), ErrInvalidSpec)
	require.ErrorIs(t, w.SetPolicy(9), ErrInvalidSpec)
	require.ErrorIs(t, w.SetFlags(0x80), ErrInvalidSpec)
	require.Equal(t, gen, r.Generation(), "refused changes do not bump the generation")

	err = r.SetMemoryLimit(0, 1)
	require.ErrorIs(t, err, ErrReadOnly)
	require.Contains(t, err.Error(), path)
	require.Equal(t, gen, r.Generation())
}
