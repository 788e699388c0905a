package containers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	eventsapi "github.com/containerd/containerd/api/services/events/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Containerd subscribes to a containerd's event stream (its gRPC API on a
// unix socket, every namespace) for task and container deletions. It uses
// containerd's API module (the wire types) rather than the whole client
// library: vgpud needs one RPC, not containerd's image and snapshot machinery.
type Containerd struct {
	Socket string
}

// Topics vgpud listens to: a task's deletion is runc's (the container's
// state is gone); a container's deletion covers a task that was never
// deleted on its own.
var deletionFilters = []string{`topic=="/tasks/delete"`, `topic=="/containers/delete"`}

// Subscribe connects and subscribes. The connection lives until ctx is done
// or the stream fails.
func (c *Containerd) Subscribe(ctx context.Context) (<-chan Deletion, func() error, error) {
	conn, err := grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("containerd at %s: %w", c.Socket, err)
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := eventsapi.NewEventsClient(conn).Subscribe(sctx, &eventsapi.SubscribeRequest{Filters: deletionFilters})
	// containerd sends nothing back (not even headers) before the first
	// event, so the subscription cannot be confirmed here: a deletion in the
	// next instants may be missed, which the check the watcher runs right
	// after subscribing covers.
	if err != nil {
		cancel()
		conn.Close()
		return nil, nil, fmt.Errorf("containerd at %s: subscribe to events: %w", c.Socket, err)
	}
	out := make(chan Deletion, 64)
	var mu sync.Mutex
	var streamErr error
	go func() {
		defer close(out)
		defer conn.Close()
		defer cancel()
		for {
			env, err := stream.Recv()
			if err != nil {
				mu.Lock()
				streamErr = err
				mu.Unlock()
				return
			}
			d := Deletion{At: time.Now()}
			if env.GetTimestamp() != nil {
				d.At = env.GetTimestamp().AsTime()
			}
			switch env.GetTopic() {
			case "/tasks/delete":
				var td apievents.TaskDelete
				if env.GetEvent().UnmarshalTo(&td) != nil || td.GetID() != "" && td.GetID() != td.GetContainerID() {
					continue // undecodable, or an exec process, not the container's task
				}
				d.ContainerID, d.Why = td.GetContainerID(), "containerd: task deleted in namespace "+env.GetNamespace()
			case "/containers/delete":
				var cd apievents.ContainerDelete
				if env.GetEvent().UnmarshalTo(&cd) != nil {
					continue
				}
				d.ContainerID, d.Why = cd.GetID(), "containerd: container deleted in namespace "+env.GetNamespace()
			default:
				continue
			}
			select {
			case out <- d:
			case <-sctx.Done():
				return
			}
		}
	}()
	errf := func() error {
		mu.Lock()
		defer mu.Unlock()
		if errors.Is(streamErr, context.Canceled) {
			return nil
		}
		return streamErr
	}
	return out, errf, nil
}
