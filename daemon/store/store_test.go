package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

func uuid(i int) string { return fmt.Sprintf("GPU-00000000-0000-0000-0000-%012d", i) }

// record is a typical record: devices 0..n-1 with 2GiB and 25% each.
func record(id string, qos api.QoS, n int) Record {
	devs := make([]api.SliceDevice, n)
	for i := range devs {
		devs[i] = api.SliceDevice{Index: i, UUID: uuid(i), MemoryBytes: 2 * gib, ComputePercent: 25}
	}
	return Record{
		Slice: api.Slice{
			ID:        id,
			Devices:   devs,
			QoS:       qos,
			Priority:  3,
			Owner:     api.Owner{Kind: api.OwnerPID, PID: 4242, StartTime: 99},
			CreatedAt: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
			// What vgpud records: the policy resolved (its default when the
			// request named none).
			ComputePolicy: api.ComputePolicyCap,
		},
		Request: api.AllocRequest{ID: id, MemoryBytes: 2 * gib, ComputePercent: 25, DeviceCount: n, QoS: qos, Priority: 3,
			ComputePolicy: api.ComputePolicyCap},
		ContextOverhead: 256 * mib,
	}
}

// open opens a store in dir (a new temp dir when empty) and returns it with
// the log entries it writes.
func open(t *testing.T, dir string) (*Store, *observer.ObservedLogs) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
	s, err := Open(dir, log)
	require.NoError(t, err)
	return s, logs
}

// create makes a slice and closes its mapping.
func create(t *testing.T, s *Store, rec Record) {
	t.Helper()
	sl, err := s.Create(rec)
	require.NoError(t, err)
	require.NoError(t, sl.Close())
}

// load loads and registers the closing of every loaded slice.
func load(t *testing.T, s *Store) []Loaded {
	t.Helper()
	ls, err := s.Load()
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, l := range ls {
			l.Slice.Close()
		}
	})
	return ls
}

func ids(ls []Loaded) []string {
	out := []string{}
	for _, l := range ls {
		out = append(out, l.Record.Slice.ID)
	}
	return out
}

// entries lists a directory's names.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	require.NoError(t, err)
	out := []string{}
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t).Ino
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// warned reports whether a warning or error containing msg was logged.
func warned(logs *observer.ObservedLogs, msg string) bool {
	for _, e := range logs.All() {
		if e.Level >= zapcore.WarnLevel && strings.Contains(e.Message, msg) {
			return true
		}
	}
	return false
}

func TestValidateID(t *testing.T) {
	good := []string{"a", "0", "slice-1", "my_slice.v2", "A-Z.a_z-0.9",
		strings.Repeat("f", 63), "4f3c2a1b9d8e"}
	for _, id := range good {
		require.NoError(t, ValidateID(id), id)
	}
	bad := []string{"", ".", "..", "../x", "a/b", "/abs", ".hidden", "-x", "_x", "a b",
		"a\x00b", "é", "a\nb", strings.Repeat("f", 64), `a\b`, "x*"}
	for _, id := range bad {
		err := ValidateID(id)
		require.ErrorIs(t, err, ErrInvalidID, "%q", id)
	}
}

func TestOpenMakesDirs(t *testing.T) {
	root := filepath.Join(t.TempDir(), "var", "lib", "vgpu")
	s, err := Open(root, nil)
	require.NoError(t, err)
	fi, err := os.Stat(filepath.Join(root, "slices"))
	require.NoError(t, err)
	require.True(t, fi.IsDir())
	require.Equal(t, os.FileMode(0o755), fi.Mode().Perm()&0o755)
	require.Equal(t, root, s.Root())
	require.Equal(t, filepath.Join(root, "slices", "abc"), s.Dir("abc"))

	// A relative state dir is made absolute: the record's Dir must be usable
	// from any working directory.
	t.Chdir(t.TempDir())
	s, err = Open("rel", nil)
	require.NoError(t, err)
	require.True(t, filepath.IsAbs(s.Dir("x")))
}

