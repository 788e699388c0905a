// Package simgpu creates and inspects the state file of the simulated GPU node.
//
// The simulated libcuda.so.1 and libnvidia-ml.so.1 (C, this directory) map one
// state file (VGPU_SIM_STATE) shared by every process on the node; this package is
// its Go side: Init writes a fresh node, Status reads the truth (reclaiming dead
// processes first, exactly as the C side does). The layout mirrors state.h
// (layout.go, checked against the C compiler by the tests).
package simgpu

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/vgpu-project/vgpu/internal/atomicfile"
	"golang.org/x/sys/unix"
)

// Defaults of a node, shared with the vgpu-sim command line.
const (
	DefaultNsPerBlock    uint64 = 10_000
	DefaultContextMemory uint64 = 256 << 20
	DefaultMaxBacklog           = time.Second
	// DefaultSamplePeriod is NVML's utilization sample period: 1/6 s, the shortest
	// period NVML documents ("Each sample period may be between 1 second and 1/6
	// second, depending on the product being queried": nvmlUtilization_t, nvml.h;
	// the same in `nvidia-smi --help-query-gpu`), which data-center GPUs use.
	DefaultSamplePeriod = time.Second / 6
	DefaultName         = "NVIDIA H100 80GB HBM3 (simulated)"
	DefaultSMs          = 132
)

// Config describes a node to create.
type Config struct {
	Devices int    // number of devices, 1..MaxDevices
	Memory  uint64 // bytes per device
	SMs     int    // streaming multiprocessors per device
	// NsPerBlock is the device time of one wave of blocks: a launch of B blocks takes
	// ceil(B/SMs)*NsPerBlock ns. 0 means DefaultNsPerBlock.
	NsPerBlock uint64
	// ContextMemory is charged per CUDA context. nil means DefaultContextMemory
	// (a pointer because 0 is a legitimate setting).
	ContextMemory *uint64
	// DeviceNodes is a pattern with one %d (the minor number), e.g. /dev/vgpusim%d.
	// Empty: Init creates plain files <state>.dev/nvidia%d.
	DeviceNodes string
	// MaxBacklog is how far ahead the launch queue may run before a launch blocks.
	// 0 means DefaultMaxBacklog; at most MaxBacklogLimit.
	MaxBacklog time.Duration
	// SamplePeriod is NVML's utilization sample period: busy time is reported per
	// period of the device timeline. 0 means DefaultSamplePeriod; within
	// [MinSamplePeriod, MaxSamplePeriod], and MaxBacklog at most BacklogPeriods of it.
	SamplePeriod time.Duration
	Name         string // device name; empty means DefaultName
	Force        bool   // replace an existing state file
}

// ProcessStatus is one process's figures on one device.
type ProcessStatus struct {
	PID       int    `json:"pid"`
	Comm      string `json:"comm"`
	UsedBytes uint64 `json:"used_bytes"`
	BusyNs    uint64 `json:"busy_ns"`
	Launches  uint64 `json:"launches"`
	Contexts  uint64 `json:"contexts"`
}

// DeviceStatus is one device of the node.
type DeviceStatus struct {
	Index       int             `json:"index"`
	Name        string          `json:"name"`
	UUID        string          `json:"uuid"`
	PCIBusID    string          `json:"pci_bus_id"`
	Minor       int             `json:"minor"`
	SMs         int             `json:"sms"`
	Total       uint64          `json:"total_bytes"`
	Used        uint64          `json:"used_bytes"`
	Free        uint64          `json:"free_bytes"`
	UsedHigh    uint64          `json:"used_high_bytes"`
	BusyNs      uint64          `json:"busy_ns"`
	Launches    uint64          `json:"launches"`
	Utilization int             `json:"utilization_percent"` // last second of complete samples
	BacklogNs   uint64          `json:"backlog_ns"`          // queued work not yet run
	Processes   []ProcessStatus `json:"processes"`
}

// NodeStatus is the whole node.
type NodeStatus struct {
	Path           string         `json:"path"`
	NsPerBlock     uint64         `json:"ns_per_block"`
	ContextMemory  uint64         `json:"context_memory_bytes"`
	MaxBacklogNs   uint64         `json:"max_backlog_ns"` // the device queue depth
	SamplePeriodNs uint64         `json:"nvml_sample_period_ns"`
	DeviceNodes    string         `json:"device_nodes"`
	Reclaimed      int            `json:"reclaimed_processes"`
	Devices        []DeviceStatus `json:"devices"`
}

