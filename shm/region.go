package shm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Sentinel errors of region validation; every error returned by the Open
// functions wraps one of them (errors.Is) and names the file.
var (
	// ErrBadMagic: the file does not start with the expected magic.
	ErrBadMagic = errors.New("bad magic")
	// ErrABIVersion: the file's ABI major is not the one this code understands.
	ErrABIVersion = errors.New("unsupported ABI major version")
	// ErrTruncated: the file is shorter than its header, or than header.total_size.
	ErrTruncated = errors.New("file truncated")
	// ErrOversized: the file is longer than header.total_size.
	ErrOversized = errors.New("file larger than its header says")
	// ErrCorrupt: the header's sizes and counts are inconsistent.
	ErrCorrupt = errors.New("inconsistent header")
	// ErrReadOnly: a setter was called on a budget opened read-only.
	ErrReadOnly = errors.New("budget region is mapped read-only")
	// ErrClosed: the region was closed.
	ErrClosed = errors.New("region closed")
)

// regionKind tells which of the two files a path is expected to be.
type regionKind int

const (
	kindBudget regionKind = iota
	kindUsage
)

func (k regionKind) String() string {
	if k == kindBudget {
		return "budget"
	}
	return "usage"
}

func (k regionKind) magic() uint64 {
	if k == kindBudget {
		return BudgetMagic
	}
	return UsageMagic
}

func (k regionKind) other() regionKind { return 1 - k }

// validateHeader checks a header read from a file of fileSize bytes. It is pure,
// so every corrupt case is testable without a file. Checks run from the most
// basic to the most specific so the error names the first thing that is wrong.
func validateHeader(path string, kind regionKind, h *ShmHeader, fileSize int64) error {
	if fileSize < int64(headerSize) {
		return fmt.Errorf("%s file %s: %w: %d bytes, shorter than the %d-byte header",
			kind, path, ErrTruncated, fileSize, headerSize)
	}
	if h.Magic != kind.magic() {
		if h.Magic == kind.other().magic() {
			return fmt.Errorf("%s file %s: %w: this is a %s file, not a %s file",
				kind, path, ErrBadMagic, kind.other(), kind)
		}
		return fmt.Errorf("%s file %s: %w: %#016x, want %#016x",
			kind, path, ErrBadMagic, h.Magic, kind.magic())
	}
	if h.ABIMajor != ABIMajor {
		return fmt.Errorf("%s file %s: %w: file has ABI %d.%d, this build understands %d.x",
			kind, path, ErrABIVersion, h.ABIMajor, h.ABIMinor, ABIMajor)
	}
	// Any minor of our major is accepted: a minor bump only gives meaning to
	// reserved fields, which this build ignores.
	if uint64(h.HeaderSize) != headerSize {
		return fmt.Errorf("%s file %s: %w: header_size %d, want %d",
			kind, path, ErrCorrupt, h.HeaderSize, headerSize)
	}
	if h.MaxDevices != MaxDevices {
		return fmt.Errorf("%s file %s: %w: max_devices %d, want %d",
			kind, path, ErrCorrupt, h.MaxDevices, MaxDevices)
	}
	if h.DeviceCount == 0 || h.DeviceCount > h.MaxDevices {
		return fmt.Errorf("%s file %s: %w: device_count %d, want 1..%d",
			kind, path, ErrCorrupt, h.DeviceCount, h.MaxDevices)
	}
	var want uint64
	switch kind {
	case kindBudget:
		if h.SlotCount != 0 {
			return fmt.Errorf("%s file %s: %w: slot_count %d, a budget file has none",
				kind, path, ErrCorrupt, h.SlotCount)
		}
		want = BudgetSize
	case kindUsage:
		if h.SlotCount == 0 || h.SlotCount > MaxSlots {
			return fmt.Errorf("%s file %s: %w: slot_count %d, want 1..%d",
				kind, path, ErrCorrupt, h.SlotCount, MaxSlots)
		}
		want = UsageSize(int(h.SlotCount))
	}
	if h.TotalSize != want {
		return fmt.Errorf("%s file %s: %w: total_size %d, but %d devices/%d slots make %d",
			kind, path, ErrCorrupt, h.TotalSize, h.DeviceCount, h.SlotCount, want)
	}
	if uint64(fileSize) < h.TotalSize {
		return fmt.Errorf("%s file %s: %w: %d bytes, header says %d",
			kind, path, ErrTruncated, fileSize, h.TotalSize)
	}
	if uint64(fileSize) > h.TotalSize {
		return fmt.Errorf("%s file %s: %w: %d bytes, header says %d",
			kind, path, ErrOversized, fileSize, h.TotalSize)
	}
	return nil
}