func TestSpec(t *testing.T) {
	rec := record("g", api.QoSGuaranteed, 2)
	rec.Slice.Devices[1].ComputePercent = 0 // no share asked
	rec.Slice.Devices[1].MemoryBytes = 3 * gib
	spec, err := Spec(rec)
	require.NoError(t, err)
	require.Equal(t, shm.SliceSpec{
		ID:       "g",
		Priority: 3,
		QoS:      shm.QoSGuaranteed,
		Flags:    shm.BudgetFlagManaged, // vgpud's controller drives its rates
		Devices: []shm.DeviceBudget{
			{Index: 0, UUID: uuid(0), MemoryLimit: 2 * gib, MemoryGuaranteed: 2 * gib,
				ContextOverhead: 256 * mib, ComputeShareBP: 2500, ComputeFloorBP: 2500,
				// the static rate of a 25% share: throttled from the first launch
				TokenRate: 250_000_000, TokenBurst: 5_000_000},
			{Index: 1, UUID: uuid(1), MemoryLimit: 3 * gib, MemoryGuaranteed: 3 * gib,
				ContextOverhead: 256 * mib, ComputeShareBP: 10000},
		},
	}, spec)

	for qos, code := range map[api.QoS]uint32{api.QoSBurstable: shm.QoSBurstable, api.QoSBestEffort: shm.QoSBestEffort} {
		rec := record("b", qos, 1)
		rec.Slice.Devices[0].ComputePercent = 33.33
		spec, err := Spec(rec)
		require.NoError(t, err)
		require.Equal(t, code, spec.QoS)
		require.Equal(t, shm.DeviceBudget{Index: 0, UUID: uuid(0), MemoryLimit: 2 * gib,
			ContextOverhead: 256 * mib, ComputeShareBP: 3333, TokenRate: 333_300_000, TokenBurst: 6_666_000},
			spec.Devices[0],
			"nothing guaranteed, no compute floor")
	}
	spec, err = Spec(record("default", "", 1))
	require.NoError(t, err)
	require.Equal(t, uint32(shm.QoSGuaranteed), spec.QoS, `"" is guaranteed`)

	for name, mut := range map[string]func(*Record){
		"unknown qos":       func(r *Record) { r.Slice.QoS = "gold" },
		"negative priority": func(r *Record) { r.Slice.Priority = -1 },
		"negative index":    func(r *Record) { r.Slice.Devices[0].Index = -1 },
		"compute over 100":  func(r *Record) { r.Slice.Devices[0].ComputePercent = 100.5 },
		"negative compute":  func(r *Record) { r.Slice.Devices[0].ComputePercent = -3 },
		"no devices":        func(r *Record) { r.Slice.Devices = nil },
		"no memory":         func(r *Record) { r.Slice.Devices[0].MemoryBytes = 0 },
		"17 devices":        func(r *Record) { *r = record("x", "", 17) },
	} {
		rec := record("x", "", 1)
		mut(&rec)
		_, err := Spec(rec)
		require.Error(t, err, name)
	}
}

