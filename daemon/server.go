package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/daemon/allocator"
	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/devices"
	"github.com/vgpu-project/vgpu/daemon/metrics"
	"github.com/vgpu-project/vgpu/daemon/store"
	"github.com/vgpu-project/vgpu/shm"
)

// Version is vgpud's version, reported by /v1/health and the metrics. A var,
// not a const, so that a release build can set it with
// -ldflags "-X github.com/vgpu-project/vgpu/daemon.Version=...".
var Version = "0.3.0-dev"

// GPUs is what vgpud needs from NVML. *devices.NVML implements it; tests hand
// in one over go-nvml's mock servers.
type GPUs interface {
	Devices() ([]devices.Device, error)
	Processes(uuid string) ([]devices.ProcessMemory, error)
	Utilization(uuid string) (uint32, error)
	Close() error
}

// Option changes how New builds a Server (tests).
type Option func(*options)

type options struct {
	gpus     GPUs
	kill     func(hostPID int) error
	procRoot string
}

// WithGPUs makes the server use gpus instead of opening NVML (Config.NVMLLibrary
// is then ignored). The server closes it on Shutdown.
func WithGPUs(gpus GPUs) Option { return func(o *options) { o.gpus = gpus } }

// WithKill replaces how the backstop kills a process (default: SIGKILL).
func WithKill(kill func(hostPID int) error) Option { return func(o *options) { o.kill = kill } }

// Server is vgpud.
//
// Who touches what: the HTTP handlers (and the container watcher) change the
// set of slices (alloc, release) under mu; the enforcer loop goroutine owns
// the state in loop (enforcerLoop, loop.go, which says field by field what
// it shares and how): it is the only one that reads the slices' mapped
// regions, and it also closes the regions of released slices (they wait in
// loop.closing, under mu, until the loop's next tick), so a region is never
// unmapped under a tick that reads it. The container watcher's goroutine is
// started and stopped through watch (containerwatch.go).
type Server struct {
	cfg       Config
	log       *zap.Logger
	gpus      GPUs
	devs      []devices.Device
	alloc     *allocator.Allocator
	store     *store.Store
	metrics   *metrics.Metrics
	lock      *os.File
	startedAt time.Time

	mu      sync.Mutex
	slices  map[string]*sliceEntry
	version uint64 // bumped on every change of slices: the loop rebuilds its view only then
	closed  bool   // Shutdown has begun: no more allocations

	// quarantined are the slices whose record could not be loaded, by entry
	// name, held until an operator resolves them; unknownHold is what is held
	// for those whose holding is unknown, booked as unknownHoldIDs
	// (quarantine.go).
	quarantined    map[string]*quarantineEntry
	unknownHold    []api.SliceDevice
	unknownHoldIDs []string

	// loop is the enforcer loop and its goroutine's state (nil until New
	// has built it, last).
	loop *enforcerLoop
	// tracker tells which process holds which GPU (tracking.go); nil: off or
	// not started. Set by Start before the loop runs, stopped by Shutdown
	// after it.
	tracker *trackerState

	// watch starts and stops the container watcher's goroutine.
	watch containerWatch
	// cdi publishes every slice as a CDI device (cdi.go).
	cdi *cdiPublisher

	// Listeners and their servers (Start).
	apiLn      *net.UnixListener
	sockIno    uint64
	apiSrv     *http.Server
	metricsLn  net.Listener
	metricsSrv *http.Server
	serveErr   chan error
	stopOnce   sync.Once
}

// sliceEntry is one slice vgpud holds.
type sliceEntry struct {
	rec    store.Record
	region *shm.Slice  // its mapped budget and usage files
	owner  *ownerWatch // nil: not owned by a process
	// placed: booked in the allocator. False for a record that no longer fits
	// the node (its device is gone): kept on disk, listed, not enforced.
	placed bool
	uuids  []string
	// releasing: a release is removing its record (guarded by Server.mu).
	releasing bool
	// recMu serializes the changes of its record on disk: an update's
	// rewrite (update.go) against another update and against the release's
	// removal, so a record is never written into a directory being deleted.
	// Taken before enforcerLoop.budgetMu and Server.mu.
	recMu sync.Mutex
}

