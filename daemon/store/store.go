// Package store keeps vgpud's slices on disk so that they survive a crash or a
// restart:
//
//	<state>/slices/<id>/slice.json   the record: what was asked and granted (JSON, versioned)
//	<state>/slices/<id>/budget       the budget region (DESIGN §3), 0644
//	<state>/slices/<id>/usage        the usage region, 0666 (0600, its owner's, for a process owner)
//	<state>/quarantine/<id>-<ns>/    acknowledged slices that could not be re-adopted
//
// # Crash consistency
//
// A slice is acknowledged once its slice.json is durable; nothing else commits.
// Create makes, in order:
//
//  1. slices/<id>/ (mkdir, exclusive: an id in use is refused);
//  2. the two regions (shm.CreateSliceWith: temporary files renamed into
//     place, not fsynced: step 3's directory fsync makes the renames durable,
//     and Load recreates a pair whose contents a power loss damaged);
//  3. slice.json (written to a temporary name, fsynced, renamed into place,
//     the slice directory fsynced), then slices/ is fsynced so the slice's own
//     directory entry is durable too. Only then does Create return.
//
// A crash before step 3's rename leaves a directory without slice.json (possibly
// with temporary files or complete regions): never acknowledged, so Load removes
// it. A crash after the rename but before the reply leaves a durable slice the
// client never heard of (as with any lost reply); it carries its owner, so owner
// liveness releases it, and a retry with the same id gets "exists".
//
// Delete renames slices/<id> to a fresh slices/.<id>.deleting-* name (one atomic
// rename: the record vanishes with its directory), fsyncs slices/ (the delete is
// now durable) and then removes the renamed tree. Load removes any such
// leftover, and anything else in slices/ whose name is not a slice id.
//
// Load re-adopts each recorded slice whose regions are intact WITHOUT rewriting
// them: they are mapped, never recreated, so the processes using them and their
// counters carry on. A region that is missing, corrupt or describes other devices
// than the record is recreated from the record (the other one is kept) and a
// warning logged: processes that still map a replaced usage file are no longer
// seen. A record that cannot be read is moved to quarantine/ (logged), never
// deleted, with a note saying why and when (quarantine.go): vgpud keeps
// booking what the slice held until an operator releases or restores it.
//
// Update rewrites a live slice's record the same way (a changed compute share
// or policy), before vgpud writes the budget; Load sets a budget whose compute
// share, floor or policy differ from its record (a crash between the two) from
// the record.
//
// Load must run alone (at startup); Create, Update and Delete may run
// concurrently for different ids.
package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/atomicfile"
	"github.com/vgpu-project/vgpu/shm"
)

const (
	// RecordFile is a slice's record inside its directory.
	RecordFile = "slice.json"
	// RecordVersion is the version of the record format this code writes and
	// reads; a record of another version is quarantined, not guessed at.
	RecordVersion = 1

	slicesDir     = "slices"
	quarantineDir = "quarantine"
	deletingTag   = ".deleting-"
	repairTag     = ".repair-"
)

var (
	// ErrInvalidID is wrapped for a slice id that is not a safe directory name.
	ErrInvalidID = errors.New("invalid slice id")
	// ErrExists is wrapped by Create when the id is in use.
	ErrExists = errors.New("slice already exists")
	// ErrNotFound is wrapped by Delete when there is no such slice.
	ErrNotFound = errors.New("no such slice")
)

// ValidateID reports whether id can name a slice.
func ValidateID(id string) error {
	if !api.ValidSliceID(id) {
		return fmt.Errorf("%w %q: want %s", ErrInvalidID, id, api.SliceIDRule)
	}
	return nil
}

// Record is what the store keeps about a slice.
type Record struct {
	Slice   api.Slice        `json:"slice"`
	Request api.AllocRequest `json:"request"`
	// ContextOverhead is charged per CUDA context on each device of the slice.
	ContextOverhead uint64 `json:"context_overhead"`
}

// recordFile is slice.json: the record and its format version.
type recordFile struct {
	Version int `json:"version"`
	Record
}

// Loaded is a slice re-adopted by Load, with its regions mapped.
type Loaded struct {
	Record
	Slice *shm.Slice
}

// Store is the on-disk state under one directory.
type Store struct {
	root   string
	slices string
	log    *zap.Logger
	// hook, when set (tests only), is called after each step of Create and
	// Delete with the step's name; an error makes the operation fail there. The
	// tests use it to see what is on disk at every step and to exercise the
	// clean-up paths.
	hook func(step string) error
	// stuck are the slices Load could not move into quarantine/ (left in
	// slices/, listed by Quarantined all the same). Load runs alone.
	stuck []Quarantined
}