func TestCreate(t *testing.T) {
	s, _ := open(t, "")
	rec := record("job-1", api.QoSGuaranteed, 2)
	sl, err := s.Create(rec)
	require.NoError(t, err)
	defer sl.Close()

	dir := s.Dir("job-1")
	require.ElementsMatch(t, []string{"budget", "usage", "slice.json"}, entries(t, dir), "no temporary files left")
	// The record's owner is a process: its usage file is its user's alone.
	for name, mode := range map[string]os.FileMode{"budget": 0o644, "usage": 0o600, "slice.json": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Equal(t, mode, fi.Mode().Perm(), name)
	}

	// The regions are what the record says.
	b := sl.Budget
	require.Equal(t, "job-1", b.SliceID())
	require.Equal(t, uint32(3), b.Priority())
	require.Equal(t, uint32(shm.QoSGuaranteed), b.QoS())
	require.Equal(t, 2, b.DeviceCount())
	require.Equal(t, 2, sl.Usage.DeviceCount())
	require.Equal(t, shm.DefaultSlots, sl.Usage.SlotCount())
	for d := 0; d < 2; d++ {
		require.Equal(t, shm.DeviceBudget{Index: uint32(d), UUID: uuid(d), MemoryLimit: 2 * gib,
			MemoryGuaranteed: 2 * gib, ContextOverhead: 256 * mib, ComputeShareBP: 2500, ComputeFloorBP: 2500,
			TokenRate: 250_000_000, TokenBurst: 5_000_000},
			b.Device(d))
	}
	// The budget is mapped writable: vgpud is its only writer.
	require.NoError(t, b.SetMemoryLimit(0, 3*gib))
	opened, err := shm.OpenSlice(dir)
	require.NoError(t, err)
	require.Equal(t, uint64(3*gib), opened.Budget.MemoryLimit(0))
	require.NoError(t, opened.Close())

	// The record is versioned JSON with Dir filled in.
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(readFile(t, filepath.Join(dir, RecordFile)), &raw))
	require.JSONEq(t, "1", string(raw["version"]))
	require.Contains(t, raw, "slice")
	require.Contains(t, raw, "request")
	require.JSONEq(t, fmt.Sprint(256*mib), string(raw["context_overhead"]))
	got, err := parseRecord(readFile(t, filepath.Join(dir, RecordFile)), "job-1")
	require.NoError(t, err)
	want := rec
	want.Slice.Dir = dir
	require.Equal(t, want, got)

	// An id in use is refused and the slice left alone.
	before := readFile(t, filepath.Join(dir, RecordFile))
	_, err = s.Create(record("job-1", api.QoSBurstable, 1))
	require.ErrorIs(t, err, ErrExists)
	require.Equal(t, before, readFile(t, filepath.Join(dir, RecordFile)))

	// Refused before anything is made.
	_, err = s.Create(record("../escape", "", 1))
	require.ErrorIs(t, err, ErrInvalidID)
	bad := record("bad", "", 1)
	bad.Slice.QoS = "gold"
	_, err = s.Create(bad)
	require.ErrorContains(t, err, `unknown qos "gold"`)
	require.Equal(t, []string{"job-1"}, entries(t, s.slices))
	_, err = os.Stat(filepath.Join(filepath.Dir(s.slices), "escape"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// A failure at any step removes everything the call made.
func TestCreateCleansUpOnFailure(t *testing.T) {
	for _, failAt := range []string{"mkdir", "regions", "record", "synced"} {
		t.Run(failAt, func(t *testing.T) {
			s, _ := open(t, "")
			boom := errors.New("injected failure")
			s.hook = func(step string) error {
				if step == failAt {
					return boom
				}
				return nil
			}
			sl, err := s.Create(record("a", "", 1))
			require.ErrorIs(t, err, boom)
			require.Nil(t, sl)
			require.Empty(t, entries(t, s.slices))

			// The id is free again.
			s.hook = nil
			create(t, s, record("a", "", 1))
		})
	}
}

func TestDelete(t *testing.T) {
	s, _ := open(t, "")
	create(t, s, record("a", "", 1))
	create(t, s, record("b", "", 1))

	// A process still mapping the regions keeps them.
	live, err := shm.OpenSlice(s.Dir("a"))
	require.NoError(t, err)
	defer live.Close()
	slot, err := live.Usage.ClaimSlot(shm.SlotIdentity{PID: os.Getpid()})
	require.NoError(t, err)

	require.NoError(t, s.Delete("a"))
	require.Equal(t, []string{"b"}, entries(t, s.slices), "no leftovers")
	require.True(t, live.Usage.Charge(slot, 0, mib, 2*gib))
	require.Equal(t, uint64(mib), live.Usage.DeviceUsed(0))

	require.ErrorIs(t, s.Delete("a"), ErrNotFound)
	require.ErrorIs(t, s.Delete("never"), ErrNotFound)
	require.ErrorIs(t, s.Delete("../b"), ErrInvalidID)
	require.ErrorIs(t, s.Delete(""), ErrInvalidID)

	// Deleted slices do not come back; the id can be used again.
	s2, _ := open(t, s.Root())
	require.Equal(t, []string{"b"}, ids(load(t, s2)))
	create(t, s2, record("a", "", 1))
}

func TestLoadRoundTrip(t *testing.T) {
	s, logs := open(t, "")
	recs := []Record{record("c", api.QoSBestEffort, 1), record("a", "", 2), record("b", api.QoSBurstable, 3)}
	for _, r := range recs {
		create(t, s, r)
	}
	s2, logs2 := open(t, s.Root())
	ls := load(t, s2)
	require.Equal(t, []string{"a", "b", "c"}, ids(ls), "in id order")
	byID := map[string]Record{}
	for _, r := range recs {
		r.Slice.Dir = s.Dir(r.Slice.ID)
		byID[r.Slice.ID] = r
	}
	for _, l := range ls {
		require.Equal(t, byID[l.Record.Slice.ID], l.Record)
		require.Equal(t, l.Record.Slice.ID, l.Slice.Budget.SliceID())
		require.Equal(t, len(l.Record.Slice.Devices), l.Slice.Usage.DeviceCount())
	}
	for _, lg := range []*observer.ObservedLogs{logs, logs2} {
		for _, e := range lg.All() {
			require.Less(t, e.Level, zapcore.WarnLevel, "clean state, nothing to warn about: %s", e.Message)
		}
	}
}

// TestLoadComputePolicy: the policy survives a restart in the record and the
// budget; a record written before the policy existed (no compute_policy key)
// loads as cap, and so does its budget.
func TestLoadComputePolicy(t *testing.T) {
	s, _ := open(t, "")
	share := record("share", "", 1)
	share.Slice.ComputePolicy, share.Request.ComputePolicy = api.ComputePolicyShare, api.ComputePolicyShare
	create(t, s, share)
	create(t, s, record("cap", "", 1))
	create(t, s, record("old", api.QoSBurstable, 1))

	// "old": its record as vgpud wrote it before the policy could be chosen.
	path := filepath.Join(s.Dir("old"), RecordFile)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(readFile(t, path), &raw))
	delete(raw["slice"].(map[string]any), "compute_policy")
	delete(raw["request"].(map[string]any), "compute_policy")
	data, err := json.Marshal(raw)
	require.NoError(t, err)
	require.NotContains(t, string(data), "compute_policy")
	require.NoError(t, os.WriteFile(path, data, 0o644))

	s2, logs := open(t, s.Root())
	ls := load(t, s2)
	require.Equal(t, []string{"cap", "old", "share"}, ids(ls))
	want := map[string]api.ComputePolicy{"cap": api.ComputePolicyCap, "old": api.ComputePolicyCap, "share": api.ComputePolicyShare}
	for _, l := range ls {
		id := l.Record.Slice.ID
		require.Equal(t, want[id], l.Record.Slice.ComputePolicy, id)
		require.Equal(t, want[id].Code(), l.Slice.Budget.Policy(), "%s: the budget's policy", id)
	}
	require.False(t, warned(logs, ""), "nothing repaired or quarantined")

	// A record naming a policy this build does not know is not guessed at.
	bad := record("bad", "", 1)
	bad.Slice.ComputePolicy = "burst"
	_, err = s2.Create(bad)
	require.ErrorIs(t, err, api.ErrUnknownComputePolicy)
}

// Re-adoption never rewrites live regions: a tenant's counters survive byte for
// byte, in the same inode, and a process that keeps running keeps being seen.
func TestLoadLeavesLiveRegionsUntouched(t *testing.T) {
	s, _ := open(t, "")
	create(t, s, record("live", "", 2))
	dir := s.Dir("live")

	// A "process" (the Go model of libvgpu) charges memory and stays mapped.
	tenant, err := shm.OpenSlice(dir)
	require.NoError(t, err)
	defer tenant.Close()
	slot, err := tenant.Usage.ClaimSlot(shm.SlotIdentity{PID: os.Getpid(), PIDNamespace: 7, StartTime: 1234})
	require.NoError(t, err)
	require.True(t, tenant.Usage.Charge(slot, 0, 300*mib, 2*gib))
	require.True(t, tenant.Usage.Charge(slot, 1, 1500*mib, 2*gib))
	require.False(t, tenant.Usage.Charge(slot, 1, gib, 2*gib), "a refusal is counted too")

	paths := []string{filepath.Join(dir, "budget"), filepath.Join(dir, "usage"), filepath.Join(dir, RecordFile)}
	bytesBefore := map[string][]byte{}
	inodeBefore := map[string]uint64{}
	for _, p := range paths {
		bytesBefore[p], inodeBefore[p] = readFile(t, p), inode(t, p)
	}

	s2, logs := open(t, s.Root())
	ls := load(t, s2)
	require.Len(t, ls, 1)
	for _, p := range paths {
		require.Equal(t, inodeBefore[p], inode(t, p), "%s replaced", p)
		require.Equal(t, bytesBefore[p], readFile(t, p), "%s rewritten", p)
	}
	require.False(t, warned(logs, ""), "nothing to repair")

	u := ls[0].Slice.Usage
	require.Equal(t, uint64(300*mib), u.DeviceUsed(0))
	require.Equal(t, uint64(1500*mib), u.DeviceUsed(1))
	require.Equal(t, uint64(1), u.Device(1).RefusedAllocs)
	slots := u.Slots()
	require.Len(t, slots, 1)
	require.Equal(t, os.Getpid(), slots[0].PID)
	require.Equal(t, uint64(1234), slots[0].StartTime)

	// The tenant keeps charging after the restart and the daemon sees it: same file.
	require.True(t, tenant.Usage.Charge(slot, 0, 100*mib, 2*gib))
	require.Equal(t, uint64(400*mib), u.DeviceUsed(0))
}

// Each partial state a crash can leave, and what Load does with it.
func TestLoadPartialStates(t *testing.T) {
	type check func(t *testing.T, s *Store, ls []Loaded, logs *observer.ObservedLogs)
	loaded := func(want ...string) check {
		return func(t *testing.T, s *Store, ls []Loaded, _ *observer.ObservedLogs) {
			t.Helper()
			if want == nil {
				want = []string{}
			}
			require.Equal(t, want, ids(ls))
		}
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, s *Store)
		check []check
	}{
		{
			name:  "dir only (crash after mkdir)",
			setup: func(t *testing.T, s *Store) { require.NoError(t, os.Mkdir(s.Dir("x"), 0o755)) },
			check: []check{loaded(), gone("x")},
		},
		{
			name: "regions without record (crash before the record)",
			setup: func(t *testing.T, s *Store) {
				spec, err := Spec(record("x", "", 1))
				require.NoError(t, err)
				require.NoError(t, shm.CreateSlice(s.Dir("x"), spec))
			},
			check: []check{loaded(), gone("x")},
		},
		{
			name: "temporary files without record (crash while writing)",
			setup: func(t *testing.T, s *Store) {
				require.NoError(t, os.Mkdir(s.Dir("x"), 0o755))
				writeJunk(t, s.Dir("x"), ".budget.tmp-123", ".usage.tmp-9", ".slice.json.tmp-77")
			},
			check: []check{loaded(), gone("x")},
		},
		{
			name: "leftover temporary files beside an acknowledged slice",
			setup: func(t *testing.T, s *Store) {
				create(t, s, record("x", "", 1))
				writeJunk(t, s.Dir("x"), ".budget.tmp-123", ".slice.json.tmp-77")
			},
			check: []check{loaded("x"), contents("x", "budget", "slice.json", "usage")},
		},
		{
			name: "a .deleting leftover (crash during Delete)",
			setup: func(t *testing.T, s *Store) {
				create(t, s, record("x", "", 1))
				require.NoError(t, os.Rename(s.Dir("x"), filepath.Join(s.slices, ".x.deleting-123")))
				require.NoError(t, os.Mkdir(filepath.Join(s.slices, ".y.deleting-5"), 0o755)) // empty grave
			},
			check: []check{loaded(), onlyEntries()},
		},
		{
			name: "repair scratch and stray files in slices/",
			setup: func(t *testing.T, s *Store) {
				create(t, s, record("x", "", 1))
				spec, err := Spec(record("x", "", 1))
				require.NoError(t, err)
				require.NoError(t, shm.CreateSlice(filepath.Join(s.slices, ".x.repair-42"), spec))
				writeJunk(t, s.slices, "stray-file", ".hidden")
			},
			check: []check{loaded("x"), onlyEntries("x")},
		},
		{
			name: "record with missing usage",
			setup: func(t *testing.T, s *Store) {
				create(t, s, record("x", "", 2))
				require.NoError(t, os.Remove(filepath.Join(s.Dir("x"), "usage")))
			},
			check: []check{loaded("x"), repaired("x", "usage")},
		},
		{
			name: "record with truncated usage",
			setup: func(t *testing.T, s *Store) {
				create(t, s, record("x", "", 2))
				require.NoError(t, os.Truncate(filepath.Join(s.Dir("x"), "usage"), 100))
			},
			check: []check{loaded("x"), repaired("x", "usage")},
		},
		{
			name: "record with missing budget",
			setup: func(t *testing.T, s *Store) {
				create(t, s, record("x", "", 2))
				require.NoError(t, os.Remove(filepath.Join(s.Dir("x"), "budget")))
			},
			check: []check{loaded("x"), repaired("x", "budget")},
		},
		{
			name: "record with corrupt budget",
			setup: func(t *testing.T, s *Store) {
				create(t, s, record("x", "", 2))
				f, err := os.OpenFile(filepath.Join(s.Dir("x"), "budget"), os.O_WRONLY, 0)
				require.NoError(t, err)
				_, err = f.WriteAt([]byte("garbage!"), 0) // the magic
				require.NoError(t, err)
				require.NoError(t, f.Close())
			},
			check: []check{loaded("x"), repaired("x", "budget")},
		},
		{
			name: "budget of other devices than the record",
			setup: func(t *testing.T, s *Store) {
				create(t, s, record("x", "", 2))
				other := record("x", "", 2)
				other.Slice.Devices[1].UUID = uuid(7)
				spec, err := Spec(other)
				require.NoError(t, err)
				tmp := t.TempDir()
				require.NoError(t, shm.CreateSlice(tmp, spec))
				require.NoError(t, os.Rename(filepath.Join(tmp, "budget"), filepath.Join(s.Dir("x"), "budget")))
			},
			check: []check{loaded("x"), repaired("x", "budget")},
		},
		{
			name: "usage of another device count",
			setup: func(t *testing.T, s *Store) {
				create(t, s, record("x", "", 2))
				spec, err := Spec(record("x", "", 3))
				require.NoError(t, err)
				tmp := t.TempDir()
				require.NoError(t, shm.CreateSlice(tmp, spec))
				require.NoError(t, os.Rename(filepath.Join(tmp, "usage"), filepath.Join(s.Dir("x"), "usage")))
			},
			check: []check{loaded("x"), repaired("x", "usage")},
		},
		{
			name: "both regions missing",
			setup: func(t *testing.T, s *Store) {
				create(t, s, record("x", "", 1))
				require.NoError(t, os.Remove(filepath.Join(s.Dir("x"), "usage")))
				require.NoError(t, os.Remove(filepath.Join(s.Dir("x"), "budget")))
			},
			check: []check{loaded("x"), repaired("x", "budget", "usage")},
		},
		{
			name: "corrupt record",
			setup: func(t *testing.T, s *Store) {
				create(t, s, record("x", "", 1))
				require.NoError(t, os.WriteFile(filepath.Join(s.Dir("x"), RecordFile), []byte(`{"version":1,"slice":`), 0o644))
			},
			check: []check{loaded(), quarantined("x", "parse record")},
		},
		{
			name: "record of another version",
			setup: func(t *testing.T, s *Store) {
				create(t, s, record("x", "", 1))
				rewriteRecord(t, s, "x", func(m map[string]any) { m["version"] = 2 })
			},
			check: []check{loaded(), quarantined("x", "record version 2")},
		},
		{
			name: "record naming another slice",
			setup: func(t *testing.T, s *Store) {
				create(t, s, record("x", "", 1))
				rewriteRecord(t, s, "x", func(m map[string]any) { m["slice"].(map[string]any)["id"] = "y" })
			},
			check: []check{loaded(), quarantined("x", `names slice "y"`)},
		},
		{
			name: "record that makes no valid budget",
			setup: func(t *testing.T, s *Store) {
				create(t, s, record("x", "", 1))
				rewriteRecord(t, s, "x", func(m map[string]any) { m["slice"].(map[string]any)["qos"] = "gold" })
			},
			check: []check{loaded(), quarantined("x", "unknown qos")},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := open(t, "")
			create(t, s, record("keep", api.QoSBurstable, 1)) // a healthy neighbour
			tc.setup(t, s)
			s2, logs := open(t, s.Root())
			ls := load(t, s2)
			var rest []Loaded
			for _, l := range ls {
				if l.Record.Slice.ID != "keep" {
					rest = append(rest, l)
				}
			}
			require.Contains(t, ids(ls), "keep", "a healthy slice is always loaded")
			for _, c := range tc.check {
				c(t, s2, rest, logs)
			}
			// Loading again changes nothing and finds nothing more to fix.
			s3, logs3 := open(t, s.Root())
			again := load(t, s3)
			require.Equal(t, ids(ls), ids(again))
			require.False(t, warned(logs3, ""), "second load had to fix something: %v", logs3.All())
		})
	}
}

