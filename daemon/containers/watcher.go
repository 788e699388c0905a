// Package containers tells vgpud which container-owned slices belong to
// containers that are gone, so that a missed poststop hook (vgpud down when
// the container was deleted, the hook killed, a node crash) leaks nothing
// (DESIGN §5).
//
// A slice created by vgpu-runtime records its container's id and runc root
// (api.Owner). The container exists while runc's state dir <root>/<id> does:
// that is what `runc delete` removes, and when the poststop hook runs. Two
// sources say when it is gone:
//
//   - a periodic check of every container-owned slice against runc's state
//     (always on; also right at start, for containers deleted while vgpud
//     was down);
//   - containerd's event stream (/tasks/delete, /containers/delete) when a
//     containerd socket is configured, so a deletion is seen at once.
//
// A slice younger than the grace period is never judged gone: vgpu-runtime
// allocates it before runc has written the container's state.
package containers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
)

// DefaultRuncRoot is runc's state dir when it runs without --root (as root).
const DefaultRuncRoot = "/run/runc"

// Defaults of Config.
const (
	DefaultInterval = 10 * time.Second
	DefaultGrace    = 30 * time.Second
)

// Slice is a container-owned slice as the watcher needs it.
type Slice struct {
	ID          string
	ContainerID string
	RuncRoot    string // "" = DefaultRuncRoot
	CreatedAt   time.Time
}

// Verdict is what the runtime's state says of a container.
type Verdict int

// The verdicts: a container whose runc root is not there at all (another
// mount namespace, a runtime vgpud cannot see) is Unknown and keeps its slice.
const (
	Exists Verdict = iota
	Gone
	Unknown
)

// RuncState judges a container from runc's state dir.
func RuncState(s Slice) (Verdict, error) {
	root := s.RuncRoot
	if root == "" {
		root = DefaultRuncRoot
	}
	if _, err := os.Stat(root); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Unknown, nil
		}
		return Unknown, fmt.Errorf("runc root %s: %w", root, err)
	}
	// Lstat: a container id is one path component (vgpud checked it has no
	// separators when the slice was made), and its dir is never a symlink.
	_, err := os.Lstat(filepath.Join(root, s.ContainerID))
	switch {
	case err == nil:
		return Exists, nil
	case errors.Is(err, os.ErrNotExist):
		return Gone, nil
	}
	return Unknown, fmt.Errorf("container %s: %w", s.ContainerID, err)
}

// Deletion is a container deleted at a time (a containerd event).
type Deletion struct {
	ContainerID string
	At          time.Time
	Why         string
}

// Events is a stream of deletions. Subscribe returns once subscribed; the
// channel closes when the stream ends (ctx done, connection lost) and err()
// then says why.
type Events interface {
	Subscribe(ctx context.Context) (<-chan Deletion, func() error, error)
}

// Config configures a Watcher.
type Config struct {
	Interval time.Duration // periodic check; 0 = DefaultInterval
	Grace    time.Duration // a younger slice is never judged gone; 0 = DefaultGrace
	// Events, when set (a containerd socket is configured), reports deletions
	// as they happen.
	Events Events
	// Check judges a container; nil = RuncState.
	Check func(Slice) (Verdict, error)
	// Now is the clock; nil = time.Now.
	Now func() time.Time
}

// Watcher releases the slices of containers that are gone.
type Watcher struct {
	cfg Config
	log *zap.Logger
	// warned: runc roots already reported missing (once each, not every check).
	warned map[string]bool
}

// New returns a watcher.
func New(cfg Config, log *zap.Logger) *Watcher {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.Check == nil {
		cfg.Check = RuncState
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Watcher{cfg: cfg, log: log, warned: map[string]bool{}}
}

// Gone returns the slices (of those given) whose containers are gone.
func (w *Watcher) Gone(slices []Slice) []Slice {
	now := w.cfg.Now()
	var gone []Slice
	for _, s := range slices {
		if now.Sub(s.CreatedAt) < w.cfg.Grace {
			continue
		}
		v, err := w.cfg.Check(s)
		if err != nil {
			w.log.Warn("cannot tell whether a slice's container exists; keeping the slice",
				zap.String("slice", s.ID), zap.String("container", s.ContainerID), zap.Error(err))
			continue
		}
		switch v {
		case Gone:
			gone = append(gone, s)
		case Unknown:
			root := s.RuncRoot
			if root == "" {
				root = DefaultRuncRoot
			}
			if !w.warned[root] {
				w.warned[root] = true
				w.log.Warn("runc root not found: the containers recorded under it are kept until it appears "+
					"or their slices are released", zap.String("runc_root", root), zap.String("slice", s.ID))
			}
		}
	}
	return gone
}

// Run checks every Interval (and once right away) and, with Events, on every
// deletion, until ctx is done. list returns the current container-owned
// slices; release frees one (a slice already gone is not an error for it).
func (w *Watcher) Run(ctx context.Context, list func() []Slice, release func(id, why string)) {
	check := func() {
		for _, s := range w.Gone(list()) {
			release(s.ID, "container "+s.ContainerID+" is gone (no runc state)")
		}
	}
	check()
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	var events <-chan Deletion
	var eventsErr func() error
	retry := time.NewTimer(0)
	defer retry.Stop()
	if w.cfg.Events == nil {
		retry.Stop()
	}
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			check()
		case <-retry.C:
			ch, errf, err := w.cfg.Events.Subscribe(ctx)
			if err != nil {
				w.log.Warn("containerd events: cannot subscribe; periodic checks go on", zap.Error(err),
					zap.Duration("retry_in", backoff))
				retry.Reset(backoff)
				backoff = min(2*backoff, time.Minute)
				continue
			}
			backoff = time.Second
			events, eventsErr = ch, errf
			w.log.Info("containerd events: subscribed")
			// Deletions missed while not subscribed.
			check()
		case d, ok := <-events:
			if !ok {
				events = nil
				if ctx.Err() != nil {
					return
				}
				w.log.Warn("containerd events: stream ended; resubscribing", zap.Error(eventsErr()))
				retry.Reset(backoff)
				continue
			}
			w.log.Debug("container deleted", zap.String("container", d.ContainerID), zap.String("source", d.Why))
			for _, s := range list() {
				// A slice made after the deletion belongs to a new container
				// that reuses the id.
				if s.ContainerID == d.ContainerID && s.CreatedAt.Before(d.At) {
					release(s.ID, "container "+s.ContainerID+" deleted ("+d.Why+")")
				}
			}
		}
	}
}
