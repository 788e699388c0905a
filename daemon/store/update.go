package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
)

// Update replaces a live slice's record (a changed compute share or policy):
// written like every record, to a temporary name, fsynced, renamed over
// slice.json and the directory fsynced, so a crash leaves either the old record
// or the new one, never a mix. The regions are not touched here: the caller
// writes the budget after (SetCompute), and Load brings a budget that a crash
// left behind its record back to the record (syncCompute).
func (s *Store) Update(rec Record) error {
	id := rec.Slice.ID
	if err := ValidateID(id); err != nil {
		return fmt.Errorf("update slice: %w", err)
	}
	if _, err := Spec(rec); err != nil {
		return fmt.Errorf("update slice %s: %w", id, err)
	}
	dir := s.Dir(id)
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("update slice %s: %w", id, ErrNotFound)
		}
		return fmt.Errorf("update slice %s: %w", id, err)
	}
	if err := s.step("update"); err != nil {
		return err
	}
	rec.Slice.Dir = dir
	rec.Slice.Tampered = "" // the region watch's mark is never recorded
	if err := writeRecord(dir, rec); err != nil {
		return fmt.Errorf("update slice %s: %w", id, err)
	}
	return nil
}

// SetCompute writes the compute part of spec (per device the share, the
// floor and the share's static token bucket; the policy) into a writable
// budget, each change under the budget's seqlock, so libvgpu never reads a
// torn value and throttles by the new share from its next launch, before a
// controller has stepped with it. spec is Spec of the slice's record: the one
// request -> budget rule. The caller is the budget's only writer meanwhile.
func SetCompute(b *shm.BudgetRegion, spec shm.SliceSpec) error {
	if b.DeviceCount() != len(spec.Devices) {
		return fmt.Errorf("set compute: budget has %d devices, the record %d", b.DeviceCount(), len(spec.Devices))
	}
	for d, db := range spec.Devices {
		if err := b.SetComputeShare(d, db.ComputeShareBP, db.ComputeFloorBP); err != nil {
			return fmt.Errorf("set compute: device %d: %w", d, err)
		}
		if err := b.SetTokenBucket(d, db.TokenRate, db.TokenBurst); err != nil {
			return fmt.Errorf("set compute: device %d: %w", d, err)
		}
	}
	if err := b.SetPolicy(spec.Policy); err != nil {
		return fmt.Errorf("set compute: %w", err)
	}
	return nil
}

// syncMemory brings a re-adopted slice's memory limits and their record
// together. vgpud writes an elastic change (a grant, a shrink) into the
// budget first — the budget is a file only vgpud writes, which a crash of
// vgpud does not lose — and records it right after; a crash in between leaves
// the budget ahead of the record. So where a device's limit differs from the
// record's and lies within the slice's base and ceiling, the budget is the
// truth and the record follows it (the grant becomes limit − base; loans
// beyond it are dropped, the first lenders kept): changed is true and the
// caller rewrites the record. A limit outside that range (no ceiling, or a
// value vgpud cannot have written) is set from the record. Ceilings are always
// set from the record.
func syncMemory(b *shm.BudgetRegion, rec *Record, spec shm.SliceSpec, log *zap.Logger) (changed bool, err error) {
	for d, db := range spec.Devices {
		if d >= b.DeviceCount() || d >= len(rec.Slice.Devices) {
			break
		}
		if lim := b.MemoryLimit(d); lim != db.MemoryLimit {
			sd := &rec.Slice.Devices[d]
			if sd.Elastic() && lim >= sd.MemoryBytes && lim <= sd.MemoryMaxBytes {
				log.Info("budget's memory limit differs from its record (an elastic change not yet recorded): the record follows",
					zap.String("slice", spec.ID), zap.Int("device", d), zap.Uint64("budget", lim),
					zap.Uint64("record", db.MemoryLimit))
				sd.GrantedBytes = lim - sd.MemoryBytes
				sd.Loans = api.TrimLoans(sd.Loans, sd.GrantedBytes)
				changed = true
			} else {
				log.Warn("budget's memory limit differs from its record: set from the record",
					zap.String("slice", spec.ID), zap.Int("device", d), zap.Uint64("budget", lim),
					zap.Uint64("record", db.MemoryLimit))
				if err := b.SetMemoryLimit(d, db.MemoryLimit); err != nil {
					return false, fmt.Errorf("sync memory: device %d: %w", d, err)
				}
			}
		}
		if b.MemoryMax(d) != db.MemoryMax {
			if err := b.SetMemoryMax(d, db.MemoryMax); err != nil {
				return false, fmt.Errorf("sync memory: device %d: %w", d, err)
			}
		}
	}
	return changed, nil
}

// computeDiffers reports whether b's compute share, floor or policy is not
// what spec says: the record was updated and a crash came before the budget
// was.
func computeDiffers(b *shm.BudgetRegion, spec shm.SliceSpec) bool {
	if b.Policy() != spec.Policy {
		return true
	}
	for d, db := range spec.Devices {
		got := b.Device(d)
		if got.ComputeShareBP != db.ComputeShareBP || got.ComputeFloorBP != db.ComputeFloorBP {
			return true
		}
	}
	return false
}