func gone(id string) func(*testing.T, *Store, []Loaded, *observer.ObservedLogs) {
	return func(t *testing.T, s *Store, _ []Loaded, _ *observer.ObservedLogs) {
		t.Helper()
		_, err := os.Stat(s.Dir(id))
		require.ErrorIs(t, err, os.ErrNotExist, "unacknowledged slice %s must be removed", id)
	}
}

func contents(id string, names ...string) func(*testing.T, *Store, []Loaded, *observer.ObservedLogs) {
	return func(t *testing.T, s *Store, _ []Loaded, _ *observer.ObservedLogs) {
		t.Helper()
		require.ElementsMatch(t, names, entries(t, s.Dir(id)))
	}
}

// onlyEntries: slices/ holds exactly these ids besides the healthy neighbour.
func onlyEntries(names ...string) func(*testing.T, *Store, []Loaded, *observer.ObservedLogs) {
	return func(t *testing.T, s *Store, _ []Loaded, _ *observer.ObservedLogs) {
		t.Helper()
		want := append([]string{"keep"}, names...)
		sort.Strings(want)
		require.Equal(t, want, entries(t, s.slices))
	}
}

// repaired: the named regions were recreated (fresh, valid, matching the
// record), the others kept as they were (same inode), and a warning logged.
func repaired(id string, names ...string) func(*testing.T, *Store, []Loaded, *observer.ObservedLogs) {
	return func(t *testing.T, s *Store, ls []Loaded, logs *observer.ObservedLogs) {
		t.Helper()
		require.Len(t, ls, 1)
		require.True(t, warned(logs, "recreating damaged slice regions"))
		sl := ls[0].Slice
		spec, err := Spec(ls[0].Record)
		require.NoError(t, err)
		require.Equal(t, spec.Devices, sl.Budget.Spec().Devices)
		require.Equal(t, len(spec.Devices), sl.Usage.DeviceCount())
		for d := range spec.Devices {
			require.Zero(t, sl.Usage.DeviceUsed(d))
		}
		require.ElementsMatch(t, []string{"budget", "usage", "slice.json"}, entries(t, s.Dir(id)))
		require.Equal(t, []string{"keep", id}, entries(t, s.slices), "no scratch dir left")
	}
}