// mapRegion opens path, validates its header and maps exactly total_size bytes
// MAP_SHARED. The header is read with pread before mapping so that a file too
// short to map is refused with a clear error instead of a SIGBUS later. The
// descriptor stays open in the returned regionFile (for the file watch) until
// the region is closed.
func mapRegion(path string, kind regionKind, writable bool) (_ []byte, _ *ShmHeader, _ regionFile, err error) {
	flags, prot := unix.O_RDONLY, unix.PROT_READ
	if writable {
		flags, prot = unix.O_RDWR, unix.PROT_READ|unix.PROT_WRITE
	}
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, regionFile{}, fmt.Errorf("%s file %s: open: %w", kind, path, err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()

	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, nil, regionFile{}, fmt.Errorf("%s file %s: fstat: %w", kind, path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, nil, regionFile{}, fmt.Errorf("%s file %s: %w: not a regular file", kind, path, ErrCorrupt)
	}
	var h ShmHeader
	if st.Size >= int64(headerSize) {
		hb := unsafe.Slice((*byte)(unsafe.Pointer(&h)), headerSize)
		n, err := unix.Pread(fd, hb, 0)
		if err != nil {
			return nil, nil, regionFile{}, fmt.Errorf("%s file %s: read header: %w", kind, path, err)
		}
		if n < len(hb) {
			// Shrunk between fstat and read.
			st.Size = int64(n)
		}
	}
	if err := validateHeader(path, kind, &h, st.Size); err != nil {
		return nil, nil, regionFile{}, err
	}
	data, err := mapShared(fd, int(h.TotalSize), prot)
	if err != nil {
		return nil, nil, regionFile{}, fmt.Errorf("%s file %s: mmap %d bytes: %w", kind, path, h.TotalSize, err)
	}
	// Use the header as validated, not the mapped copy: the usage file is
	// writable by the tenant, and a header rewritten after validation must not
	// make us index past the mapping.
	return data, &h, regionFile{fd: fd, open: true, size: int64(h.TotalSize), blocks: st.Blocks, dev: st.Dev, ino: st.Ino}, nil
}

// mapShared maps size bytes of fd shared, and unmap undoes it. They call
// mmap(2)/munmap(2) directly (MmapPtr/MunmapPtr) rather than unix.Mmap and
// unix.Munmap: those keep every mapping in a table guarded by one process-wide
// mutex that is held across the system call. vgpud's enforcer loop unmaps the
// regions of released slices in a burst, and each munmap of a deleted file
// also evicts its inode (filesystem work) under that mutex; a tight loop of
// them keeps re-taking the mutex ahead of an allocation's mmap, which then
// waits until sync.Mutex's 1 ms starvation mode hands it over (measured: 1.1
// and 2.3 ms stalls in vgpud's alloc, the largest part of its p99). The
// regions need no such table: each one keeps its own slice and unmaps it once.
func mapShared(fd, size, prot int) ([]byte, error) {
	p, err := unix.MmapPtr(fd, 0, nil, uintptr(size), prot, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	return unsafe.Slice((*byte)(p), size), nil
}

func unmap(data []byte) error {
	return unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(data)), uintptr(len(data)))
}

// Slice is an opened budget/usage pair.
type Slice struct {
	Budget *BudgetRegion
	Usage  *UsageRegion
}

// OpenSlice opens and validates dir/budget (read-only) and dir/usage, and checks
// that they describe the same devices.
func OpenSlice(dir string) (*Slice, error) {
	b, err := OpenBudget(filepath.Join(dir, BudgetFile), false)
	if err != nil {
		return nil, fmt.Errorf("open slice %s: %w", dir, err)
	}
	u, err := OpenUsage(filepath.Join(dir, UsageFile))
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("open slice %s: %w", dir, err)
	}
	if b.DeviceCount() != u.DeviceCount() {
		err := fmt.Errorf("open slice %s: %w: budget has %d devices, usage has %d",
			dir, ErrCorrupt, b.DeviceCount(), u.DeviceCount())
		b.Close()
		u.Close()
		return nil, err
	}
	return &Slice{Budget: b, Usage: u}, nil
}

// Close unmaps both regions.
func (s *Slice) Close() error {
	return errors.Join(s.Budget.Close(), s.Usage.Close())
}

