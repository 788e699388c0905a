package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/daemon/devices"
)

// The benchmark's own view of the device: NVML's per-process utilization read
// through devices.NVML (go-nvml), independently of vgpud. The simulated NVML
// maps its node once per process, and every cell has a fresh node, so the
// reader runs as a child process per cell: the benchmark's own executable
// (vgpu-bench, or a test binary) started with SamplerEnv set, which must call
// SamplerMain before anything else (cmd/vgpu-bench's main and the bench tests'
// TestMain do).

// SamplerEnv names the environment variable that turns the executable into the
// NVML sampler: "LIBRARY|PERIOD_NS|sim" or "...|real" (samplerSim, samplerReal).
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
// (indices of the CLOCK_MONOTONIC timeline) the sample stands for, and after
// each query "C LAST", the last period whose samples it has read. It returns
// the exit status.
func SamplerMain(stdin io.Reader, stdout io.Writer) int {
	f := strings.Split(os.Getenv(SamplerEnv), "|")
	var period int64
	var err error
	if len(f) == 3 {
		period, err = strconv.ParseInt(f[1], 10, 64)
	}
	if len(f) != 3 || err != nil || period <= 0 || (f[2] != samplerSim && f[2] != samplerReal) {
		fmt.Fprintf(os.Stderr, "sampler: bad %s=%q\n", SamplerEnv, os.Getenv(SamplerEnv))
		return 2
	}
	n, uuid, _, err := openNVML(f[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "sampler: %v\n", err)
		return 1
	}
	defer func() { _ = n.Close() }()
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, stdin); close(done) }()
	sm := newSampleMapper(period, f[2] == samplerReal)
	w := bufio.NewWriter(stdout)
	fmt.Fprintln(w, "READY")
	for {
		_ = w.Flush()
		select {
		case <-done:
			return 0
		case <-time.After(samplerPoll):
		}
		complete := sm.stampOf(monoNow()/period - 1)
		samples, err := n.ProcessUtilization(uuid, sm.lastSeen)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sampler: %v\n", err)
			return 1
		}
		for _, r := range sm.records(samples, complete) {
			fmt.Fprintf(w, "S %d %d %d %.4f\n", r.first, r.last, r.pid, r.pct)
		}
		fmt.Fprintf(w, "C %d\n", sm.readThrough)
	}
}

// Sample semantics of the sampler (SamplerEnv's third field).
const (
	// samplerSim: the simulated NVML's, one entry per process and query
	// covering every period since lastSeen up to its newest busy one, stamped
	// at the end of that period (test/simgpu/nvml.c).
	samplerSim = "sim"
	// samplerReal: the driver's, read as vgpud reads them (sampleStart): a
	// sample's SM% stands for the time since the process's previous sample,
	// or since the previous query's newest stamp for its first, at most a
	// second.
	samplerReal = "real"
)

// sampleMapper turns NVML's samples into utilRecords over the periods of the
// CLOCK_MONOTONIC timeline. Stamps are CLOCK_REALTIME µs.
type sampleMapper struct {
	period, off int64 // off: realtime − monotonic, ns
	real        bool
	lastSeen    uint64         // the next query's lastSeenTimeStamp
	pidUs       map[int]uint64 // real: each process's last stamp
	readThrough int64          // the last period whose samples were read
}

func newSampleMapper(period int64, real bool) *sampleMapper {
	m := &sampleMapper{period: period, off: realNow() - monoNow(), real: real, pidUs: map[int]uint64{}}
	m.lastSeen = m.stampOf(monoNow()/period - 1) // only what happens from now on
	m.readThrough = m.epochOf(m.lastSeen)
	return m
}

// epochOf is the period a stamp ends (the nearest period end).
func (m *sampleMapper) epochOf(stampUs uint64) int64 {
	return (int64(stampUs)*1000-m.off+m.period/2)/m.period - 1
}

// stampOf is the stamp of the end of period e.
func (m *sampleMapper) stampOf(e int64) uint64 { return uint64(((e+1)*m.period + m.off) / 1000) }

// records maps one query's samples; complete is the stamp of the last period
// complete when the query was made.
func (m *sampleMapper) records(samples []devices.ProcessUtil, complete uint64) []utilRecord {
	since := m.lastSeen
	var out []utilRecord
	if !m.real {
		next := max(since, complete)
		for _, s := range samples {
			out = append(out, utilRecord{first: m.epochOf(since) + 1, last: m.epochOf(s.TimeStampUs), pid: s.HostPID,
				pct: float64(s.SMPercent)})
			next = max(next, s.TimeStampUs)
		}
		m.lastSeen, m.readThrough = next, m.epochOf(complete)
		return out
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i].TimeStampUs < samples[j].TimeStampUs })
	for _, s := range samples {
		if s.TimeStampUs <= since {
			continue
		}
		from := sampleStart(m.pidUs[s.HostPID], since, s.TimeStampUs)
		first, last := m.epochOf(from)+1, m.epochOf(s.TimeStampUs)
		first = min(first, last)
		// The busy time the sample stands for, spread over its periods.
		busyUs := float64(min(s.SMPercent, 100)) / 100 * float64(s.TimeStampUs-from)
		out = append(out, utilRecord{first: first, last: last, pid: s.HostPID,
			pct: busyUs * 1000 / float64(m.period*(last-first+1)) * 100})
		m.pidUs[s.HostPID] = s.TimeStampUs
		m.lastSeen = max(m.lastSeen, s.TimeStampUs)
	}
	m.readThrough = m.epochOf(m.lastSeen)
	return out
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
	// through is the last period the sampler has read (its "C" lines).
	through int64
}

// startSampler starts the sampler with the driver environment env and the
// NVML library lib ("" = libnvidia-ml.so.1 through the loader), reading
// samples as the real driver's when real, and waits until it reads NVML.
func startSampler(ctx context.Context, env []string, lib string, period int64, real bool) (*sampler, error) {
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
	mode := samplerSim
	if real {
		mode = samplerReal
	}
	cmd.Env = append(append([]string(nil), env...), SamplerEnv+"="+lib+"|"+strconv.FormatInt(period, 10)+"|"+mode)
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
		if len(f) == 2 && f[0] == "C" {
			if e, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				s.mu.Lock()
				s.through = max(s.through, e)
				s.mu.Unlock()
			}
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

// readThroughNs is the end (CLOCK_MONOTONIC ns) of the last sample period
// whose samples the sampler has read. NVML lists live processes only, so what
// a tenant killed now did after this instant is lost with it: its figures end
// here (a period it ran in but nobody read would count as idle).
func (s *sampler) readThroughNs() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.through == 0 {
		return math.MaxInt64 // nothing read yet: no bound
	}
	return (s.through + 1) * s.period
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
