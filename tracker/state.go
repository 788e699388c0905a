package tracker

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// state is what both trackers keep: pid -> Process, and the subscribers.
// Events are applied and published under one lock so a subscriber sees them
// in the order the map changed.
type state struct {
	mu    sync.Mutex
	procs map[int]*Process
	subs  map[int]chan Event
	next  int
	// closed: the tracker is closed; a late Subscribe gets a closed channel.
	closed bool
	lost   atomic.Uint64
}

func newState() *state {
	return &state{procs: make(map[int]*Process), subs: make(map[int]chan Event)}
}

func (s *state) subscribe(buf int) (<-chan Event, func()) {
	if buf < 0 {
		buf = 0
	}
	ch := make(chan Event, buf)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		close(ch)
		return ch, func() {}
	}
	id := s.next
	s.next++
	s.subs[id] = ch
	s.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			s.mu.Lock()
			if _, ok := s.subs[id]; ok { // not already closed by Close
				delete(s.subs, id)
				close(ch)
			}
			s.mu.Unlock()
		})
	}
}

// publishLocked hands ev to every subscriber that has room; s.mu held.
func (s *state) publishLocked(ev Event) {
	for _, ch := range s.subs {
		select {
		case ch <- ev:
		default:
			s.lost.Add(1)
		}
	}
}

// apply records ev and publishes it. containerID is the container of ev.PID
// (read from procfs by the caller, outside the lock), used when the process
// is new.
func (s *state) apply(ev Event, containerID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applyLocked(ev, containerID)
	s.publishLocked(ev)
}

func (s *state) applyLocked(ev Event, containerID string) {
	switch ev.Kind {
	case EventOpen:
		p := s.procs[ev.PID]
		if p == nil || (p.StartTime != ev.StartTime && ev.StartTime != 0) {
			// New, or the pid was reused by another process.
			p = &Process{PID: ev.PID, StartTime: ev.StartTime}
			s.procs[ev.PID] = p
		}
		p.CgroupID = ev.CgroupID
		if containerID != "" {
			p.ContainerID = containerID
		}
		p.Devices = addDevice(p.Devices, ev.Device)
	case EventFork:
		// The child holds what its parent holds: fds are inherited.
		child := &Process{PID: ev.PID, CgroupID: ev.CgroupID, StartTime: ev.StartTime,
			ContainerID: containerID}
		if parent := s.procs[ev.PPID]; parent != nil {
			child.Devices = slices.Clone(parent.Devices)
			if child.ContainerID == "" {
				child.ContainerID = parent.ContainerID
			}
		}
		s.procs[ev.PID] = child
	case EventExit:
		if p := s.procs[ev.PID]; p != nil && (ev.StartTime == 0 || p.StartTime == ev.StartTime) {
			delete(s.procs, ev.PID)
		}
	}
}

// reconcile replaces the state with a full procfs scan and publishes the
// difference as events: a device held now and not before is an open, a
// process gone (or whose pid was reused) is an exit. Used by the procfs
// tracker on every scan and by the eBPF tracker after lost events.
func (s *state) reconcile(scan map[int]*scanned, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for pid, old := range s.procs {
		if cur, ok := scan[pid]; !ok || cur.StartTime != old.StartTime {
			ev := Event{Kind: EventExit, PID: pid, TID: pid, CgroupID: old.CgroupID,
				StartTime: old.StartTime, At: at}
			delete(s.procs, pid)
			s.publishLocked(ev)
		}
	}
	for pid, cur := range scan {
		old := s.procs[pid]
		for _, d := range cur.Devices {
			if old != nil && slices.Contains(old.Devices, d) {
				continue
			}
			s.publishLocked(Event{Kind: EventOpen, PID: pid, TID: pid, PPID: cur.ppid,
				CgroupID: cur.CgroupID, StartTime: cur.StartTime, Device: d, At: at})
		}
		p := copyProcess(&cur.Process)
		s.procs[pid] = &p
	}
}

func (s *state) processes() []Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Process, 0, len(s.procs))
	for _, p := range s.procs {
		out = append(out, copyProcess(p))
	}
	slices.SortFunc(out, func(a, b Process) int { return a.PID - b.PID })
	return out
}

func (s *state) lookup(pid int) (Process, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.procs[pid]
	if p == nil {
		return Process{}, false
	}
	return copyProcess(p), true
}

func (s *state) closeSubscribers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for id, ch := range s.subs {
		close(ch)
		delete(s.subs, id)
	}
}

func copyProcess(p *Process) Process {
	c := *p
	c.Devices = slices.Clone(p.Devices)
	return c
}

func addDevice(ds []Device, d Device) []Device {
	i, found := slices.BinarySearchFunc(ds, d, compareDevice)
	if found {
		return ds
	}
	return slices.Insert(ds, i, d)
}

func compareDevice(a, b Device) int {
	if a.Major != b.Major {
		return int(a.Major) - int(b.Major)
	}
	return int(a.Minor) - int(b.Minor)
}
