// Package atomicfile replaces files so that no reader (and no crash) ever sees
// half of one: the data goes to a temporary file in the same directory, which
// is then renamed over the target. It is the one writer of configuration and
// state files in vgpu (the lint config forbids the others); the slice region
// files, written sparse by the shared-memory contract, are the one exception.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Mode says how durable a write is and whether it may replace a file.
type Mode uint8

const (
	// Durable fsyncs the file before the rename and the directory after it,
	// so the new content survives a machine crash once Write returns (vgpud's
	// records, containerd's config).
	Durable Mode = 1 << iota
	// NoReplace fails with os.ErrExist when path exists (link(2) instead of
	// rename(2): no window in which a concurrent writer is clobbered).
	NoReplace
)

// Volatile is for files that live no longer than the processes using them
// (a container bundle's config.json): atomic, not fsynced.
const Volatile Mode = 0

// Write replaces path with data, created with perm (umask does not apply).
// On error nothing is left behind and path is as it was.
func Write(path string, data []byte, perm os.FileMode, mode Mode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		// After a rename this is a no-op; after a link it drops the extra name.
		_ = os.Remove(tmp)
	}()
	if err := fill(f, data, perm, mode&Durable != 0); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if mode&NoReplace != 0 {
		err = os.Link(tmp, path)
	} else {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if mode&Durable != 0 {
		if err := SyncDir(dir); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

// fill writes data, sets perm, optionally fsyncs, and closes f.
func fill(f *os.File, data []byte, perm os.FileMode, sync bool) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Chmod(perm.Perm())
	}
	if err == nil && sync {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// SyncDir fsyncs a directory, making the renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}
