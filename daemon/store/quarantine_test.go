package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
)

// corruptRecord makes slice id's record unreadable.
func corruptRecord(t *testing.T, s *Store, id string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(s.Dir(id), RecordFile), []byte(`{"version":1,"slice":`), 0o644))
}

// quarantinedOne reopens the store, loads it (x is quarantined) and returns the
// one quarantined entry.
func quarantinedOne(t *testing.T, root string) (*Store, Quarantined) {
	t.Helper()
	s, _ := open(t, root)
	load(t, s)
	qs, err := s.Quarantined()
	require.NoError(t, err)
	require.Len(t, qs, 1)
	return s, qs[0]
}

// A quarantined slice is listed with why and when, and with the record its
// budget stands for: what it was granted, owner aside.
func TestQuarantinedRebuiltFromBudget(t *testing.T) {
	for _, qos := range []api.QoS{api.QoSGuaranteed, api.QoSBurstable, api.QoSBestEffort} {
		t.Run(string(qos), func(t *testing.T) {
			s, _ := open(t, "")
			rec := record("x", qos, 2)
			rec.Slice.Devices[1].ComputePercent = 0 // no share asked on one device
			create(t, s, rec)
			corruptRecord(t, s, "x")
			before := time.Now()

			s2, q := quarantinedOne(t, s.Root())
			require.True(t, strings.HasPrefix(q.Name, "x-"), q.Name)
			require.Equal(t, "x", q.ID)
			require.Equal(t, filepath.Join(s2.Root(), "quarantine", q.Name), q.Dir)
			require.Contains(t, q.Reason, "parse record")
			require.WithinDuration(t, before, q.At, time.Minute)
			require.NoError(t, q.BudgetErr)
			require.NotNil(t, q.Rebuilt)
			got := q.Rebuilt
			require.Equal(t, rec.Slice.Devices, got.Slice.Devices)
			require.Equal(t, qos, got.Slice.QoS)
			require.Equal(t, api.ComputePolicyCap, got.Slice.ComputePolicy)
			require.Equal(t, rec.Slice.Priority, got.Slice.Priority)
			require.Equal(t, rec.ContextOverhead, got.ContextOverhead)
			require.Equal(t, api.Owner{}, got.Slice.Owner, "the owner is not in the budget")
			require.WithinDuration(t, before, got.Slice.CreatedAt, time.Minute)
		})
	}
}

// A share-policy slice is rebuilt as one: the policy is in its budget.
func TestQuarantinedRebuiltPolicy(t *testing.T) {
	s, _ := open(t, "")
	rec := record("x", api.QoSBurstable, 1)
	rec.Slice.ComputePolicy = api.ComputePolicyShare
	create(t, s, rec)
	corruptRecord(t, s, "x")
	_, q := quarantinedOne(t, s.Root())
	require.NotNil(t, q.Rebuilt)
	require.Equal(t, api.ComputePolicyShare, q.Rebuilt.Slice.ComputePolicy)
	require.Equal(t, api.ComputePolicyShare, q.Rebuilt.Request.ComputePolicy)
	spec, err := Spec(*q.Rebuilt)
	require.NoError(t, err)
	require.Equal(t, uint32(shm.PolicyShare), spec.Policy)
}

// A budget that is unreadable, or not one vgpud writes, rebuilds nothing.
func TestQuarantinedBudgetUnusable(t *testing.T) {
	cases := map[string]func(t *testing.T, dir string){
		"junk": func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, shm.BudgetFile), []byte("not a budget"), 0o644))
		},
		"missing": func(t *testing.T, dir string) {
			require.NoError(t, os.Remove(filepath.Join(dir, shm.BudgetFile)))
		},
		"another slice's": func(t *testing.T, dir string) {
			other := t.TempDir()
			spec, err := Spec(record("y", "", 1))
			require.NoError(t, err)
			require.NoError(t, shm.CreateSlice(other, spec))
			require.NoError(t, os.Rename(filepath.Join(other, shm.BudgetFile), filepath.Join(dir, shm.BudgetFile)))
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			s, _ := open(t, "")
			create(t, s, record("x", "", 1))
			corruptRecord(t, s, "x")
			damage(t, s.Dir("x"))
			s2, q := quarantinedOne(t, s.Root())
			require.Nil(t, q.Rebuilt)
			require.Error(t, q.BudgetErr)
			_, err := s2.Unquarantine(q)
			require.ErrorIs(t, err, ErrNoBudget)
			require.DirExists(t, q.Dir, "left as it was")
		})
	}
}

// RecordFromBudget refuses a budget that is not exactly what vgpud writes.
func TestRecordFromBudgetChecks(t *testing.T) {
	good, err := Spec(record("x", "", 2))
	require.NoError(t, err)
	_, err = RecordFromBudget("x", good, time.Time{})
	require.NoError(t, err)
	cases := map[string]func(s *shm.SliceSpec){
		"another id":          func(s *shm.SliceSpec) { s.ID = "y" },
		"no uuid":             func(s *shm.SliceSpec) { s.Devices[1].UUID = "" },
		"two overheads":       func(s *shm.SliceSpec) { s.Devices[1].ContextOverhead++ },
		"guarantee not held":  func(s *shm.SliceSpec) { s.Devices[0].MemoryGuaranteed = 0 },
		"floor below share":   func(s *shm.SliceSpec) { s.Devices[0].ComputeFloorBP = 100 },
		"invalid":             func(s *shm.SliceSpec) { s.Devices[0].MemoryLimit = 0 },
		"unknown qos":         func(s *shm.SliceSpec) { s.QoS = 9 },
		"unknown policy":      func(s *shm.SliceSpec) { s.Policy = 7 },
		"a device twice":      func(s *shm.SliceSpec) { s.Devices[1].UUID = s.Devices[0].UUID },
		"guarantee in excess": func(s *shm.SliceSpec) { s.Devices[1].MemoryLimit = 1 },
	}
	for name, mut := range cases {
		t.Run(name, func(t *testing.T) {
			spec := good
			spec.Devices = append([]shm.DeviceBudget(nil), good.Devices...)
			mut(&spec)
			_, err := RecordFromBudget("x", spec, time.Time{})
			require.Error(t, err)
		})
	}
}

