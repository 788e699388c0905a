package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// apiReadTimeout is vgpud's read deadline for a whole request (headers and
// body; daemon/listen.go). A stalled client must be gone within it plus slack
// for a loaded machine.
const (
	apiReadTimeout = 5 * time.Second
	stallSlack     = 5 * time.Second
)

// stalled is a raw connection to vgpud's socket that sent part of a request
// and then nothing more (or, dripping, one byte a second).
type stalled struct {
	name   string
	conn   net.Conn
	closed chan struct{} // closed when vgpud has closed the connection
	answer []byte        // what vgpud wrote before closing
	after  time.Duration // how long after the first byte vgpud closed it
}

func dialStalled(t *testing.T, socket, name, sent string, drip bool) *stalled {
	t.Helper()
	c, err := net.Dial("unix", socket)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	s := &stalled{name: name, conn: c, closed: make(chan struct{})}
	start := time.Now()
	if drip {
		go func() {
			for i := 0; i < len(sent); i++ {
				if _, err := c.Write([]byte{sent[i]}); err != nil {
					return
				}
				time.Sleep(time.Second)
			}
		}()
	} else {
		_, err = io.WriteString(c, sent)
		require.NoError(t, err)
	}
	go func() {
		defer close(s.closed)
		// Bounded so that a vgpud that never closes fails the test instead
		// of hanging it.
		c.SetReadDeadline(time.Now().Add(apiReadTimeout + 4*stallSlack))
		s.answer, _ = io.ReadAll(c)
		s.after = time.Since(start)
	}()
	return s
}

// TestStalledRequestsAreDisconnected (issue row 7): clients that open a
// connection and send nothing, half the headers, the headers and part of the
// body, or a request a byte a second, are disconnected within vgpud's read
// timeout (the one that sent a partial body with a 408), while other requests
// keep being answered at once; nothing is allocated for them and vgpud stays up.
func TestStalledRequestsAreDisconnected(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	d := nd.start()

	body := `{"memory_bytes": 1073741824, "id": "stalled"}`
	conns := []*stalled{
		dialStalled(t, nd.socket, "nothing", "", false),
		dialStalled(t, nd.socket, "half the headers", "GET /v1/health HTTP/1.1\r\nHost: vgpud\r\n", false),
		dialStalled(t, nd.socket, "partial body",
			fmt.Sprintf("POST /v1/slices HTTP/1.1\r\nHost: vgpud\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
				len(body), body[:len(body)/2]), false),
		dialStalled(t, nd.socket, "drip", "GET /v1/slices HTTP/1.1\r\nHost: vgpud\r\nX-Slow: "+strings.Repeat("a", 60)+"\r\n\r\n", true),
	}

	// Meanwhile vgpud answers everyone else, promptly.
	for i := 0; i < 5; i++ {
		begin := time.Now()
		h, err := nd.client.Health(bg())
		require.NoError(t, err)
		require.Equal(t, "ok", h.Status)
		sl, err := nd.client.Alloc(bg(), api.AllocRequest{ID: fmt.Sprintf("ok-%d", i), MemoryBytes: GiB})
		require.NoError(t, err)
		require.NoError(t, nd.client.Release(bg(), sl.ID))
		require.Less(t, time.Since(begin), 2*time.Second, "a request waited behind the stalled clients")
		time.Sleep(200 * time.Millisecond)
	}

	for _, s := range conns {
		select {
		case <-s.closed:
		case <-time.After(apiReadTimeout + 4*stallSlack + time.Second):
			t.Fatalf("%s: reader stuck", s.name)
		}
		require.Less(t, s.after, apiReadTimeout+stallSlack, "%s: connection held %s; answer %q", s.name, s.after, s.answer)
		t.Logf("%s: closed after %s", s.name, s.after.Round(time.Millisecond))
		if s.name == "partial body" {
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(s.answer)), nil)
			require.NoError(t, err, "answer %q", s.answer)
			require.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
			var e api.Error
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
			require.Contains(t, e.Error, "request body not received within")
		}
	}

	slices, err := nd.client.Slices(bg())
	require.NoError(t, err)
	require.Empty(t, slices, "a stalled request left a slice")
	_, err = nd.client.Health(bg())
	require.NoError(t, err)
	d.stop()
}

// rawRequest sends req (and body, written concurrently: vgpud may answer
// and close before it has read all of it) on a fresh connection and returns
// vgpud's answer.
func rawRequest(t *testing.T, socket, head string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("unix", socket)
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(lineTimeout))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := io.WriteString(c, head); err != nil {
			return
		}
		if body != nil {
			io.Copy(c, body) // EPIPE once vgpud has answered and closed: expected
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	data, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		require.NoError(t, err)
	}
	c.Close()
	wg.Wait()
	return resp, data
}