// step runs the test hook, if any.
func (s *Store) step(name string) error {
	if s.hook == nil {
		return nil
	}
	return s.hook(name)
}

// Open makes (0755) and opens the state directory. log may be nil.
func Open(stateDir string, log *zap.Logger) (*Store, error) {
	if log == nil {
		log = zap.NewNop()
	}
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, fmt.Errorf("open state dir %s: %w", stateDir, err)
	}
	s := &Store{root: abs, slices: filepath.Join(abs, slicesDir), log: log}
	if err := os.MkdirAll(s.slices, 0o755); err != nil {
		return nil, fmt.Errorf("open state dir %s: %w", stateDir, err)
	}
	return s, nil
}

// Root is the state directory (absolute).
func (s *Store) Root() string { return s.root }

// Dir is where the slice id lives (its region files and record).
func (s *Store) Dir(id string) string { return filepath.Join(s.slices, id) }

// Spec is the budget a record stands for (api.SliceBudget.Spec: the one
// request -> budget conversion), with the record's context overhead.
func Spec(rec Record) (shm.SliceSpec, error) {
	sl := &rec.Slice
	return api.SliceBudget{
		ID:              sl.ID,
		Devices:         sl.Devices,
		QoS:             sl.QoS,
		Priority:        sl.Priority,
		ComputePolicy:   sl.ComputePolicy,
		ContextOverhead: rec.ContextOverhead,
		Booked:          true,
		Managed:         true,
	}.Spec()
}

// Create writes a new slice (see the package comment for the steps) and returns
// its regions, mapped (the budget writable: vgpud is its only writer). The
// record is written with Slice.Dir set to Dir(id). On any error nothing it made
// is left behind.
func (s *Store) Create(rec Record) (sl *shm.Slice, err error) {
	id := rec.Slice.ID
	if err := ValidateID(id); err != nil {
		return nil, fmt.Errorf("create slice: %w", err)
	}
	spec, err := Spec(rec)
	if err != nil {
		return nil, fmt.Errorf("create slice %s: %w", id, err)
	}
	dir := s.Dir(id)
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("create slice %s: %w", id, ErrExists)
		}
		return nil, fmt.Errorf("create slice %s: %w", id, err)
	}
	defer func() {
		if err == nil {
			return
		}
		if sl != nil {
			sl.Close()
			sl = nil
		}
		// The directory was made exclusively by this call: all of it is ours.
		if rmErr := os.RemoveAll(dir); rmErr != nil {
			s.log.Warn("cleaning up a failed slice creation", zap.String("slice", id), zap.Error(rmErr))
		}
	}()
	if err := s.step("mkdir"); err != nil {
		return nil, err
	}
	// Fully allocated, not fsynced, the usage file given to a process owner
	// (regionOptions).
	if err := shm.CreateSliceWith(dir, spec, regionOptions(rec.Slice.Owner)); err != nil {
		return nil, fmt.Errorf("create slice %s: %w", id, err)
	}
	if err := s.step("regions"); err != nil {
		return nil, err
	}
	if sl, err = openSlice(dir); err != nil {
		return nil, fmt.Errorf("create slice %s: %w", id, err)
	}
	rec.Slice.Dir = dir
	if err := writeRecord(dir, rec); err != nil {
		return sl, fmt.Errorf("create slice %s: %w", id, err)
	}
	if err := s.step("record"); err != nil {
		return sl, err
	}
	if err := syncDir(s.slices); err != nil {
		return sl, fmt.Errorf("create slice %s: %w", id, err)
	}
	if err := s.step("synced"); err != nil {
		return sl, err
	}
	return sl, nil
}

// Delete removes a slice: durably gone once it returns nil. Processes still
// mapping its regions are not affected (the files are only unlinked).
func (s *Store) Delete(id string) error {
	if err := ValidateID(id); err != nil {
		return fmt.Errorf("delete slice: %w", err)
	}
	dir := s.Dir(id)
	if _, err := os.Lstat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("delete slice %s: %w", id, ErrNotFound)
		}
		return fmt.Errorf("delete slice %s: %w", id, err)
	}
	// rename(2) may replace an empty directory, so a fresh one is a unique name
	// to rename to (os.Rename refuses any existing directory: unix.Rename).
	grave, err := os.MkdirTemp(s.slices, "."+id+deletingTag)
	if err != nil {
		return fmt.Errorf("delete slice %s: %w", id, err)
	}
	if err := s.step("grave"); err != nil {
		os.Remove(grave)
		return err
	}
	if err := unix.Rename(dir, grave); err != nil {
		os.Remove(grave)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("delete slice %s: %w", id, ErrNotFound)
		}
		return fmt.Errorf("delete slice %s: rename %s to %s: %w", id, dir, grave, err)
	}
	if err := syncDir(s.slices); err != nil {
		return fmt.Errorf("delete slice %s: %w", id, err)
	}
	if err := s.step("renamed"); err != nil {
		return err
	}
	if err := os.RemoveAll(grave); err != nil {
		// Deleted already; Load removes what is left.
		s.log.Warn("removing a deleted slice's files", zap.String("slice", id),
			zap.String("dir", grave), zap.Error(err))
	}
	return nil
}

