package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vgpu-project/vgpu/tracker"
)

// evKey names the event a sample waits for.
type evKey struct {
	kind tracker.EventKind
	pid  int
}

// recorder is the benchmark's subscriber: it stamps every open and exit
// event on receipt, so a sample's latency ends where a subscriber (the
// enforcer) would have the event.
type recorder struct {
	dev    tracker.Device
	mu     sync.Mutex
	seen   map[evKey]time.Time
	events int
	notify chan struct{}
	done   chan struct{}
}

func newRecorder(tr tracker.Tracker, dev tracker.Device) (*recorder, func()) {
	ch, cancel := tr.Subscribe(4096)
	r := &recorder{dev: dev, seen: map[evKey]time.Time{}, notify: make(chan struct{}, 1), done: make(chan struct{})}
	go r.run(ch)
	return r, func() { cancel(); <-r.done }
}

func (r *recorder) run(ch <-chan tracker.Event) {
	defer close(r.done)
	for ev := range ch {
		now := time.Now()
		r.mu.Lock()
		r.events++
		if ev.Kind == tracker.EventExit || (ev.Kind == tracker.EventOpen && ev.Device == r.dev) {
			k := evKey{ev.Kind, ev.PID}
			if _, ok := r.seen[k]; !ok {
				r.seen[k] = now
			}
		}
		r.mu.Unlock()
		select {
		case r.notify <- struct{}{}:
		default:
		}
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events
}

// wait returns when k was received, or false after d. One waiter at a time.
func (r *recorder) wait(ctx context.Context, k evKey, d time.Duration) (time.Time, bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		at, ok := r.seen[k]
		delete(r.seen, k)
		r.mu.Unlock()
		if ok {
			return at, true
		}
		select {
		case <-r.notify:
		case <-deadline.C:
			return time.Time{}, false
		case <-ctx.Done():
			return time.Time{}, false
		}
	}
}

// forget drops what was received for pid (a sample that ended).
func (r *recorder) forget(pid int) {
	r.mu.Lock()
	delete(r.seen, evKey{tracker.EventOpen, pid})
	delete(r.seen, evKey{tracker.EventExit, pid})
	r.mu.Unlock()
}

// child is a started helper process with its stdin and stdout.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// startChild starts a shell script with the stand-in node as $1.
func startChild(shell, script, node string) (*child, error) {
	cmd := exec.Command(shell, "-c", script, shell, node)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", shell, err)
	}
	return &child{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}, nil
}

// end closes the child's stdin (it exits on EOF), kills it if asked, reaps it.
func (c *child) end(kill bool) {
	_ = c.stdin.Close()
	if kill {
		_ = c.cmd.Process.Kill()
	}
	_ = c.cmd.Wait()
}

// The open sample's child: stamps CLOCK_REALTIME (µs) right before it opens
// the node, reports the stamp after, holds the node until stdin ends.
const openScript = `t=$EPOCHREALTIME; exec 3<"$1" || exit 1; echo "$t"; read -r _`

// The exit sample's child: opens the node, says so, waits to be killed.
const holdScript = `exec 3<"$1" || exit 1; echo opened; read -r _`

// parseEpochRealtime parses bash's $EPOCHREALTIME ("1733512345.123456", or
// with a comma in some locales) into ns since the epoch.
func parseEpochRealtime(s string) (int64, error) {
	s = strings.Replace(strings.TrimSpace(s), ",", ".", 1)
	sec, frac, _ := strings.Cut(s, ".")
	secs, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("child stamp %q: %w", s, err)
	}
	frac = (frac + "000000000")[:9]
	ns, err := strconv.ParseInt(frac, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("child stamp %q: %w", s, err)
	}
	return secs*1e9 + ns, nil
}