// TestOversizedRequestsRefused: a request body over 1MiB is refused with 413
// and a reason, whether it declares its length or streams it chunked; a
// header block over the limit with 431; nothing is allocated and vgpud keeps
// serving.
func TestOversizedRequestsRefused(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	d := nd.start()

	// A valid request padded with whitespace past the limit.
	big := `{"memory_bytes": 1073741824, "id": "big"` + strings.Repeat(" ", 2<<20) + "}"
	resp, data := rawRequest(t, nd.socket, fmt.Sprintf(
		"POST /v1/slices HTTP/1.1\r\nHost: vgpud\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(big)),
		strings.NewReader(big))
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "%s", data)
	var e api.Error
	require.NoError(t, json.Unmarshal(data, &e), "%s", data)
	require.Contains(t, e.Error, "request body too large: more than 1MiB")

	// Chunked, no length announced.
	pr, pw := io.Pipe()
	go func() {
		chunk := strings.Repeat(" ", 64<<10)
		head := `{"memory_bytes": 1073741824, "id": "big2"`
		fmt.Fprintf(pw, "%x\r\n%s\r\n", len(head), head)
		for i := 0; i < 40; i++ {
			if _, err := fmt.Fprintf(pw, "%x\r\n%s\r\n", len(chunk), chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	resp, data = rawRequest(t, nd.socket,
		"POST /v1/slices HTTP/1.1\r\nHost: vgpud\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", pr)
	pr.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "%s", data)

	// Headers past the limit.
	resp, data = rawRequest(t, nd.socket,
		"GET /v1/health HTTP/1.1\r\nHost: vgpud\r\nX-Big: "+strings.Repeat("h", 256<<10)+"\r\n\r\n", nil)
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode, "%s", data)

	slices, err := nd.client.Slices(bg())
	require.NoError(t, err)
	require.Empty(t, slices)
	sl, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "after", MemoryBytes: GiB})
	require.NoError(t, err, "vgpud still allocates")
	require.NoError(t, nd.client.Release(bg(), sl.ID))
	_, err = os.Stat(nd.socket)
	require.NoError(t, err)
	d.stop()
}

// TestBadRequestsNeverCrashVgpud: malformed bodies, unknown routes and
// methods and hostile ids are answered with a 4xx, never a 5xx, and leave
// nothing behind.
func TestBadRequestsNeverCrashVgpud(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	d := nd.start()
	post := func(body string) string {
		return fmt.Sprintf("POST /v1/slices HTTP/1.1\r\nHost: vgpud\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
	for _, req := range []string{
		post(`{`), post(`[]`), post(`null`), post(`{"memory_bytes": -1}`), post(`{"memory_bytes": 1e400}`),
		post(`{"memory_bytes": 1073741824, "priority": 4294967296}`),
		post(`{"memory_bytes": 1073741824, "priority": -1}`),
		post(`{"memory_bytes": 1073741824, "device_count": 1000000}`),
		post(`{"memory_bytes": 1073741824, "uuids": ["` + strings.Repeat("x", 10000) + `"]}`),
		post(`{"memory_bytes": 1073741824, "id": "../../etc"}`),
		post(`{"memory_bytes": 1073741824, "owner": {"kind": "pid", "pid": -1}}`),
		post(`{"memory_bytes": 1073741824, "owner": {"kind": "container"}}`),
		post(`{"memory_bytes": 1073741824} {"memory_bytes": 1}`),
		"GET /v1/slices/..%2f..%2fetc HTTP/1.1\r\nHost: vgpud\r\n\r\n",
		"DELETE /v1/slices/" + strings.Repeat("a", 4000) + " HTTP/1.1\r\nHost: vgpud\r\n\r\n",
		"PATCH /v1/slices HTTP/1.1\r\nHost: vgpud\r\n\r\n",
		"GET /nope HTTP/1.1\r\nHost: vgpud\r\n\r\n",
	} {
		resp, data := rawRequest(t, nd.socket, req, nil)
		require.GreaterOrEqual(t, resp.StatusCode, 400, "%.200q: %s", req, data)
		require.Less(t, resp.StatusCode, 500, "%.200q: %s", req, data)
	}
	slices, err := nd.client.Slices(bg())
	require.NoError(t, err)
	require.Empty(t, slices)
	d.stop()
}
