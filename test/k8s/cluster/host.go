package cluster

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Paths outside the working directory that the kubelet touches whatever its
// flags say: the device-plugin directory is hard-coded, container log links
// go to /var/log/containers, pod cgroups to /sys/fs/cgroup/<controller>/kubepods,
// and it sets a few kernel tunables (protectKernelDefaults is off).
const (
	varLibKubelet    = "/var/lib/kubelet"
	containerLogDirs = "/var/log/containers"
	cgroupRoot       = "/sys/fs/cgroup"
)

var kernelTunables = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// hostState is what the host had before the cluster started, so that the stop
// removes only what the cluster added and puts back what it changed.
type hostState struct {
	dir         string
	hadVarLib   bool
	hadFiles    map[string]bool // under /var/lib/kubelet/device-plugins
	hadKubepods map[string]bool // per controller dir
	tunables    map[string]string
	hadLogDir   bool
}

func saveHost(dir string) *hostState {
	h := &hostState{dir: dir, hadFiles: map[string]bool{}, hadKubepods: map[string]bool{}, tunables: map[string]string{}}
	_, err := os.Stat(varLibKubelet)
	h.hadVarLib = err == nil
	entries, _ := os.ReadDir(filepath.Join(varLibKubelet, "device-plugins"))
	for _, e := range entries {
		h.hadFiles[e.Name()] = true
	}
	for _, d := range kubepodsDirs() {
		h.hadKubepods[d] = true
	}
	for _, k := range kernelTunables {
		if v, err := os.ReadFile(filepath.Join("/proc/sys", k)); err == nil {
			h.tunables[k] = strings.TrimSpace(string(v))
		}
	}
	_, err = os.Stat(containerLogDirs)
	h.hadLogDir = err == nil
	return h
}

// kubepodsDirs lists /sys/fs/cgroup/*/kubepods (v1) and /sys/fs/cgroup/kubepods (v2).
func kubepodsDirs() []string {
	var out []string
	if _, err := os.Stat(filepath.Join(cgroupRoot, "kubepods")); err == nil {
		out = append(out, filepath.Join(cgroupRoot, "kubepods"))
	}
	m, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", "kubepods"))
	return append(out, m...)
}

// stop stops everything the cluster started and removes what it left on the
// host. It runs as a t.Cleanup, also when the test failed (then it logs the
// components' log tails first).
func (c *Cluster) stop() {
	if c.t.Failed() {
		c.DumpLogs()
	}
	if c.kubelet != nil {
		c.kubelet.Stop(20 * time.Second)
	}
	c.removeContainers()
	for i := len(c.procs) - 1; i >= 0; i-- {
		if !c.procs[i].Stop(20 * time.Second) {
			c.t.Logf("%s did not stop within 20s of SIGTERM: killed", c.procs[i].Name)
		}
	}
	c.killLeftovers()
	c.host.restore(c.t.Logf)
	if os.Getenv("VGPU_K8S_KEEP") != "" {
		c.t.Logf("VGPU_K8S_KEEP is set: keeping %s", c.Dir)
		return
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		c.t.Errorf("removing the cluster's directory: %v", err)
	}
}

// removeContainers kills and deletes every container the CRI made (pods'
// containers and sandboxes), through containerd while it still runs, so the
// shims exit and the rootfs mounts go.
func (c *Cluster) removeContainers() {
	if dialUnix(c.ContainerdSock) != nil {
		return
	}
	out, err := c.Ctr("containers", "ls", "-q")
	if err != nil {
		c.t.Logf("cleanup: %v", err)
		return
	}
	for _, id := range strings.Fields(out) {
		_, _ = c.Ctr("tasks", "kill", "-s", "SIGKILL", id)
		for i := 0; i < 50; i++ {
			o, err := c.Ctr("tasks", "delete", id)
			if err == nil || strings.Contains(o+err.Error(), "not found") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		_, _ = c.Ctr("containers", "delete", id)
	}
}

// killLeftovers SIGKILLs whatever still runs from this cluster: processes in
// the pod cgroups it created, and shims (their command lines name the
// cluster's containerd socket); then it detaches the mounts under the working
// directory.
func (c *Cluster) killLeftovers() {
	for _, d := range kubepodsDirs() {
		if c.host.hadKubepods[d] {
			continue
		}
		for _, pid := range cgroupPids(d) {
			c.t.Logf("cleanup: killing pid %d left in %s", pid, d)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		data, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(data), c.Dir) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if pid == os.Getpid() {
			continue
		}
		c.t.Logf("cleanup: killing leftover pid %d: %s", pid, strings.ReplaceAll(string(data), "\x00", " "))
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(200 * time.Millisecond)
	unmountUnder(c.Dir)
}

// cgroupPids lists the processes in a cgroup tree.
func cgroupPids(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		data, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mps []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mps = append(mps, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mps)))
	for _, mp := range mps {
		_ = unix.Unmount(mp, unix.MNT_DETACH)
	}
}

// restore removes what the kubelet added outside the working directory and
// puts back the kernel tunables it changed.
func (h *hostState) restore(logf func(string, ...any)) {
	for _, d := range kubepodsDirs() {
		if !h.hadKubepods[d] {
			if err := removeCgroupTree(d); err != nil {
				logf("cleanup: %v", err)
			}
		}
	}
	if !h.hadVarLib {
		_ = os.RemoveAll(varLibKubelet)
	} else {
		entries, _ := os.ReadDir(filepath.Join(varLibKubelet, "device-plugins"))
		for _, e := range entries {
			if !h.hadFiles[e.Name()] {
				_ = os.Remove(filepath.Join(varLibKubelet, "device-plugins", e.Name()))
			}
		}
	}
	links, _ := filepath.Glob(filepath.Join(containerLogDirs, "*"))
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && strings.HasPrefix(target, h.dir+"/") {
			_ = os.Remove(l)
		}
	}
	if !h.hadLogDir {
		_ = os.Remove(containerLogDirs) // only if empty
	}
	for k, v := range h.tunables {
		p := filepath.Join("/proc/sys", k)
		if now, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(now)) != v {
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				logf("cleanup: restoring %s to %s: %v", p, v, err)
			}
		}
	}
}

// removeCgroupTree removes a cgroup directory and its children, deepest
// first (a cgroup directory is removed with rmdir once it has no process).
func removeCgroupTree(dir string) error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var last error
	for i := len(dirs) - 1; i >= 0; i-- {
		for try := 0; try < 20; try++ {
			last = syscall.Rmdir(dirs[i])
			if last == nil || os.IsNotExist(last) {
				last = nil
				break
			}
			time.Sleep(100 * time.Millisecond) // a killed process leaves its cgroup a moment later
		}
		if last != nil {
			last = &os.PathError{Op: "rmdir", Path: dirs[i], Err: last}
		}
	}
	return last
}
