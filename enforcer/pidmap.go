package enforcer

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/vgpu-project/vgpu/internal/procfs"
	"github.com/vgpu-project/vgpu/shm"
	"golang.org/x/sys/unix"
)

// PIDMapper maps a slot's process, identified in its own pid namespace, to its
// pid in the daemon's namespace (the host pid NVML reports). The procfs
// implementation is ProcfsMapper; the eBPF tracker will implement the same
// interface.
type PIDMapper interface {
	// HostPID returns the host pid of the live process id names; ok is false
	// when the mapper cannot tell (not found yet, gone, or unknowable).
	HostPID(id shm.SlotIdentity) (hostPID int, ok bool)
}

// MapResult is what a Resolver knows about a slot's process.
type MapResult uint8

const (
	// MapUnknown: the mapper cannot tell yet (not scanned since the process
	// appeared, or its pid namespace is not visible from here). Never a
	// reason to reclaim.
	MapUnknown MapResult = iota
	// MapFound: the process is alive and the host pid is valid.
	MapFound
	// MapGone: the process certainly no longer exists (its host pid is gone,
	// a zombie, or belongs to a newer process; or a scan that started after it
	// claimed its slot did not find it).
	MapGone
)

func (r MapResult) String() string {
	switch r {
	case MapFound:
		return "found"
	case MapGone:
		return "gone"
	}
	return "unknown"
}

// Resolver is implemented by mappers that, besides the host pid, can say that
// a process is gone, which lets the loop return the charge of a dead process
// from another pid namespace. A mapper that is only a PIDMapper never causes a
// reclaim of such a process.
type Resolver interface {
	Resolve(id shm.SlotIdentity) (hostPID int, res MapResult)
}

// TickAware mappers are told when an enforcer pass begins, so that they can
// bound their expensive work (a /proc scan) to once per pass.
type TickAware interface {
	BeginTick()
}

// procKey identifies a process as a slot records it.
type procKey struct {
	ns    uint64
	pid   int
	start uint64
}

// nsPID is a pid inside a given pid namespace.
type nsPID struct {
	ns  uint64
	pid int
}

// hostProc is what a scan learned about one process.
type hostProc struct {
	hostPID int
	start   uint64
	state   byte
}

type mapEntry struct {
	hostPID int
	used    uint64 // generation of the last lookup, for eviction
}

// Eviction horizon: cache entries not looked up for this many passes are
// dropped (their processes are gone or no longer in any slot).
const mapperEvictAfter = 64

// ProcfsMapper is the /proc implementation of PIDMapper and Resolver.
//
// A slot in the daemon's own pid namespace maps to its pid (after checking its
// start time). A slot from another namespace maps to the host process whose
// /proc/<p>/ns/pid inode is the slot's namespace, whose NSpid's last entry (its
// pid in its own namespace) is the slot's pid and whose start time matches.
// Found mappings are cached by identity (namespace, pid, start time) and
// re-verified with one read of /proc/<hostpid>/stat; /proc is only scanned when
// a slot is not in the cache, and at most once per pass (BeginTick).
//
// Start times are compared as the process and the daemon read them from
// /proc/<pid>/stat; a process in a time namespace with a boot-time offset reads
// a different value and cannot be mapped (a known limit, like the kernel's).
//
// Safe for concurrent use.
type ProcfsMapper struct {
	root   string
	selfNS uint64
	// seesAll: the daemon is in the initial pid namespace, so a namespace
	// with no visible process has no process at all.
	seesAll bool

	mu      sync.Mutex
	gen     uint64 // pass number (BeginTick)
	ticking bool   // BeginTick was ever called
	cache   map[procKey]mapEntry
	// pending: identities looked up but not found, with the pass of their
	// first lookup. Only a scan of a later pass, which started after the
	// process had claimed its slot, may declare them gone.
	pending map[procKey]uint64
	index   map[nsPID]hostProc // from the last scan
	nsSeen  map[uint64]struct{}
	scanGen uint64 // pass of the last scan
	scanned bool
	scans   uint64
	statBuf []byte
}

// NewProcfsMapper returns a mapper reading the proc filesystem at procRoot
// ("" means /proc).
func NewProcfsMapper(procRoot string) *ProcfsMapper {
	if procRoot == "" {
		procRoot = procfs.Root
	}
	m := &ProcfsMapper{
		root:    procRoot,
		cache:   make(map[procKey]mapEntry),
		pending: make(map[procKey]uint64),
		index:   make(map[nsPID]hostProc),
		nsSeen:  make(map[uint64]struct{}),
		statBuf: make([]byte, procfs.StatBufSize),
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(procRoot, "self", "ns", "pid"), &st); err == nil {
		m.selfNS = st.Ino
		m.seesAll = st.Ino == procfs.InitPIDNamespaceIno // a daemon there sees every process
	}
	return m
}

// Scans returns how many times the mapper scanned /proc.
func (m *ProcfsMapper) Scans() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.scans
}

