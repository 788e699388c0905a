package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The benchmark's own view of the device: NVML's per-process utilization read
// through devices.NVML (go-nvml), independently of vgpud. The simulated NVML
// maps its node once per process, and every cell has a fresh node, so the
// reader runs as a child process per cell: the benchmark's own executable
// (vgpu-bench, or a test binary) started with SamplerEnv set, which must call
// SamplerMain before anything else (cmd/vgpu-bench's main and the bench tests'
// TestMain do).

// SamplerEnv names the environment variable that turns the executable into the
// NVML sampler: "LIBRARY|PERIOD_NS".
const SamplerEnv = "VGPU_BENCH_NVML_SAMPLER"

// samplerPoll is how often the sampler queries NVML: several times per sample
// period, so that almost every answer covers exactly one new period.
const samplerPoll = 40 * time.Millisecond

// SamplerRequested reports whether this process was started as the sampler.
func SamplerRequested() bool { return os.Getenv(SamplerEnv) != "" }

func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func realNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_REALTIME, &ts)
	return ts.Nano()
}

// SamplerMain runs the sampler until stdin closes: it writes "READY", then one
// line "S FIRST LAST PID SM%" per NVML sample, FIRST..LAST the sample periods
// (indices of the CLOCK_MONOTONIC timeline) the sample stands for. It returns
// the exit status.
func SamplerMain(stdin io.Reader, stdout io.Writer) int {
	lib, periodText, _ := strings.Cut(os.Getenv(SamplerEnv), "|")
	period, err := strconv.ParseInt(periodText, 10, 64)
	if err != nil || period <= 0 {
		fmt.Fprintf(os.Stderr, "sampler: bad %s=%q\n", SamplerEnv, os.Getenv(SamplerEnv))
		return 2
	}
	n, uuid, _, err := openNVML(lib)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sampler: %v\n", err)
		return 1
	}
	defer func() { _ = n.Close() }()
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, stdin); close(done) }()
	// A sample's stamp is the end of its period in CLOCK_REALTIME µs.
	off := realNow() - monoNow()
	epochOf := func(stampUs uint64) int64 {
		return (int64(stampUs)*1000-off+period/2)/period - 1
	}
	stampOf := func(e int64) uint64 { return uint64(((e+1)*period + off) / 1000) }
	w := bufio.NewWriter(stdout)
	lastSeen := stampOf(monoNow()/period - 1) // only what happens from now on
	fmt.Fprintln(w, "READY")
	for {
		_ = w.Flush()
		select {
		case <-done:
			return 0
		case <-time.After(samplerPoll):
		}
		complete := stampOf(monoNow()/period - 1)
		samples, err := n.ProcessUtilization(uuid, lastSeen)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sampler: %v\n", err)
			return 1
		}
		first := epochOf(lastSeen) + 1
		next := max(lastSeen, complete)
		for _, s := range samples {
			fmt.Fprintf(w, "S %d %d %d %d\n", first, epochOf(s.TimeStampUs), s.HostPID, s.SMPercent)
			next = max(next, s.TimeStampUs)
		}
		lastSeen = next
	}
}

// utilRecord is one sample as the sampler reported it.
type utilRecord struct {
	first, last int64
	pid         int
	pct         float64
}

// sampler is the running sampler child of one cell.
type sampler struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	ready  chan error
	done   chan struct{}
	errb   strings.Builder
	mu     sync.Mutex
	recs   []utilRecord
	period int64
}

// startSampler starts the sampler on node with the simulated NVML at simLib
// and waits until it reads NVML.
func startSampler(ctx context.Context, node, simLib string, period int64) (*sampler, error) {
	if SamplerRequested() {
		// This process is a sampler whose main did not call SamplerMain: a
		// sampler of its own would start the same program again, and so on.
		return nil, fmt.Errorf("sampler: %s is set but this program did not call bench.SamplerMain", SamplerEnv)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("sampler: %w", err)
	}
	s := &sampler{ready: make(chan error, 1), done: make(chan struct{}), period: period}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(cleanEnv(), "LD_LIBRARY_PATH="+filepath.Dir(simLib), "VGPU_SIM_STATE="+node,
		SamplerEnv+"="+simLib+"|"+strconv.FormatInt(period, 10))
	cmd.Stderr = &lockedBuilder{b: &s.errb}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("sampler: %w", err)
	}
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("sampler: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start sampler %s: %w", exe, err)
	}
	s.cmd = cmd
	go s.read(out)
	select {
	case err := <-s.ready:
		if err != nil {
			s.stop()
			return nil, err
		}
	case <-time.After(30 * time.Second):
		s.stop()
		return nil, errors.New("sampler: not ready within 30s")
	}
	return s, nil
}

func (s *sampler) read(out io.Reader) {
	sc := bufio.NewScanner(out)
	sent := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 1 && f[0] == "READY" && !sent {
			s.ready <- nil
			sent = true
			continue
		}
		if len(f) != 5 || f[0] != "S" {
			continue
		}
		first, _ := strconv.ParseInt(f[1], 10, 64)
		last, _ := strconv.ParseInt(f[2], 10, 64)
		pid, _ := strconv.Atoi(f[3])
		pct, _ := strconv.ParseFloat(f[4], 64)
		s.mu.Lock()
		s.recs = append(s.recs, utilRecord{first: first, last: last, pid: pid, pct: min(pct, 100)})
		s.mu.Unlock()
	}
	_ = s.cmd.Wait()
	if !sent {
		s.ready <- fmt.Errorf("sampler exited before READY (%v): %s", s.cmd.ProcessState,
			strings.TrimSpace(s.errb.String()))
	}
	close(s.done)
}

// series builds the busy series of the processes pids over [from, to].
func (s *sampler) series(pids map[int]bool, from, to int64) *periodSeries {
	ps := newPeriodSeries(s.period, from, to)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.recs {
		if pids[r.pid] {
			ps.add(r.first, r.last, r.pct/100*float64(s.period)*float64(r.last-r.first+1))
		}
	}
	return ps
}

// alive reports an error once the sampler has exited.
func (s *sampler) alive() error {
	select {
	case <-s.done:
		return fmt.Errorf("sampler exited (%v): %s", s.cmd.ProcessState, strings.TrimSpace(s.errb.String()))
	default:
		return nil
	}
}

// stop closes the sampler's stdin and waits for it (SIGKILL after 5 s).
func (s *sampler) stop() {
	_ = s.stdin.Close()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.done
	}
}
