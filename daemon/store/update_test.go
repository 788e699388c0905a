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
