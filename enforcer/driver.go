package enforcer

import "fmt"

// DriverProcess is one process as the driver (NVML) reports it on one device.
type DriverProcess struct {
	HostPID   int
	UsedBytes uint64
}

// DriverProcesses lists the processes holding memory on a device, by uuid
// (NVML's running compute processes). The loop calls it once per device per
// tick.
type DriverProcesses interface {
	Processes(uuid string) ([]DriverProcess, error)
}

// Attributor names the slice the kernel places a process in: its container's
// cgroup, or the process subtree of the slice's owner. It is the only source
// of membership the backstop acts on (slots are the tenant's claims). The
// daemon implements it.
type Attributor interface {
	SliceOf(hostPID int) (sliceID string, ok bool)
}

// procRef locates a process in a tick report: Slices[slice].Processes[proc].
type procRef struct{ slice, proc int32 }

// driverPass asks the driver about every device once, however many slices
// share it, and adds each process's figure to the slice it belongs to: to the
// process's snapshot and to the slice device's total, which the backstop
// compares with the limit.
func (l *Loop) driverPass(rep *TickReport, slices []TrackedSlice, procSlab *slab[ProcessSnapshot],
	wordSlab *slab[uint64]) {
	if l.Driver == nil {
		return
	}
	l.collectDevices(slices)
	if len(l.uuids) == 0 {
		return
	}
	l.queryDevices(rep)
	l.markDriverKnown(rep)
	l.indexSlotted(rep)
	for k, u := range l.uuids {
		for _, p := range l.driverProc[k] {
			l.chargeDriverFigure(rep, slices, u, p, procSlab, wordSlab)
		}
	}
}

// collectDevices lists in l.uuids each device uuid of this tick's slices once,
// in the order first met, and indexes it in l.uuidIdx.
func (l *Loop) collectDevices(slices []TrackedSlice) {
	l.uuids = l.uuids[:0]
	clear(l.uuidIdx)
	for i := range slices {
		for _, u := range slices[i].UUIDs {
			if u == "" {
				continue
			}
			if _, ok := l.uuidIdx[u]; !ok {
				l.uuidIdx[u] = len(l.uuids)
				l.uuids = append(l.uuids, u)
			}
		}
	}
}

// queryDevices asks the driver for the processes on each device of l.uuids
// and reports its answer per device. A device the driver cannot answer for is
// an error of the tick, not of the pass: its processes are taken as none and
// its slices' driver figures as unknown (markDriverKnown), so the backstop
// never acts on a figure it does not have.
func (l *Loop) queryDevices(rep *TickReport) {
	l.driverProc = l.driverProc[:0]
	l.driverOK = l.driverOK[:0]
	rep.Devices = make([]DriverDevice, len(l.uuids))
	for k, u := range l.uuids {
		dd := &rep.Devices[k]
		dd.UUID = u
		procs, err := l.Driver.Processes(u)
		if err != nil {
			dd.Err = err.Error()
			l.addErr(rep, "", u, fmt.Errorf("driver processes: %w", err))
			procs = nil
		}
		l.driverProc = append(l.driverProc, procs)
		l.driverOK = append(l.driverOK, err == nil)
		dd.Processes = len(procs)
		for _, p := range procs {
			dd.ProcessBytes += p.UsedBytes
		}
	}
}

// markDriverKnown flags the slice devices whose driver figure this tick is
// real: those on a device the driver answered for.
func (l *Loop) markDriverKnown(rep *TickReport) {
	for i := range rep.Slices {
		for d := range rep.Slices[i].Devices {
			sd := &rep.Slices[i].Devices[d]
			if k, ok := l.uuidIdx[sd.UUID]; ok && sd.UUID != "" {
				sd.DriverKnown = l.driverOK[k]
			}
		}
	}
}

// indexSlotted indexes by host pid the processes the slices' slot tables
// hold, and empties what the previous pass learnt about slotless ones.
func (l *Loop) indexSlotted(rep *TickReport) {
	clear(l.byHost)
	clear(l.unslotted)
	l.byIDBuilt = false
	for i := range rep.Slices {
		for j := range rep.Slices[i].Processes {
			if hp := rep.Slices[i].Processes[j].HostPID; hp > 0 {
				l.byHost[hp] = procRef{slice: int32(i), proc: int32(j)}
			}
		}
	}
}