// Unquarantine makes the slice live again under its id with a record rebuilt
// from its budget, its regions untouched: a tenant's charge is still there.
func TestUnquarantine(t *testing.T) {
	s, _ := open(t, "")
	create(t, s, record("x", "", 1))
	tenant, err := shm.OpenSlice(s.Dir("x"))
	require.NoError(t, err)
	defer tenant.Close()
	slot, err := tenant.Usage.ClaimSlot(shm.SlotIdentity{PID: os.Getpid()})
	require.NoError(t, err)
	require.True(t, tenant.Usage.Charge(slot, 0, 700*mib, 2*gib))
	usageIno := inode(t, filepath.Join(s.Dir("x"), shm.UsageFile))
	corruptRecord(t, s, "x")

	s2, q := quarantinedOne(t, s.Root())
	// Its id is in use again meanwhile: refused, left in quarantine.
	create(t, s2, record("x", api.QoSBurstable, 1))
	_, err = s2.Unquarantine(q)
	require.ErrorIs(t, err, ErrExists)
	require.DirExists(t, q.Dir)
	require.NoError(t, s2.Delete("x"))

	l, err := s2.Unquarantine(q)
	require.NoError(t, err)
	defer l.Slice.Close()
	require.Equal(t, s2.Dir("x"), l.Record.Slice.Dir)
	require.Equal(t, record("x", "", 1).Slice.Devices, l.Record.Slice.Devices)
	require.Equal(t, uint64(700*mib), l.Slice.Usage.DeviceUsed(0), "the tenant's charge is kept")
	require.Equal(t, usageIno, inode(t, filepath.Join(s2.Dir("x"), shm.UsageFile)))
	require.ElementsMatch(t, []string{"budget", "usage", "slice.json"}, entries(t, s2.Dir("x")))
	require.Empty(t, entries(t, filepath.Join(s2.Root(), "quarantine")))

	// It stays live across a restart.
	s3, _ := open(t, s.Root())
	require.Equal(t, []string{"x"}, ids(load(t, s3)))
	qs, err := s3.Quarantined()
	require.NoError(t, err)
	require.Empty(t, qs)
}

// RemoveQuarantined removes the files; a tenant's mapping survives.
func TestRemoveQuarantined(t *testing.T) {
	s, _ := open(t, "")
	create(t, s, record("x", "", 1))
	tenant, err := shm.OpenSlice(s.Dir("x"))
	require.NoError(t, err)
	defer tenant.Close()
	corruptRecord(t, s, "x")

	s2, q := quarantinedOne(t, s.Root())
	require.NoError(t, s2.RemoveQuarantined(q))
	require.NoDirExists(t, q.Dir)
	require.Empty(t, entries(t, filepath.Join(s2.Root(), "quarantine")))
	require.ErrorIs(t, s2.RemoveQuarantined(q), ErrNotFound)
	require.Equal(t, uint64(2*gib), tenant.Budget.MemoryLimit(0), "still mapped")
	qs, err := s2.Quarantined()
	require.NoError(t, err)
	require.Empty(t, qs)
}

// An entry an older vgpud quarantined (no note) is listed, its id and time
// from its name; leftovers of an interrupted removal are removed.
func TestQuarantinedWithoutNote(t *testing.T) {
	s, _ := open(t, "")
	create(t, s, record("job-1", "", 1))
	qdir := filepath.Join(s.Root(), "quarantine")
	require.NoError(t, os.MkdirAll(qdir, 0o755))
	require.NoError(t, os.Rename(s.Dir("job-1"), filepath.Join(qdir, "job-1-1700000000000000000")))
	require.NoError(t, os.Mkdir(filepath.Join(qdir, ".job-1.deleting-123"), 0o755))
	require.NoError(t, os.Mkdir(filepath.Join(qdir, "not-ours"), 0o755))

	qs, err := s.Quarantined()
	require.NoError(t, err)
	require.Len(t, qs, 1)
	require.Equal(t, "job-1", qs[0].ID)
	require.Equal(t, time.Unix(0, 1700000000000000000).UTC(), qs[0].At)
	require.Contains(t, qs[0].Reason, "not recorded")
	require.NotNil(t, qs[0].Rebuilt)
	require.ElementsMatch(t, []string{"job-1-1700000000000000000", "not-ours"}, entries(t, qdir))
}

// A slice that cannot be moved into quarantine/ stays in slices/ and is listed
// all the same; it can be restored in place.
func TestQuarantineStuckInPlace(t *testing.T) {
	s, _ := open(t, "")
	create(t, s, record("x", "", 1))
	corruptRecord(t, s, "x")
	// quarantine/ cannot be made.
	require.NoError(t, os.WriteFile(filepath.Join(s.Root(), "quarantine"), nil, 0o644))

	s2, q := quarantinedOne(t, s.Root())
	require.Equal(t, "x", q.Name)
	require.Equal(t, s2.Dir("x"), q.Dir)
	require.Contains(t, q.Reason, "parse record")
	require.NotNil(t, q.Rebuilt)
	l, err := s2.Unquarantine(q)
	require.NoError(t, err)
	defer l.Slice.Close()
	require.Equal(t, "x", l.Record.Slice.ID)
	qs, err := s2.Quarantined()
	require.NoError(t, err)
	require.Empty(t, qs, "resolved")
}
