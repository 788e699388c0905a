package runtimehook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vgpu-project/vgpu/internal/atomicfile"
)

// specPeek is the little of config.json needed to decide whether to act. It is
// decoded leniently: a container without a request must never fail because
// its spec has a field this build of runtime-spec does not know.
type specPeek struct {
	Annotations map[string]string `json:"annotations"`
	Process     *struct {
		Env []string `json:"env"`
	} `json:"process"`
}

// peekSpec reads the annotations and env of a config.json.
func peekSpec(data []byte) (annotations map[string]string, env []string, err error) {
	var p specPeek
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, nil, err
	}
	if p.Process != nil {
		env = p.Process.Env
	}
	return p.Annotations, env, nil
}

// DecodeSpec decodes a config.json strictly: a field this build of
// runtime-spec does not know is an error, because re-encoding would silently
// drop it (the NVIDIA toolkit's lesson). Every field runtime-spec knows is
// accepted.
func DecodeSpec(data []byte) (*specs.Spec, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var s specs.Spec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("decode config.json (runtime-spec %s): %w", specs.Version, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode config.json: trailing data after the spec")
	}
	return &s, nil
}

// WriteSpecFile replaces path with the encoded spec atomically: a temp file in
// the same directory, then rename(2), so runc (or a crash) never sees half a
// config.json. No fsync: the bundle lives only as long as the container, runc
// reads it right after, and a machine crash loses the container anyway.
func WriteSpecFile(path string, s *specs.Spec, mode os.FileMode) error {
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode config.json: %w", err)
	}
	if err := atomicfile.Write(path, data, mode, atomicfile.Volatile); err != nil {
		return fmt.Errorf("replace config.json: %w", err)
	}
	return nil
}
