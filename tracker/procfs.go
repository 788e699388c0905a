package tracker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
)

// procfsTracker rescans /proc every interval and publishes the difference
// between scans as events. It cannot see forks (a child shows up as an open
// of the devices it inherited, at the next scan), nor a process that opens
// and exits between two scans; its latency is up to one interval.
type procfsTracker struct {
	*state
	sc     *scanner
	log    *zap.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newProcfs(ctx context.Context, cfg Config) (*procfsTracker, error) {
	sc := newScanner(cfg)
	first, err := sc.scan()
	if err != nil {
		return nil, fmt.Errorf("tracker: first procfs scan: %w", err)
	}
	t := &procfsTracker{state: newState(), sc: sc, log: cfg.Log}
	t.reconcile(first, time.Now()) // no subscriber yet: only seeds
	ctx, t.cancel = context.WithCancel(ctx)
	t.wg.Add(1)
	go t.loop(ctx, cfg.ProcfsInterval)
	return t, nil
}

func (t *procfsTracker) loop(ctx context.Context, every time.Duration) {
	defer t.wg.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cur, err := t.sc.scan()
		if err != nil {
			t.log.Warn("tracker: procfs scan failed", zap.Error(err))
			continue
		}
		t.reconcile(cur, time.Now())
	}
}

func (t *procfsTracker) Kind() string                             { return kindProcfs }
func (t *procfsTracker) Processes() []Process                     { return t.processes() }
func (t *procfsTracker) Lookup(pid int) (Process, bool)           { return t.lookup(pid) }
func (t *procfsTracker) Subscribe(buf int) (<-chan Event, func()) { return t.subscribe(buf) }
func (t *procfsTracker) Lost() uint64                             { return t.lost.Load() }

func (t *procfsTracker) FindInNamespace(pidNS uint64, nspid int, start uint64) (Process, bool) {
	return t.findInNamespace(pidNS, nspid, start)
}

func (t *procfsTracker) SawExit(pidNS uint64, nspid int, start uint64) bool {
	return t.sawExit(pidNS, nspid, start)
}

// Close stops the scanner and closes every subscription.
func (t *procfsTracker) Close() error {
	t.cancel()
	t.wg.Wait()
	t.closeSubscribers()
	return nil
}