// chargeDriverFigure adds what the driver reports for process p on device
// uuid to the process's snapshot and the slice's total on the device, and,
// when the kernel places the process in that slice, to its members' total. A process in no slice we
// know, or on a device outside its slice, is not ours to judge and is left
// out.
func (l *Loop) chargeDriverFigure(rep *TickReport, slices []TrackedSlice, uuid string, p DriverProcess,
	procSlab *slab[ProcessSnapshot], wordSlab *slab[uint64]) {
	ref, ok := l.processOf(rep, slices, p.HostPID, procSlab, wordSlab)
	if !ok {
		return
	}
	snap := &rep.Slices[ref.slice]
	d := deviceOf(slices[ref.slice].UUIDs, uuid)
	if d < 0 || d >= len(snap.Devices) {
		return
	}
	proc := &snap.Processes[ref.proc]
	proc.DriverBytes[d] += p.UsedBytes
	snap.Devices[d].DriverBytes += p.UsedBytes
	if proc.Member {
		snap.Devices[d].MemberDriverBytes += p.UsedBytes
	}
}

// processOf finds the snapshot of the process with host pid hostPID. The
// kernel decides which slice it is in (Attributor): its slot's snapshot when
// that slot is in the same slice, else the one made for it earlier in this
// pass (it holds memory on several devices), else a new one. A process the
// kernel places in no tracked slice is shown under the slot that names it,
// as a claim (Member false); a slot naming a process of another slice gets
// nothing.
func (l *Loop) processOf(rep *TickReport, slices []TrackedSlice, hostPID int, procSlab *slab[ProcessSnapshot],
	wordSlab *slab[uint64]) (procRef, bool) {
	if ref, ok := l.unslotted[hostPID]; ok {
		return ref, true
	}
	slot, slotted := l.byHost[hostPID]
	si, member := l.memberOf(slices, hostPID)
	switch {
	case member && slotted && int(slot.slice) == si:
		rep.Slices[slot.slice].Processes[slot.proc].Member = true
		return slot, true
	case member:
		return l.addUnslotted(rep, si, hostPID, procSlab, wordSlab), true
	case slotted:
		return slot, true // a claim: shown, never counted or acted on
	}
	return procRef{}, false
}

// memberOf is the tracked slice the kernel places hostPID in.
func (l *Loop) memberOf(slices []TrackedSlice, hostPID int) (int, bool) {
	if l.Attributor == nil || hostPID <= 0 {
		return 0, false
	}
	id, found := l.Attributor.SliceOf(hostPID)
	if !found {
		return 0, false
	}
	return l.sliceIndex(slices, id)
}

// sliceIndex finds a slice of this tick by ID. The index is built on first
// use in a pass: most passes attribute no process, and building it costs a
// map insert per slice.
func (l *Loop) sliceIndex(slices []TrackedSlice, id string) (int, bool) {
	if !l.byIDBuilt {
		clear(l.byID)
		for i := range slices {
			l.byID[slices[i].ID] = i
		}
		l.byIDBuilt = true
	}
	si, ok := l.byID[id]
	return si, ok
}

// addUnslotted adds a slotless process to slice si's snapshot.
func (l *Loop) addUnslotted(rep *TickReport, si, hostPID int, procSlab *slab[ProcessSnapshot],
	wordSlab *slab[uint64]) procRef {
	snap := &rep.Slices[si]
	ndev := len(snap.Devices)
	w := wordSlab.take(2*ndev, l.sizes.words)
	// The slice's process list is capped: this append copies it rather than
	// overwrite a neighbour's.
	snap.Processes = append(snap.Processes, ProcessSnapshot{HostPID: hostPID, Slot: -1,
		UsedBytes: w[:ndev:ndev], DriverBytes: w[ndev:], Member: true})
	ref := procRef{slice: int32(si), proc: int32(len(snap.Processes) - 1)}
	l.unslotted[hostPID] = ref
	return ref
}

// deviceOf is the slice device index of uuid, -1 when the slice has no such
// device.
func deviceOf(uuids []string, uuid string) int {
	for d, u := range uuids {
		if u == uuid {
			return d
		}
	}
	return -1
}
