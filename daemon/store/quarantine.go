package store

// Quarantine: an acknowledged slice whose record cannot be loaded (corrupt
// JSON, another version, values that make no valid budget) is moved whole to
// <state>/quarantine/<id>-<unix ns>/, with a note (quarantine.json: its id,
// why, when). Nothing of it is deleted: its tenants may still run with its
// regions mapped (and containers have them bind-mounted, which follows the
// inodes, not the names).
//
// vgpud keeps booking what such a slice held until an operator resolves it,
// and for that it needs to know what the slice held without trusting its
// record: the slice's budget file says it (devices, memory, guaranteed memory,
// compute share). The budget is written only by vgpud and is read-only for
// tenants, but it is checked all the same (RecordFromBudget): it must name the
// slice, be a valid budget, and be exactly the budget vgpud would write for the
// record rebuilt from it. What the daemon does with an entry whose budget is
// unreadable is its business (daemon/quarantine.go).
//
// An operator resolves an entry with RemoveQuarantined (its files go, the
// daemon frees its booking) or Unquarantine (a record rebuilt from the budget
// is written and the slice moved back to slices/<id> and re-adopted).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/atomicfile"
	"github.com/vgpu-project/vgpu/shm"
)

// NoteFile is the note vgpud leaves in a quarantined slice's directory.
const NoteFile = "quarantine.json"

// ErrNoBudget is wrapped by Unquarantine for an entry whose budget file cannot
// be read or is not one vgpud writes: there is nothing trustworthy to rebuild
// its record from.
var ErrNoBudget = errors.New("no usable budget file")

// Quarantined is a slice that could not be re-adopted, as found on disk.
type Quarantined struct {
	// Name is the entry's directory name under quarantine/ (<id>-<unix ns>),
	// or the slice id for a slice that could not even be moved there.
	Name string
	// ID is the slice's id (from the note, else from Name).
	ID string
	// Dir is where its files are.
	Dir string
	// Reason is why it was quarantined; At is when.
	Reason string
	At     time.Time
	// Rebuilt is the record rebuilt from the slice's budget file (with Dir
	// not set), nil when the budget is unreadable or
	// not one vgpud writes; BudgetErr then says why.
	Rebuilt   *Record
	BudgetErr error
}

// quarantineNote is NoteFile.
type quarantineNote struct {
	SliceID       string    `json:"slice_id"`
	Reason        string    `json:"reason"`
	QuarantinedAt time.Time `json:"quarantined_at"`
}

// quarantine moves an acknowledged slice that cannot be adopted out of slices/
// with a note saying why, keeping it for an operator. The note is written
// first, in place, so that the one rename carries it; a crash before the
// rename leaves the slice in slices/, quarantined again by the next Load. A
// slice that cannot be moved is left in place and remembered (stuck): it is
// listed by Quarantined all the same.
func (s *Store) quarantine(id string, why error) {
	src := s.Dir(id)
	now := time.Now().UTC()
	note := quarantineNote{SliceID: id, Reason: why.Error(), QuarantinedAt: now}
	if err := writeNote(src, note); err != nil {
		s.log.Warn("writing the quarantine note", zap.String("slice", id), zap.Error(err))
	}
	qdir := filepath.Join(s.root, quarantineDir)
	dst := filepath.Join(qdir, id+"-"+strconv.FormatInt(now.UnixNano(), 10))
	err := os.MkdirAll(qdir, 0o755)
	if err == nil {
		err = os.Rename(src, dst) //nolint:forbidigo // moves a whole slice directory into quarantine
	}
	if err == nil {
		err = errors.Join(syncDir(s.slices), syncDir(qdir))
	}
	if err != nil {
		s.log.Error("slice cannot be re-adopted and could not be quarantined; left in place",
			zap.String("slice", id), zap.NamedError("reason", why), zap.Error(err))
		s.stuck = append(s.stuck, Quarantined{Name: id, ID: id, Dir: src, Reason: why.Error(), At: now})
		return
	}
	s.log.Error("slice cannot be re-adopted; moved to quarantine",
		zap.String("slice", id), zap.String("to", dst), zap.NamedError("reason", why))
}

