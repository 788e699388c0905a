package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// listenUnix listens on the API socket: mode 0600 from the first moment it can
// be reached (it is bound under a temporary name, chmod'ed, then renamed into
// place, so no client ever sees a wider mode), its directory created 0755, and a
// stale socket left by a crashed vgpud replaced. A socket someone answers on is
// another vgpud: refused. A path that is not a socket is never removed.
func listenUnix(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("socket %s: exists and is not a socket (%s); remove it or choose another --socket",
				path, fi.Mode().Type())
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s: another vgpud is listening on it", path)
		}
		// Stale (ECONNREFUSED): the rename below replaces it.
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}

	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp"+strconv.Itoa(os.Getpid()))
	if len(tmp) > 107 {
		tmp = path // no room for a temporary name: bind in place (brief 0755-umask window)
	}
	os.Remove(tmp)
	if tmp == path {
		os.Remove(path)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// The listener must not unlink its (temporary) name on Close: after the
	// rename that name is gone, and the final path is removed by closeSocket
	// only if it is still ours.
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("socket %s: chmod 0600: %w", path, err)
	}
	if tmp != path {
		// A socket, not a file: bound under a temporary name, then moved into place.
		if err := os.Rename(tmp, path); err != nil { //nolint:forbidigo // renames a bound socket
			l.Close()
			os.Remove(tmp)
			return nil, fmt.Errorf("socket %s: %w", path, err)
		}
	}
	return l, nil
}

// removeSocket removes path if it is still the socket we bound (same inode),
// so a vgpud that lost its socket to a newer one does not delete the newer one's.
func removeSocket(path string, ino uint64) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err == nil && st.Ino == ino {
		os.Remove(path)
	}
}

// socketInode returns the inode of the socket file at path (0 if unknown).
func socketInode(path string) uint64 {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

// lockStateDir takes an exclusive flock on <dir>/vgpud.lock so that two vgpuds
// never manage the same slices. The kernel drops the lock when the process
// dies, however it dies, so a crash never leaves a stale lock behind.
func lockStateDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	path := filepath.Join(dir, "vgpud.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			owner, _ := os.ReadFile(path)
			pid := strings.TrimSpace(string(owner))
			if pid == "" {
				pid = "unknown"
			}
			return nil, fmt.Errorf("state dir %s is in use by another vgpud (pid %s)", dir, pid)
		}
		return nil, fmt.Errorf("state dir lock %s: %w", path, err)
	}
	// The pid is for the error message above only; the flock is the lock.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())), 0) // informative only
	}
	return f, nil
}

// The limits of vgpud's HTTP servers. Their clients are local (vgpuctl,
// vgpu-runtime, a Prometheus scraper) and send at most a few hundred bytes,
// so a request whose headers or body have not arrived within a few seconds
// comes from a stalled or hostile client: without a deadline its connection
// and goroutine would be held forever, and enough of them exhaust vgpud.
const (
	// apiReadHeaderTimeout bounds reading a request's headers; apiReadTimeout
	// the whole request, headers and body (a body that stalls is answered
	// 408 and the connection closed).
	apiReadHeaderTimeout = 5 * time.Second
	apiReadTimeout       = 5 * time.Second
	// apiWriteTimeout runs from the end of the headers to the end of the
	// answer, so it includes the handler (an allocation fsyncs its record):
	// generous, longer than the clients' own timeouts (vgpu-runtime: 10s), so
	// a busy vgpud answers late rather than not at all.
	apiWriteTimeout = 30 * time.Second
	// apiIdleTimeout closes a keep-alive connection with no request.
	apiIdleTimeout = 30 * time.Second
	// maxHeaderBytes bounds a request's headers (net/http's default: 1MiB).
	maxHeaderBytes = 64 << 10

	// The metrics endpoint (TCP) is scraped periodically over keep-alive
	// connections: a longer idle time, the same read limits.
	metricsReadHeaderTimeout = 5 * time.Second
	metricsReadTimeout       = 10 * time.Second
	metricsWriteTimeout      = 30 * time.Second
	metricsIdleTimeout       = 2 * time.Minute
)

// newAPIServer is the http.Server of the API socket.
func newAPIServer(h http.Handler, log *zap.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: apiReadHeaderTimeout,
		ReadTimeout:       apiReadTimeout,
		WriteTimeout:      apiWriteTimeout,
		IdleTimeout:       apiIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(log),
	}
}

// newMetricsServer is the http.Server of the metrics endpoint.
func newMetricsServer(h http.Handler, log *zap.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: metricsReadHeaderTimeout,
		ReadTimeout:       metricsReadTimeout,
		WriteTimeout:      metricsWriteTimeout,
		IdleTimeout:       metricsIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(log),
	}
}