func quarantined(id, why string) func(*testing.T, *Store, []Loaded, *observer.ObservedLogs) {
	return func(t *testing.T, s *Store, _ []Loaded, logs *observer.ObservedLogs) {
		t.Helper()
		_, err := os.Stat(s.Dir(id))
		require.ErrorIs(t, err, os.ErrNotExist, "moved out of slices/")
		q := entries(t, filepath.Join(s.Root(), "quarantine"))
		require.Len(t, q, 1)
		require.True(t, strings.HasPrefix(q[0], id+"-"), q[0])
		require.ElementsMatch(t, []string{"budget", "usage", "slice.json", NoteFile},
			entries(t, filepath.Join(s.Root(), "quarantine", q[0])), "kept whole for an operator, with a note")
		var found bool
		for _, e := range logs.FilterMessageSnippet("quarantine").All() {
			if e.Level == zapcore.ErrorLevel && strings.Contains(fmt.Sprint(e.ContextMap()["reason"]), why) {
				found = true
			}
		}
		require.True(t, found, "an error naming %q is logged: %v", why, logs.All())
		// The id is free again.
		create(t, s, record(id, "", 1))
		require.NoError(t, s.Delete(id))
	}
}

func writeJunk(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("partial"), 0o600))
	}
}

func rewriteRecord(t *testing.T, s *Store, id string, mut func(map[string]any)) {
	t.Helper()
	p := filepath.Join(s.Dir(id), RecordFile)
	var m map[string]any
	require.NoError(t, json.Unmarshal(readFile(t, p), &m))
	mut(m)
	b, err := json.Marshal(m)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, b, 0o644))
}

