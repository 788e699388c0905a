package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/internal/atomicfile"
)

// The elastic benchmark's children and what it reads: tenant processes with
// time-stamped lines, the workload's death by pidfd, vgpud's log, and the
// cost of a durable record write.

// elasticResult is build/test/elastic's RESULT line.
type elasticResult struct {
	Err  int
	Name string
	Ns   int64
}

// parseElasticResult parses "RESULT err=<code> name=<name> ns=<ns>".
func parseElasticResult(l string) (elasticResult, error) {
	if !strings.HasPrefix(l, "RESULT ") {
		return elasticResult{}, fmt.Errorf("not a RESULT line: %q", l)
	}
	f := lineFields(l)
	e, err1 := strconv.Atoi(f["err"])
	ns, err2 := strconv.ParseInt(f["ns"], 10, 64)
	if err1 != nil || err2 != nil || f["name"] == "" || ns < 0 {
		return elasticResult{}, fmt.Errorf("malformed RESULT line: %q", l)
	}
	return elasticResult{Err: e, Name: f["name"], Ns: ns}, nil
}

// countLogMsg counts vgpud's JSON log records whose msg is msg.
func countLogMsg(log, msg string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == msg {
			n++
		}
	}
	return n
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// benchProc is a child whose stdout lines are read with the instant each
// was read, and whose exit instant is recorded.
type benchProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan stampedLine
	done   chan struct{}
	exitAt time.Time
	status int // exit code, or 128 + signal
	errb   strings.Builder
}

type stampedLine struct {
	text string
	at   time.Time
}

func startBenchProc(ctx context.Context, env []string, prog string, args ...string) (*benchProc, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGKILL) }
	p := &benchProc{cmd: cmd, lines: make(chan stampedLine, 64), done: make(chan struct{})}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = &lockedBuilder{b: &p.errb}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", prog, err)
	}
	p.stdin = stdin
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- stampedLine{sc.Text(), time.Now()}
		}
		close(p.lines)
		_ = cmd.Wait()
		p.exitAt = time.Now()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.status = 128 + int(ws.Signal())
		} else {
			p.status = cmd.ProcessState.ExitCode()
		}
		close(p.done)
	}()
	return p, nil
}

// expect returns the next line starting with prefix (skipping others).
func (p *benchProc) expect(prefix string, timeout time.Duration) (stampedLine, error) {
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				<-p.done
				return stampedLine{}, fmt.Errorf("%s exited (status %d) before %q: %s", filepath.Base(p.cmd.Path),
					p.status, prefix, strings.TrimSpace(p.errb.String()))
			}
			if strings.HasPrefix(l.text, prefix) {
				return l, nil
			}
		case <-deadline:
			return stampedLine{}, fmt.Errorf("%s: no %q within %v", filepath.Base(p.cmd.Path), prefix, timeout)
		}
	}
}

// finish closes stdin (the programs free and exit), waits up to grace, then
// kills.
func (p *benchProc) finish(grace time.Duration) {
	_ = p.stdin.Close()
	go func() { // drain, so the reader never blocks
		for range p.lines {
		}
	}()
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// recordWriteCost times n durable record writes (atomicfile.Write with
// Durable: write, fsync, rename, fsync of the directory — what store.Update
// does for each slice a grant changes) of a 1 KiB file under dir.
func recordWriteCost(dir string, n int) (*ElasticWriteCost, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	data := make([]byte, 1024)
	var ms []float64
	for i := range n {
		t0 := time.Now()
		if err := atomicfile.Write(filepath.Join(dir, "slice.json"), data, 0o644, atomicfile.Durable); err != nil {
			return nil, fmt.Errorf("record write: %w", err)
		}
		if i > 0 {
			ms = append(ms, float64(time.Since(t0))/1e6)
		}
	}
	return &ElasticWriteCost{StateFS: fsType(dir), Write: Summarize(ms)}, nil
}

// watchChild finds the one child of pid (vgpuctl run's workload) and returns
// a channel that receives the instant it dies (its pidfd readable).
func watchChild(pid int) (<-chan time.Time, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	child := 0
	for _, e := range ents {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, cut at its last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			child = cpid
			break
		}
	}
	if child == 0 {
		return nil, fmt.Errorf("no child of vgpuctl run (pid %d)", pid)
	}
	fd, err := unix.PidfdOpen(child, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", child, err)
	}
	out := make(chan time.Time, 1)
	go func() {
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}} //nolint:gosec // an fd
		for {
			if _, err := unix.Poll(fds, -1); err == nil || err != unix.EINTR {
				out <- time.Now()
				return
			}
		}
	}()
	return out, nil
}

// grantLogTimes returns, per round (slice ids g<round>-<i>), the sorted
// instants of vgpud's "elastic: memory granted" records (ms resolution).
func grantLogTimes(log string) map[int][]time.Time {
	out := map[int][]time.Time{}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Msg   string `json:"msg"`
			TS    string `json:"ts"`
			Slice string `json:"slice"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil || rec.Msg != "elastic: memory granted" {
			continue
		}
		round, ok := grantRoundOf(rec.Slice)
		t, err := time.Parse(time.RFC3339Nano, rec.TS)
		if !ok || err != nil {
			continue
		}
		out[round] = append(out[round], t)
	}
	for _, ts := range out {
		sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	}
	return out
}

// grantRoundOf parses a grant slice id "g<round>-<i>".
func grantRoundOf(id string) (int, bool) {
	rest, ok := strings.CutPrefix(id, "g")
	if !ok {
		return 0, false
	}
	r, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(r)
	return n, err == nil && n >= 0
}

// planCount counts the groups of sorted instants more than gap apart: the
// plans (ticks) that granted a round's requests (one plan logs its grants
// together, after answering them all).
func planCount(ts []time.Time, gap time.Duration) int {
	if len(ts) == 0 {
		return 0
	}
	n := 1
	for i := 1; i < len(ts); i++ {
		if ts[i].Sub(ts[i-1]) > gap {
			n++
		}
	}
	return n
}
