package runtimehook

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/stretchr/testify/require"
)

// fill sets every field reachable from v to a non-zero value, so that a spec
// built with it uses every field runtime-spec knows.
func fill(v reflect.Value, depth int) {
	if depth > 12 {
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), depth+1)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), depth+1)
			}
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0), depth+1)
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k := reflect.New(v.Type().Key()).Elem()
		fill(k, depth+1)
		e := reflect.New(v.Type().Elem()).Elem()
		fill(e, depth+1)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1)
	}
}

func TestDecodeSpecAcceptsEveryKnownField(t *testing.T) {
	var full specs.Spec
	fill(reflect.ValueOf(&full).Elem(), 0)
	data, err := json.Marshal(&full)
	require.NoError(t, err)
	got, err := DecodeSpec(data)
	require.NoError(t, err, "every field of runtime-spec %s must decode", specs.Version)
	again, err := json.Marshal(got)
	require.NoError(t, err)
	require.JSONEq(t, string(data), string(again), "nothing is lost in a decode/encode round trip")
}

func TestDecodeSpecRejectsUnknown(t *testing.T) {
	_, err := DecodeSpec([]byte(`{"ociVersion":"1.0.2","process":{"args":["x"],"newField":1}}`))
	require.ErrorContains(t, err, `unknown field "newField"`)
	_, err = DecodeSpec([]byte(`{"ociVersion":"1.0.2","futureTop":{}}`))
	require.ErrorContains(t, err, `unknown field "futureTop"`)
	_, err = DecodeSpec([]byte(`{"ociVersion":"1.0.2"} {}`))
	require.ErrorContains(t, err, "trailing data")
	_, err = DecodeSpec([]byte(`{"ociVersion":`))
	require.Error(t, err)
}

// A config.json written by containerd 1.6 (ctr run) survives the round trip.
func TestDecodeSpecContainerdFixture(t *testing.T) {
	data, err := os.ReadFile("testdata/containerd-1.6-ctr.json")
	require.NoError(t, err)
	s, err := DecodeSpec(data)
	require.NoError(t, err)
	again, err := json.Marshal(s)
	require.NoError(t, err)
	require.JSONEq(t, string(data), string(again))
}

func TestWriteSpecFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"ociVersion":"1.0.0"}`), 0o600))
	s := &specs.Spec{Version: "1.0.2", Annotations: map[string]string{"a": "b"}}
	require.NoError(t, WriteSpecFile(path, s, 0o600))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.JSONEq(t, `{"ociVersion":"1.0.2","annotations":{"a":"b"}}`, string(data))
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "the original mode is kept")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "no temp file left behind")

	// A bundle we cannot write: an error, the original untouched.
	require.Error(t, WriteSpecFile(filepath.Join(dir, "missing", "config.json"), s, 0o644))
}

func TestPeekSpecLenient(t *testing.T) {
	ann, env, err := peekSpec([]byte(`{"ociVersion":"9.9","someFutureField":{"x":1},
		"annotations":{"vgpu.io/memory":"1G"},"process":{"env":["A=b"],"futureProc":true}}`))
	require.NoError(t, err, "deciding whether to act never fails on fields it does not know")
	require.Equal(t, map[string]string{"vgpu.io/memory": "1G"}, ann)
	require.Equal(t, []string{"A=b"}, env)
}
