package daemon

import "github.com/vgpu-project/vgpu/daemon/api"

// devicesView is GET /v1/devices: the allocator's books per device, plus
// the memory the driver reports used by processes in no slice
// (api.Device.UnslicedBytes) — memory no slice can have, which a DRA driver
// must not offer.
//
// The driver's total is read now (every device, with slices or not); what
// slices explain comes from the last tick: per slice and device, the driver
// figure of the processes the slice shows (the kernel's members and the
// processes its slots name), but never more than the slice's limit there. A
// slot is the tenant's to write, so a tenant naming a foreign process could
// otherwise hide that process's memory; capped at its limit, a slice
// explains at most what it is booked for, so the books never promise memory
// the driver says is taken. A process the last tick did not see yet counts
// as unsliced until the next one: the error is on the safe side.
func (s *Server) devicesView() []api.Device {
	devs := s.alloc.Devices()
	explained := map[string]uint64{}
	if st := s.loop.latest.Load(); st != nil {
		for _, sl := range st.report.Slices {
			for _, d := range sl.Devices {
				if d.DriverKnown {
					explained[d.UUID] += min(d.DriverBytes, d.LimitBytes)
				}
			}
		}
	}
	for i := range devs {
		procs, err := s.gpus.Processes(devs[i].UUID)
		if err != nil {
			continue // unknown: nothing is claimed (the tick logs driver errors)
		}
		var total uint64
		for _, p := range procs {
			total += p.UsedBytes
		}
		if e := explained[devs[i].UUID]; total > e {
			devs[i].UnslicedBytes = total - e
		}
	}
	return devs
}