func writeNote(dir string, n quarantineNote) error {
	data, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return fmt.Errorf("encode quarantine note: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, NoteFile), append(data, '\n'), 0o644, atomicfile.Durable); err != nil {
		return fmt.Errorf("quarantine note: %w", err)
	}
	return nil
}

// Quarantined lists every quarantined slice, by name, each with what its budget
// file says (see Quarantined.Rebuilt). Leftovers of an interrupted removal are
// removed; a directory that names no slice (vgpud made none such) is logged and
// ignored.
func (s *Store) Quarantined() ([]Quarantined, error) {
	qdir := filepath.Join(s.root, quarantineDir)
	entries, err := os.ReadDir(qdir)
	switch {
	case errors.Is(err, unix.ENOTDIR):
		// Then nothing could be moved there: the slices are stuck in place.
		s.log.Error("the quarantine directory is not a directory", zap.String("path", qdir))
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("list quarantine: %w", err)
	}
	var out []Quarantined
	for _, e := range entries {
		name, path := e.Name(), filepath.Join(qdir, e.Name())
		if strings.HasPrefix(name, ".") { // an interrupted RemoveQuarantined
			if err := os.RemoveAll(path); err != nil {
				s.log.Warn("removing a leftover", zap.String("path", path), zap.Error(err))
			}
			continue
		}
		if !e.IsDir() {
			s.log.Warn("not a quarantined slice; ignored", zap.String("path", path))
			continue
		}
		q, err := readQuarantined(name, path)
		if err != nil {
			s.log.Warn("not a quarantined slice; ignored", zap.String("path", path), zap.Error(err))
			continue
		}
		out = append(out, q)
	}
	for _, q := range s.stuck {
		if !stillStuck(q) {
			continue // resolved since: removed, or restored in place
		}
		q.Rebuilt, q.BudgetErr = readBudget(q.Dir, q.ID)
		out = append(out, q)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// stillStuck reports whether a slice quarantined in place still is: its
// directory is there with its note (Unquarantine removes it) or with a record
// that does not load.
func stillStuck(q Quarantined) bool {
	if _, err := os.Lstat(q.Dir); err != nil {
		return false
	}
	if _, err := os.Lstat(filepath.Join(q.Dir, NoteFile)); err == nil {
		return true
	}
	data, err := os.ReadFile(filepath.Join(q.Dir, RecordFile))
	if err != nil {
		return true
	}
	rec, err := parseRecord(data, q.ID)
	if err == nil {
		_, err = Spec(rec)
	}
	return err != nil
}

// readQuarantined reads the entry quarantine/<name> at dir.
func readQuarantined(name, dir string) (Quarantined, error) {
	q := Quarantined{Name: name, Dir: dir}
	idPart, nsPart, _ := cutLast(name, "-")
	ns, nsErr := strconv.ParseInt(nsPart, 10, 64)
	var note quarantineNote
	data, err := os.ReadFile(filepath.Join(dir, NoteFile))
	if err == nil {
		err = json.Unmarshal(data, &note)
	}
	if err == nil && ValidateID(note.SliceID) == nil {
		q.ID, q.Reason, q.At = note.SliceID, note.Reason, note.QuarantinedAt
	} else {
		if ValidateID(idPart) != nil || nsErr != nil {
			return q, fmt.Errorf("no note naming a slice, and %q is not <slice id>-<unix ns>", name)
		}
		q.ID = idPart
		q.Reason = fmt.Sprintf("not recorded (no readable %s: quarantined by an older vgpud?)", NoteFile)
		q.At = time.Unix(0, ns).UTC()
	}
	q.Rebuilt, q.BudgetErr = readBudget(dir, q.ID)
	return q, nil
}

func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// readBudget rebuilds slice id's record from the budget file in dir (a
// read-only mapping).
func readBudget(dir, id string) (*Record, error) {
	b, err := shm.OpenBudget(filepath.Join(dir, shm.BudgetFile), false)
	if err != nil {
		return nil, fmt.Errorf("budget: %w", err)
	}
	spec, created := b.Spec(), b.CreatedUnixNs()
	b.Close()
	var at time.Time
	if created > 0 && created <= math.MaxInt64 {
		at = time.Unix(0, int64(created)).UTC()
	}
	rec, err := RecordFromBudget(id, spec, at)
	if err != nil {
		return nil, fmt.Errorf("budget %s: %w", filepath.Join(dir, shm.BudgetFile), err)
	}
	return &rec, nil
}

// RecordFromBudget rebuilds slice id's record from its budget (as
// shm.BudgetRegion.Spec reads it; createdAt from its header). The owner is not
// in the budget: the record has none (the slice lives until released). The
// budget is checked: it must name id, be valid, record a uuid for every device
// (vgpud always does) and one context overhead, and be exactly what Spec makes
// of the rebuilt record (token rates aside: the controller changes them), so a
// budget vgpud did not write is refused rather than read as something else.
func RecordFromBudget(id string, spec shm.SliceSpec, createdAt time.Time) (Record, error) {
	if spec.ID != id {
		return Record{}, fmt.Errorf("%w: budget names slice %q, not %q", shm.ErrCorrupt, spec.ID, id)
	}
	if err := spec.Validate(); err != nil {
		return Record{}, fmt.Errorf("budget of slice %s: %w", id, err)
	}
	if spec.Priority > math.MaxInt32 {
		return Record{}, fmt.Errorf("%w: priority %d out of range", shm.ErrCorrupt, spec.Priority)
	}
	qos := api.QoSOfCode(spec.QoS)
	policy := api.ComputePolicyOfCode(spec.Policy) // known: spec.Validate checked it
	devs := make([]api.SliceDevice, len(spec.Devices))
	uuids := make([]string, len(spec.Devices))
	overhead := spec.Devices[0].ContextOverhead
	for i, d := range spec.Devices {
		if d.UUID == "" {
			return Record{}, fmt.Errorf("%w: device %d has no uuid", shm.ErrCorrupt, i)
		}
		if d.ContextOverhead != overhead {
			return Record{}, fmt.Errorf("%w: device %d charges %d per context, device 0 %d",
				shm.ErrCorrupt, i, d.ContextOverhead, overhead)
		}
		// The share asked: a guaranteed slice's floor; otherwise its cap,
		// a whole device meaning none asked.
		bp := d.ComputeShareBP
		if qos.Guaranteed() {
			bp = d.ComputeFloorBP
		} else if bp == shm.MaxShareBP {
			bp = 0
		}
		devs[i] = api.SliceDevice{Index: int(d.Index), UUID: d.UUID, MemoryBytes: d.MemoryLimit,
			ComputePercent: api.SharePercent(bp)}
		uuids[i] = d.UUID
	}
	rec := Record{
		Slice: api.Slice{ID: id, Devices: devs, QoS: qos, Priority: int(spec.Priority), CreatedAt: createdAt,
			ComputePolicy: policy},
		// What was asked is not in the budget; this request would place the
		// same slice.
		Request: api.AllocRequest{ID: id, MemoryBytes: devs[0].MemoryBytes, ComputePercent: devs[0].ComputePercent,
			DeviceCount: len(devs), UUIDs: uuids, Priority: int(spec.Priority), QoS: qos, ComputePolicy: policy},
		ContextOverhead: overhead,
	}
	want, err := Spec(rec)
	if err != nil {
		return Record{}, fmt.Errorf("rebuilt record: %w", err)
	}
	for i, d := range spec.Devices {
		w := want.Devices[i]
		d.TokenRate, d.TokenBurst, w.TokenRate, w.TokenBurst = 0, 0, 0, 0
		if d != w {
			return Record{}, fmt.Errorf("%w: device %d is not what vgpud writes for such a slice (%+v, want %+v)",
				shm.ErrCorrupt, i, d, w)
		}
	}
	return rec, nil
}

// RemoveQuarantined removes a quarantined slice's files: renamed to a hidden
// name first (one atomic step; Load or Quarantined remove what an interrupted
// removal leaves), then removed. Processes mapping its regions keep them.
func (s *Store) RemoveQuarantined(q Quarantined) error {
	parent := filepath.Dir(q.Dir)
	grave, err := os.MkdirTemp(parent, "."+q.ID+deletingTag)
	if err != nil {
		return fmt.Errorf("remove quarantined slice %s: %w", q.Name, err)
	}
	if err := unixRename(q.Dir, grave); err != nil {
		os.Remove(grave)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove quarantined slice %s: %w", q.Name, ErrNotFound)
		}
		return fmt.Errorf("remove quarantined slice %s: %w", q.Name, err)
	}
	if err := syncDir(parent); err != nil {
		return fmt.Errorf("remove quarantined slice %s: %w", q.Name, err)
	}
	if err := os.RemoveAll(grave); err != nil {
		s.log.Warn("removing a quarantined slice's files", zap.String("slice", q.ID),
			zap.String("dir", grave), zap.Error(err))
	}
	return nil
}

// Unquarantine makes a quarantined slice live again from its budget: the
// record rebuilt from it replaces the bad one (atomically, durably, still in
// quarantine), then the directory moves back to slices/<id> and is re-adopted
// as Load would (its regions mapped as they are, a damaged usage file
// recreated). A crash at any step leaves either a quarantined slice (with a
// good record now) or a live one. The slice's id must be free in slices/.
func (s *Store) Unquarantine(q Quarantined) (*Loaded, error) {
	if q.Rebuilt == nil {
		return nil, fmt.Errorf("restore quarantined slice %s: %w: %w", q.Name, ErrNoBudget, q.BudgetErr)
	}
	dst := s.Dir(q.ID)
	moved := q.Dir != dst
	if moved {
		if _, err := os.Lstat(dst); err == nil {
			return nil, fmt.Errorf("restore quarantined slice %s: %w: %s", q.Name, ErrExists, dst)
		}
	}
	rec := *q.Rebuilt
	rec.Slice.Dir = dst
	if err := writeRecord(q.Dir, rec); err != nil {
		return nil, fmt.Errorf("restore quarantined slice %s: %w", q.Name, err)
	}
	if moved {
		if err := unixRename(q.Dir, dst); err != nil {
			return nil, fmt.Errorf("restore quarantined slice %s: %w", q.Name, err)
		}
		if err := errors.Join(syncDir(s.slices), syncDir(filepath.Dir(q.Dir))); err != nil {
			return nil, fmt.Errorf("restore quarantined slice %s: %w", q.Name, err)
		}
	}
	l, err := s.load(q.ID)
	if err == nil && l == nil {
		err = errors.New("no record after writing it")
	}
	if err != nil {
		if moved {
			if rerr := unixRename(dst, q.Dir); rerr != nil {
				s.log.Error("moving a slice that could not be restored back to quarantine",
					zap.String("slice", q.ID), zap.Error(rerr))
			}
		}
		return nil, fmt.Errorf("restore quarantined slice %s: %w", q.Name, err)
	}
	if err := os.Remove(filepath.Join(dst, NoteFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("removing the quarantine note of a restored slice", zap.String("slice", q.ID), zap.Error(err))
	}
	return l, nil
}

func unixRename(from, to string) error {
	if err := unix.Rename(from, to); err != nil {
		return fmt.Errorf("rename %s to %s: %w", from, to, err)
	}
	return nil
}
