package enforcer

import (
	"fmt"
	"sort"
	"syscall"

	"go.uber.org/zap"
)

// violKey names one violation: a process over its slice on one slice device.
// The loop remembers violations from tick to tick so that it counts and warns
// about each once, however many ticks it lasts.
type violKey struct {
	slice   string
	hostPID int
	dev     int
}

// backstop acts on driver truth: on every slice device where the driver's
// figure for the processes the kernel places in the slice is over the limit
// (plus Tolerance), whatever libvgpu's counters and slots claim, it picks the
// processes responsible (offenders) until what is left fits: first those
// whose driver figure is furthest above what libvgpu charged them (a process
// without a slot was charged nothing), then the largest. A violation is
// logged and counted when first seen; in enforce mode its process is killed
// on every tick it is still there. Only members of the slice are ever picked:
// nothing outside the slice is signalled.
func (l *Loop) backstop(rep *TickReport, slices []TrackedSlice, mode Mode) {
	clear(l.killed)
	for i := range rep.Slices {
		snap := &rep.Slices[i]
		for d := range snap.Devices {
			sd := &snap.Devices[d]
			if !sd.DriverKnown || sd.MemberDriverBytes <= sd.LimitBytes+sd.AllowanceBytes+l.Tolerance {
				continue
			}
			for _, j := range l.offenders(snap, d) {
				l.violation(rep, i, d, &snap.Processes[j], mode)
			}
		}
	}
	for k, g := range l.violations {
		if g != l.gen {
			delete(l.violations, k)
		}
	}
}

// offenders lists (as indexes in snap.Processes) the members of the slice to
// act on for slice device d, in order, until the rest fits in the limit plus
// Tolerance. The list is scratch of the loop, valid until the next call.
func (l *Loop) offenders(snap *SliceSnapshot, d int) []int {
	l.order = l.order[:0]
	for j := range snap.Processes {
		p := &snap.Processes[j]
		if p.Member && p.HostPID > 0 && p.DriverBytes != nil && p.DriverBytes[d] > 0 {
			l.order = append(l.order, j)
		}
	}
	excess := func(p *ProcessSnapshot) int64 {
		return int64(p.DriverBytes[d]) - int64(p.UsedBytes[d]) //nolint:gosec // byte counts, far below 2^63
	}
	sort.Slice(l.order, func(a, b int) bool {
		pa, pb := &snap.Processes[l.order[a]], &snap.Processes[l.order[b]]
		if ea, eb := excess(pa), excess(pb); ea != eb {
			return ea > eb
		}
		return pa.DriverBytes[d] > pb.DriverBytes[d]
	})
	left := snap.Devices[d].MemberDriverBytes
	fit := snap.Devices[d].LimitBytes + snap.Devices[d].AllowanceBytes + l.Tolerance
	n := 0
	for n < len(l.order) && left > fit {
		left -= snap.Processes[l.order[n]].DriverBytes[d]
		n++
	}
	return l.order[:n]
}

// violation handles one process over its slice on slice device d: counts,
// reports and logs it when first seen, and in enforce mode kills it.
func (l *Loop) violation(rep *TickReport, i, d int, p *ProcessSnapshot, mode Mode) {
	snap := &rep.Slices[i]
	sd := &snap.Devices[d]
	key := violKey{slice: snap.ID, hostPID: p.HostPID, dev: d}
	// Violations not seen in a tick are forgotten at its end, so a known one
	// was there in the previous tick too.
	_, known := l.violations[key]
	fresh := !known
	l.violations[key] = l.gen
	ev := BackstopEvent{
		Slice: snap.ID, Device: sd.UUID, DeviceIndex: d, PID: p.PID, HostPID: p.HostPID,
		DriverBytes: p.DriverBytes[d], ChargedBytes: p.UsedBytes[d], SliceBytes: sd.MemberDriverBytes,
		LimitBytes: sd.LimitBytes, Action: ActionReported,
	}
	if mode == ModeEnforce {
		ev.Action, ev.Err = l.killOnce(p.HostPID)
	}
	fields := []zap.Field{
		zap.String("slice", ev.Slice), zap.String("device", ev.Device), zap.Int("pid", ev.PID),
		zap.Int("host_pid", ev.HostPID), zap.Uint64("driver_bytes", ev.DriverBytes),
		zap.Uint64("charged_bytes", ev.ChargedBytes), zap.Uint64("slice_driver_bytes", ev.SliceBytes),
		zap.Uint64("limit_bytes", ev.LimitBytes), zap.Uint64("tolerance_bytes", l.Tolerance),
		zap.String("action", ev.Action),
	}
	if ev.Err != "" {
		fields = append(fields, zap.String("error", ev.Err))
	}
	if !fresh {
		// Still there (a SIGKILLed process can take a while to release the
		// GPU): act again, but count and warn only once.
		if mode == ModeEnforce {
			l.Log.Debug("enforcer backstop: process still over its slice", fields...)
		}
		return
	}
	sd.BackstopEventsTotal++
	if st := l.tickStates[i]; st != nil {
		st.backstop[d]++
	}
	l.totals.BackstopEvents++
	rep.Backstop = append(rep.Backstop, ev)
	if ev.Action == ActionKillFailed {
		l.Log.Error("enforcer backstop: process over its slice, kill failed", fields...)
	} else {
		l.Log.Warn("enforcer backstop: process over its slice", fields...)
	}
}

// killOnce kills the process with host pid hostPID unless this tick already
// did (it can be over its slice on several devices), and says what was done.
func (l *Loop) killOnce(hostPID int) (action, errText string) {
	if _, done := l.killed[hostPID]; done {
		return ActionKilled, "" // killed for another device this tick
	}
	l.killed[hostPID] = struct{}{}
	kill := l.Kill
	if kill == nil {
		kill = sigkill
	}
	if err := kill(hostPID); err != nil {
		return ActionKillFailed, err.Error()
	}
	l.totals.Kills++
	return ActionKilled, ""
}

// sigkill is Loop.Kill's default: SIGKILL, which the process can neither catch
// nor ignore.
func sigkill(hostPID int) error {
	if err := syscall.Kill(hostPID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %d: %w", hostPID, err)
	}
	return nil
}
