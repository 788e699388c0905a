package enforcer

import (
	"github.com/vgpu-project/vgpu/internal/procfs"
	"github.com/vgpu-project/vgpu/shm"
)

// ProcessAlive judges the process that owns a slot through /proc, for slots
// whose process lives in the caller's pid namespace (procfs.Alive: a zombie, a
// reused pid or another namespace's process is never mistaken for the owner).
// It is the alive function Reclaim takes on bare metal and in tests; vgpud maps
// container pids to host pids itself (Loop).
func ProcessAlive(id shm.SlotIdentity) bool {
	return procfs.Alive(procIdentity(id))
}

// ProcessIdentity reads the identity libvgpu would record in a slot for pid (in
// the caller's pid namespace).
func ProcessIdentity(pid int) (shm.SlotIdentity, error) {
	id, err := procfs.IdentityOf(pid)
	if err != nil {
		return shm.SlotIdentity{}, err
	}
	return shm.SlotIdentity{PID: id.PID, PIDNamespace: id.PIDNamespace, StartTime: id.StartTime}, nil
}

func procIdentity(id shm.SlotIdentity) procfs.Identity {
	return procfs.Identity{PID: id.PID, PIDNamespace: id.PIDNamespace, StartTime: id.StartTime}
}
