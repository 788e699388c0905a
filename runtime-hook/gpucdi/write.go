package gpucdi

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/vgpu-project/vgpu/internal/atomicfile"
)

// StagingDir is where WriteSpec has CDI's writer validate and encode a
// spec: a directory in the spec dir, which CDI readers do not scan (they
// read the spec dir's files only). It is made once and kept.
const StagingDir = ".vgpu-staging"

// WriteSpec validates and encodes raw with CDI's own writer (kind, device
// names, edits, version; a cache on dir's staging directory), then writes the
// result to dir/name.json atomically (internal/atomicfile: a temp file in dir,
// not named *.json, renamed over it): a reader (podman, containerd,
// vgpu-runtime) sees the old spec or the new one, never half of one. The
// write happens in dir itself because the CDI caches of container runtimes
// watch it and refresh on a write or rename there; older ones (containerd
// 1.7's) miss a file moved in from elsewhere. Its cdiVersion is the oldest
// that carries what it uses, so that older readers (podman 4.x understands up
// to 0.5.0) accept it. Not fsynced: a spec describes live state that its
// writer publishes again after a restart (vgpud rewrites every slice's), in a
// directory that is a tmpfs on a real node (/var/run/cdi). (An earlier
// version validated in a fresh temp dir and fsynced the result: half of every
// allocation's CPU time in vgpud, and on ext4 an fsync more.)
func WriteSpec(dir, name string, raw *cdispec.Spec) error {
	v, err := cdispec.MinimumRequiredVersion(raw)
	if err != nil {
		return fmt.Errorf("CDI spec %s: %w", name, err)
	}
	raw.Version = v
	data, err := validated(dir, raw, name+".json")
	if err != nil {
		return fmt.Errorf("CDI spec %s: %w", name, err)
	}
	if err := atomicfile.Write(filepath.Join(dir, name+".json"), data, 0o644, atomicfile.Volatile); err != nil {
		return fmt.Errorf("publish CDI spec %s: %w", name, err)
	}
	return nil
}

// validated is raw encoded by CDI's own writer, which validates it, in dir's
// staging directory (the file removed again).
func validated(dir string, raw *cdispec.Spec, file string) ([]byte, error) {
	staging := filepath.Join(dir, StagingDir)
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return nil, fmt.Errorf("staging dir: %w", err)
	}
	cache, err := cdi.NewCache(cdi.WithSpecDirs(staging), cdi.WithAutoRefresh(false))
	if err != nil {
		return nil, fmt.Errorf("CDI cache: %w", err)
	}
	if err := cache.WriteSpec(raw, file); err != nil {
		return nil, fmt.Errorf("invalid: %w", err)
	}
	staged := filepath.Join(staging, file)
	defer os.Remove(staged)
	data, err := os.ReadFile(staged)
	if err != nil {
		return nil, fmt.Errorf("read back: %w", err)
	}
	return data, nil
}

// RemoveSpec removes dir/name.json; a spec already gone is no error.
func RemoveSpec(dir, name string) error {
	err := os.Remove(filepath.Join(dir, name+".json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove CDI spec: %w", err)
	}
	return nil
}
