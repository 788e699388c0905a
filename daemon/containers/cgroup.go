package containers

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// CgroupAttributor attributes a host process to the slice of the container it
// runs in, from its cgroup path, which names the container id under every
// common layout:
//
//	/<namespace>/<id>                                  ctr, containerd's default
//	/kubepods/burstable/pod<uid>/<id>                  kubelet, cgroupfs driver
//	/kubepods.slice/.../cri-containerd-<id>.scope      kubelet, systemd driver
//	/system.slice/docker-<id>.scope, crio-<id>.scope   docker, CRI-O
//
// It serves the enforcer's backstop for processes that hold no slot (they
// bypassed libvgpu): a container cannot leave its cgroup. It is used by the
// enforcer loop's goroutine only (no locking).
type CgroupAttributor struct {
	procRoot    string
	byContainer map[string]string // container id -> slice id
	// Known, when set, gives the cgroup path of a process the kernel told
	// about (the process tracker: recorded when the process opened a GPU or
	// was forked by one that had), so a tick reads no /proc file for it.
	Known func(hostPID int) (cgroupPath string, ok bool)
}

// NewCgroupAttributor reads processes under procRoot ("/proc").
func NewCgroupAttributor(procRoot string) *CgroupAttributor {
	return &CgroupAttributor{procRoot: procRoot, byContainer: map[string]string{}}
}

// Reset forgets every container.
func (a *CgroupAttributor) Reset() { clear(a.byContainer) }

// Set records that the container's processes belong to the slice.
func (a *CgroupAttributor) Set(containerID, sliceID string) { a.byContainer[containerID] = sliceID }

// SliceOf returns the slice of the container hostPID runs in.
func (a *CgroupAttributor) SliceOf(hostPID int) (string, bool) {
	if len(a.byContainer) == 0 || hostPID <= 0 {
		return "", false
	}
	if a.Known != nil {
		if path, ok := a.Known(hostPID); ok {
			return a.SliceOfPath(path)
		}
	}
	f, err := os.Open(a.procRoot + "/" + strconv.Itoa(hostPID) + "/cgroup")
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controllers:path
		line := sc.Bytes()
		i := bytes.LastIndexByte(line[:max(0, bytes.IndexByte(line, '/'))], ':')
		if i < 0 {
			continue
		}
		if id, ok := a.SliceOfPath(string(line[i+1:])); ok {
			return id, true
		}
	}
	return "", false
}

// SliceOfPath returns the slice of the container a cgroup path names (any of
// its components, under the layouts above).
func (a *CgroupAttributor) SliceOfPath(path string) (string, bool) {
	for _, comp := range strings.Split(path, "/") {
		if id, ok := a.byContainer[containerIDOf(comp)]; ok {
			return id, true
		}
	}
	return "", false
}

// containerIDOf strips the decorations runtimes and systemd put around a
// container id in a cgroup path component.
func containerIDOf(comp string) string {
	comp = strings.TrimSuffix(comp, ".scope")
	for _, p := range []string{"cri-containerd-", "docker-", "crio-", "libpod-"} {
		if s, ok := strings.CutPrefix(comp, p); ok {
			return s
		}
	}
	return comp
}
