package daemon

import (
	"math"
	"sort"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon/devices"
	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
)

// Compute shares: after every enforcer tick, one enforcer.Controller
// per GPU sets the token rates of the slices on it from the share each slice
// achieved, measured by NVML's per-process utilization (host pids from the
// tick's process map). The controllers keep no state on disk: after a restart
// they start from the nominal scale and re-learn it within about a second,
// while the slices keep the rates the last vgpud wrote.

// processUtilizer is what the controllers need from the GPUs beyond the GPUs
// interface; *devices.NVML has it. GPUs without it (test doubles) leave the
// controllers unmeasured: the rates then follow the shares at the nominal scale.
type processUtilizer interface {
	ProcessUtilization(uuid string, sinceUs uint64) ([]devices.ProcessUtil, error)
}

// maxSamplePeriod bounds the time one utilization sample may stand for (NVML
// keeps about a second of samples; a first query covers at most that).
const maxSamplePeriod = time.Second

// displayTau is the time constant of the achieved share shown to people
// (vgpuctl top, metrics): one tick's figure comes in lumps (NVML samples every
// ~1/6 s, a long kernel is counted when it lands), a second's average reads
// steadily and still follows a change of target within a few seconds.
const displayTau = time.Second

// ComputeStatus is one slice's compute share on one device after the last tick.
type ComputeStatus struct {
	Slice       string  `json:"slice"`
	UUID        string  `json:"uuid"`
	TargetPct   float64 `json:"target_pct"`
	AllowedPct  float64 `json:"allowed_pct"`
	AchievedPct float64 `json:"achieved_pct"` // over the last measured step, as NVML reported it
	// AvgAchievedPct is AchievedPct averaged over about displayTau (what
	// vgpuctl top and the metrics show). Both are 0 until Measured.
	AvgAchievedPct float64 `json:"avg_achieved_pct"`
	// Measured: the figures come from the driver's per-process utilization
	// (a step with new samples since the slice is on the device; false with
	// no NVML support, a failing query, or before the first such step).
	Measured  bool   `json:"measured"`
	Rate      uint64 `json:"token_rate"`
	Throttled bool   `json:"throttled"`
	Held      bool   `json:"held"` // held to its floor by a higher priority
}

// sliceDev names one slice on one device.
type sliceDev struct{ slice, uuid string }

// avgShare is a time-weighted moving average of a slice's achieved share on a
// device; weight is how much of the average is filled (it starts empty, so the
// first figures are not dragged towards 0).
type avgShare struct {
	value, weight float64
	last          float64 // the last measured figure
	seenMark              // in the latest step (others are dropped)
}

func (a *avgShare) add(x float64, dt time.Duration) {
	a.last = x
	k := 1 - math.Exp(-float64(dt)/float64(displayTau))
	a.value += k * (x - a.value)
	a.weight += k * (1 - a.weight)
}

func (a *avgShare) get() float64 {
	if a.weight <= 0 {
		return 0
	}
	return a.value / a.weight
}

type computeShares struct {
	log    *zap.Logger
	util   processUtilizer
	cfg    enforcer.ControllerConfig
	ctl    map[string]*enforcer.Controller
	dev    map[string]*utilState
	latest atomic.Pointer[[]ComputeStatus]
	failed map[string]bool // devices whose utilization query failed (logged once)
	avg    map[sliceDev]*avgShare
	done   map[sliceDev]*doneHistory // token_done readings (computework.go)
	// guard is the compute backstop (computeguard.go); nil: none.
	guard *computeGuard
}

// utilState turns one device's NVML samples into busy time per host pid.
type utilState struct {
	lastUs uint64          // newest sample seen
	pidUs  map[int]uint64  // newest sample seen per pid
	busy   map[int]float64 // busy ns per pid since the last step
}

func newComputeShares(gpus GPUs, log *zap.Logger) *computeShares {
	c := &computeShares{log: log, ctl: map[string]*enforcer.Controller{}, dev: map[string]*utilState{},
		failed: map[string]bool{}, avg: map[sliceDev]*avgShare{}, done: map[sliceDev]*doneHistory{}}
	c.util, _ = gpus.(processUtilizer)
	empty := []ComputeStatus{}
	c.latest.Store(&empty)
	return c
}