// ErrExists is returned by Init when the state file exists and Force is not set.
var ErrExists = errors.New("state file already exists (use --force to replace it)")

func (c *Config) normalize() error {
	if c.Devices < 1 || c.Devices > MaxDevices {
		return fmt.Errorf("devices must be 1..%d, got %d", MaxDevices, c.Devices)
	}
	if c.Memory == 0 {
		return errors.New("memory per device must be > 0")
	}
	if c.SMs < 1 || c.SMs > 1<<20 {
		return fmt.Errorf("sms must be >= 1, got %d", c.SMs)
	}
	if c.NsPerBlock == 0 {
		c.NsPerBlock = DefaultNsPerBlock
	}
	if c.ContextMemory == nil {
		v := DefaultContextMemory
		c.ContextMemory = &v
	}
	if *c.ContextMemory >= c.Memory {
		return fmt.Errorf("context memory (%d bytes) must be smaller than device memory (%d bytes)", *c.ContextMemory, c.Memory)
	}
	if c.MaxBacklog == 0 {
		c.MaxBacklog = DefaultMaxBacklog
	}
	if c.MaxBacklog < 0 || uint64(c.MaxBacklog) > MaxBacklogLimit {
		return fmt.Errorf("max backlog must be in (0, %s], got %s", time.Duration(MaxBacklogLimit), c.MaxBacklog)
	}
	if c.SamplePeriod == 0 {
		c.SamplePeriod = DefaultSamplePeriod
	}
	if c.SamplePeriod < time.Duration(MinSamplePeriod) || c.SamplePeriod > time.Duration(MaxSamplePeriod) {
		return fmt.Errorf("nvml sample period must be in [%s, %s], got %s",
			time.Duration(MinSamplePeriod), time.Duration(MaxSamplePeriod), c.SamplePeriod)
	}
	if c.MaxBacklog > BacklogPeriods*c.SamplePeriod {
		return fmt.Errorf("max backlog %s is more than %d nvml sample periods of %s (the utilization ring's horizon)",
			c.MaxBacklog, BacklogPeriods, c.SamplePeriod)
	}
	if c.Name == "" {
		c.Name = DefaultName
	}
	if len(c.Name) >= nameLen {
		return fmt.Errorf("device name longer than %d bytes", nameLen-1)
	}
	if c.DeviceNodes != "" {
		if err := checkPattern(c.DeviceNodes); err != nil {
			return err
		}
	}
	return nil
}

func checkPattern(p string) error {
	if len(p) >= nodesLen {
		return fmt.Errorf("device node pattern longer than %d bytes", nodesLen-1)
	}
	if strings.Count(p, "%") != 1 || !strings.Contains(p, "%d") {
		return fmt.Errorf("device node pattern %q must contain exactly one %%d (the minor number) and no other %%", p)
	}
	if !filepath.IsAbs(p) {
		return fmt.Errorf("device node pattern %q must be an absolute path", p)
	}
	return nil
}

