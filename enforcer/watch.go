package enforcer

import (
	"errors"

	"github.com/vgpu-project/vgpu/internal/procfs"
	"github.com/vgpu-project/vgpu/shm"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// procEntry is one process the loop watches.
type procEntry struct {
	key      procKey
	hostPID  int
	fd       int // pidfd, -1 when none
	resolved bool
	dead     bool
	seen     uint64
}

// pollWatched refreshes the dead flag of every watched process: one poll(2)
// over the pidfds (a pidfd turns readable when its process exits, zombie or
// not), /proc for the ones without a pidfd. Entries no slot referred to in the
// previous tick are dropped here.
func (l *Loop) pollWatched() {
	l.pollfds = l.pollfds[:0]
	l.pollIdx = l.pollIdx[:0]
	n := 0
	for _, e := range l.watch {
		if e.seen+1 < l.gen {
			// No slot named this process last tick: its slot was freed or
			// reclaimed.
			if e.fd >= 0 {
				_ = unix.Close(e.fd) // a pidfd: nothing to flush
			}
			delete(l.procs, e.key)
			continue
		}
		l.watch[n] = e
		n++
		switch {
		case e.dead || !e.resolved:
		case e.fd >= 0:
			l.pollfds = append(l.pollfds, unix.PollFd{Fd: int32(e.fd), Events: unix.POLLIN})
			l.pollIdx = append(l.pollIdx, int32(n-1))
		default:
			e.dead = !l.hostAlive(e)
		}
	}
	clear(l.watch[n:])
	l.watch = l.watch[:n]
	if len(l.pollfds) == 0 {
		return
	}
	for {
		_, err := unix.Poll(l.pollfds, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// Cannot poll: judge them through /proc this time.
			for _, i := range l.pollIdx {
				e := l.watch[i]
				e.dead = !l.hostAlive(e)
			}
			return
		}
		break
	}
	for k, pfd := range l.pollfds {
		if pfd.Revents&(unix.POLLIN|unix.POLLHUP|unix.POLLNVAL|unix.POLLERR) != 0 {
			l.watch[l.pollIdx[k]].dead = true
		}
	}
}

// hostAlive judges a resolved process through /proc.
func (l *Loop) hostAlive(e *procEntry) bool {
	if e.key.ns == 0 || e.key.ns == l.selfNS {
		return ProcessAlive(shm.SlotIdentity{PID: e.key.pid, PIDNamespace: e.key.ns, StartTime: e.key.start})
	}
	var buf [procfs.StatBufSize]byte
	st, err := procfs.ReadStat(procfs.Root, e.hostPID, buf[:])
	switch {
	case err != nil:
		return !procfs.IsGone(err)
	case st.Dead():
		return false
	case e.key.start != 0 && st.StartTime != e.key.start:
		return false
	}
	return true
}

// alive is the liveness function handed to Reclaim; it also records the slots
// judged alive as the slice's owned set.
func (l *Loop) alive(id shm.SlotIdentity) bool {
	var e *procEntry
	ok := true
	if !id.Claiming {
		e = l.entry(id)
		ok = !e.dead
	}
	if ok && l.cur != nil {
		l.cur.owned = append(l.cur.owned, ownedSlot{idx: int32(id.Index), e: e})
	}
	return ok
}

// entry returns the watch entry of id's process, creating (and resolving) it
// when new, and retrying the resolution of one not resolved yet.
func (l *Loop) entry(id shm.SlotIdentity) *procEntry {
	key := procKey{ns: id.PIDNamespace, pid: id.PID, start: id.StartTime}
	e := l.procs[key]
	if e == nil {
		e = &procEntry{key: key, fd: -1}
		l.procs[key] = e
		l.watch = append(l.watch, e)
	}
	e.seen = l.gen
	if !e.resolved && !e.dead {
		l.resolve(e, id)
	}
	return e
}

// resolve finds e's host pid and opens its pidfd.
func (l *Loop) resolve(e *procEntry, id shm.SlotIdentity) {
	if id.PID <= 0 {
		e.dead = true // a LIVE slot without a pid: garbage, return its charge
		return
	}
	same := id.PIDNamespace == 0 || id.PIDNamespace == l.selfNS
	hp := id.PID
	if !same {
		switch r := l.Mapper.(type) {
		case nil:
			return // cannot map: never judged dead
		case Resolver:
			var res MapResult
			hp, res = r.Resolve(id)
			if res == MapGone {
				e.dead = true
				return
			}
			if res != MapFound {
				return
			}
		default:
			var ok bool
			if hp, ok = r.HostPID(id); !ok {
				return
			}
		}
	}
	e.hostPID = hp
	// pidfd first, then check the start time: if it matches, the pidfd
	// refers to this very process (a pid reused in between would show a
	// newer start time).
	fd := -1
	if !l.noPidfd {
		var err error
		fd, err = unix.PidfdOpen(hp, 0)
		switch {
		case err == nil:
		case errors.Is(err, unix.ESRCH):
			e.dead = true
			return
		case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM):
			l.noPidfd = true
			l.Log.Warn("enforcer: pidfds unavailable, judging liveness through /proc each tick", zap.Error(err))
			fd = -1
		default:
			// EMFILE and friends: watch this one through /proc.
			fd = -1
		}
	}
	e.resolved = true
	e.fd = fd
	if !l.hostAlive(e) {
		e.dead = true
	}
}
