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
// and, for a slice that serves whole pods (a DRA claim's), the pod's uid:
//
//	/kubepods/burstable/pod<uid>/...                   kubelet, cgroupfs driver
//	/kubepods.slice/.../kubepods-burstable-pod<uid with _ for ->.slice/...  systemd driver
//
// It serves the enforcer's backstop for processes that hold no slot (they
// bypassed libvgpu): a container cannot leave its cgroup. It is used by the
// enforcer loop's goroutine only (no locking).
type CgroupAttributor struct {
	procRoot    string
	byContainer map[string]string // container id -> slice id
	byPod       map[string]string // pod uid -> slice id
	// Known, when set, gives the cgroup path of a process the kernel told
	// about (the process tracker: recorded when the process opened a GPU or
	// was forked by one that had), so a tick reads no /proc file for it.
	Known func(hostPID int) (cgroupPath string, ok bool)
}

// NewCgroupAttributor reads processes under procRoot ("/proc").
func NewCgroupAttributor(procRoot string) *CgroupAttributor {
	return &CgroupAttributor{procRoot: procRoot, byContainer: map[string]string{}, byPod: map[string]string{}}
}

// Reset forgets every container and pod.
func (a *CgroupAttributor) Reset() {
	clear(a.byContainer)
	clear(a.byPod)
}

// SetPod records that the processes of the pod with this uid belong to the
// slice (unless their container has a slice of its own).
func (a *CgroupAttributor) SetPod(podUID, sliceID string) { a.byPod[podUID] = sliceID }

// Set records that the container's processes belong to the slice.
func (a *CgroupAttributor) Set(containerID, sliceID string) { a.byContainer[containerID] = sliceID }

// SliceOf returns the slice of the container hostPID runs in.
func (a *CgroupAttributor) SliceOf(hostPID int) (string, bool) {
	if len(a.byContainer)+len(a.byPod) == 0 || hostPID <= 0 {
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
// A container's own slice wins over its pod's.
func (a *CgroupAttributor) SliceOfPath(path string) (string, bool) {
	comps := strings.Split(path, "/")
	for _, comp := range comps {
		if id, ok := a.byContainer[containerIDOf(comp)]; ok {
			return id, true
		}
	}
	if len(a.byPod) == 0 {
		return "", false
	}
	for _, comp := range comps {
		if uid, ok := podUIDOf(comp); ok {
			if id, ok := a.byPod[uid]; ok {
				return id, true
			}
		}
	}
	return "", false
}

// podUIDOf reads the pod uid of a kubelet pod cgroup component: "pod<uid>"
// (cgroupfs) or "kubepods[-<qos>]-pod<uid, _ for ->.slice" (systemd).
func podUIDOf(comp string) (string, bool) {
	if uid, ok := strings.CutPrefix(comp, "pod"); ok && uid != "" {
		return uid, true
	}
	if !strings.HasPrefix(comp, "kubepods") || !strings.HasSuffix(comp, ".slice") {
		return "", false
	}
	i := strings.LastIndex(comp, "-pod")
	if i < 0 {
		return "", false
	}
	uid := strings.TrimSuffix(comp[i+len("-pod"):], ".slice")
	return strings.ReplaceAll(uid, "_", "-"), uid != ""
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