// DeviceUUID is the UUID Init gives device d of the node at path: derived from the
// absolute path, so it is stable for a state file and differs between nodes.
func DeviceUUID(absPath string, d int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("vgpu-sim\x00%s\x00%d", absPath, d)))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x40 // a version-4-looking UUID, like the driver's
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Init creates the node's state file (and, with no DeviceNodes pattern, the plain
// device-node files <path>.dev/nvidia<N>). It refuses an existing file unless
// cfg.Force, and leaves nothing behind on error.
func Init(path string, cfg Config) (err error) {
	if path == "" {
		return errors.New("init: no state file path given")
	}
	if err := cfg.normalize(); err != nil {
		return fmt.Errorf("init %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("init %s: %w", path, err)
	}
	if _, serr := os.Lstat(abs); serr == nil && !cfg.Force {
		return fmt.Errorf("init %s: %w", path, ErrExists)
	}

	pattern := cfg.DeviceNodes
	var created []string // device files and dir we made, removed on error
	defer func() {
		if err != nil {
			for i := len(created) - 1; i >= 0; i-- {
				_ = os.Remove(created[i])
			}
		}
	}()
	if pattern == "" {
		dir := abs + ".dev"
		pattern = filepath.Join(dir, "nvidia%d")
		if len(pattern) >= nodesLen {
			return fmt.Errorf("init %s: state path too long for the device node pattern", path)
		}
		if mkErr := os.Mkdir(dir, 0o755); mkErr == nil {
			created = append(created, dir)
		} else if !errors.Is(mkErr, os.ErrExist) {
			return fmt.Errorf("init %s: create device node dir: %w", path, mkErr)
		}
		for d := 0; d < cfg.Devices; d++ {
			node := filepath.Join(dir, fmt.Sprintf("nvidia%d", d))
			f, oerr := os.OpenFile(node, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
			if oerr != nil {
				if errors.Is(oerr, os.ErrExist) {
					continue // left by an earlier node at this path: reuse it
				}
				return fmt.Errorf("init %s: create device node: %w", path, oerr)
			}
			created = append(created, node)
			_ = f.Close()
			// Tests open the node from unprivileged helpers too; umask must not decide.
			if cerr := os.Chmod(node, 0o666); cerr != nil {
				return fmt.Errorf("init %s: chmod device node: %w", path, cerr)
			}
		}
	}

	buf := encodeNode(abs, &cfg, pattern)
	// Every process of the node maps it read-write, whoever created it. Without
	// Force, link(2) fails if the name exists: no window in which a concurrent
	// init is clobbered.
	mode := atomicfile.Durable
	if !cfg.Force {
		mode |= atomicfile.NoReplace
	}
	err = atomicfile.Write(abs, buf, 0o666, mode)
	if errors.Is(err, os.ErrExist) {
		err = ErrExists
	}
	if err != nil {
		return fmt.Errorf("init %s: %w", path, err)
	}
	return nil
}

func putStr(b []byte, s string) { copy(b, s) }

func encodeNode(abs string, cfg *Config, pattern string) []byte {
	buf := make([]byte, StateSize)
	le := binary.LittleEndian
	le.PutUint64(buf[hdrMagic:], Magic)
	le.PutUint32(buf[hdrVersion:], Version)
	le.PutUint32(buf[hdrHdrSize:], hdrSize)
	le.PutUint64(buf[hdrFileSize:], StateSize)
	le.PutUint32(buf[hdrDeviceCount:], uint32(cfg.Devices))
	le.PutUint32(buf[hdrMaxProcs:], MaxProcs)
	le.PutUint32(buf[hdrMaxDevices:], MaxDevices)
	le.PutUint32(buf[hdrNBuckets:], NBuckets)
	le.PutUint64(buf[hdrBucketNs:], uint64(cfg.SamplePeriod))
	le.PutUint64(buf[hdrNsPerBlock:], cfg.NsPerBlock)
	le.PutUint64(buf[hdrContextMemory:], *cfg.ContextMemory)
	le.PutUint64(buf[hdrMaxBacklogNs:], uint64(cfg.MaxBacklog))
	le.PutUint64(buf[hdrCreatedUnixNs:], uint64(time.Now().UnixNano()))
	putStr(buf[hdrDeviceNodes:hdrDeviceNodes+nodesLen-1], pattern)
	for d := 0; d < cfg.Devices; d++ {
		o := devcfgOff(d)
		bus := uint32(d + 1)
		putStr(buf[o+cfgName:o+cfgName+nameLen-1], cfg.Name)
		putStr(buf[o+cfgUUID:o+cfgUUID+uuidLen-1], DeviceUUID(abs, d))
		putStr(buf[o+cfgPCIBusID:o+cfgPCIBusID+busIDLen-1], fmt.Sprintf("%08X:%02X:00.0", 0, bus))
		le.PutUint64(buf[o+cfgTotalMem:], cfg.Memory)
		le.PutUint32(buf[o+cfgSMs:], uint32(cfg.SMs))
		le.PutUint32(buf[o+cfgMinor:], uint32(d))
		le.PutUint32(buf[o+cfgPCIDomain:], 0)
		le.PutUint32(buf[o+cfgPCIBus:], bus)
		le.PutUint32(buf[o+cfgPCIDevice:], 0)
		le.PutUint32(buf[o+cfgPCIDeviceID:], 0x233010DE) // H100 SXM5 80GB
		le.PutUint32(buf[o+cfgPCISubsysID:], 0x16C110DE)
		le.PutUint32(buf[o+cfgCCMajor:], 9)
		le.PutUint32(buf[o+cfgCCMinor:], 0)
	}
	return buf
}

// node is a mapped state file.
type node struct {
	mem      []byte
	writable bool
}

func openNode(path string) (*node, error) {
	writable := true
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrPermission) {
		writable = false // can read figures, cannot reclaim
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() < StateSize {
		return nil, fmt.Errorf("truncated state file: %d bytes, want %d", fi.Size(), StateSize)
	}
	prot := syscall.PROT_READ
	if writable {
		prot |= syscall.PROT_WRITE
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, StateSize, prot, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	n := &node{mem: mem, writable: writable}
	if err := n.validate(); err != nil {
		n.close()
		return nil, err
	}
	return n, nil
}

func (n *node) close() { _ = syscall.Munmap(n.mem) }

func (n *node) validate() error {
	le := binary.LittleEndian
	switch {
	case le.Uint64(n.mem[hdrMagic:]) != Magic:
		return errors.New("bad magic: not a vgpu-sim state file")
	case le.Uint32(n.mem[hdrVersion:]) != Version:
		return fmt.Errorf("unsupported state file version %d (want %d)", le.Uint32(n.mem[hdrVersion:]), Version)
	case le.Uint32(n.mem[hdrHdrSize:]) != hdrSize || le.Uint64(n.mem[hdrFileSize:]) != StateSize ||
		le.Uint32(n.mem[hdrMaxProcs:]) != MaxProcs || le.Uint32(n.mem[hdrMaxDevices:]) != MaxDevices ||
		le.Uint32(n.mem[hdrNBuckets:]) != NBuckets:
		return errors.New("state file layout mismatch (rebuild vgpu-sim and the simulated libraries together)")
	}
	if p := n.u64(hdrBucketNs); p < MinSamplePeriod || p > MaxSamplePeriod ||
		n.u64(hdrMaxBacklogNs) > MaxBacklogLimit || n.u64(hdrMaxBacklogNs) > BacklogPeriods*p {
		return errors.New("state file: invalid sample period or max backlog")
	}
	if c := n.u32(hdrDeviceCount); c < 1 || c > MaxDevices {
		return fmt.Errorf("invalid device count %d", c)
	}
	return nil
}

func (n *node) u32(off int) uint32 { return binary.LittleEndian.Uint32(n.mem[off:]) }
func (n *node) u64(off int) uint64 { return binary.LittleEndian.Uint64(n.mem[off:]) }

// atomic64 is the shared word at off; every mutable field is 8-aligned in the layout.
func (n *node) atomic64(off int) *uint64 { return (*uint64)(unsafe.Pointer(&n.mem[off])) }
func (n *node) load(off int) uint64      { return atomic.LoadUint64(n.atomic64(off)) }

func (n *node) str(off, max int) string {
	b := n.mem[off : off+max]
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// reclaimDead mirrors sim_reclaim_dead in state.c: the slots of processes that are
// gone give their memory back to the devices.
func (n *node) reclaimDead() int {
	if !n.writable {
		return 0
	}
	myNS := pidNamespace("self")
	devs := int(n.u32(hdrDeviceCount))
	count := 0
	for i := 0; i < MaxProcs; i++ {
		st := n.atomic64(procOff(i) + prState)
		w := atomic.LoadUint64(st)
		phase := slotPhase(w)
		if phase != phaseLive && phase != phaseClaiming {
			continue
		}
		if !n.slotDead(i, w, myNS) {
			continue
		}
		r := slotWord(slotGen(w), slotPID(w), phaseReclaiming)
		if !atomic.CompareAndSwapUint64(st, w, r) {
			continue
		}
		for d := 0; d < MaxDevices; d++ {
			pd := procdevOff(i, d)
			u := atomic.SwapUint64(n.atomic64(pd+pdUsed), 0)
			if phase == phaseLive && u != 0 && d < devs {
				atomic.AddUint64(n.atomic64(devstateOff(d)+dsUsed), ^(u - 1))
			}
			for off := pd; off < pd+procdevSize; off += 8 {
				atomic.StoreUint64(n.atomic64(off), 0)
			}
		}
		atomic.StoreUint64(st, slotWord(slotGen(r), 0, phaseFree))
		count++
	}
	return count
}

func (n *node) slotDead(i int, w uint64, myNS uint64) bool {
	if myNS == 0 || n.u64(procOff(i)+prPidNS) != myNS {
		return false // a pid means something only in the namespace that registered it
	}
	pid := slotPID(w)
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	state, start, ok := procStat(pid)
	if !ok {
		return false // cannot tell: keep it
	}
	// A zombie has exited and closed its device files: the real driver has already
	// freed its memory even though nobody reaped it yet.
	if state == 'Z' || state == 'X' {
		return true
	}
	if slotPhase(w) == phaseClaiming {
		return false // start time may not be written yet
	}
	return start != n.u64(procOff(i)+prStartTime)
}

func pidNamespace(pid string) uint64 {
	fi, err := os.Stat("/proc/" + pid + "/ns/pid")
	if err != nil {
		return 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	return st.Ino
}

// procStat reads the state letter (field 3) and the start time (field 22, clock
// ticks since boot) of /proc/<pid>/stat.
func procStat(pid int) (state byte, start uint64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // comm may contain spaces and parentheses
	if i < 0 {
		return 0, 0, false
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 || len(fields[0]) != 1 {
		return 0, 0, false
	}
	v, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return fields[0][0], v, true
}

// ringWindowBusy is the busy ns of a ring over the last second of complete sample
// periods (whole periods: ceil(1s/period) of them) and that window's length.
func (n *node) ringWindowBusy(ringOff int, nowNs uint64) (busy, window uint64) {
	period := n.u64(hdrBucketNs)
	nowE := nowNs / period
	count := (uint64(time.Second) + period - 1) / period
	for k := uint64(1); k <= count && k <= nowE; k++ {
		e := nowE - k
		window += period
		w := n.load(ringOff + int(e%NBuckets)*8)
		if w>>bucketEpochShift == e&bucketEpochMask {
			busy += w & bucketBusyMask
		}
	}
	return busy, window
}

// monotonicNs reads CLOCK_MONOTONIC, the clock the launch queue runs on.
func monotonicNs() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return uint64(ts.Sec)*1e9 + uint64(ts.Nsec)
}

// Status reads the node at path. Dead processes are reclaimed first (when the file
// is writable), so the figures are what a real driver would report.
func Status(path string) (NodeStatus, error) {
	n, err := openNode(path)
	if err != nil {
		return NodeStatus{}, fmt.Errorf("status %s: %w", path, err)
	}
	defer n.close()
	ns := NodeStatus{
		Path:           path,
		NsPerBlock:     n.u64(hdrNsPerBlock),
		ContextMemory:  n.u64(hdrContextMemory),
		MaxBacklogNs:   n.u64(hdrMaxBacklogNs),
		SamplePeriodNs: n.u64(hdrBucketNs),
		DeviceNodes:    n.str(hdrDeviceNodes, nodesLen),
	}
	ns.Reclaimed = n.reclaimDead()
	now := monotonicNs()
	for d := 0; d < int(n.u32(hdrDeviceCount)); d++ {
		c := devcfgOff(d)
		s := devstateOff(d)
		ds := DeviceStatus{
			Index:     d,
			Name:      n.str(c+cfgName, nameLen),
			UUID:      n.str(c+cfgUUID, uuidLen),
			PCIBusID:  n.str(c+cfgPCIBusID, busIDLen),
			Minor:     int(n.u32(c + cfgMinor)),
			SMs:       int(n.u32(c + cfgSMs)),
			Total:     n.u64(c + cfgTotalMem),
			Used:      n.load(s + dsUsed),
			UsedHigh:  n.load(s + dsUsedHigh),
			BusyNs:    n.load(s + dsBusyTotal),
			Launches:  n.load(s + dsLaunches),
			Processes: []ProcessStatus{},
		}
		if ds.Used < ds.Total {
			ds.Free = ds.Total - ds.Used
		}
		if bu := n.load(s + dsBusyUntil); bu > now {
			ds.BacklogNs = bu - now
		}
		if busy, window := n.ringWindowBusy(s+dsBuckets, now); window > 0 {
			ds.Utilization = int(min(busy*100/window, 100))
		}
		for i := 0; i < MaxProcs; i++ {
			w := n.load(procOff(i) + prState)
			if slotPhase(w) != phaseLive {
				continue
			}
			pd := procdevOff(i, d)
			ps := ProcessStatus{
				PID:       slotPID(w),
				Comm:      n.str(procOff(i)+prComm, 16),
				UsedBytes: n.load(pd + pdUsed),
				BusyNs:    n.load(pd + pdBusyNs),
				Launches:  n.load(pd + pdLaunches),
				Contexts:  n.load(pd + pdContexts),
			}
			if ps.UsedBytes == 0 && ps.BusyNs == 0 && ps.Contexts == 0 {
				continue // registered (cuInit) but never touched this device
			}
			ds.Processes = append(ds.Processes, ps)
		}
		ns.Devices = append(ns.Devices, ds)
	}
	return ns, nil
}
