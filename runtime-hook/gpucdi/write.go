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

// WriteSpec validates raw as CDI's own writer does and puts it at
// dir/name.json atomically (internal/atomicfile: a temp file not named
// *.json, which CDI readers skip, renamed over it): a reader (podman,
// containerd, vgpu-runtime) sees the old spec or the new one, never half of
// one. Its cdiVersion is the oldest that carries what it uses, so that older
// readers (podman 4.x understands up to 0.5.0) accept it.
func WriteSpec(dir, name string, raw *cdispec.Spec) error {
	v, err := cdispec.MinimumRequiredVersion(raw)
	if err != nil {
		return fmt.Errorf("CDI spec %s: %w", name, err)
	}
	raw.Version = v
	data, err := validated(raw, name+".json")
	if err != nil {
		return fmt.Errorf("CDI spec %s: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("CDI spec dir: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, name+".json"), data, 0o644, atomicfile.Durable); err != nil {
		return fmt.Errorf("publish CDI spec %s: %w", name, err)
	}
	return nil
}

// validated is raw encoded by CDI's own writer, which validates it (kind,
// device names, edits, version), in a private temp dir.
func validated(raw *cdispec.Spec, file string) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "vgpu-cdi-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	cache, err := cdi.NewCache(cdi.WithSpecDirs(tmp), cdi.WithAutoRefresh(false))
	if err != nil {
		return nil, fmt.Errorf("CDI cache: %w", err)
	}
	if err := cache.WriteSpec(raw, file); err != nil {
		return nil, fmt.Errorf("invalid: %w", err)
	}
	data, err := os.ReadFile(filepath.Join(tmp, file))
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