// BeginTick starts a new pass: one more /proc scan is allowed, and stale
// cache entries are evicted now and then.
func (m *ProcfsMapper) BeginTick() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ticking = true
	m.gen++
	if m.gen%mapperEvictAfter != 0 {
		return
	}
	for k, e := range m.cache {
		if m.gen-e.used > mapperEvictAfter {
			delete(m.cache, k)
		}
	}
	for k, g := range m.pending {
		if m.gen-g > mapperEvictAfter {
			delete(m.pending, k)
		}
	}
}

// HostPID implements PIDMapper.
func (m *ProcfsMapper) HostPID(id shm.SlotIdentity) (int, bool) {
	hp, res := m.Resolve(id)
	return hp, res == MapFound
}

// Resolve implements Resolver.
func (m *ProcfsMapper) Resolve(id shm.SlotIdentity) (int, MapResult) {
	if id.Claiming || id.PID <= 0 {
		return 0, MapUnknown // identity not published yet
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.ticking {
		// Used without passes: every lookup is its own pass.
		m.gen++
	}
	if id.PIDNamespace == 0 || id.PIDNamespace == m.selfNS {
		// Our own namespace (or one libvgpu could not read, which we take
		// to be ours, as ProcessAlive does): the pid is the host pid.
		return id.PID, m.verify(id.PID, id.StartTime)
	}
	key := procKey{ns: id.PIDNamespace, pid: id.PID, start: id.StartTime}
	if e, ok := m.cache[key]; ok {
		res := m.verify(e.hostPID, id.StartTime)
		if res == MapFound {
			e.used = m.gen
			m.cache[key] = e
			return e.hostPID, MapFound
		}
		if res == MapGone {
			// The host pid of this very process is gone or reused: a
			// process never changes its host pid, so it has exited.
			delete(m.cache, key)
		}
		return 0, res
	}
	first, waiting := m.pending[key]
	if !waiting {
		first = m.gen
		m.pending[key] = first
	}
	if !m.scanned || m.scanGen != m.gen {
		if err := m.scan(); err != nil {
			return 0, MapUnknown
		}
	}
	hp, ok := m.index[nsPID{ns: id.PIDNamespace, pid: id.PID}]
	switch {
	case ok && id.StartTime != 0 && hp.start != id.StartTime:
		// The pid now belongs to a newer process of that namespace.
		if hp.start > id.StartTime {
			delete(m.pending, key)
			return 0, MapGone
		}
		return 0, MapUnknown
	case ok && (hp.state == 'Z' || hp.state == 'X'):
		delete(m.pending, key)
		return 0, MapGone
	case ok:
		delete(m.pending, key)
		m.cache[key] = mapEntry{hostPID: hp.hostPID, used: m.gen}
		return hp.hostPID, MapFound
	}
	// Not found. Only a scan that started after our first lookup (so after
	// the process claimed its slot) proves it gone, and only if its namespace
	// is visible from here.
	if m.scanGen <= first {
		return 0, MapUnknown
	}
	if _, seen := m.nsSeen[id.PIDNamespace]; !seen && !m.seesAll {
		return 0, MapUnknown
	}
	delete(m.pending, key)
	return 0, MapGone
}

// verify checks that hostPID is a live process with the given start time (0:
// unknown, not checked).
func (m *ProcfsMapper) verify(hostPID int, start uint64) MapResult {
	st, err := procfs.ReadStat(m.root, hostPID, m.statBuf)
	switch {
	case err != nil && procfs.IsGone(err):
		return MapGone
	case err != nil:
		return MapUnknown
	case st.Dead():
		return MapGone
	case start != 0 && st.StartTime != start:
		return MapGone
	}
	return MapFound
}

// scan indexes every process of /proc that lives in another pid namespace by
// (namespace, pid in that namespace).
func (m *ProcfsMapper) scan() error {
	m.scanned = true
	m.scanGen = m.gen
	m.scans++
	clear(m.index)
	clear(m.nsSeen)
	d, err := os.Open(m.root)
	if err != nil {
		return fmt.Errorf("pid mapper: %w", err)
	}
	defer d.Close()
	statusBuf := make([]byte, 4096)
	for {
		names, err := d.Readdirnames(512)
		for _, name := range names {
			pid, perr := strconv.Atoi(name)
			if perr != nil || pid <= 0 {
				continue
			}
			m.scanOne(pid, name, statusBuf)
		}
		if err != nil {
			break // io.EOF, or a read error: index what we have
		}
	}
	return nil
}

func (m *ProcfsMapper) scanOne(pid int, name string, statusBuf []byte) {
	var st unix.Stat_t
	if err := unix.Stat(m.root+"/"+name+"/ns/pid", &st); err != nil {
		return // exited meanwhile, or a kernel thread we may not inspect
	}
	if st.Ino == m.selfNS {
		return // our namespace: never needs mapping
	}
	m.nsSeen[st.Ino] = struct{}{}
	nspid, ok := procfs.ReadNSpid(m.root+"/"+name+"/status", statusBuf)
	if !ok {
		return
	}
	ps, err := procfs.ReadStat(m.root, pid, m.statBuf)
	if err != nil {
		return
	}
	m.index[nsPID{ns: st.Ino, pid: nspid}] = hostProc{hostPID: pid, start: ps.StartTime, state: ps.State}
}