// Status is the compute share of every slice on every device after the last tick.
func (c *computeShares) Status() []ComputeStatus { return *c.latest.Load() }

// ComputeStatus is every slice's compute share (target, allowed, achieved, rate)
// on each of its devices after the last enforcer tick; safe from any goroutine
// (for the API and metrics).
func (s *Server) ComputeStatus() []ComputeStatus { return s.loop.compute.Status() }

type sliceRef struct {
	slice int // index in tracked
	dev   int // slice device index
}

// step runs every device's controller once and writes the rates. The devices
// go in uuid order so that the status (and the logs) come out stable.
func (c *computeShares) step(now time.Time, tracked []enforcer.TrackedSlice, rep *enforcer.TickReport) {
	pids, members := hostPIDsBySlice(rep)
	if c.guard != nil {
		c.guard.resumeOnce(members)
	}
	byDev, uuids := slicesByDevice(tracked)
	c.forgetDevices(byDev)
	status := make([]ComputeStatus, 0, len(tracked))
	for _, uuid := range uuids {
		status = c.stepDevice(now, uuid, byDev[uuid], tracked, pids, members, status)
	}
	if c.guard != nil {
		c.guard.forget(c.seen())
	}
	c.dropStaleAverages()
	c.dropStaleHistories()
	c.latest.Store(&status)
}

// hostPIDsBySlice lists each slice's host pids whose utilization counts for
// it, from the tick's process map (NVML reports utilization by host pid), and
// its members: the processes the kernel places in it (the only ones the
// compute backstop may signal). A process counts for the slice the kernel
// places it in; one the kernel places nowhere (a slice without an owner to
// attribute by) counts for the slice whose slots name it, when exactly one
// does — a pid two slices claim counts for neither.
func hostPIDsBySlice(rep *enforcer.TickReport) (pids, members map[string][]int) {
	pids, members = map[string][]int{}, map[string][]int{}
	member := map[int]bool{}
	claims := map[int][]string{}
	for _, s := range rep.Slices {
		for _, p := range s.Processes {
			switch {
			case p.HostPID <= 0:
			case p.Member:
				member[p.HostPID] = true
				pids[s.ID] = append(pids[s.ID], p.HostPID)
				members[s.ID] = append(members[s.ID], p.HostPID)
			default:
				claims[p.HostPID] = append(claims[p.HostPID], s.ID)
			}
		}
	}
	for pid, slices := range claims {
		if !member[pid] && len(slices) == 1 {
			pids[slices[0]] = append(pids[slices[0]], pid)
		}
	}
	return pids, members
}

// avgOf gives the compute backstop each slice's averaged achieved share on
// uuid, when measured.
func (c *computeShares) avgOf(uuid string) func(slice string) (float64, bool) {
	return func(slice string) (float64, bool) {
		a := c.avg[sliceDev{slice, uuid}]
		if a == nil || a.weight < 0.5 {
			return 0, false // not measured long enough to judge
		}
		return a.get(), true
	}
}

// seen is the set of slice devices stepped this time.
func (c *computeShares) seen() map[sliceDev]bool {
	out := make(map[sliceDev]bool, len(c.avg))
	for k, a := range c.avg {
		if a.seen {
			out[k] = true
		}
	}
	return out
}

// slicesByDevice groups the tracked slices by device (a controller balances
// the slices of one GPU) and returns the devices' uuids, sorted.
func slicesByDevice(tracked []enforcer.TrackedSlice) (map[string][]sliceRef, []string) {
	byDev := map[string][]sliceRef{}
	for i, ts := range tracked {
		if ts.Slice == nil {
			continue
		}
		for d, uuid := range ts.UUIDs {
			if uuid != "" {
				byDev[uuid] = append(byDev[uuid], sliceRef{i, d})
			}
		}
	}
	uuids := make([]string, 0, len(byDev))
	for u := range byDev {
		uuids = append(uuids, u)
	}
	sort.Strings(uuids)
	return byDev, uuids
}