// Load re-adopts every acknowledged slice, in id order, and cleans up what
// crashes left behind (see the package comment). A slice that cannot be adopted
// is quarantined and logged, not returned; the error is only for a state
// directory that cannot be read.
func (s *Store) Load() ([]Loaded, error) {
	entries, err := os.ReadDir(s.slices)
	if err != nil {
		return nil, fmt.Errorf("load slices: %w", err)
	}
	var out []Loaded
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(s.slices, name)
		if ValidateID(name) != nil || !e.IsDir() {
			s.log.Info("removing a leftover from an interrupted operation", zap.String("path", path))
			if err := os.RemoveAll(path); err != nil {
				s.log.Warn("removing a leftover", zap.String("path", path), zap.Error(err))
			}
			continue
		}
		l, err := s.load(name)
		if err != nil {
			s.quarantine(name, err)
			continue
		}
		if l != nil {
			out = append(out, *l)
		}
	}
	return out, nil
}

// load re-adopts slice id; nil, nil when it was never acknowledged (removed).
func (s *Store) load(id string) (*Loaded, error) {
	dir := s.Dir(id)
	if err := removeTemps(dir); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, RecordFile))
	if errors.Is(err, fs.ErrNotExist) {
		s.log.Info("removing a slice that was never acknowledged (no record)", zap.String("slice", id))
		if err := os.RemoveAll(dir); err != nil {
			s.log.Warn("removing an unacknowledged slice", zap.String("slice", id), zap.Error(err))
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read record: %w", err)
	}
	rec, err := parseRecord(data, id)
	if err != nil {
		return nil, err
	}
	rec.Slice.Dir = dir
	spec, err := Spec(rec)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	sl, err := s.adopt(dir, spec, regionOptions(rec.Slice.Owner))
	if err != nil {
		return nil, err
	}
	if computeDiffers(sl.Budget, spec) {
		// An update's record is durable before its budget is written: the
		// record is the truth.
		s.log.Warn("budget's compute share behind its record (an update interrupted): set from the record",
			zap.String("slice", id))
		if err := SetCompute(sl.Budget, spec); err != nil {
			sl.Close()
			return nil, err
		}
	}
	followed, err := syncMemory(sl.Budget, &rec, spec, s.log)
	if err == nil && followed {
		err = writeRecord(dir, rec)
	}
	if err != nil {
		sl.Close()
		return nil, err
	}
	return &Loaded{Record: rec, Slice: sl}, nil
}

func parseRecord(data []byte, id string) (Record, error) {
	var rf recordFile
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&rf); err != nil {
		return Record{}, fmt.Errorf("parse record: %w", err)
	}
	if rf.Version != RecordVersion {
		return Record{}, fmt.Errorf("record version %d, this vgpud reads %d", rf.Version, RecordVersion)
	}
	if rf.Slice.ID != id {
		return Record{}, fmt.Errorf("record names slice %q, its directory %q", rf.Slice.ID, id)
	}
	// A record written before the policy could be chosen has none: its slice
	// is cap, as its budget says.
	rf.Slice.ComputePolicy = rf.Slice.ComputePolicy.Normalized()
	return rf.Record, nil
}

// adopt maps dir's regions as they are when they match spec, recreating from
// spec only the ones that are missing, corrupt or describe other devices.
func (s *Store) adopt(dir string, spec shm.SliceSpec, opts shm.CreateOptions) (*shm.Slice, error) {
	b, berr := openBudget(dir, spec)
	u, uerr := openUsage(dir, spec)
	if berr == nil && uerr == nil {
		return &shm.Slice{Budget: b, Usage: u}, nil
	}
	if b != nil {
		b.Close()
	}
	if u != nil {
		u.Close()
	}
	fields := []zap.Field{zap.String("slice", spec.ID)}
	if berr != nil {
		fields = append(fields, zap.NamedError("budget", berr))
	}
	if uerr != nil {
		fields = append(fields, zap.NamedError("usage", uerr), zap.String("consequence",
			"processes still using the old usage file are no longer accounted"))
	}
	s.log.Warn("recreating damaged slice regions from the record", fields...)
	if err := s.repair(dir, spec, opts, berr != nil, uerr != nil); err != nil {
		return nil, err
	}
	sl, err := openSlice(dir)
	if err != nil {
		return nil, fmt.Errorf("after repair: %w", err)
	}
	return sl, nil
}