// New builds vgpud from cfg: opens NVML, discovers the devices, takes the state
// dir's lock, reloads every recorded slice (re-adopting live regions untouched)
// and releases those whose owner is gone. It listens on nothing yet: Start does.
func New(cfg Config, log *zap.Logger, opts ...Option) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	o := options{kill: killProcess, procRoot: "/proc"}
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{
		cfg:       cfg,
		log:       log,
		slices:    map[string]*sliceEntry{},
		startedAt: time.Now().UTC(),
		serveErr:  make(chan error, 2),
	}
	s.quarantined = map[string]*quarantineEntry{}
	s.cdi = newCDIPublisher(cfg, log)
	defer func() {
		if err != nil {
			_ = s.closeAll() // already failing: the first error is the one reported
		}
	}()

	if s.lock, err = lockStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	s.gpus = o.gpus
	if s.gpus == nil {
		n, err := devices.Open(cfg.NVMLLibrary)
		if err != nil {
			return nil, fmt.Errorf("no GPUs to manage: %w", err)
		}
		s.gpus = n
	}
	if s.devs, err = s.gpus.Devices(); err != nil {
		return nil, fmt.Errorf("discover GPUs: %w", err)
	}
	if len(s.devs) == 0 {
		return nil, fmt.Errorf("discover GPUs: %w", devices.ErrNoDevices)
	}
	for _, d := range s.devs {
		log.Info("device", zap.Int("index", d.Index), zap.String("uuid", d.UUID), zap.String("name", d.Name),
			zap.Uint64("memory_bytes", d.MemoryBytes), zap.String("pci_bus_id", d.PCIBusID), zap.Int("numa_node", d.NUMANode))
	}
	if s.alloc, err = allocator.New(s.devs, cfg.Placement); err != nil {
		return nil, fmt.Errorf("allocator: %w", err)
	}
	if s.store, err = store.Open(cfg.StateDir, log); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := s.restore(); err != nil {
		return nil, err
	}
	s.cdi.resync(s.list())

	if s.loop, err = newEnforcerLoop(s, o); err != nil {
		return nil, err
	}
	s.metrics = metrics.New(s.metricsInput)
	return s, nil
}

// killProcess is the backstop's kill: SIGKILL, because a process that bypassed
// its limits is not trusted to handle anything gentler.
func killProcess(pid int) error {
	if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	return nil
}

// restore reloads the store: every acknowledged slice comes back, booked in the
// allocator as recorded; a record the node can no longer carry is kept (it is
// state) but not enforced; what every quarantined slice (a record that could
// not be loaded) holds is booked, after the live slices (quarantine.go); slices
// whose owner is gone are released.
func (s *Server) restore() error {
	loaded, err := s.store.Load()
	if err != nil {
		return fmt.Errorf("load slices: %w", err)
	}
	var dead []string
	for _, l := range loaded {
		rec := l.Record
		e := &sliceEntry{rec: rec, region: l.Slice, uuids: sliceUUIDs(rec.Slice)}
		if err := s.alloc.Restore(rec.Slice.ID, rec.Slice.Devices, rec.Slice.QoS); err != nil {
			s.log.Error("slice no longer fits this node: kept on disk, not enforced; release it or restore its device",
				zap.String("slice", rec.Slice.ID), zap.Error(err))
		} else {
			e.placed = true
		}
		if o := rec.Slice.Owner; o.Kind == api.OwnerPID {
			w, err := watchOwner(o.PID, o.StartTime)
			if err != nil {
				dead = append(dead, rec.Slice.ID)
			}
			e.owner = w
		}
		s.slices[rec.Slice.ID] = e
		s.version++
		s.log.Info("slice restored", zap.String("slice", rec.Slice.ID), zap.String("dir", rec.Slice.Dir),
			zap.Bool("enforced", e.placed))
	}
	if err := s.loadQuarantine(); err != nil {
		return err
	}
	for _, id := range dead {
		if err := s.release(id, "owner gone while vgpud was down"); err != nil {
			s.log.Error("release slice of a dead owner", zap.String("slice", id), zap.Error(err))
		}
	}
	s.log.Info("state loaded", zap.Int("slices", len(loaded)), zap.Int("released", len(dead)),
		zap.Int("quarantined", len(s.quarantined)))
	return nil
}

func sliceUUIDs(sl api.Slice) []string {
	u := make([]string, len(sl.Devices))
	for i, d := range sl.Devices {
		u[i] = d.UUID
	}
	return u
}

