package devices

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// DefaultLibrary is the NVML library Open loads when given no path.
const DefaultLibrary = "libnvidia-ml.so.1"

// ErrClosed is returned by the methods of an NVML after Close.
var ErrClosed = errors.New("NVML closed")

// ErrNoDevices is returned (wrapped) by Open when NVML works but lists no GPU.
var ErrNoDevices = errors.New("no GPUs found")

// valueNotAvailable is NVML_VALUE_NOT_AVAILABLE, what the driver puts in a
// process's used memory when it cannot tell (no permission, some MIG setups).
const valueNotAvailable = ^uint64(0)

// process is go-nvml's process-wide state, which this package has to respect:
// go-nvml resolves the NVML symbols through the dynamic linker's global scope
// (the library is dlopen'ed RTLD_GLOBAL and, once a symbol is bound, can never
// be unloaded), rewrites package-level function pointers when a library is
// loaded, and keeps Init/Shutdown refcounts both in each library object and in
// the C library. So, process-wide:
//   - loading (Init) and unloading (Shutdown) are serialized with every call, so
//     the symbol rewrite never races a query (the write lock vs the read lock);
//   - only one library path can be in use: once one is bound, another path would
//     silently answer with the first one's functions, so Open refuses it.
//
// This is the only package-level mutable state, and it mirrors state that go-nvml
// itself keeps per process; a struct could not hold it.
var process struct {
	sync.RWMutex
	loadedPath string // the path of the first library that initialized, "" before
}

// NVML owns an nvml.Interface and answers vgpud's device queries. It is safe
// for concurrent use; Close may be called any number of times.
type NVML struct {
	lib nvml.Interface
	// owned: Open initialized lib, so Close shuts it down. A lib handed to
	// NewFromInterface belongs to the caller.
	owned bool
	path  string

	mu      sync.Mutex // guards closed and handles
	closed  bool
	handles map[string]nvml.Device // uuid -> handle, valid while initialized
}

// Open loads the NVML library at libPath ("" means DefaultLibrary, found by the
// dynamic linker), initializes it and checks that it lists at least one GPU. A
// missing library, a driver that does not initialize or a node with no GPU give
// an error that says which, never a panic.
func Open(libPath string) (*NVML, error) {
	path := libPath
	if path == "" {
		path = DefaultLibrary
	}
	// dlopen's own message is lost by go-nvml (Init only says "library not
	// found"), so a path that names a file is checked first for a useful error.
	if strings.ContainsRune(path, '/') {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open NVML library %s: %w", path, err)
		}
	}

	process.Lock()
	defer process.Unlock()
	if process.loadedPath != "" && process.loadedPath != path {
		return nil, fmt.Errorf("open NVML library %s: %s is already loaded in this process "+
			"and its functions would answer instead; use one NVML library per process",
			path, process.loadedPath)
	}
	lib := nvml.New(nvml.WithLibraryPath(path))
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			return nil, fmt.Errorf("open NVML library %s: cannot load it "+
				"(is the NVIDIA driver installed? give another path to use another library): %w", path, ret)
		}
		// A library that loaded but failed to initialize stays loaded (go-nvml
		// keeps it), so its path is the one bound from now on.
		process.loadedPath = path
		return nil, fmt.Errorf("initialize NVML from %s: %w", path, ret)
	}
	process.loadedPath = path
	n := &NVML{lib: lib, owned: true, path: path}
	count, err := call("count devices", lib.DeviceGetCount)
	if err == nil && count == 0 {
		err = ErrNoDevices
	}
	if err != nil {
		if ret := lib.Shutdown(); ret != nvml.SUCCESS {
			err = errors.Join(err, fmt.Errorf("shut NVML down: %w", ret))
		}
		return nil, fmt.Errorf("NVML from %s: %w", path, err)
	}
	return n, nil
}

// NewFromInterface wraps an NVML implementation the caller has initialized
// (go-nvml's mock servers need no Init). Close does not shut it down.
func NewFromInterface(lib nvml.Interface) *NVML {
	return &NVML{lib: lib, path: "(interface)"}
}

// Path is the library the NVML was opened from ("(interface)" for
// NewFromInterface).
func (n *NVML) Path() string { return n.path }

// Close shuts NVML down (when Open initialized it). Later calls of any method
// return ErrClosed; calling Close again does nothing.
func (n *NVML) Close() error {
	process.Lock()
	defer process.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	n.handles = nil
	if !n.owned {
		return nil
	}
	if ret := n.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("shut down NVML from %s: %w", n.path, ret)
	}
	return nil
}

// begin takes the process-wide read lock for one query and checks that n is
// still open; the returned function ends the query.
func (n *NVML) begin() (func(), error) {
	process.RLock()
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		process.RUnlock()
		return nil, ErrClosed
	}
	return process.RUnlock, nil
}

// Devices lists the GPUs (see Discover).
func (n *NVML) Devices() ([]Device, error) {
	end, err := n.begin()
	if err != nil {
		return nil, err
	}
	defer end()
	return Discover(n.lib)
}

// handle returns the device with this uuid, from the cache when it was looked up
// before: the enforcer asks for every device on every tick.
func (n *NVML) handle(uuid string) (nvml.Device, error) {
	n.mu.Lock()
	h, ok := n.handles[uuid]
	n.mu.Unlock()
	if ok {
		return h, nil
	}
	h, err := call("get handle", func() (nvml.Device, nvml.Return) { return n.lib.DeviceGetHandleByUUID(uuid) })
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", uuid, err)
	}
	n.mu.Lock()
	if !n.closed {
		if n.handles == nil {
			n.handles = make(map[string]nvml.Device)
		}
		n.handles[uuid] = h
	}
	n.mu.Unlock()
	return h, nil
}

// ProcessMemory is one process as the driver reports it on one device: its
// host pid and the device memory it holds.
type ProcessMemory struct {
	HostPID   int
	UsedBytes uint64
}

// Processes lists the compute processes holding memory on the device, with host
// pids and the driver's figure of their memory. A pid listed more than once (one
// entry per MIG instance) is summed into one entry. Memory NVML cannot report is
// given as 0, so that the backstop never acts on an unknown figure.
func (n *NVML) Processes(uuid string) ([]ProcessMemory, error) {
	end, err := n.begin()
	if err != nil {
		return nil, err
	}
	defer end()
	h, err := n.handle(uuid)
	if err != nil {
		return nil, err
	}
	infos, err := call("get compute processes", h.GetComputeRunningProcesses)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", uuid, err)
	}
	out := make([]ProcessMemory, 0, len(infos))
next:
	for _, p := range infos {
		used := p.UsedGpuMemory
		if used == valueNotAvailable {
			used = 0
		}
		for i := range out {
			if out[i].HostPID == int(p.Pid) {
				out[i].UsedBytes += used
				continue next
			}
		}
		out = append(out, ProcessMemory{HostPID: int(p.Pid), UsedBytes: used})
	}
	return out, nil
}

// Utilization is the percentage of the last sample period during which the
// device was running work (NVML's gpu utilization).
func (n *NVML) Utilization(uuid string) (uint32, error) {
	end, err := n.begin()
	if err != nil {
		return 0, err
	}
	defer end()
	h, err := n.handle(uuid)
	if err != nil {
		return 0, err
	}
	u, err := call("get utilization", h.GetUtilizationRates)
	if err != nil {
		return 0, fmt.Errorf("device %s: %w", uuid, err)
	}
	return u.Gpu, nil
}