// openBudget maps dir's budget writable and checks that it is the one spec
// describes: same slice id and same devices. Limits may differ (vgpud changes
// them at run time), so they are not compared.
func openBudget(dir string, spec shm.SliceSpec) (*shm.BudgetRegion, error) {
	b, err := shm.OpenBudget(filepath.Join(dir, shm.BudgetFile), true)
	if err != nil {
		return nil, err
	}
	fail := func(format string, args ...any) (*shm.BudgetRegion, error) {
		err := fmt.Errorf("budget %s: %w: %s", b.Path(), shm.ErrCorrupt, fmt.Sprintf(format, args...))
		b.Close()
		return nil, err
	}
	if got := b.SliceID(); got != spec.ID {
		return fail("slice id %q, record says %q", got, spec.ID)
	}
	if b.DeviceCount() != len(spec.Devices) {
		return fail("%d devices, record has %d", b.DeviceCount(), len(spec.Devices))
	}
	for d := range spec.Devices {
		got, want := b.Device(d), spec.Devices[d]
		if got.UUID != want.UUID || got.Index != want.Index {
			return fail("device %d is %s (index %d), record says %s (index %d)",
				d, got.UUID, got.Index, want.UUID, want.Index)
		}
	}
	return b, nil
}

// openUsage maps dir's usage file and checks its device count against spec.
func openUsage(dir string, spec shm.SliceSpec) (*shm.UsageRegion, error) {
	u, err := shm.OpenUsage(filepath.Join(dir, shm.UsageFile))
	if err != nil {
		return nil, err
	}
	if u.DeviceCount() != len(spec.Devices) {
		err := fmt.Errorf("usage %s: %w: %d devices, record has %d",
			u.Path(), shm.ErrCorrupt, u.DeviceCount(), len(spec.Devices))
		u.Close()
		return nil, err
	}
	return u, nil
}

// repair recreates the named regions of dir from spec: a fresh pair is made in a
// scratch directory next to it and the needed files are renamed over the bad
// ones (usage first, as CreateSlice does), so each file is replaced atomically
// and the good one is never touched. A crash leaves a scratch directory that the
// next Load removes, and the slice to repair again.
func (s *Store) repair(dir string, spec shm.SliceSpec, opts shm.CreateOptions, budget, usage bool) error {
	scratch, err := os.MkdirTemp(s.slices, "."+spec.ID+repairTag)
	if err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	defer os.RemoveAll(scratch)
	opts.Durable = true
	if err := shm.CreateSliceWith(scratch, spec, opts); err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	var names []string
	if usage {
		names = append(names, shm.UsageFile)
	}
	if budget {
		names = append(names, shm.BudgetFile)
	}
	for _, name := range names {
		// Region files the contract wrote (fully allocated) move from scratch into place.
		if err := os.Rename(filepath.Join(scratch, name), filepath.Join(dir, name)); err != nil { //nolint:forbidigo // moves region files, not a write
			return fmt.Errorf("repair: %w", err)
		}
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	return nil
}

// openSlice maps both regions of dir, the budget writable.
func openSlice(dir string) (*shm.Slice, error) {
	b, err := shm.OpenBudget(filepath.Join(dir, shm.BudgetFile), true)
	if err != nil {
		return nil, err
	}
	u, err := shm.OpenUsage(filepath.Join(dir, shm.UsageFile))
	if err != nil {
		b.Close()
		return nil, err
	}
	if b.DeviceCount() != u.DeviceCount() {
		err := fmt.Errorf("slice %s: %w: budget has %d devices, usage has %d",
			dir, shm.ErrCorrupt, b.DeviceCount(), u.DeviceCount())
		b.Close()
		u.Close()
		return nil, err
	}
	return &shm.Slice{Budget: b, Usage: u}, nil
}

// writeRecord writes dir/slice.json atomically and durably: a temporary file,
// fsynced, renamed into place, then the directory fsynced.
func writeRecord(dir string, rec Record) error {
	data, err := json.MarshalIndent(recordFile{Version: RecordVersion, Record: rec}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	data = append(data, '\n')
	if err := atomicfile.Write(filepath.Join(dir, RecordFile), data, 0o644, atomicfile.Durable); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	return nil
}

// removeTemps removes the temporary files an interrupted write left in a slice
// directory: every name starting with '.' (the region writers' and
// writeRecord's temporary names).
func removeTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read slice dir: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("remove leftover %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

func syncDir(dir string) error {
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	return nil
}
