package store

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
)

// procRoot is where owner processes are looked up (a var for tests).
var procRoot = "/proc"

// regionOptions is how the store creates a slice's regions: fully allocated
// (shm does that always) and not fsynced (writeRecord fsyncs the slice
// directory afterwards, making their renames durable too, and Load recreates
// a pair a power loss damaged; this halves the fsyncs of an alloc).
//
// A slice owned by a process (bare metal: vgpuctl run, an API client naming
// its pid) gets its usage file owned by that process's user and group, mode
// 0600: only the slice's own user can write it, so no other user of the node
// can grow, shrink or forge it. If the owner cannot be looked up (it is gone:
// the slice is released on the next tick) the file stays root's, 0600. Other
// slices keep 0666: a container's processes may run as any uid under runc's
// user mapping, and the container reaches only its own file (bind-mounted).
func regionOptions(owner api.Owner) shm.CreateOptions {
	var opts shm.CreateOptions
	if owner.Kind != api.OwnerPID {
		return opts
	}
	opts.UsageMode = 0o600
	uid, gid, err := procIDs(owner.PID)
	if err != nil {
		uid, gid = 0, 0
	}
	opts.UsageOwner = &shm.FileOwner{UID: uid, GID: gid}
	return opts
}

// procIDs returns the real user and group ids of process pid.
func procIDs(pid int) (uid, gid int, err error) {
	f, err := os.Open(procRoot + "/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	uid, gid = -1, -1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		key, rest, ok := strings.Cut(line, ":")
		if !ok || (key != "Uid" && key != "Gid") {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, 0, fmt.Errorf("pid %d: bad %s line %q", pid, key, line)
		}
		id, err := strconv.Atoi(fields[0])
		if err != nil {
			return 0, 0, fmt.Errorf("pid %d: bad %s line %q", pid, key, line)
		}
		if key == "Uid" {
			uid = id
		} else {
			gid = id
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("pid %d: no Uid/Gid in status", pid)
	}
	return uid, gid, nil
}
