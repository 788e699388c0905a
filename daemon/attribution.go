package daemon

import "github.com/vgpu-project/vgpu/internal/procfs"

// maxAncestry bounds the ppid walk: process trees are shallow, and a loop in
// what /proc says (a pid reused while we read) must not hang the tick.
const maxAncestry = 64

// ancestry attributes a host process that holds no slot in any usage region (it
// bypassed libvgpu) to a slice: the slice whose owner process is one of its
// ancestors. `vgpuctl run` owns its slice and the workload is its child, so the
// workload and everything it starts belong to that slice even after they
// unset LD_PRELOAD. (A process in a container is attributed by its cgroup
// instead, by containers.CgroupAttributor, which the loop asks after this.)
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

// readPPID returns the parent pid of pid from <procRoot>/<pid>/stat.
func readPPID(procRoot string, pid int) (int, bool) {
	var buf [procfs.StatBufSize]byte
	st, err := procfs.ReadStat(procRoot, pid, buf[:])
	if err != nil {
		return 0, false
	}
	return st.PPID, true
}
