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
	// byNS indexes procs by their identity in their own pid namespace
	// (FindInNamespace); processes with an unknown identity are not in it.
	byNS map[nsKey]int
	// exits remembers the identities of the last maxExits tracked processes
	// seen to exit (SawExit); exitRing holds them oldest first for eviction.
	exits    map[nsKey]struct{}
	exitRing []nsKey
	exitNext int
	subs     map[int]chan Event
	next     int
	// closed: the tracker is closed; a late Subscribe gets a closed channel.
	closed bool
	lost   atomic.Uint64
}

// maxExits bounds SawExit's memory: the enforcer asks about a process
// within seconds of its exit, while thousands of processes may exit meanwhile.
const maxExits = 4096

// nsKey is a process's identity as libvgpu reports it from inside its pid
// namespace.
type nsKey struct {
	ns    uint64
	nspid int
	start uint64
}

func keyOf(p *Process) (nsKey, bool) {
	k := nsKey{ns: p.PIDNamespace, nspid: p.NSPID, start: p.StartTime}
	return k, k.ns != 0 && k.nspid > 0 && k.start != 0
}

// procInfo is what the caller read from procfs about a process, outside the
// lock: used when the process is new to the state.
type procInfo struct {
	containerID string
	cgroupPath  string
}

func newState() *state {
	return &state{procs: make(map[int]*Process), byNS: make(map[nsKey]int),
		exits: make(map[nsKey]struct{}), subs: make(map[int]chan Event)}
}

// putLocked makes p the process with pid p.PID, replacing (without an exit)
// any other.
func (s *state) putLocked(p *Process) {
	if old := s.procs[p.PID]; old != nil {
		s.unindexLocked(old)
	}
	s.procs[p.PID] = p
	if k, ok := keyOf(p); ok {
		s.byNS[k] = p.PID
	}
}

func (s *state) unindexLocked(p *Process) {
	if k, ok := keyOf(p); ok && s.byNS[k] == p.PID {
		delete(s.byNS, k)
	}
}

// exitedLocked forgets the process with pid and remembers its exit.
func (s *state) exitedLocked(pid int) {
	p := s.procs[pid]
	if p == nil {
		return
	}
	s.unindexLocked(p)
	delete(s.procs, pid)
	k, ok := keyOf(p)
	if !ok {
		return
	}
	if _, seen := s.exits[k]; seen {
		return
	}
	if len(s.exitRing) < maxExits {
		s.exitRing = append(s.exitRing, k)
	} else {
		delete(s.exits, s.exitRing[s.exitNext])
		s.exitRing[s.exitNext] = k
		s.exitNext = (s.exitNext + 1) % maxExits
	}
	s.exits[k] = struct{}{}
}

func (s *state) findInNamespace(pidNS uint64, nspid int, start uint64) (Process, bool) {
	k := nsKey{ns: pidNS, nspid: nspid, start: start}
	if k.ns == 0 || k.start == 0 {
		return Process{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pid, ok := s.byNS[k]
	if !ok {
		return Process{}, false
	}
	return copyProcess(s.procs[pid]), true
}

func (s *state) sawExit(pidNS uint64, nspid int, start uint64) bool {
	k := nsKey{ns: pidNS, nspid: nspid, start: start}
	if k.ns == 0 || k.start == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.exits[k]
	return ok
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

// apply records ev and publishes it. info is what the caller read about
// ev.PID from procfs, used when the process is new.
func (s *state) apply(ev Event, info procInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.publishLocked(s.applyLocked(ev, info))
}

// applyLocked records ev and returns it with the pid namespace identity
// filled in from the known process when the event came without it (the
// programs skip reading it for a process already tracked).
func (s *state) applyLocked(ev Event, info procInfo) Event {
	if p := s.procs[ev.PID]; p != nil && ev.PIDNamespace == 0 && (ev.StartTime == 0 || p.StartTime == ev.StartTime) {
		ev.NSPID, ev.PIDNamespace = p.NSPID, p.PIDNamespace
	}
	switch ev.Kind {
	case EventOpen:
		p := s.procs[ev.PID]
		if p == nil || (p.StartTime != ev.StartTime && ev.StartTime != 0) {
			// New, or the pid was reused by another process.
			p = &Process{PID: ev.PID, NSPID: ev.NSPID, PIDNamespace: ev.PIDNamespace,
				StartTime: ev.StartTime, CgroupPath: info.cgroupPath}
			s.putLocked(p)
		}
		p.CgroupID = ev.CgroupID
		if info.containerID != "" {
			p.ContainerID = info.containerID
		}
		p.Devices = addDevice(p.Devices, ev.Device)
	case EventFork:
		// The child holds what its parent holds: fds are inherited.
		child := &Process{PID: ev.PID, NSPID: ev.NSPID, PIDNamespace: ev.PIDNamespace,
			CgroupID: ev.CgroupID, StartTime: ev.StartTime,
			ContainerID: info.containerID, CgroupPath: info.cgroupPath}
		if parent := s.procs[ev.PPID]; parent != nil {
			child.Devices = slices.Clone(parent.Devices)
			if child.ContainerID == "" {
				child.ContainerID = parent.ContainerID
			}
			if child.CgroupPath == "" {
				child.CgroupPath = parent.CgroupPath
			}
		}
		s.putLocked(child)
	case EventExit:
		if p := s.procs[ev.PID]; p != nil && (ev.StartTime == 0 || p.StartTime == ev.StartTime) {
			s.exitedLocked(ev.PID)
		}
	}
	return ev
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
			ev := Event{Kind: EventExit, PID: pid, TID: pid, NSPID: old.NSPID, PIDNamespace: old.PIDNamespace,
				CgroupID: old.CgroupID, StartTime: old.StartTime, At: at}
			s.exitedLocked(pid)
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
				NSPID: cur.NSPID, PIDNamespace: cur.PIDNamespace,
				CgroupID: cur.CgroupID, StartTime: cur.StartTime, Device: d, At: at})
		}
		p := copyProcess(&cur.Process)
		s.putLocked(&p)
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

// knows says whether the process pid that started at start is in the
// state: the reader's per-event check, which must not copy the process.
func (s *state) knows(pid int, start uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.procs[pid]
	return p != nil && p.StartTime == start
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
