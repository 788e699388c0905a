package api

// Processes is the answer of GET /v1/processes: what vgpud's process tracker
// knows, read-only. The types live here rather than in types.go only so that
// they can be added without touching that file's other definitions.
type Processes struct {
	// Tracker is the tracker running: ebpf, procfs or off (then Processes
	// is empty).
	Tracker string `json:"tracker"`
	// Processes are the live processes known to hold a tracked GPU device,
	// by host pid.
	Processes []TrackedProcess `json:"processes"`
}

// TrackedProcess is one process holding a GPU device, as the tracker knows it
// (package tracker's Process).
type TrackedProcess struct {
	// PID is the host pid.
	PID int `json:"pid"`
	// NSPID is its pid in its own innermost pid namespace, PIDNamespace that
	// namespace's inode (readlink /proc/<pid>/ns/pid): with StartTime, the
	// identity libvgpu writes in its slot. 0 when unknown.
	NSPID        int    `json:"ns_pid"`
	PIDNamespace uint64 `json:"pid_namespace"`
	// StartTime is in clock ticks since boot (/proc/<pid>/stat field 22).
	StartTime uint64 `json:"start_time"`
	// CgroupID is the cgroup v2 id (the inode of its cgroup directory),
	// CgroupPath its cgroup v2 path ("" when unknown).
	CgroupID    uint64 `json:"cgroup_id"`
	CgroupPath  string `json:"cgroup_path"`
	ContainerID string `json:"container_id,omitempty"`
	// Devices are the device numbers it holds, "major:minor", sorted.
	Devices []string `json:"devices"`
}
