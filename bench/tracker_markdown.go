package bench

import (
	"fmt"
	"strings"
)

func optMet(met *bool, noGoal string) string {
	if met == nil {
		return noGoal
	}
	return yesNo(*met)
}

// Markdown renders the report.
func (r *TrackerReport) Markdown() string {
	var b strings.Builder
	m, c := r.Machine, r.Config
	fmt.Fprintf(&b, "# vgpu tracker benchmark: hook %s\n\n", orDash(r.Hook))
	fmt.Fprintf(&b, "- machine: %s, %s, %d cores, kernel %s\n", m.Hostname, m.CPUModel, m.Cores, orDash(m.Kernel))
	fmt.Fprintf(&b, "- %s, %s, commit %s; the benchmark took %.0f s\n", m.GoVersion, m.Date, orDash(m.Commit), r.RuntimeS)
	fmt.Fprintf(&b, "- hook used: %s (%s); stand-in device %s; procfs scan interval %.0f ms; eBPF poll interval %g ms\n",
		orDash(r.Hook), r.Hooks, c.Device, c.ProcfsIntervalMS, c.PollIntervalMS)
	fmt.Fprintf(&b, "- %s\n\n", c.SampleNotes)
	if len(r.Latency) > 0 {
		b.WriteString("## Latency (ms): open → subscriber has EventOpen (open → vgpud: GET /v1/processes lists it); " +
			"SIGKILL → subscriber has EventExit\n\n")
		b.WriteString("| event | tracker | n | missed | median | p99 | max | goal | result |\n")
		b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---|\n")
		for _, row := range r.Latency {
			goal := "—"
			if row.GoalMS != nil {
				goal = fmt.Sprintf("p99 ≤ %.0f", *row.GoalMS)
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %d | %.3f | %.3f | %.3f | %s | %s |\n", row.What, row.Tracker,
				row.MS.N, row.Missed, row.MS.Median, row.MS.P99, row.MS.Max, goal, optMet(row.Met, "reported"))
		}
		b.WriteString("\nThe exit row is the tracker-level part of \"a dead process's charge is returned\": " +
			"vgpud returning the charge end to end is measured by the daemon's tests, not here.\n\n")
	}
	if len(r.Syscalls) > 0 {
		fmt.Fprintf(&b, "## Added cost per system call (ns per operation, opens in CPU time of the thread; "+
			"%d ABBA rounds, %d opens and %d forks per phase)\n\n",
			c.Rounds, c.OpsPerPhase, c.ForksPerPhase)
		b.WriteString("| operation | detached median | attached median | added median | added per round | goal (added) | result |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---|\n")
		for _, row := range r.Syscalls {
			goal := "—"
			if row.GoalNS != nil {
				goal = fmt.Sprintf("≤ %.0f", *row.GoalNS)
			}
			res := optMet(row.Met, "reported")
			if row.Noisy {
				res += " (noisy: rounds disagree)"
			}
			fmt.Fprintf(&b, "| %s | %.0f | %.0f | %s | %s | %s | %s |\n", row.Op, row.Detached.Median,
				row.Attached.Median, signed(row.AddedMedianNS, 0), spread(row.RoundAddedNS, 0), goal, res)
		}
		b.WriteString("\n")
	}
	if len(r.CPU) > 0 {
		fmt.Fprintf(&b, "## Tracker CPU with %d processes (%d holding the device), %.0f s windows\n\n",
			c.Procs, c.Holders, c.CPUWindowS)
		b.WriteString("| load | tracker | CPU ms (− baseline) | % of a core | baseline ms | known | events | lost | churn/s | goal | result |\n")
		b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
		for _, row := range r.CPU {
			goal := "—"
			if row.Tracker == trackerEBPF {
				goal = "below procfs"
			}
			fmt.Fprintf(&b, "| %s | %s | %.1f | %.2f | %.1f | %d | %d | %d | %.1f | %s | %s |\n", row.Load, row.Tracker,
				row.CPUMS, row.Percent, row.BaselineMS, row.Known, row.Events, row.Lost, row.ChurnPerSec, goal,
				optMet(row.Met, "reported"))
		}
		b.WriteString("\n")
	}
	writeVerdict(&b, r.AllMet, r.Notes)
	return b.String()
}

// trackerNotes explains what a reader of the figures must know.
func trackerNotes(r *TrackerReport) []string {
	var notes []string
	if r.Hook != trackerEBPF {
		notes = append(notes, "the eBPF tracker did not load here (not root, no BTF, or a program did not attach): "+
			"only the procfs scanner was measured, and the eBPF goals count as NOT met")
	}
	if strings.HasPrefix(r.Config.Device, "1:3") {
		notes = append(notes, "the stand-in is null (1:3): every /dev/null open on the machine is tracked too, "+
			"which adds events the benchmark did not cause")
	}
	for _, row := range r.Syscalls {
		if row.Noisy {
			notes = append(notes, "rows marked noisy: the per-round differences spread wider than the goal "+
				"(or the difference itself); the machine's drift is as large as the effect — use more --rounds "+
				"or a quiet machine before drawing conclusions from them")
			break
		}
	}
	if len(r.Syscalls) > 0 {
		notes = append(notes, "syscall cost: enabling any syscall tracepoint sends every system call of every "+
			"task through the kernel's tracing exit path, so the untracked-file row is what every open on the "+
			"machine pays; the tracked-device row also pays for the event (the programs' reads, the ring "+
			"buffer). An event wakes the tracker's reader only when none did in the last poll interval ("+
			fmt.Sprintf("%g ms", r.Config.PollIntervalMS)+"): a wake-up costs the opening process several µs "+
			"(irq_work and an IPI, an exit to the hypervisor on a VM), and this loop of back-to-back opens pays "+
			"it about once per interval; the reader polls the ring while events flow. The open rows are the "+
			"opening thread's CPU time: the tracker's reader runs in the benchmark process, and its handling "+
			"of every event, on the other cores, would show in wall time although vgpud is another process. "+
			"The fork row is a process that holds no tracked device (a hash lookup in the BPF map); the CPU "+
			"spent in the BPF programs is charged to the process making the system call, not to the tracker")
	}
	if len(r.CPU) > 0 {
		notes = append(notes, "tracker CPU is the benchmark process's own CPU (the tracker runs inside it, with "+
			"one subscriber) minus the same window without a tracker. The eBPF tracker's idle CPU does not grow "+
			"with the processes: its reader sleeps until an event wakes it, and wakes 10 times a second to read "+
			"the kernel's drop counter (the Go runtime's timers and sysmon with it); after an event it polls "+
			"the ring every poll interval until one passes without events; the procfs scanner reads every fd of every process "+
			"each interval, so its CPU grows with processes × fds")
	}
	return notes
}