// latency measures open → subscriber and SIGKILL → subscriber with a fresh
// tracker of one kind.
func (e *benchEnv) latency(ctx context.Context, procfs bool, opens, exits int) ([]TrackerLatencyRow, error) {
	if opens == 0 && exits == 0 {
		return nil, nil
	}
	tr, err := e.newTracker(ctx, procfs)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	rec, stop := newRecorder(tr, e.dev)
	defer stop()
	s := &latSampler{env: e, rec: rec, kind: tr.Kind(), timeout: 2 * time.Second}
	if procfs {
		s.phase = e.opts.ProcfsInterval
		s.timeout = 10*e.opts.ProcfsInterval + 2*time.Second
	}
	var rows []TrackerLatencyRow
	for _, part := range []struct {
		what string
		n    int
		one  func(context.Context) (float64, bool, error)
	}{{"open", opens, s.open}, {"exit", exits, s.exit}} {
		if part.n == 0 {
			continue
		}
		fmt.Fprintf(e.log, "bench: %s %s latency, %d samples\n", s.kind, part.what, part.n)
		row := TrackerLatencyRow{What: part.what, Tracker: s.kind}
		var ms []float64
		for i := 0; i < part.n; i++ {
			v, ok, err := part.one(ctx)
			if err != nil {
				return nil, err
			}
			if !ok {
				row.Missed++
				continue
			}
			ms = append(ms, v)
		}
		row.MS = Summarize(ms)
		rows = append(rows, row)
	}
	return rows, nil
}

// latSampler takes one latency sample at a time.
type latSampler struct {
	env     *benchEnv
	rec     *recorder
	kind    string
	timeout time.Duration
	// phase: a random delay up to this before each sample, so that procfs
	// samples fall at every phase of the scan (0 for eBPF).
	phase time.Duration
}

func (s *latSampler) randomPhase(ctx context.Context) {
	if s.phase <= 0 {
		return
	}
	select {
	case <-time.After(rand.N(s.phase)): //nolint:gosec // a scheduling jitter, not a secret
	case <-ctx.Done():
	}
}

// open: one child opens the node; ms from its stamp to the EventOpen's receipt.
func (s *latSampler) open(ctx context.Context) (float64, bool, error) {
	s.randomPhase(ctx)
	c, err := startChild("bash", openScript, s.env.node)
	if err != nil {
		return 0, false, err
	}
	defer c.end(false)
	pid := c.cmd.Process.Pid
	defer s.rec.forget(pid)
	line, err := c.out.ReadString('\n')
	if err != nil {
		return 0, false, fmt.Errorf("open child %d said nothing (could it open %s?): %w", pid, s.env.node, err)
	}
	stamp, err := parseEpochRealtime(line)
	if err != nil {
		return 0, false, err
	}
	at, ok := s.rec.wait(ctx, evKey{tracker.EventOpen, pid}, s.timeout)
	if !ok {
		return 0, false, ctx.Err()
	}
	return float64(at.UnixNano()-stamp) / 1e6, true, nil
}

// exit: a holder the tracker knows is SIGKILLed; ms from just before the
// kill to the EventExit's receipt.
func (s *latSampler) exit(ctx context.Context) (float64, bool, error) {
	c, err := startChild("sh", holdScript, s.env.node)
	if err != nil {
		return 0, false, err
	}
	pid := c.cmd.Process.Pid
	defer s.rec.forget(pid)
	if _, err := c.out.ReadString('\n'); err != nil {
		c.end(true)
		return 0, false, fmt.Errorf("holder %d did not open %s: %w", pid, s.env.node, err)
	}
	if _, ok := s.rec.wait(ctx, evKey{tracker.EventOpen, pid}, s.timeout); !ok {
		c.end(true)
		return 0, false, ctx.Err()
	}
	s.randomPhase(ctx)
	reaped := make(chan struct{})
	t0 := time.Now()
	err = c.cmd.Process.Kill()
	go func() { c.end(false); close(reaped) }()
	defer func() { <-reaped }()
	if err != nil {
		return 0, false, fmt.Errorf("kill %d: %w", pid, err)
	}
	at, ok := s.rec.wait(ctx, evKey{tracker.EventExit, pid}, s.timeout)
	if !ok {
		return 0, false, ctx.Err()
	}
	return float64(at.Sub(t0)) / 1e6, true, nil
}
