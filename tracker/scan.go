package tracker

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/internal/procfs"
)

// scanned is one process found holding a tracked device by a procfs scan.
type scanned struct {
	Process
	ppid int
}

// scanner reads processes and their open devices from procfs. It is the
// whole procfs tracker, and the eBPF tracker's seed and repair.
type scanner struct {
	root   string // /proc
	cgroup string // the cgroup2 mount point ("" when there is none)
	majors map[uint32]bool
}

func newScanner(cfg Config) *scanner {
	m := make(map[uint32]bool, len(cfg.Majors))
	for _, maj := range cfg.Majors {
		m[maj] = true
	}
	return &scanner{root: cfg.ProcRoot, cgroup: cgroup2Mount(cfg.ProcRoot), majors: m}
}

// scan walks every /proc/<pid>/fd and returns the processes with an fd on a
// character device of a tracked major. The device is known from stat of the
// fd (st_rdev), never from the path's name: a node may be called anything.
func (s *scanner) scan() (map[int]*scanned, error) {
	d, err := os.Open(s.root)
	if err != nil {
		return nil, err
	}
	names, err := d.Readdirnames(-1)
	_ = d.Close() // read-only
	if err != nil {
		return nil, err
	}
	out := make(map[int]*scanned)
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 {
			continue
		}
		devs := s.devicesOf(pid)
		if len(devs) == 0 {
			continue
		}
		var buf [procfs.StatBufSize]byte
		st, err := procfs.ReadStat(s.root, pid, buf[:])
		if err != nil || st.Dead() {
			continue // exited while we looked
		}
		p := &scanned{Process: Process{PID: pid, StartTime: st.StartTime, Devices: devs}, ppid: st.PPID}
		cg := s.cgroupOf(pid)
		p.CgroupID, p.CgroupPath, p.ContainerID = cg.id, cg.path, cg.containerID
		p.NSPID, p.PIDNamespace = s.nsOf(pid)
		out[pid] = p
	}
	return out, nil
}

// devicesOf returns the tracked devices pid holds open, sorted.
func (s *scanner) devicesOf(pid int) []Device {
	dir := filepath.Join(s.root, strconv.Itoa(pid), "fd")
	f, err := os.Open(dir)
	if err != nil {
		return nil // gone, or a kernel thread we may not read
	}
	fds, err := f.Readdirnames(-1)
	_ = f.Close() // read-only
	if err != nil {
		return nil
	}
	var devs []Device
	for _, fd := range fds {
		var st unix.Stat_t
		// stat follows the fd's magic link to the open file itself.
		if unix.Stat(dir+"/"+fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
			continue
		}
		maj := unix.Major(st.Rdev)
		if s.majors[maj] {
			devs = addDevice(devs, Device{Major: maj, Minor: unix.Minor(st.Rdev)})
		}
	}
	return devs
}

// cgroupInfo is what /proc/<pid>/cgroup says about a process.
type cgroupInfo struct {
	// id is the cgroup v2 id: the inode of its cgroup directory, which is
	// what bpf_get_current_cgroup_id returns.
	id uint64
	// path is the cgroup v2 path (the "0::" line).
	path string
	// containerID is the first container id found in any of its paths.
	containerID string
}

func (c cgroupInfo) procInfo() procInfo {
	return procInfo{containerID: c.containerID, cgroupPath: c.path}
}

// cgroupOf reads pid's cgroups; the zero value when it is gone.
func (s *scanner) cgroupOf(pid int) cgroupInfo {
	var out cgroupInfo
	data, err := os.ReadFile(filepath.Join(s.root, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return out
	}
	var paths []string
	for line := range bytes.Lines(data) {
		parts := strings.SplitN(strings.TrimSpace(string(line)), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			out.path = parts[2]
			var st unix.Stat_t
			if s.cgroup != "" && unix.Stat(filepath.Join(s.cgroup, parts[2]), &st) == nil {
				out.id = st.Ino
			}
		}
		paths = append(paths, parts[2])
	}
	for _, p := range paths {
		if c := containerIDOf(p); c != "" {
			out.containerID = c
			break
		}
	}
	return out
}

// nsOf returns pid's process id in its innermost pid namespace (the last
// field of NSpid in /proc/<pid>/status) and that namespace's inode (stat of
// /proc/<pid>/ns/pid); zeros for what cannot be read.
func (s *scanner) nsOf(pid int) (nspid int, ns uint64) {
	dir := filepath.Join(s.root, strconv.Itoa(pid))
	var st unix.Stat_t
	if unix.Stat(dir+"/ns/pid", &st) == nil {
		ns = st.Ino
	}
	data, err := os.ReadFile(dir + "/status")
	if err != nil {
		return 0, ns
	}
	for line := range bytes.Lines(data) {
		rest, ok := bytes.CutPrefix(line, []byte("NSpid:"))
		if !ok {
			continue
		}
		if f := strings.Fields(string(rest)); len(f) > 0 {
			nspid, _ = strconv.Atoi(f[len(f)-1])
		}
		break
	}
	return nspid, ns
}

// containerIDOf returns the last element of a cgroup path that names a
// container: a 64-hex id alone (containerd, cgroupfs driver) or inside a
// systemd unit name (cri-containerd-<id>.scope, docker-<id>.scope).
func containerIDOf(path string) string {
	elems := strings.Split(path, "/")
	for i := len(elems) - 1; i >= 0; i-- {
		e := strings.TrimSuffix(elems[i], ".scope")
		if j := strings.LastIndexAny(e, "-:"); j >= 0 {
			e = e[j+1:]
		}
		if isHex64(e) {
			return e
		}
	}
	return ""
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// cgroup2Mount finds where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup
// on a unified system, /sys/fs/cgroup/unified on a hybrid one.
func cgroup2Mount(procRoot string) string {
	f, err := os.Open(filepath.Join(procRoot, "self", "mountinfo"))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "36 25 0:31 / /sys/fs/cgroup rw,... shared:9 - cgroup2 cgroup2 rw"
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		if f := strings.Fields(pre); len(f) >= 5 {
			return f[4]
		}
	}
	return ""
}
