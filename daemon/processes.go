package daemon

import (
	"fmt"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// processes is GET /v1/processes: the tracker's processes, read-only. Without
// a tracker the list is empty and the kind "off".
func (ts *trackerState) processes() api.Processes {
	out := api.Processes{Tracker: ts.kind(), Processes: []api.TrackedProcess{}}
	if ts == nil {
		return out
	}
	for _, p := range ts.t.Processes() {
		devs := make([]string, 0, len(p.Devices))
		for _, d := range p.Devices {
			devs = append(devs, fmt.Sprintf("%d:%d", d.Major, d.Minor))
		}
		out.Processes = append(out.Processes, api.TrackedProcess{
			PID: p.PID, NSPID: p.NSPID, PIDNamespace: p.PIDNamespace, StartTime: p.StartTime,
			CgroupID: p.CgroupID, CgroupPath: p.CgroupPath, ContainerID: p.ContainerID, Devices: devs,
		})
	}
	return out
}