// CreateSlice writes a budget/usage pair into dir (created 0755 if missing).
//
// Both files are written to temporary names, fully allocated (no holes: see
// writeTemp), fsynced and renamed into place, so a reader sees either no file or
// a complete one, never a partial one. budget is 0644 (only its writer may
// change it), usage 0666 (every process of the tenant writes it; chmod'ed
// explicitly because the umask would narrow it; CreateOptions can give it to
// one user instead). An existing
// pair is replaced: processes that still have the old files mapped keep using
// them and are no longer seen by readers of the new pair. On any error nothing
// this call created is left behind (temporary files, directories it made, and a
// usage file it placed when the budget then failed).
func CreateSlice(dir string, spec SliceSpec) error {
	return CreateSliceWith(dir, spec, CreateOptions{Durable: true})
}

// CreateOptions tunes CreateSliceWith.
type CreateOptions struct {
	// Durable fsyncs both files and the directory before returning, so the pair
	// survives a power loss. A caller that makes its own record durable in the
	// same directory afterwards (vgpud's store fsyncs the directory then) and
	// repairs a damaged pair on load can skip it: a killed process never loses
	// page-cache contents, only a power loss can, and then no process of the
	// slice survives to notice the repair.
	Durable bool
	// UsageOwner, when set, owns the usage file (fchown before it is renamed
	// into place), and UsageMode (default 0666) is its mode: vgpud gives a
	// bare-metal slice's usage file to its owner's user, 0600, so that no other
	// user can write (or grow, or truncate) it.
	UsageOwner *FileOwner
	UsageMode  os.FileMode
}

// FileOwner is a user and group id.
type FileOwner struct{ UID, GID int }

// CreateSliceWith is CreateSlice with options.
func CreateSliceWith(dir string, spec SliceSpec, opts CreateOptions) (err error) {
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("create slice in %s: %w", dir, err)
	}
	madeDirs, err := makeDirs(dir)
	if err != nil {
		return fmt.Errorf("create slice in %s: %w", dir, err)
	}
	var cleanup []string // files to remove on failure, in order
	defer func() {
		if err == nil {
			return
		}
		for _, p := range cleanup {
			os.Remove(p)
		}
		for _, d := range madeDirs {
			os.Remove(d)
		}
	}()

	budgetTmp, err := writeTemp(dir, BudgetFile, budgetBytes(&spec, time.Now()), 0o644, nil, opts.Durable)
	if err != nil {
		return fmt.Errorf("create slice in %s: %w", dir, err)
	}
	cleanup = append(cleanup, budgetTmp)
	usageMode := opts.UsageMode
	if usageMode == 0 {
		usageMode = 0o666
	}
	usageTmp, err := writeTemp(dir, UsageFile, usageBytes(&spec), usageMode, opts.UsageOwner, opts.Durable)
	if err != nil {
		return fmt.Errorf("create slice in %s: %w", dir, err)
	}
	cleanup = append(cleanup, usageTmp)

	// usage goes first: libvgpu needs both, and a budget without its usage
	// would be refused anyway; with --force the window where the pair is mixed
	// is the time between two renames.
	usagePath := filepath.Join(dir, UsageFile)
	_, statErr := os.Lstat(usagePath)
	usageExisted := statErr == nil
	if err := os.Rename(usageTmp, usagePath); err != nil {
		return fmt.Errorf("create slice in %s: %w", dir, err)
	}
	if !usageExisted {
		cleanup = append(cleanup, usagePath)
	}
	if err := os.Rename(budgetTmp, filepath.Join(dir, BudgetFile)); err != nil {
		return fmt.Errorf("create slice in %s: %w", dir, err)
	}
	// Make the renames durable; a failure here is reported but the files are
	// complete and in place, so they are not removed.
	if !opts.Durable {
		return nil
	}
	if err := syncDir(dir); err != nil {
		cleanup = nil
		madeDirs = nil
		return fmt.Errorf("create slice in %s: %w", dir, err)
	}
	return nil
}