// A repair replaces only the damaged file: the usage file of a slice whose
// budget was corrupt keeps its inode and its tenant's counters.
func TestRepairKeepsTheGoodRegion(t *testing.T) {
	s, _ := open(t, "")
	create(t, s, record("x", "", 1))
	dir := s.Dir("x")
	tenant, err := shm.OpenSlice(dir)
	require.NoError(t, err)
	slot, err := tenant.Usage.ClaimSlot(shm.SlotIdentity{PID: os.Getpid()})
	require.NoError(t, err)
	require.True(t, tenant.Usage.Charge(slot, 0, 700*mib, 2*gib))
	require.NoError(t, tenant.Close())

	usage := filepath.Join(dir, "usage")
	ino, content := inode(t, usage), readFile(t, usage)
	budgetIno := inode(t, filepath.Join(dir, "budget"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "budget"), []byte("not a budget"), 0o644))
	require.Equal(t, budgetIno, inode(t, filepath.Join(dir, "budget")), "(written in place)")

	s2, logs := open(t, s.Root())
	ls := load(t, s2)
	require.Len(t, ls, 1)
	require.True(t, warned(logs, "recreating damaged slice regions"))
	require.Equal(t, ino, inode(t, usage))
	require.Equal(t, content, readFile(t, usage))
	require.Equal(t, uint64(700*mib), ls[0].Slice.Usage.DeviceUsed(0))
	require.NotEqual(t, budgetIno, inode(t, filepath.Join(dir, "budget")), "the budget was replaced")
	require.Equal(t, uint64(2*gib), ls[0].Slice.Budget.MemoryLimit(0))

	// And the other way round: a missing usage file leaves the budget's inode.
	bIno, bContent := inode(t, filepath.Join(dir, "budget")), readFile(t, filepath.Join(dir, "budget"))
	for _, l := range ls {
		require.NoError(t, l.Slice.Close())
	}
	require.NoError(t, os.Remove(usage))
	s3, _ := open(t, s.Root())
	ls = load(t, s3)
	require.Len(t, ls, 1)
	require.Equal(t, bIno, inode(t, filepath.Join(dir, "budget")))
	require.Equal(t, bContent, readFile(t, filepath.Join(dir, "budget")))
	require.Zero(t, ls[0].Slice.Usage.DeviceUsed(0))
}