// forgetDevices drops the controller and sampling state of devices no slice
// is on any more: a device that gets slices again starts afresh, as after a
// restart.
func (c *computeShares) forgetDevices(byDev map[string][]sliceRef) {
	for u := range c.ctl {
		if _, ok := byDev[u]; !ok {
			delete(c.ctl, u)
			delete(c.dev, u)
		}
	}
}

// stepDevice samples one device's utilization, runs its controller over the
// slices on it (refs), writes their token rates, lets the compute backstop
// judge the outcome (members: the processes it may signal) and appends the
// slices' status.
func (c *computeShares) stepDevice(now time.Time, uuid string, refs []sliceRef, tracked []enforcer.TrackedSlice,
	pids, members map[string][]int, status []ComputeStatus) []ComputeStatus {
	st := c.dev[uuid]
	if st == nil {
		st = &utilState{pidUs: map[int]uint64{}, busy: map[int]float64{}}
		c.dev[uuid] = st
	}
	// The step is measured over the span its new samples cover, from the
	// newest sample of the last query to the newest of this one, not over the
	// wall time since the last step: the driver publishes a sample only when
	// its period (1/6 s to 1 s) ends and counts work when it runs, so most
	// ticks see no new sample and the next one sees a period's worth. A step
	// without new samples is unmeasured (the controller keeps its rates)
	// rather than a share of 0; a first query has no span to divide by.
	prevUs := st.lastUs
	measured := c.sample(uuid, st) && prevUs != 0 && st.lastUs > prevUs
	dt := time.Duration(0) // the measured span; 0: not measured
	if measured {
		dt = time.Duration(st.lastUs-prevUs) * time.Microsecond
	}

	work := c.workWithin(uuid, now, time.UnixMicro(int64(prevUs)), time.UnixMicro(int64(st.lastUs)), measured)
	in, budgets, devs := controlInputs(refs, tracked, pids, st, dt, work)
	clear(st.busy)

	ctl := c.ctl[uuid]
	if ctl == nil {
		ctl = enforcer.NewController(c.cfg)
		c.ctl[uuid] = ctl
	}
	outs := ctl.Step(now, in)
	if err := enforcer.Apply(budgets, devs, outs); err != nil {
		c.log.Error("set token rates", zap.String("uuid", uuid), zap.Error(err))
	}
	if c.guard != nil {
		c.guard.observe(uuid, outs, dt, c.avgOf(uuid), members)
	}
	for _, o := range outs {
		a := c.average(sliceDev{o.Slice, uuid})
		if measured {
			a.add(o.Achieved, dt)
		}
		status = append(status, ComputeStatus{Slice: o.Slice, UUID: uuid, TargetPct: o.Target * 100,
			AllowedPct: o.Allowed * 100, AchievedPct: a.last * 100, AvgAchievedPct: a.get() * 100,
			Measured: a.weight > 0, Rate: o.Rate, Throttled: o.Throttled, Held: o.Held})
	}
	return status
}

// controlInputs is what the controller of one device takes about each slice
// on it: its share, floor, policy, priority and throttle counters from its
// regions, and its achieved share (its processes' busy time over the period
// dt) when the device was measured. budgets and devs say where Apply writes
// each slice's rate.
func controlInputs(refs []sliceRef, tracked []enforcer.TrackedSlice, pids map[string][]int, st *utilState,
	dt time.Duration, work func(slice string, done uint64) (uint64, bool)) (in []enforcer.ControlInput, budgets []*shm.BudgetRegion, devs []int) {
	in = make([]enforcer.ControlInput, 0, len(refs))
	budgets = make([]*shm.BudgetRegion, 0, len(refs))
	devs = make([]int, 0, len(refs))
	for _, r := range refs {
		ts := tracked[r.slice]
		counters, ok := throttleCounters(ts.Slice.Usage, r.dev)
		if !ok {
			continue // the tenant broke its usage file: the loop reports it; its rate stays
		}
		b := ts.Slice.Budget
		db := b.Device(r.dev)
		busy := 0.0
		for _, pid := range pids[ts.ID] {
			busy += st.busy[pid]
		}
		ci := enforcer.ControlInput{
			Slice: ts.ID, ShareBP: db.ComputeShareBP, FloorBP: db.ComputeFloorBP,
			Policy: b.Policy(), Priority: b.Priority(), Counters: counters, Measured: dt > 0,
		}
		ci.Done, ci.DoneKnown = work(ts.ID, counters.Done)
		if dt > 0 {
			ci.Achieved, ci.Span = busy/float64(dt.Nanoseconds()), dt
		}
		in, budgets, devs = append(in, ci), append(budgets, b), append(devs, r.dev)
	}
	return in, budgets, devs
}

