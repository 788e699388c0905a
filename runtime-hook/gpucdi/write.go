package gpucdi

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// StagingDir is where WriteSpec has CDI's writer put a spec before renaming
// it into place: a directory in the spec dir (the same filesystem, so the
// rename is atomic), which CDI readers do not scan (they read the spec dir's
// files only). It is made once and kept.
const StagingDir = ".vgpu-staging"

// WriteSpec validates and encodes raw with CDI's own writer (kind, device
// names, edits, version; a cache on dir's staging directory) and renames the
// result to dir/name.json: a reader (podman, containerd, vgpu-runtime) sees
// the old spec or the new one, never half of one. Its cdiVersion is the
// oldest that carries what it uses, so that older readers (podman 4.x
// understands up to 0.5.0) accept it. Not fsynced: a spec describes live
// state that its writer publishes again after a restart (vgpud rewrites
// every slice's), in a directory that is a tmpfs on a real node
// (/var/run/cdi). (An earlier version validated in a fresh temp dir, read the
// result back and fsynced it: half of every allocation's CPU time in vgpud,
// and on ext4 an fsync more.)
func WriteSpec(dir, name string, raw *cdispec.Spec) error {
	v, err := cdispec.MinimumRequiredVersion(raw)
	if err != nil {
		return fmt.Errorf("CDI spec %s: %w", name, err)
	}
	raw.Version = v
	staging := filepath.Join(dir, StagingDir)
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return fmt.Errorf("CDI spec dir: %w", err)
	}
	cache, err := cdi.NewCache(cdi.WithSpecDirs(staging), cdi.WithAutoRefresh(false))
	if err != nil {
		return fmt.Errorf("CDI cache: %w", err)
	}
	file := name + ".json"
	if err := cache.WriteSpec(raw, file); err != nil {
		return fmt.Errorf("CDI spec %s: invalid: %w", name, err)
	}
	// The file CDI's writer made, renamed within one filesystem: atomic, and
	// not written a second time (atomicfile would copy it).
	if err := os.Rename(filepath.Join(staging, file), filepath.Join(dir, file)); err != nil { //nolint:forbidigo // see above
		_ = os.Remove(filepath.Join(staging, file))
		return fmt.Errorf("publish CDI spec %s: %w", name, err)
	}
	return nil
}

// RemoveSpec removes dir/name.json; a spec already gone is no error.
func RemoveSpec(dir, name string) error {
	err := os.Remove(filepath.Join(dir, name+".json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove CDI spec: %w", err)
	}
	return nil
}
