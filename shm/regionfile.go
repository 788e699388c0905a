package shm

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// regionFile is the open descriptor of a mapped region and what its file was
// when it was mapped. A region keeps it until Close so that the owner of the
// mapping (vgpud) can watch the file with one fstat(2) and no path lookup:
// the usage file is writable by its tenant, who can grow it (to fill the
// filesystem), shrink it (to make readers of the mapping fault) or punch holes
// in it; CheckFile tells.
type regionFile struct {
	fd     int
	open   bool
	size   int64 // total_size as validated and mapped
	blocks int64 // st_blocks when mapped
	dev    uint64
	ino    uint64
}

// closeFile closes the descriptor (once).
func (f *regionFile) closeFile() error {
	if !f.open {
		return nil
	}
	f.open = false
	return unix.Close(f.fd)
}

// FileCheck is what CheckFile found about a region's file.
type FileCheck struct {
	// Size is the file's size now; WantSize what was mapped (header.total_size).
	Size, WantSize int64
	// Links is the file's link count: 0 once it was unlinked or replaced by
	// a rename (the mapping keeps the old inode).
	Links uint64
	// Holes: the file was fully allocated when mapped and no longer is (a
	// range was punched out, or it was truncated and extended again).
	Holes bool
}

// Changed reports whether the file differs from what was mapped.
func (c FileCheck) Changed() bool {
	return c.Size != c.WantSize || c.Links == 0 || c.Holes
}

// Grown reports whether the file is longer than what was mapped (the part past
// the mapping is never read: TrimFile cuts it off).
func (c FileCheck) Grown() bool { return c.Size > c.WantSize }

// String says what changed ("unchanged" when nothing did).
func (c FileCheck) String() string {
	switch {
	case c.Links == 0:
		return "unlinked or replaced"
	case c.Size > c.WantSize:
		return fmt.Sprintf("grown to %d bytes (mapped %d)", c.Size, c.WantSize)
	case c.Size < c.WantSize:
		return fmt.Sprintf("shrunk to %d bytes (mapped %d)", c.Size, c.WantSize)
	case c.Holes:
		return "holes punched (no longer fully allocated)"
	}
	return "unchanged"
}

// CheckFile compares the region's file with what it was when mapped: size,
// link count and allocation. One fstat(2) on the descriptor kept since the
// open; it allocates nothing.
func (f *regionFile) CheckFile() (FileCheck, error) {
	if !f.open {
		return FileCheck{}, ErrClosed
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return FileCheck{}, fmt.Errorf("fstat: %w", err)
	}
	c := FileCheck{Size: st.Size, WantSize: f.size, Links: uint64(st.Nlink)}
	// Only a file that was fully allocated when mapped can lose its
	// allocation; a filesystem that stores files compressed or shared never
	// looked allocated in the first place, so it is not judged.
	if allocated(f.blocks, f.size) && !allocated(st.Blocks, min(st.Size, f.size)) {
		c.Holes = true
	}
	return c, nil
}

// allocated: blocks 512-byte units cover size bytes.
func allocated(blocks, size int64) bool { return blocks*512 >= size }

// TrimFile cuts the file back to the size that was mapped, returning to the
// filesystem whatever a writer appended past it. Nothing maps the part it
// removes (every reader maps exactly total_size), so no reader can fault on it.
// It needs a writable region (vgpud maps the usage file read-write, and the
// budget when it is its writer).
func (f *regionFile) TrimFile() error {
	if !f.open {
		return ErrClosed
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	if st.Size <= f.size {
		return nil
	}
	if err := unix.Ftruncate(f.fd, f.size); err != nil {
		return fmt.Errorf("truncate to %d bytes: %w", f.size, err)
	}
	return nil
}
