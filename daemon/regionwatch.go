package daemon

import (
	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/shm"
)

// regionFile is what the region watch needs of a mapped region file: both
// shm.UsageRegion and shm.BudgetRegion keep their descriptor open for it.
type regionFile interface {
	CheckFile() (shm.FileCheck, error)
	TrimFile() error
	Path() string
}

// regionWatch is the enforcer loop's check of every slice's region files
// (loop goroutine only; it keeps no state of its own: a slice's mark is its
// record's Tampered field).
//
// A usage file is writable by its tenant, who can grow it (to fill the
// filesystem the regions live on), shrink it (so that whoever reads the
// mapping faults), punch holes in it or, with access to the directory,
// replace it. Every tick each region file of each enforced slice gets one
// fstat(2) on the descriptor its region keeps (no path lookup, no allocation)
// and is compared with what was mapped. A change marks the slice tampered:
// logged once, counted (vgpu_region_tamper_events_total), shown by the API
// (api.Slice.Tampered: vgpuctl slices and top) and exported as
// vgpu_slice_tampered. A grown file is also cut back to its size at once and
// on every later tick, so the space it took returns to the filesystem for the
// other slices' regions and vgpud's records. A shrunk file is left alone: only
// the tenant's own processes fault on it, and vgpud reads usage files only
// inside shm's fault guard (the enforcer's scan, Reclaim, the compute
// controller's throttle counters).
type regionWatch struct{}

// check runs the watch over the loop's view.
func (regionWatch) check(s *Server, view []*sliceEntry) {
	for _, e := range view {
		if e.region == nil {
			continue
		}
		if e.region.Usage != nil {
			checkRegionFile(s, e, shm.UsageFile, e.region.Usage)
		}
		if e.region.Budget != nil {
			checkRegionFile(s, e, shm.BudgetFile, e.region.Budget)
		}
	}
}

// checkRegionFile checks one region file of e, trims it when it grew and
// marks e tampered on the first change.
func checkRegionFile(s *Server, e *sliceEntry, name string, f regionFile) {
	c, err := f.CheckFile()
	if err != nil || !c.Changed() {
		return // closed under us: the slice is being released
	}
	if c.Grown() {
		if err := f.TrimFile(); err != nil && e.rec.Slice.Tampered == "" {
			s.log.Error("cannot cut a grown region file back to its size", zap.String("slice", e.rec.Slice.ID),
				zap.String("path", f.Path()), zap.Error(err))
		}
	}
	// The loop is the only writer of Tampered, so reading it here takes no lock.
	if e.rec.Slice.Tampered != "" {
		return
	}
	what := name + " file " + c.String()
	s.mu.Lock()
	live := !e.releasing && s.slices[e.rec.Slice.ID] == e
	if live {
		// A release unlinks the files: only a live slice's change is the tenant's.
		e.rec.Slice.Tampered = what
	}
	owner := ownerDesc(e.rec.Slice.Owner) // an update may change its pods
	s.mu.Unlock()
	if !live {
		return
	}
	s.metrics.ObserveTamper()
	s.log.Warn("slice region tampered with", zap.String("slice", e.rec.Slice.ID), zap.String("file", name),
		zap.String("path", f.Path()), zap.String("change", what), zap.Int64("size", c.Size),
		zap.Int64("mapped_size", c.WantSize), zap.Uint64("links", c.Links), zap.Bool("holes", c.Holes),
		zap.String("owner", owner),
		zap.String("consequence", "its regions are read only through a fault guard; a grown file is cut back every tick"))
}
