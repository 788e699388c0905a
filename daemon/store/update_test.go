package store

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
)

// Update rewrites the record atomically; a failure before the rename leaves
// the old record, and an unknown slice is ErrNotFound.
func TestUpdateRecord(t *testing.T) {
	s, _ := open(t, "")
	rec := record("a", api.QoSGuaranteed, 2)
	create(t, s, rec)
	path := filepath.Join(s.Dir("a"), RecordFile)
	old := readFile(t, path)

	next := rec
	next.Slice.Devices = append([]api.SliceDevice(nil), rec.Slice.Devices...)
	next.Slice.Devices[1].ComputePercent = 70
	next.Slice.ComputePolicy = api.ComputePolicyShare
	next.Slice.Tampered = "usage file grown"

	s.hook = func(step string) error {
		if step == "update" {
			return errors.New("injected")
		}
		return nil
	}
	require.Error(t, s.Update(next))
	require.Equal(t, old, readFile(t, path), "a failed update leaves the old record")
	require.Equal(t, []string{shm.BudgetFile, RecordFile, shm.UsageFile}, entries(t, s.Dir("a")), "no temporary left")
	s.hook = nil

	require.NoError(t, s.Update(next))
	got, err := parseRecord(readFile(t, path), "a")
	require.NoError(t, err)
	require.Equal(t, 70.0, got.Slice.Devices[1].ComputePercent)
	require.Equal(t, api.ComputePolicyShare, got.Slice.ComputePolicy)
	require.Empty(t, got.Slice.Tampered, "the region watch's mark is not recorded")

	require.ErrorIs(t, s.Update(record("nope", api.QoSGuaranteed, 1)), ErrNotFound)
	bad := next
	bad.Slice.Devices = append([]api.SliceDevice(nil), next.Slice.Devices...)
	bad.Slice.Devices[0].ComputePercent = 101
	require.Error(t, s.Update(bad), "a record that makes no budget")
}

// A crash after an update's record but before its budget: Load sets the
// budget's share, floor and policy from the record; an agreeing budget is
// left as it is (its token rate is the controller's).
func TestLoadSetsComputeFromUpdatedRecord(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir)
	rec := record("a", api.QoSGuaranteed, 1)
	create(t, s, rec)
	create(t, s, record("b", api.QoSGuaranteed, 1))
	next := rec
	next.Slice.Devices = []api.SliceDevice{rec.Slice.Devices[0]}
	next.Slice.Devices[0].ComputePercent = 60
	require.NoError(t, s.Update(next)) // and "crash": the budget is not written

	bb, err := shm.OpenBudget(filepath.Join(s.Dir("b"), shm.BudgetFile), true)
	require.NoError(t, err)
	require.NoError(t, bb.SetTokenBucket(0, 12345, 678)) // the controller's rate
	require.NoError(t, bb.Close())

	s2, logs := open(t, dir)
	ls := load(t, s2)
	require.Equal(t, []string{"a", "b"}, ids(ls))
	da := ls[0].Slice.Budget.Device(0)
	require.Equal(t, uint32(6000), da.ComputeShareBP)
	require.Equal(t, uint32(6000), da.ComputeFloorBP)
	rate, _ := shm.StaticTokenBucket(6000)
	require.Equal(t, rate, da.TokenRate)
	require.True(t, warned(logs, "behind its record"))
	rate, burst := ls[1].Slice.Budget.TokenBucket(0)
	require.Equal(t, []uint64{12345, 678}, []uint64{rate, burst}, "an agreeing budget is re-adopted untouched")
}

// An elastic change is written into the budget before its record: after a
// crash in between, Load makes the record follow a budget that is within the
// slice's base and ceiling (the grant is limit − base, loans trimmed to it)
// and sets from the record a limit that is not (a slice that cannot grow, or
// a value vgpud cannot have written).
func TestLoadRecordFollowsElasticBudget(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir)
	el := record("el", api.QoSBurstable, 1)
	el.Slice.Devices[0].MemoryMaxBytes = 8 * gib
	el.Slice.Devices[0].GrantedBytes = 3 * gib
	el.Slice.Devices[0].Loans = []api.Loan{{From: "x", Bytes: 2 * gib}, {From: "y", Bytes: gib}}
	create(t, s, el)
	create(t, s, record("plain", api.QoSGuaranteed, 1))
	setLimit := func(id string, v uint64) {
		b, err := shm.OpenBudget(filepath.Join(s.Dir(id), shm.BudgetFile), true)
		require.NoError(t, err)
		require.NoError(t, b.SetMemoryLimit(0, v))
		require.NoError(t, b.Close())
	}
	setLimit("el", 3*gib+512*mib) // shrunk by 1.5 GiB, then "crash"
	setLimit("plain", 5*gib)      // cannot grow: not vgpud's

	s2, _ := open(t, dir)
	ls := load(t, s2)
	require.Equal(t, []string{"el", "plain"}, ids(ls))
	d := ls[0].Record.Slice.Devices[0]
	require.Equal(t, uint64(gib+512*mib), d.GrantedBytes, "the record follows the budget")
	require.Equal(t, []api.Loan{{From: "x", Bytes: gib + 512*mib}}, d.Loans)
	require.Equal(t, uint64(3*gib+512*mib), ls[0].Slice.Budget.MemoryLimit(0))
	onDisk, err := parseRecord(readFile(t, filepath.Join(s.Dir("el"), RecordFile)), "el")
	require.NoError(t, err)
	require.Equal(t, d, onDisk.Slice.Devices[0], "and is rewritten")
	require.Equal(t, uint64(2*gib), ls[1].Slice.Budget.MemoryLimit(0), "set from the record")
}
