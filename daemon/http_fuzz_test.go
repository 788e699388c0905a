package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// FuzzAPI feeds vgpud's API handler arbitrary methods, paths and bodies (as a
// client of the socket could send them). It must never panic, never answer a
// client's mistake with a 5xx, always answer an error as api.Error JSON, and
// never leave a slice behind for a request it refused: after each request
// that did not create a slice, the server, the allocator and the state dir
// hold exactly what they held before. A slice it created is released again.
func FuzzAPI(f *testing.F) {
	gpus := newFakeGPUs(2, 16*GiB)
	cfg := testConfig(f.TempDir())
	cfg.MetricsAddr = ""
	s, err := New(cfg, zap.NewNop(), WithGPUs(gpus))
	if err != nil {
		f.Fatal(err)
	}
	// Started, so that the enforcer loop unmaps the regions of the slices
	// released below; the requests go straight to the handler.
	if err := s.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	h := s.apiHandler()
	uuid0 := gpus.devs[0].UUID

	for _, seed := range []struct{ method, path, body string }{
		{"POST", "/v1/slices", `{"memory_bytes": 1073741824}`},
		{"POST", "/v1/slices", `{"id": "job-1", "memory_percent": 25, "compute_percent": 30, "qos": "burstable", "priority": 2}`},
		{"POST", "/v1/slices", `{"memory_bytes": 1073741824, "uuids": ["` + uuid0 + `"], "placement": "spread"}`},
		{"POST", "/v1/slices", `{"memory_bytes": 1073741824, "device_count": 2, "owner": {"kind": "container", "container_id": "c1"}}`},
		{"POST", "/v1/slices", `{"memory_bytes": 1073741824, "owner": {"kind": "pid", "pid": 1}}`},
		{"POST", "/v1/slices", `{"memory_bytes": 1073741824, "priority": 4294967296}`},
		{"POST", "/v1/slices", `{"memory_bytes": 1073741824, "priority": -1}`},
		{"POST", "/v1/slices", `{"memory_bytes": 18446744073709551615, "qos": "best-effort"}`},
		{"POST", "/v1/slices", `{"memory_bytes": 1048576}`},
		{"POST", "/v1/slices", `{"memory_percent": 1e-300}`},
		{"POST", "/v1/slices", `{"memory_bytes": 1073741824, "id": "../x"}`},
		{"POST", "/v1/slices", `{"memory_bytes": 1073741824} {}`},
		{"POST", "/v1/slices", `{"memory_bytes": 1073741824, "unknown": 1}`},
		{"POST", "/v1/slices", `[`},
		{"POST", "/v1/slices", ""},
		{"GET", "/v1/health", ""},
		{"GET", "/v1/devices", ""},
		{"GET", "/v1/slices", ""},
		{"GET", "/v1/slices/job-1", ""},
		{"DELETE", "/v1/slices/job-1", ""},
		{"DELETE", "/v1/slices/..", ""},
		{"GET", "/v1/top", ""},
		{"PUT", "/v1/slices", "{}"},
		{"GET", "/v1/slices/a/b", ""},
		{"GET", "//v1/./slices/%2e%2e", ""},
		{"GET", "/v1/quarantine", ""},
		{"DELETE", "/v1/quarantine/x", ""},
		{"POST", "/v1/quarantine/..%2f/restore", ""},
	} {
		f.Add(seed.method, seed.path, []byte(seed.body))
	}

	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		if !validMethod(method) || !strings.HasPrefix(path, "/") {
			// net/http refuses these before any handler runs.
			return
		}
		before := fuzzState(t, s)
		r := httptest.NewRequest(http.MethodGet, "/", bytes.NewReader(body))
		r.Method, r.URL.Path, r.RequestURI = method, path, path
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)

		res := w.Result()
		if res.StatusCode >= 500 {
			t.Fatalf("%s %q %q: %d %s", method, path, body, res.StatusCode, w.Body.Bytes())
		}
		if res.StatusCode >= 400 {
			var e api.Error
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%s %q: %d answered %q, not an api.Error", method, path, res.StatusCode, w.Body.Bytes())
			}
		}
		if method == http.MethodPost && res.StatusCode == http.StatusCreated {
			var sl api.Slice
			if err := json.Unmarshal(w.Body.Bytes(), &sl); err != nil {
				t.Fatalf("201 with %q: %v", w.Body.Bytes(), err)
			}
			if err := s.release(sl.ID, "fuzz"); err != nil {
				t.Fatalf("release %s: %v", sl.ID, err)
			}
		}
		if after := fuzzState(t, s); after != before {
			t.Fatalf("%s %q %q (%d) changed the state:\nbefore %s\nafter  %s", method, path, body, res.StatusCode, before, after)
		}
	})
}

// validMethod is what net/http's server accepts as a method (a token).
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range []byte(m) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// fuzzState is what a request must not change unless it made a slice: the
// slices the server lists, what the allocator has booked, and the slice
// directories on disk.
func fuzzState(t *testing.T, s *Server) string {
	t.Helper()
	var b strings.Builder
	for _, sl := range s.list() {
		b.WriteString(sl.ID + " ")
	}
	for _, d := range s.alloc.Devices() {
		b.WriteString(strings.TrimSpace(strings.Join([]string{d.UUID, jsonString(d)}, "=")) + " ")
	}
	ents, err := os.ReadDir(filepath.Join(s.cfg.StateDir, "slices"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		b.WriteString("dir:" + e.Name() + " ")
	}
	return b.String()
}

func jsonString(v any) string {
	data, _ := json.Marshal(v)
	return string(data)
}