// What is on disk after each step of Create and Delete, and what Load makes of
// it: a copy of the state directory is taken at every step (as a crash there
// would leave it) and loaded. Before the record is in place the slice does not
// exist; from then on it does, whole.
func TestCrashAtEveryStep(t *testing.T) {
	s, _ := open(t, "")
	create(t, s, record("old", "", 1))
	snaps := map[string]string{}
	s.hook = func(step string) error {
		dst := filepath.Join(t.TempDir(), "state")
		copyTree(t, s.Root(), dst)
		snaps[step] = dst
		return nil
	}
	sl, err := s.Create(record("new", "", 2))
	require.NoError(t, err)
	require.NoError(t, sl.Close())
	require.NoError(t, s.Delete("old"))

	want := map[string][]string{
		"mkdir":   {"old"},        // empty slice dir: dropped
		"regions": {"old"},        // regions, no record: dropped
		"record":  {"new", "old"}, // record in place: acknowledged from here on
		"synced":  {"new", "old"},
		"grave":   {"new", "old"}, // Delete made its empty target only
		"renamed": {"new"},        // the rename is the delete
	}
	require.Len(t, snaps, len(want))
	for step, ids0 := range want {
		t.Run(step, func(t *testing.T) {
			s2, _ := open(t, snaps[step])
			require.Equal(t, ids0, ids(load(t, s2)))
			require.Equal(t, ids0, entries(t, s2.slices), "every leftover removed")
		})
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	require.NoError(t, filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, fi.Mode().Perm())
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_EXCL, fi.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}))
}

// Creates and deletes of different ids may run at once.
func TestConcurrentCreateDelete(t *testing.T) {
	s, _ := open(t, "")
	const n = 32
	errs := make(chan error, 2*n)
	done := make(chan struct{})
	for i := 0; i < n; i++ {
		go func(i int) {
			defer func() { done <- struct{}{} }()
			id := fmt.Sprintf("s%02d", i)
			sl, err := s.Create(record(id, "", 1))
			if err != nil {
				errs <- err
				return
			}
			sl.Close()
			if i%2 == 0 {
				if err := s.Delete(id); err != nil {
					errs <- err
				}
			}
		}(i)
	}
	for i := 0; i < n; i++ {
		<-done
	}
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	s2, _ := open(t, s.Root())
	ls := load(t, s2)
	require.Len(t, ls, n/2)
	for _, l := range ls {
		var i int
		_, err := fmt.Sscanf(l.Record.Slice.ID, "s%d", &i)
		require.NoError(t, err)
		require.Equal(t, 1, i%2)
	}
}