// SliceExists reports whether dir already holds a budget or a usage file.
func SliceExists(dir string) bool {
	for _, name := range []string{BudgetFile, UsageFile} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

// makeDirs creates dir and any missing parents with mode 0755 and returns the
// directories it created, deepest first, so a failed create can remove exactly
// those.
func makeDirs(dir string) ([]string, error) {
	var missing []string
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return nil, fmt.Errorf("%s exists and is not a directory", p)
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	var made []string
	for i := len(missing) - 1; i >= 0; i-- {
		p := missing[i]
		if err := os.Mkdir(p, 0o755); err != nil {
			if errors.Is(err, os.ErrExist) {
				continue // raced with another creator: not ours to remove
			}
			removeAll(made)
			return nil, err
		}
		made = append([]string{p}, made...)
		// Explicit chmod: the umask must not make the slice unreachable for the
		// tenant's processes.
		if err := os.Chmod(p, 0o755); err != nil {
			removeAll(made)
			return nil, err
		}
	}
	return made, nil
}

func removeAll(dirs []string) {
	for _, d := range dirs {
		os.Remove(d)
	}
}

// writeTemp writes data to a new temporary file in dir with the given mode
// (and owner, if not nil) and, if durable, fsyncs it; it returns the temporary
// path and removes it on failure.
//
// The file is fully allocated: every page of it has its space on the
// filesystem before anyone maps it. A sparse region would be a hazard for every
// process mapping it: touching a page that has no space yet, once the
// filesystem is full (a tenant can fill it by growing its own usage file),
// kills the process with SIGBUS.
func writeTemp(dir, name string, data []byte, mode os.FileMode, owner *FileOwner, durable bool) (path string, err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := allocate(f, data); err != nil {
		return "", fmt.Errorf("allocate %s: %w", f.Name(), err)
	}
	if owner != nil {
		if err := f.Chown(owner.UID, owner.GID); err != nil {
			return "", fmt.Errorf("chown %s: %w", f.Name(), err)
		}
	}
	if err := f.Chmod(mode); err != nil {
		return "", fmt.Errorf("chmod %s: %w", f.Name(), err)
	}
	if durable {
		if err := f.Sync(); err != nil {
			return "", fmt.Errorf("fsync %s: %w", f.Name(), err)
		}
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("close %s: %w", f.Name(), err)
	}
	return f.Name(), nil
}

// allocate gives the empty file f its len(data) bytes, all allocated, holding
// data. fallocate(2) reserves the space (a usage file is mostly its empty slot
// table: its zero tail then costs no write and no flush), and only the bytes up
// to the last non-zero one are written. A filesystem without fallocate gets
// every byte written, which allocates them as well.
func allocate(f *os.File, data []byte) error {
	n := len(data)
	for n > 0 && data[n-1] == 0 {
		n--
	}
	err := unix.Fallocate(int(f.Fd()), 0, 0, int64(len(data)))
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		n, err = len(data), nil
	}
	if err != nil {
		return fmt.Errorf("fallocate %d bytes: %w", len(data), err)
	}
	if _, err := f.WriteAt(data[:n], 0); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

func newHeader(magic uint64, devices, slots int, total uint64) ShmHeader {
	return ShmHeader{
		Magic:       magic,
		ABIMajor:    ABIMajor,
		ABIMinor:    ABIMinor,
		HeaderSize:  uint32(headerSize),
		TotalSize:   total,
		DeviceCount: uint32(devices),
		SlotCount:   uint32(slots),
		MaxDevices:  MaxDevices,
	}
}

// budgetBytes renders a validated spec as the bytes of a budget file.
func budgetBytes(spec *SliceSpec, now time.Time) []byte {
	b := new(ShmBudget)
	b.Hdr = newHeader(BudgetMagic, len(spec.Devices), 0, BudgetSize)
	// Generation is a seqlock (even = stable) and starts at 2 so that 0 can
	// never be mistaken for a written file.
	b.Generation = 2
	copy(b.SliceID[:], spec.ID)
	b.Priority = spec.Priority
	b.QoS = spec.QoS
	b.Policy = spec.Policy
	b.Flags = spec.Flags
	b.CreatedUnixNs = uint64(now.UnixNano())
	for i, d := range spec.Devices {
		bd := &b.Dev[i]
		copy(bd.UUID[:], d.UUID)
		bd.Index = d.Index
		bd.MemoryLimit = d.MemoryLimit
		bd.MemoryGuaranteed = d.MemoryGuaranteed
		bd.MemoryMax = d.MemoryMax
		bd.ContextOverhead = d.ContextOverhead
		bd.ComputeShareBP = d.ComputeShareBP
		bd.ComputeFloorBP = d.ComputeFloorBP
		bd.TokenRate = d.TokenRate
		bd.TokenBurst = d.TokenBurst
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(b)), BudgetSize)
}

// usageBytes renders an empty usage file for a validated spec. Every byte is
// written (no sparse holes), so touching the mapping later can never fail for
// lack of space.
func usageBytes(spec *SliceSpec) []byte {
	slots := spec.slotCount()
	buf := make([]byte, UsageSize(slots))
	h := newHeader(UsageMagic, len(spec.Devices), slots, UsageSize(slots))
	copy(buf, unsafe.Slice((*byte)(unsafe.Pointer(&h)), headerSize))
	return buf
}
