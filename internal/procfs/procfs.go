// Package procfs reads what the kernel says about processes: identity (pid,
// pid namespace, start time), liveness, parent pids and NSpid lines. It is the
// one place that parses /proc/<pid>/stat and /proc/<pid>/status; everything in
// vgpu that judges a process (reclaim, the pid mapper, owner checks, ancestry
// attribution) goes through it.
//
// The readers take caller-provided buffers and build paths on the stack: the
// daemon calls them for every slot and process on every tick, so they must not
// allocate.
package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Root is where the kernel's proc filesystem is normally mounted.
const Root = "/proc"

// InitPIDNamespaceIno is the inode of the initial pid namespace
// (PROC_PID_INIT_INO): every host process lives there.
const InitPIDNamespaceIno = 0xEFFFFFFC

// StatBufSize is enough for any /proc/<pid>/stat line up to field 22 (the
// command name is at most 64 bytes; the fields before start time are numbers).
const StatBufSize = 1024

// ErrStatFormat: a /proc/<pid>/stat line that does not have the fields we read.
var ErrStatFormat = errors.New("unexpected /proc/<pid>/stat format")

// Identity names one process for its whole life: a pid alone is reused, a pid
// with its start time and pid namespace is not.
type Identity struct {
	// PID is the pid in the process's own pid namespace.
	PID int
	// PIDNamespace is the inode of /proc/<pid>/ns/pid; 0 if unknown.
	PIDNamespace uint64
	// StartTime is field 22 of /proc/<pid>/stat (clock ticks since boot); 0 if
	// unknown.
	StartTime uint64
}

// Stat is what vgpu reads of /proc/<pid>/stat.
type Stat struct {
	State     byte   // field 3: R, S, D, Z, X, ...
	PPID      int    // field 4
	StartTime uint64 // field 22
}

// Dead reports whether the process has exited (a zombie's device memory is
// already returned by the driver, so for vgpu it is gone).
func (s Stat) Dead() bool { return s.State == 'Z' || s.State == 'X' }

// ParseStat extracts state, parent pid and start time from a /proc/<pid>/stat
// line. The command name (field 2) may hold spaces and ')', so fields are
// counted from after the last ')'.
func ParseStat(line []byte) (Stat, error) {
	rp := bytes.LastIndexByte(line, ')')
	if rp < 0 {
		return Stat{}, ErrStatFormat
	}
	var st Stat
	field := 3
	for i := rp + 1; i < len(line); field++ {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		j := i
		for j < len(line) && line[j] != ' ' && line[j] != '\n' {
			j++
		}
		if j == i {
			break
		}
		switch field {
		case 3:
			st.State = line[i]
		case 4:
			v, err := parseUint(line[i:j])
			if err != nil {
				return Stat{}, err
			}
			st.PPID = int(v)
		case 22:
			v, err := parseUint(line[i:j])
			if err != nil {
				return Stat{}, err
			}
			st.StartTime = v
			return st, nil
		}
		i = j
	}
	return Stat{}, ErrStatFormat
}

// ReadStat reads <root>/<pid>/stat into buf (at least StatBufSize bytes) and
// parses it. It allocates nothing.
func ReadStat(root string, pid int, buf []byte) (Stat, error) {
	var pathBuf [64]byte
	path := append(pathBuf[:0], root...)
	path = append(path, '/')
	path = strconv.AppendInt(path, int64(pid), 10)
	path = append(path, "/stat"...)
	fd, err := unix.Open(string(path), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Stat{}, err
	}
	n, err := unix.Read(fd, buf)
	_ = unix.Close(fd) // read-only: nothing to flush
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(buf[:n])
}

// ReadNSpid returns the last entry of the NSpid line of a /proc/<p>/status
// file (the pid in the process's innermost namespace), reading into buf.
func ReadNSpid(path string, buf []byte) (int, bool) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	n := 0
	for n < len(buf) {
		k, err := unix.Read(fd, buf[n:])
		if err != nil || k == 0 {
			break
		}
		n += k
	}
	_ = unix.Close(fd)
	return parseNSpid(buf[:n])
}

func parseNSpid(data []byte) (int, bool) {
	i := bytes.Index(data, []byte("\nNSpid:"))
	if i < 0 {
		return 0, false
	}
	line := data[i+len("\nNSpid:"):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	fields := bytes.Fields(line)
	if len(fields) == 0 {
		return 0, false
	}
	v, err := parseUint(fields[len(fields)-1])
	if err != nil || v == 0 {
		return 0, false
	}
	return int(v), true
}

// PIDNamespaceOf returns the inode of <root>/<pid>/ns/pid.
func PIDNamespaceOf(root string, pid int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(root+"/"+strconv.Itoa(pid)+"/ns/pid", &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// SelfPIDNamespace is the caller's pid-namespace inode (0 if unknown). A
// process cannot change its own pid namespace, so it is read once.
var SelfPIDNamespace = sync.OnceValue(func() uint64 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return 0
	}
	return st.Ino
})

// IsGone reports whether a /proc error means the process no longer exists.
func IsGone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// IdentityOf reads the identity of pid in the caller's pid namespace: pid,
// pid-namespace inode and start time (what libvgpu records in its slot).
func IdentityOf(pid int) (Identity, error) {
	var buf [StatBufSize]byte
	st, err := ReadStat(Root, pid, buf[:])
	if err != nil {
		return Identity{}, fmt.Errorf("process %d: %w", pid, err)
	}
	ino, err := PIDNamespaceOf(Root, pid)
	if err != nil {
		return Identity{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return Identity{PID: pid, PIDNamespace: ino, StartTime: st.StartTime}, nil
}

// Alive is the liveness check for a process that lives in the caller's pid
// namespace (bare metal, tests, a daemon sharing the tenant's namespace). A
// process is alive when /proc/<pid> exists, is not a zombie, its start time
// matches (a reused pid is a different process), and, when the identity knows
// its pid namespace, /proc/<pid>/ns/pid is that namespace.
//
// It errs towards "alive" whenever it cannot decide (unreadable /proc entry, a
// process of another pid namespace, whose pid means nothing here): returning a
// live process's charge would let a tenant exceed its limit, while keeping a
// dead one's only delays its return.
func Alive(id Identity) bool {
	if id.PID <= 0 {
		return false
	}
	if id.PIDNamespace != 0 {
		if own := SelfPIDNamespace(); own != 0 && own != id.PIDNamespace {
			return true // another namespace: cannot judge from our /proc
		}
	}
	var buf [StatBufSize]byte
	st, err := ReadStat(Root, id.PID, buf[:])
	if err != nil {
		return !IsGone(err)
	}
	if st.Dead() {
		return false
	}
	if id.StartTime != 0 && st.StartTime != id.StartTime {
		return false
	}
	if id.PIDNamespace != 0 {
		ino, err := PIDNamespaceOf(Root, id.PID)
		if err != nil {
			return !IsGone(err)
		}
		if ino != id.PIDNamespace {
			return false
		}
	}
	return true
}

func parseUint(b []byte) (uint64, error) {
	if len(b) == 0 {
		return 0, ErrStatFormat
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, ErrStatFormat
		}
		v = v*10 + uint64(c-'0')
	}
	return v, nil
}