// throttleCounters reads a slice device's throttle counters from its usage
// region under the region's fault guard: the usage file is the tenant's to
// write, and one truncated under vgpud's mapping must cost an error, never
// vgpud (a read outside the guard would die of SIGBUS).
func throttleCounters(u *shm.UsageRegion, dev int) (c shm.ThrottleCounters, ok bool) {
	err := u.Guard(func() { c = u.Throttle(dev) })
	return c, err == nil
}

// average is the displayed average of a slice on a device, made on first use
// and marked seen in this step.
func (c *computeShares) average(key sliceDev) *avgShare {
	a := c.avg[key]
	if a == nil {
		a = &avgShare{}
		c.avg[key] = a
	}
	a.mark()
	return a
}

// dropStaleAverages forgets the averages not seen in this step (the slice
// left the device) and clears the mark on the others for the next step.
func (c *computeShares) dropStaleAverages() { dropUnseen(c.avg) }

// seenMark is per-step state the loop marks when it uses it: what a step
// did not mark belongs to a slice (or device) that is gone.
type seenMark struct{ seen bool }

func (m *seenMark) mark() { m.seen = true }

// takeMark reports whether the entry was marked since the last call, and
// clears the mark.
func (m *seenMark) takeMark() bool {
	s := m.seen
	m.seen = false
	return s
}

// dropUnseen deletes the entries of m not marked since the last call and
// clears the marks of the others.
func dropUnseen[K comparable, V interface{ takeMark() bool }](m map[K]V) {
	for k, v := range m {
		if !v.takeMark() {
			delete(m, k)
		}
	}
}

// sample reads the device's new utilization samples into busy ns per pid.
// False when the driver cannot say (no utilizer, or the query failed).
func (c *computeShares) sample(uuid string, st *utilState) bool {
	if c.util == nil {
		return false
	}
	samples, err := c.util.ProcessUtilization(uuid, st.lastUs)
	if err != nil {
		if !c.failed[uuid] {
			c.failed[uuid] = true
			c.log.Warn("per-process utilization unavailable: compute shares run on static scales",
				zap.String("uuid", uuid), zap.Error(err))
		}
		return false
	}
	if c.failed[uuid] {
		delete(c.failed, uuid)
		c.log.Info("per-process utilization available again", zap.String("uuid", uuid))
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i].TimeStampUs < samples[j].TimeStampUs })
	since := st.lastUs
	for _, s := range samples {
		if s.TimeStampUs <= since {
			continue // counted by an earlier query
		}
		// A sample stands for the time since the pid's previous sample, or since
		// the previous query when this is its first one.
		prev := max(st.pidUs[s.HostPID], since)
		period := time.Duration(s.TimeStampUs-prev) * time.Microsecond
		if prev == 0 || period > maxSamplePeriod {
			period = maxSamplePeriod
		}
		st.busy[s.HostPID] += float64(min(s.SMPercent, 100)) / 100 * float64(period.Nanoseconds())
		st.pidUs[s.HostPID] = s.TimeStampUs
		st.lastUs = max(st.lastUs, s.TimeStampUs)
	}
	if len(st.pidUs) > 4096 { // pids come and go: forget them now and then
		clear(st.pidUs)
	}
	return true
}
