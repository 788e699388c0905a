package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
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

	// loop is the enforcer loop and its goroutine's state (nil until New
	// has built it, last).
	loop *enforcerLoop

	// watch starts and stops the container watcher's goroutine.
	watch containerWatch

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
	defer func() {
		if err != nil {
			s.closeAll()
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
// state) but not enforced; slices whose owner is gone are released.
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
	for _, id := range dead {
		if err := s.release(id, "owner gone while vgpud was down"); err != nil {
			s.log.Error("release slice of a dead owner", zap.String("slice", id), zap.Error(err))
		}
	}
	s.log.Info("state loaded", zap.Int("slices", len(loaded)), zap.Int("released", len(dead)))
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
	ln, err := listenUnix(s.cfg.Socket)
	if err != nil {
		return err
	}
	s.apiLn, s.sockIno = ln, socketInode(s.cfg.Socket)
	if s.cfg.MetricsAddr != "" {
		if s.metricsLn, err = net.Listen("tcp", s.cfg.MetricsAddr); err != nil {
			ln.Close()
			removeSocket(s.cfg.Socket, s.sockIno)
			return fmt.Errorf("metrics: listen on %s: %w", s.cfg.MetricsAddr, err)
		}
	}
	s.apiSrv = &http.Server{Handler: s.apiHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(s.log)}
	go s.serve("api", s.apiSrv, s.apiLn)
	if s.metricsLn != nil {
		s.metricsSrv = &http.Server{Handler: s.metricsHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(s.log)}
		go s.serve("metrics", s.metricsSrv, s.metricsLn)
	}
	go s.loop.run()
	s.startContainerWatch()
	s.log.Info("vgpud ready", zap.String("socket", s.cfg.Socket), zap.String("metrics_addr", s.MetricsAddr()),
		zap.String("state_dir", s.cfg.StateDir), zap.String("enforcer_mode", s.cfg.EnforcerMode),
		zap.Duration("enforcer_interval", time.Duration(s.cfg.EnforcerInterval)), zap.Int("devices", len(s.devs)),
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
		s.closeAll()
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

// ------------------------------------------------------------------ slices

// errNotFound, errClosing: answered 404 and 503.
var (
	errNotFound = errors.New("no such slice")
	errClosing  = errors.New("vgpud is shutting down")
)

// allocate carves, records and starts tracking a slice. The slice exists
// (and is answered) only once its record is durable on disk: after a crash
// vgpud has exactly the slices it acknowledged.
// A request without an id gets a generated one (the caller may set it first, to
// log refusals under it).
//
// The steps, in this order because each one's undo is cheaper than the next
// one's: check the request (nothing to undo), book it in the allocator
// (undone by the deferred Release until the slice is published), write its
// record (the durable step), publish it to the API and the loop.
func (s *Server) allocate(req api.AllocRequest) (api.Slice, error) {
	if err := s.checkAllocRequest(&req); err != nil {
		return api.Slice{}, err
	}
	devs, err := s.alloc.Allocate(req.ID, req)
	if err != nil {
		return api.Slice{}, err
	}
	booked := true
	defer func() {
		if booked {
			s.alloc.Release(req.ID)
		}
	}()
	if err := s.checkContextOverhead(devs); err != nil {
		return api.Slice{}, err
	}
	e, err := s.recordSlice(req, devs)
	if err != nil {
		return api.Slice{}, err
	}
	// From here on the booking stays, whether or not the slice is published:
	// its record is on disk and will be restored.
	booked = false
	if err := s.publish(e); err != nil {
		return api.Slice{}, err
	}
	s.log.Info("slice allocated", zap.String("slice", req.ID), zap.String("dir", e.rec.Slice.Dir),
		zap.Any("devices", devs), zap.String("qos", string(req.QoS)), zap.String("owner", ownerDesc(req.Owner)))
	return e.rec.Slice, nil
}

// checkAllocRequest completes and checks what a request says before anything
// is booked: its id (generated when missing), its QoS class, its owner (a pid
// owner's start time filled in), and that the id is free and vgpud is not
// shutting down. These are cheap and need no undo, so they come first.
func (s *Server) checkAllocRequest(req *api.AllocRequest) error {
	if req.ID == "" {
		req.ID = newSliceID()
	}
	// Checked first (the store checks it too) to answer a bad id with a 400
	// that says the rule.
	if !api.ValidSliceID(req.ID) {
		return fmt.Errorf("%w: slice id %q: want %s", allocator.ErrInvalidRequest, req.ID, api.SliceIDRule)
	}
	req.QoS = req.QoS.Normalized()
	if err := resolveOwner(&req.Owner); err != nil {
		return fmt.Errorf("%w: %w", allocator.ErrInvalidRequest, err)
	}

	s.mu.Lock()
	_, exists := s.slices[req.ID]
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errClosing
	}
	if exists {
		// Also covers records the allocator could not restore (not booked).
		return fmt.Errorf("slice %s: %w", req.ID, allocator.ErrExists)
	}
	return nil
}

// checkContextOverhead refuses a placement that leaves a device's budget no
// room beyond the memory charged per CUDA context: such a slice could not
// allocate anything. It needs the placement (a percentage becomes bytes only
// there), hence after the booking.
func (s *Server) checkContextOverhead(devs []api.SliceDevice) error {
	overhead := uint64(s.cfg.ContextOverhead)
	for _, d := range devs {
		if d.MemoryBytes <= overhead {
			return fmt.Errorf("%w: %s on device %d leaves nothing after the %s charged per CUDA context (context_overhead)",
				allocator.ErrInvalidRequest, sizeString(d.MemoryBytes), d.Index, sizeString(overhead))
		}
	}
	return nil
}

// recordSlice watches the slice's owner and writes the slice's record and
// regions to disk; once it returns nil the slice is durable. The owner is
// watched before the write so that an owner already gone is refused (400)
// without leaving a record of a slice that would be released at once.
func (s *Server) recordSlice(req api.AllocRequest, devs []api.SliceDevice) (*sliceEntry, error) {
	var watch *ownerWatch
	if req.Owner.Kind == api.OwnerPID {
		var err error
		if watch, err = watchOwner(req.Owner.PID, req.Owner.StartTime); err != nil {
			return nil, fmt.Errorf("%w: %w", allocator.ErrInvalidRequest, err)
		}
	}
	rec := store.Record{
		Slice: api.Slice{
			ID:        req.ID,
			Devices:   devs,
			QoS:       req.QoS,
			Priority:  req.Priority,
			Owner:     req.Owner,
			CreatedAt: time.Now().UTC(),
		},
		Request:         req,
		ContextOverhead: uint64(s.cfg.ContextOverhead),
	}
	rec.Slice.Dir = s.store.Dir(req.ID) // what Create records
	region, err := s.store.Create(rec)
	if err != nil {
		watch.close()
		return nil, fmt.Errorf("record slice %s: %w", req.ID, err)
	}
	return &sliceEntry{rec: rec, region: region, owner: watch, placed: true, uuids: sliceUUIDs(rec.Slice)}, nil
}

// publish makes a recorded slice visible to the API and the enforcer loop
// (the loop picks it up by the version bump).
func (s *Server) publish(e *sliceEntry) error {
	s.mu.Lock()
	if s.closed {
		// Shutdown began while the record was written. The slice is recorded
		// and will be restored; it is not answered, so the client retries.
		s.mu.Unlock()
		e.close() // not under mu: unmapping is no business of the lock
		return errClosing
	}
	s.slices[e.rec.Slice.ID] = e
	s.version++
	s.mu.Unlock()
	return nil
}

// release removes a slice: its record first (once that is gone the slice is
// gone, whatever happens next), then its booking. The slice stays listed until
// its record is gone, so a client that sees 404 never finds its files still
// there. Its regions are closed by the loop goroutine, which may be reading them.
func (s *Server) release(id, why string) error {
	s.mu.Lock()
	e, ok := s.slices[id]
	if !ok || e.releasing {
		s.mu.Unlock()
		return fmt.Errorf("slice %s: %w", id, errNotFound)
	}
	e.releasing = true // a concurrent release gets 404
	s.mu.Unlock()

	if err := s.store.Delete(id); errors.Is(err, store.ErrNotFound) {
		// Someone removed the files under us: the slice is gone all the same.
		s.log.Warn("slice record already gone from disk", zap.String("slice", id))
	} else if err != nil {
		s.mu.Lock()
		e.releasing = false
		s.mu.Unlock()
		return fmt.Errorf("remove slice %s: %w", id, err)
	}
	if e.placed {
		s.alloc.Release(id)
	}
	s.mu.Lock()
	delete(s.slices, id)
	s.version++
	if s.loop != nil && s.apiSrv != nil && !s.closed {
		s.loop.closing = append(s.loop.closing, e)
	} else {
		e.close() // no loop reads it
	}
	s.mu.Unlock()
	s.log.Info("slice released", zap.String("slice", id), zap.String("why", why))
	return nil
}

// list returns every slice, sorted by id.
func (s *Server) list() []api.Slice {
	s.mu.Lock()
	out := make([]api.Slice, 0, len(s.slices))
	for _, e := range s.slices {
		out = append(out, e.rec.Slice)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *Server) get(id string) (api.Slice, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.slices[id]
	if !ok {
		return api.Slice{}, false
	}
	return e.rec.Slice, true
}

// newSliceID makes an id for a request that names none: "s-" and 12 random
// hex digits (48 bits: collisions are refused with 409 anyway).
func newSliceID() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return "s-" + hex.EncodeToString(b[:])
}

func ownerDesc(o api.Owner) string {
	switch o.Kind {
	case api.OwnerPID:
		return fmt.Sprintf("pid %d", o.PID)
	case api.OwnerContainer:
		return "container " + o.ContainerID
	}
	return "none"
}