// Start listens on the API socket and the metrics address and starts the
// enforcer loop. Errors (a socket in use, a port taken) come back before
// anything runs.
func (s *Server) Start() error {
	tr, err := startTracker(s.cfg, s.log.Named("tracker"), s.loop.wakeUp)
	if err != nil {
		return err
	}
	ln, err := listenUnix(s.cfg.Socket)
	if err != nil {
		_ = tr.stop()
		return err
	}
	s.apiLn, s.sockIno = ln, socketInode(s.cfg.Socket)
	if s.cfg.MetricsAddr != "" {
		if s.metricsLn, err = net.Listen("tcp", s.cfg.MetricsAddr); err != nil {
			ln.Close()
			removeSocket(s.cfg.Socket, s.sockIno)
			_ = tr.stop()
			return fmt.Errorf("metrics: listen on %s: %w", s.cfg.MetricsAddr, err)
		}
	}
	s.tracker = tr
	s.apiSrv = newAPIServer(s.apiHandler(), s.log)
	go s.serve("api", s.apiSrv, s.apiLn)
	if s.metricsLn != nil {
		s.metricsSrv = newMetricsServer(s.metricsHandler(), s.log)
		go s.serve("metrics", s.metricsSrv, s.metricsLn)
	}
	go s.loop.run()
	s.startContainerWatch()
	s.log.Info("vgpud ready", zap.String("socket", s.cfg.Socket), zap.String("metrics_addr", s.MetricsAddr()),
		zap.String("state_dir", s.cfg.StateDir), zap.String("enforcer_mode", s.cfg.EnforcerMode),
		zap.Duration("enforcer_interval", time.Duration(s.cfg.EnforcerInterval)), zap.Int("devices", len(s.devs)),
		zap.String("tracker", s.tracker.kind()),
		zap.String("version", Version))
	return nil
}

func (s *Server) serve(name string, srv *http.Server, ln net.Listener) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.serveErr <- fmt.Errorf("%s server: %w", name, err)
	}
}

// MetricsAddr is the metrics listener's address ("" when off): with port 0 in
// the config, the port the kernel chose.
func (s *Server) MetricsAddr() string {
	if s.metricsLn == nil {
		return ""
	}
	return s.metricsLn.Addr().String()
}

// Run starts the server and serves until ctx is done (SIGTERM/SIGINT in
// cmd/vgpud) or a listener fails, then shuts down.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		_ = s.closeAll() // already failing: the first error is the one reported
		return err
	}
	var err error
	select {
	case <-ctx.Done():
		s.log.Info("shutting down", zap.String("reason", context.Cause(ctx).Error()))
	case err = <-s.serveErr:
		s.log.Error("listener failed; shutting down", zap.Error(err))
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(err, s.Shutdown(sctx))
}

// Shutdown stops vgpud: no new requests (those in flight finish), the loop
// stops, the regions are unmapped, NVML is closed and the socket removed.
// Slices stay on disk: they are state, and libvgpu keeps enforcing them in the
// running processes while vgpud is away.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	s.stopOnce.Do(func() {
		if s.apiSrv != nil {
			if err := s.apiSrv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("api server: %w", err))
			}
		}
		if s.metricsSrv != nil {
			if err := s.metricsSrv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("metrics server: %w", err))
			}
		}
		s.stopContainerWatch()
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		if s.apiSrv != nil { // the loop runs only after Start
			close(s.loop.stop)
			<-s.loop.done
		}
		if err := s.tracker.stop(); err != nil {
			errs = append(errs, fmt.Errorf("process tracker: %w", err))
		}
		if s.apiLn != nil {
			removeSocket(s.cfg.Socket, s.sockIno)
		}
		errs = append(errs, s.closeAll())
		s.log.Info("vgpud stopped")
	})
	return errors.Join(errs...)
}

// closeAll releases what New and Start acquired (regions, NVML, the lock).
func (s *Server) closeAll() error {
	var errs []error
	if s.loop != nil {
		// An update may still write a budget (a handler past Shutdown's timeout).
		s.loop.budgetMu.Lock()
		defer s.loop.budgetMu.Unlock()
	}
	s.mu.Lock()
	for _, e := range s.slices {
		e.close()
	}
	if s.loop != nil {
		for _, e := range s.loop.closing {
			e.close()
		}
		s.loop.closing = nil
	}
	s.mu.Unlock()
	if s.loop != nil {
		s.loop.enf.Close()
	}
	if s.gpus != nil {
		if err := s.gpus.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close NVML: %w", err))
		}
		s.gpus = nil
	}
	if s.lock != nil {
		s.lock.Close() // drops the flock
		s.lock = nil
	}
	return errors.Join(errs...)
}

func (e *sliceEntry) close() {
	if e.region != nil {
		e.region.Close()
		e.region = nil
	}
	e.owner.close()
}
