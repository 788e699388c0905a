package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrNotRunning is wrapped by every client error that means nothing listens on
// the socket (no socket file, or a stale one): vgpud is down.
var ErrNotRunning = errors.New("vgpud is not running")

// StatusError is a non-2xx answer of vgpud: the HTTP status and the server's
// Error body.
type StatusError struct {
	StatusCode int
	Message    string
	// Reasons says, for a refused allocation, what each device lacked.
	Reasons []string
}

func (e *StatusError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	if len(e.Reasons) > 0 {
		msg += ": " + strings.Join(e.Reasons, "; ")
	}
	return msg
}

// Client talks to vgpud over its unix socket. It is safe for concurrent use
// and keeps connections alive between calls.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the vgpud listening on socketPath ("" means
// DefaultSocket). It does not connect until the first call.
func NewClient(socketPath string) *Client {
	if socketPath == "" {
		socketPath = DefaultSocket
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{socket: socketPath, http: &http.Client{Transport: tr}}
}

// Socket is the socket path the client talks to.
func (c *Client) Socket() string { return c.socket }

// Close drops idle connections.
func (c *Client) Close() {
	c.http.CloseIdleConnections()
}

// Health returns vgpud's own state.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.do(ctx, http.MethodGet, "/v1/health", nil, &h)
	return h, err
}

// Devices lists the node's GPUs with what slices hold on each.
func (c *Client) Devices(ctx context.Context) ([]Device, error) {
	var d []Device
	err := c.do(ctx, http.MethodGet, "/v1/devices", nil, &d)
	return d, err
}

// Slices lists every slice.
func (c *Client) Slices(ctx context.Context) ([]Slice, error) {
	var s []Slice
	err := c.do(ctx, http.MethodGet, "/v1/slices", nil, &s)
	return s, err
}

// Alloc asks for a slice. A refusal is a *StatusError (409: the id is taken,
// 422: it does not fit, with Reasons; 400: a bad request).
func (c *Client) Alloc(ctx context.Context, req AllocRequest) (Slice, error) {
	var s Slice
	err := c.do(ctx, http.MethodPost, "/v1/slices", req, &s)
	return s, err
}

// Get returns one slice; a missing one is a *StatusError with StatusCode 404.
func (c *Client) Get(ctx context.Context, id string) (Slice, error) {
	var s Slice
	err := c.do(ctx, http.MethodGet, "/v1/slices/"+url.PathEscape(id), nil, &s)
	return s, err
}

// Update changes a live slice's compute share or policy and returns the slice
// as it is now. A refusal is a *StatusError (404: no such slice, 400: a bad
// request, 409: quarantined or not enforced, 422: the share does not fit).
func (c *Client) Update(ctx context.Context, id string, req UpdateRequest) (Slice, error) {
	var s Slice
	err := c.do(ctx, http.MethodPatch, "/v1/slices/"+url.PathEscape(id), req, &s)
	return s, err
}

// Release frees a slice; a missing one is a *StatusError with StatusCode 404.
func (c *Client) Release(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/slices/"+url.PathEscape(id), nil, nil)
}

// Top returns every slice's usage as the enforcer loop last saw it.
func (c *Client) Top(ctx context.Context) ([]SliceUsage, error) {
	var u []SliceUsage
	err := c.do(ctx, http.MethodGet, "/v1/top", nil, &u)
	return u, err
}

// Events lists the latest elastic-memory decisions, oldest first.
func (c *Client) Events(ctx context.Context) ([]ElasticEvent, error) {
	var ev []ElasticEvent
	err := c.do(ctx, http.MethodGet, "/v1/events", nil, &ev)
	return ev, err
}

// Processes lists the processes vgpud's tracker knows to hold a GPU device.
func (c *Client) Processes(ctx context.Context) (Processes, error) {
	var p Processes
	err := c.do(ctx, http.MethodGet, "/v1/processes", nil, &p)
	return p, err
}

// Quarantine lists the quarantined slices: those whose record vgpud could not
// load, held until released or restored.
func (c *Client) Quarantine(ctx context.Context) ([]QuarantinedSlice, error) {
	var q []QuarantinedSlice
	err := c.do(ctx, http.MethodGet, "/v1/quarantine", nil, &q)
	return q, err
}

// ReleaseQuarantined frees what a quarantined slice holds and removes its
// files; name is its QuarantinedSlice.Name or its slice id. A missing one is a
// *StatusError with StatusCode 404.
func (c *Client) ReleaseQuarantined(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/quarantine/"+url.PathEscape(name), nil, nil)
}

// RestoreQuarantined makes a quarantined slice live again, its record rebuilt
// from its budget file, and returns it. A slice with no readable budget is
// refused (422), one whose id is live again (409).
func (c *Client) RestoreQuarantined(ctx context.Context, name string) (Slice, error) {
	var s Slice
	err := c.do(ctx, http.MethodPost, "/v1/quarantine/"+url.PathEscape(name)+"/restore", nil, &s)
	return s, err
}

// IsNotFound reports whether err is vgpud's 404.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.StatusCode == http.StatusNotFound
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	// The host part is ignored (the transport always dials the socket); it only
	// has to be a valid URL.
	req, err := http.NewRequestWithContext(ctx, method, "http://vgpud"+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.connError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer from vgpud at %s: %w", method, path, c.socket, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		se := &StatusError{StatusCode: resp.StatusCode}
		var e Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			se.Message, se.Reasons = e.Error, e.Reasons
		} else {
			se.Message = strings.TrimSpace(string(data))
		}
		return se
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode answer from vgpud: %w", method, path, err)
	}
	return nil
}

// connError says what a transport error means for the user: most often that
// vgpud is down, or that the socket (mode 0600) is root's.
func (c *Client) connError(err error) error {
	// The *url.Error wrapper only repeats the fake URL; the dial error says it all.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w at %s: %w", ErrNotRunning, c.socket, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("cannot reach vgpud at %s: %w (the socket is mode 0600: run as its owner, usually root)", c.socket, err)
	}
	return fmt.Errorf("vgpud at %s: %w", c.socket, err)
}
