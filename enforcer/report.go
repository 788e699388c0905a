package enforcer

import (
	"fmt"
	"time"
)

// Mode is the setting of the enforcer's backstop.
type Mode string

const (
	// ModeOff: no backstop; the loop still reclaims and reports figures.
	ModeOff Mode = "off"
	// ModeReport: a process over its slice is logged and counted.
	ModeReport Mode = "report"
	// ModeEnforce: it is also killed (SIGKILL).
	ModeEnforce Mode = "enforce"
)

// ParseMode parses "off", "report" or "enforce".
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeOff, ModeReport, ModeEnforce:
		return m, nil
	}
	return "", fmt.Errorf("enforcer mode %q: want off, report or enforce", s)
}

// Backstop actions: what the backstop did about a violation
// (BackstopEvent.Action).
const (
	ActionReported   = "reported"
	ActionKilled     = "killed"
	ActionKillFailed = "kill-failed"
)

// TickReport is what one tick saw and did. Every slice in it is freshly
// allocated: the caller may keep a report while later ticks run.
type TickReport struct {
	Seq      uint64 // tick number since the loop started, from 1
	Start    time.Time
	Duration time.Duration
	Mode     Mode
	Slices   []SliceSnapshot
	// Devices has one entry per device uuid the driver was asked about.
	Devices []DriverDevice
	// ReclaimedBytes is what this tick returned from dead processes, all
	// devices together; Reclaimed lists them.
	ReclaimedBytes uint64
	Reclaimed      []ReclaimEvent
	// Backstop lists the violations first seen in this tick.
	Backstop []BackstopEvent
	Errors   []TickError
	Totals   TickTotals
}

// TickTotals are cumulative over the loop's life.
type TickTotals struct {
	Ticks              uint64
	ReclaimedBytes     uint64
	ReclaimedProcesses uint64
	BackstopEvents     uint64
	Kills              uint64
	Errors             uint64
}

// SliceSnapshot is one slice as the tick left it.
type SliceSnapshot struct {
	ID        string
	QoS       uint32 // shm.QoS*
	Priority  uint32
	Devices   []SliceDeviceSnapshot
	Processes []ProcessSnapshot
}

// SliceDeviceSnapshot is a slice's figures on one of its devices.
type SliceDeviceSnapshot struct {
	UUID       string
	LimitBytes uint64
	// AllowanceBytes is TrackedSlice.Allowance: the backstop acts above
	// LimitBytes + AllowanceBytes (+ the loop's Tolerance).
	AllowanceBytes uint64
	UsedBytes      uint64 // libvgpu's admission counter
	PeakBytes      uint64
	RefusedAllocs  uint64
	// DriverBytes is what the driver reports for the slice's processes as
	// shown: its members and the processes only its slots name (claims);
	// valid when DriverKnown.
	DriverBytes uint64
	// MemberDriverBytes is the part of DriverBytes of the processes the
	// kernel places in the slice (Attributor: container cgroup, owner's
	// process subtree), whatever the slots claim: the figure the backstop
	// compares with the limit.
	MemberDriverBytes uint64
	DriverKnown       bool
	// Cumulative over the loop's life.
	ReclaimedBytesTotal uint64
	BackstopEventsTotal uint64
}

// ProcessSnapshot is one process of a slice.
type ProcessSnapshot struct {
	PID     int // in its own pid namespace; 0 for a process without a slot
	HostPID int // 0: not mapped (yet)
	// Slot is the usage slot index, -1 for a process the driver reported and
	// the Attributor put in this slice.
	Slot      int
	UsedBytes []uint64 // per slice device, as libvgpu charged it
	// DriverBytes per slice device, as the driver reports it; nil when the
	// loop has no driver.
	DriverBytes []uint64
	// Member: the kernel places the process in this slice (Attributor). A
	// process only a slot names is shown with its driver figures but neither
	// counts towards the slice's total nor is ever acted on: a slot is the
	// tenant's claim, and a tenant can name anyone in it.
	Member bool
}

// DriverDevice is what the driver reported for one device.
type DriverDevice struct {
	UUID         string
	Processes    int
	ProcessBytes uint64 // all processes on the device, in a slice or not
	Err          string
}

// ReclaimEvent is a dead process whose charge was returned.
type ReclaimEvent struct {
	Slice      string
	PID        int
	HostPID    int
	FreedBytes []uint64 // per slice device
}

// BackstopEvent is a process found using more than its slice allows.
type BackstopEvent struct {
	Slice        string
	Device       string // uuid
	DeviceIndex  int    // slice device index
	PID          int    // 0 when the process has no slot
	HostPID      int
	DriverBytes  uint64 // the process's driver figure on the device
	ChargedBytes uint64 // what libvgpu charged it there
	SliceBytes   uint64 // the slice's driver total on the device
	LimitBytes   uint64
	Action       string // Action*
	Err          string // kill error
}

// TickError is something the tick could not do; it went on with the rest.
type TickError struct {
	Slice  string // "" when not about one slice
	Device string // uuid, "" when not about one device
	Err    string
}

func (e TickError) String() string {
	s := e.Err
	if e.Device != "" {
		s = "device " + e.Device + ": " + s
	}
	if e.Slice != "" {
		s = "slice " + e.Slice + ": " + s
	}
	return s
}
