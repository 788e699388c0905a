package daemon

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/containers"
)

// containerWatch is how Start and Shutdown start and stop the container
// watcher's goroutine; only they touch it (Shutdown once, under Server.stopOnce).
// The goroutine itself shares nothing with the loop: it lists the slices and
// releases them through the Server, under Server.mu like the API.
type containerWatch struct {
	stop func()        // cancels the watcher's context; nil: not running
	done chan struct{} // closed when the watcher's goroutine has returned
}

// startContainerWatch starts the goroutine that releases the slices of
// containers that are gone (package containers): a periodic check of runc's
// state, and containerd's event stream when containerd_socket is set.
func (s *Server) startContainerWatch() {
	cfg := containers.Config{
		Interval: time.Duration(s.cfg.ContainerCheckInterval),
		Grace:    time.Duration(s.cfg.ContainerGrace),
	}
	if s.cfg.ContainerdSocket != "" {
		cfg.Events = &containers.Containerd{Socket: s.cfg.ContainerdSocket}
	}
	w := containers.New(cfg, s.log.Named("containers"))
	ctx, cancel := context.WithCancel(context.Background())
	s.watch.stop = cancel
	s.watch.done = make(chan struct{})
	go func() {
		defer close(s.watch.done)
		w.Run(ctx, s.containerSlices, func(id, why string) {
			if err := s.release(id, why); err != nil && !errors.Is(err, errNotFound) {
				s.log.Error("release slice of a gone container", zap.String("slice", id), zap.Error(err))
			}
		})
	}()
}

// stopContainerWatch stops the watcher and waits for it.
func (s *Server) stopContainerWatch() {
	if s.watch.stop != nil {
		s.watch.stop()
		<-s.watch.done
		s.watch.stop = nil
	}
}

// containerSlices lists the container-owned slices.
func (s *Server) containerSlices() []containers.Slice {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []containers.Slice
	for _, e := range s.slices {
		sl := e.rec.Slice
		if sl.Owner.Kind == api.OwnerContainer && !e.releasing {
			out = append(out, containers.Slice{ID: sl.ID, ContainerID: sl.Owner.ContainerID,
				RuncRoot: sl.Owner.RuncRoot, CreatedAt: sl.CreatedAt})
		}
	}
	return out
}

// attributors asks each attributor in turn: a pid owner's process tree first
// (vgpuctl run), then the container the process runs in (its cgroup).
type attributors []interface {
	SliceOf(hostPID int) (string, bool)
}

func (a attributors) SliceOf(hostPID int) (string, bool) {
	for _, x := range a {
		if id, ok := x.SliceOf(hostPID); ok {
			return id, true
		}
	}
	return "", false
}
