package daemon

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// maxAncestry bounds the ppid walk: process trees are shallow, and a loop in
// what /proc says (a pid reused while we read) must not hang the tick.
const maxAncestry = 64

// ancestry attributes a host process that holds no slot in any usage region (it
// bypassed libvgpu) to a slice: the slice whose owner process is one of its
// ancestors. `vgpuctl run` owns its slice and the workload is its child, so the
// workload and everything it starts belong to that slice even after they
// unset LD_PRELOAD. (Containers will be attributed by cgroup, issue 4.)
//
// It implements enforcer.Attributor. It is used by the enforcer loop's
// goroutine only; answers are cached for one tick (newTick), so a tick reads
// each process's /proc/<pid>/stat at most once. The owners change only when
// the set of slices does (reset, then setOwner for each).
type ancestry struct {
	procRoot string
	owners   map[int]string // owner pid -> slice id
	cache    map[int]string // pid -> slice id ("" = none), this tick
	path     []int          // scratch: the pids of the current walk
}

func newAncestry(procRoot string) *ancestry {
	return &ancestry{procRoot: procRoot, owners: map[int]string{}, cache: map[int]string{}}
}

// newTick forgets the answers of the previous tick: processes come and go.
func (a *ancestry) newTick() { clear(a.cache) }

// reset forgets the owners (and the answers that depended on them).
func (a *ancestry) reset() {
	clear(a.owners)
	clear(a.cache)
}

// setOwner records that slice id is owned by process pid.
func (a *ancestry) setOwner(pid int, id string) { a.owners[pid] = id }

// SliceOf returns the slice of hostPID: the slice owned by the nearest
// ancestor (or the process itself) that owns one.
func (a *ancestry) SliceOf(hostPID int) (string, bool) {
	if len(a.owners) == 0 {
		return "", false
	}
	a.path = a.path[:0]
	id := ""
	pid := hostPID
	for depth := 0; pid > 1 && depth < maxAncestry; depth++ {
		if s, ok := a.owners[pid]; ok {
			id = s
			break
		}
		if s, ok := a.cache[pid]; ok {
			id = s
			break
		}
		a.path = append(a.path, pid)
		ppid, ok := readPPID(a.procRoot, pid)
		if !ok {
			break
		}
		pid = ppid
	}
	for _, p := range a.path {
		a.cache[p] = id
	}
	return id, id != ""
}

// readPPID returns field 4 of <procRoot>/<pid>/stat. The command name (field 2)
// may hold spaces and ')', so fields are counted after the last ')'.
func readPPID(procRoot string, pid int) (int, bool) {
	fd, err := unix.Open(procRoot+"/"+strconv.Itoa(pid)+"/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	var buf [512]byte
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err != nil || n <= 0 {
		return 0, false
	}
	line := buf[:n]
	rp := -1
	for i := len(line) - 1; i >= 0; i-- {
		if line[i] == ')' {
			rp = i
			break
		}
	}
	// ") S 1234 ...": state, then ppid.
	i := rp + 1
	for field := 3; field <= 4; field++ {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		j := i
		for j < len(line) && line[j] != ' ' && line[j] != '\n' {
			j++
		}
		if j == i {
			return 0, false
		}
		if field == 4 {
			v, err := strconv.Atoi(string(line[i:j]))
			return v, err == nil && rp >= 0
		}
		i = j
	}
	return 0, false
}
