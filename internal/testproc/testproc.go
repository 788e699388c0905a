// Package testproc runs a test program and reads its stdout line by line:
// "start a program, expect a line", for the tests that drive the C test
// programs and vgpud through their KEY k=v output (test/daemon,
// test/integration). Only tests import it.
package testproc

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Proc is a running program: stdout read line by line, stdin a pipe, stderr
// kept for failure messages.
type Proc struct {
	Cmd  *exec.Cmd
	Name string // in failure messages
	// Timeout bounds every wait for a line or for the exit: generous for a
	// loaded CI machine, finite so that a hung program fails its test.
	Timeout time.Duration

	t     testing.TB
	stdin io.WriteCloser
	lines chan string
	mu    sync.Mutex
	errb  bytes.Buffer
	done  chan struct{}
	state *os.ProcessState
}

// Start starts cmd (its Stdin, Stdout and Stderr unset) and fails t when it
// cannot. A cleanup of t kills the program if it is still running.
func Start(t testing.TB, cmd *exec.Cmd, name string, timeout time.Duration) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, Name: name, Timeout: timeout, t: t,
		lines: make(chan string, 4096), done: make(chan struct{})}
	var err error
	p.stdin, err = cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = lockedWriter{p}
	require.NoError(t, cmd.Start(), "start %s", p.Name)
	// One goroutine reads to EOF and only then waits: exec closes the pipe in
	// Wait, so waiting concurrently with the reads could lose the last lines.
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.Exited() {
			_ = cmd.Process.Kill()
			p.Drain() // the reader may be blocked on a full channel
		}
	})
	return p
}

// lockedWriter collects stderr (written by exec's copier goroutine while the
// test may read it).
type lockedWriter struct{ p *Proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.errb.Write(b)
}

// Pid is the program's process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Stderr is what the program wrote to stderr so far.
func (p *Proc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errb.String()
}

// Expect reads lines until one starts with prefix and returns its key=value
// fields. Fails on EOF or timeout, showing the program's stderr.
func (p *Proc) Expect(prefix string) map[string]string {
	p.t.Helper()
	_, f := p.ExpectEither(prefix)
	return f
}

// ExpectEither reads lines until one starts with one of prefixes and returns
// that prefix with the line's fields: Expect, for a program that prints one
// of several lines next.
func (p *Proc) ExpectEither(prefixes ...string) (string, map[string]string) {
	p.t.Helper()
	want := quoteOr(prefixes)
	timer := time.NewTimer(p.Timeout)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				<-p.done
				p.t.Fatalf("%s: ended (%v) before printing %s; stderr:\n%s", p.Name, p.state, want, p.Stderr())
			}
			for _, prefix := range prefixes {
				if strings.HasPrefix(l, prefix) {
					return prefix, Fields(l)
				}
			}
		case <-timer.C:
			p.t.Fatalf("%s: no %s line within %v; stderr:\n%s", p.Name, want, p.Timeout, p.Stderr())
		}
	}
}

// quoteOr is `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
func quoteOr(xs []string) string {
	var b strings.Builder
	for i, x := range xs {
		switch {
		case i == 0:
		case i == len(xs)-1:
			b.WriteString(" or ")
		default:
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(x))
	}
	return b.String()
}

// Phase waits for "PHASE name".
func (p *Proc) Phase(name string) {
	p.t.Helper()
	p.Expect("PHASE " + name)
}

// Next lets a stepping program (--step) go past its current phase.
func (p *Proc) Next() {
	p.t.Helper()
	_, err := io.WriteString(p.stdin, "\n")
	require.NoError(p.t, err, "%s: write stdin", p.Name)
}

// Drain discards output until the program has exited and its output is read
// (so the reader never blocks on a full channel); false on timeout.
func (p *Proc) Drain() bool {
	timer := time.NewTimer(p.Timeout)
	defer timer.Stop()
	lines := p.lines
	for {
		select {
		case _, ok := <-lines:
			if !ok {
				lines = nil
			}
		case <-p.done:
			return true
		case <-timer.C:
			return false
		}
	}
}

// Wait closes stdin, waits for the exit and returns the exit code (-1: signal).
func (p *Proc) Wait() int {
	p.t.Helper()
	_ = p.stdin.Close()
	return p.WaitExit()
}

// WaitExit waits for the exit without closing stdin (a stepping program goes
// on waiting at its phase) and returns the exit code (-1: signal).
func (p *Proc) WaitExit() int {
	p.t.Helper()
	if !p.Drain() {
		p.t.Fatalf("%s: did not exit within %v; stderr:\n%s", p.Name, p.Timeout, p.Stderr())
	}
	return p.state.ExitCode()
}

// WaitOK waits for a clean exit (stdin closed).
func (p *Proc) WaitOK() {
	p.t.Helper()
	code := p.Wait()
	require.Equal(p.t, 0, code, "%s exited %d; stderr:\n%s", p.Name, code, p.Stderr())
}

// Kill sends SIGKILL and waits until the program is gone.
func (p *Proc) Kill() {
	p.t.Helper()
	require.NoError(p.t, p.Cmd.Process.Signal(syscall.SIGKILL))
	if !p.Drain() {
		p.t.Fatalf("%s: still running %v after SIGKILL", p.Name, p.Timeout)
	}
}

// Exited reports whether the program has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Fields parses "KEY a=1 b=x" into {a: 1, b: x}.
func Fields(line string) map[string]string {
	m := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			m[k] = v
		}
	}
	return m
}

// LineWith returns the fields (Fields) of the first line of out that starts
// with prefix; the test fails when there is none.
func LineWith(t testing.TB, out, prefix string) map[string]string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return Fields(l)
		}
	}
	t.Fatalf("no %q line in:\n%s", prefix, out)
	return nil
}
