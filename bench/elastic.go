package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// The elastic-memory benchmark (`vgpu-bench elastic`): what a tenant waits
// for when it allocates past its slice's base memory, through the path users
// get — a real bin/vgpud on a simulated node, slices created through its API
// with a ceiling (MemoryMaxBytes), tenants (build/test/elastic,
// build/test/torchlike, build/test/alloc) run with LD_PRELOAD=libvgpu.so
// against the simulated driver.
//
//   - grant: N tenants hold their context ("PHASE ready", --step), are
//     released together and allocate past their base; each reports the wall
//     time of that allocation call (refused by the budget → request posted →
//     vgpud's grant → retry), measured inside the tenant.
//   - reclaim: an empty guaranteed lender, a burstable borrower holding part
//     of the lender's reservation; a process of the lender takes a context:
//     shrink = its "PHASE ready" → the borrower's budget limit lowered;
//     evict = the same instant → the borrower's process dead (enforce mode,
//     the device physically short of the lender's guarantee).

// GoalElasticGrantP99MS: p99 grant latency at GoalElasticGrantConcurrency
// concurrent requesters. Reported, never asserted.
const (
	GoalElasticGrantP99MS       = 15.0
	GoalElasticGrantConcurrency = 8
)

// ElasticOptions configures RunElastic.
type ElasticOptions struct {
	// Root is the repository root holding bin/ and build/ ("" = found from
	// the working directory or the executable).
	Root string
	// Concurrency: how many slices ask at once, one grant table row each.
	Concurrency []int
	// Rounds per concurrency (fresh slices and processes each round).
	Rounds int
	// Base and Max: each grant slice's memory and ceiling; Alloc: what its
	// tenant allocates after its context (must exceed Base − the context).
	Base, Max, Alloc uint64
	// Reclaim repetitions (a fresh node and vgpud each); 0 skips them.
	Reclaims int
	// TmpfsCompare repeats the grant rows with vgpud's state dir on
	// /dev/shm (tmpfs): the difference is what the durable record costs.
	TmpfsCompare bool
	// EnforcerInterval is vgpud's --enforcer-interval ("" = vgpud's default).
	EnforcerInterval string
	// Settle: the least time from a round's last slice creation to the
	// release (0: 3 enforcer intervals): the steady case, apart from the
	// settle-0 row's requests right after the slices are made.
	Settle time.Duration
	// FreshRow adds a row of GoalElasticGrantConcurrency tenants released as
	// soon as they are ready (no settle): requests in their slices' first tick.
	FreshRow bool
	// TempDir holds the nodes and vgpud's state dir ("" = the system's temp dir).
	TempDir  string
	KeepTemp bool
	// StepTimeout bounds every wait for a tenant's line or vgpud.
	StepTimeout time.Duration
	Log         io.Writer
}

// DefaultElasticOptions returns what `vgpu-bench elastic` runs.
func DefaultElasticOptions() ElasticOptions {
	return ElasticOptions{Concurrency: []int{1, 8, 32}, Rounds: 30, Base: 1 << 30, Max: 2 << 30, Alloc: 1 << 30,
		Reclaims: 5, TmpfsCompare: true, FreshRow: true, StepTimeout: 60 * time.Second}
}

// elasticContextBytes is what a context takes of a slice (vgpud's default
// context overhead, the simulated driver's context).
const elasticContextBytes = 256 << 20

func (o *ElasticOptions) validate() error {
	for _, c := range o.Concurrency {
		if c < 1 || c > 64 {
			return fmt.Errorf("concurrency %d out of range 1..64", c)
		}
	}
	switch {
	case len(o.Concurrency) > 0 && o.Rounds < 1:
		return fmt.Errorf("rounds %d must be >= 1", o.Rounds)
	case o.Base <= elasticContextBytes:
		return fmt.Errorf("base %s must exceed the context's 256 MiB", sizeText(o.Base))
	case o.Max <= o.Base:
		return fmt.Errorf("ceiling %s must exceed the base %s", sizeText(o.Max), sizeText(o.Base))
	case o.Alloc+elasticContextBytes <= o.Base:
		return fmt.Errorf("alloc %s fits the base %s: no grant would be needed", sizeText(o.Alloc), sizeText(o.Base))
	case o.Alloc+elasticContextBytes > o.Max:
		return fmt.Errorf("alloc %s and the context exceed the ceiling %s", sizeText(o.Alloc), sizeText(o.Max))
	case o.Reclaims < 0:
		return fmt.Errorf("reclaims %d must be >= 0", o.Reclaims)
	case len(o.Concurrency) == 0 && o.Reclaims == 0:
		return errors.New("nothing to measure: no concurrency and --reclaims 0")
	case o.Settle < 0:
		return errors.New("settle must be >= 0")
	case o.StepTimeout <= 0:
		return errors.New("step timeout must be > 0")
	}
	return nil
}

// ElasticConfig records how the figures were taken.
type ElasticConfig struct {
	Concurrency      []int  `json:"concurrency"`
	Rounds           int    `json:"rounds"`
	BaseBytes        uint64 `json:"base_bytes"`
	MaxBytes         uint64 `json:"max_bytes"`
	AllocBytes       uint64 `json:"alloc_bytes"`
	ContextBytes     uint64 `json:"context_bytes"`
	DeviceBytes      uint64 `json:"grant_device_bytes"`
	Reclaims         int    `json:"reclaims"`
	EnforcerInterval string `json:"enforcer_interval"`
	StateFS          string `json:"state_fs"`
	// NodeFS: where the simulated node's state file is (tmpfs where
	// available: a real driver writes no file).
	NodeFS   string   `json:"sim_node_fs"`
	Commands []string `json:"commands"`
	// LoadAvg: /proc/loadavg at the start and the end (other work on the
	// machine shows in the figures).
	LoadAvgStart string `json:"loadavg_start"`
	LoadAvgEnd   string `json:"loadavg_end"`
	SampleNotes  string `json:"sample_notes"`
}

// ElasticGrantRow is the grant latency at one concurrency on one state dir.
type ElasticGrantRow struct {
	Concurrency int    `json:"concurrency"`
	StateFS     string `json:"state_fs"`
	Rounds      int    `json:"rounds"`
	// SettleMS: the least time from the round's last slice creation to the
	// release (0: released as soon as ready, in the slices' first tick).
	SettleMS float64 `json:"settle_ms"`
	// Latency: the tenant's allocation call, ms (only granted ones).
	Latency Summary `json:"latency_ms"`
	// Refused: allocations that failed (should be 0), with their error names.
	Refused     int      `json:"refused"`
	RefusedErrs []string `json:"refused_errors,omitempty"`
	// RefusedMS: how long each refused allocation took (libvgpu waits
	// VGPU_ELASTIC_WAIT_MS, 100 ms by default, for an answer).
	RefusedMS []float64 `json:"refused_ms,omitempty"`
	// Grants and Refusals vgpud logged ("elastic: memory granted" /
	// "elastic: request refused").
	LoggedGrants int `json:"logged_grants"`
	// LastLoggedMS: per round, from the release to vgpud's last "memory
	// granted" record of the round (a plan logs after answering all its
	// requests; the log's instants have ms resolution).
	LastLoggedMS Summary `json:"last_grant_logged_ms"`
	// PlansPerRound: how many rounds had their grants logged in k plans
	// (groups more than 1 ms apart), by k.
	PlansPerRound  map[int]int `json:"plans_per_round"`
	LoggedRefusals int         `json:"logged_refusals"`
	SamplesMS      []float64   `json:"samples_ms"`
	GoalP99MS      *float64    `json:"goal_p99_ms,omitempty"`
	Met            *bool       `json:"met,omitempty"`
}

// ElasticReclaim is the shrink and eviction latency.
type ElasticReclaim struct {
	Repeats int `json:"repeats"`
	// ShrinkMS: lender's PHASE ready → the borrower's budget limit lowered
	// (negative: vgpud saw the lender's context before its line was read).
	Shrink   Summary   `json:"shrink_ms"`
	ShrinkMS []float64 `json:"shrink_samples_ms"`
	// EvictMS: lender's PHASE ready → the borrower's process dead.
	Evict   Summary   `json:"evict_ms"`
	EvictMS []float64 `json:"evict_samples_ms"`
	// BorrowedBytes: what the borrower held of the lender's reservation.
	BorrowedBytes []uint64 `json:"borrowed_bytes"`
	// LimitBefore/After: the borrower's budget limit before and after the shrink.
	LimitBefore []uint64 `json:"limit_before_bytes"`
	LimitAfter  []uint64 `json:"limit_after_bytes"`
	// ExitStatus of each borrower (137: SIGKILLed).
	ExitStatus []int `json:"exit_status"`
}

// ElasticWriteCost is one fsync'd record write (what store.Update does per
// changed slice) on the state dir's filesystem, timed outside vgpud.
type ElasticWriteCost struct {
	StateFS string  `json:"state_fs"`
	Write   Summary `json:"write_ms"`
}

// ElasticReport is the result of `vgpu-bench elastic`.
type ElasticReport struct {
	Benchmark  string             `json:"benchmark"` // "elastic"
	Machine    Machine            `json:"machine"`
	Config     ElasticConfig      `json:"config"`
	Grant      []ElasticGrantRow  `json:"grant"`
	Reclaim    *ElasticReclaim    `json:"reclaim,omitempty"`
	WriteCosts []ElasticWriteCost `json:"record_write_costs,omitempty"`
	AllMet     bool               `json:"all_met"`
	Notes      []string           `json:"notes,omitempty"`
}

// Evaluate fills in the goals, met fields and AllMet: the goal applies to
// the rows at GoalElasticGrantConcurrency; every row must have no refusals.
func (r *ElasticReport) Evaluate() {
	all := true
	for i := range r.Grant {
		g := &r.Grant[i]
		g.GoalP99MS, g.Met = nil, nil
		if g.Refused > 0 || g.Latency.N == 0 {
			all = false
		}
		if g.Concurrency == GoalElasticGrantConcurrency && g.SettleMS > 0 {
			goal := GoalElasticGrantP99MS
			met := g.Latency.N > 0 && g.Refused == 0 && g.Latency.P99 <= goal
			g.GoalP99MS, g.Met = &goal, &met
			if g.StateFS == r.Config.StateFS {
				all = all && met
			}
		}
	}
	r.AllMet = all
}

// RunElastic runs the grant rows (on the temp dir's filesystem, then on
// tmpfs with TmpfsCompare) and the reclaim repetitions.
func RunElastic(ctx context.Context, opts ElasticOptions) (*ElasticReport, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("elastic options: %w", err)
	}
	r, err := newElasticRun(opts)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(opts.TempDir, "vgpu-bench-elastic-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if opts.KeepTemp {
		fmt.Fprintf(r.log, "bench: keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	// The simulated node's state file is written on every driver call; a real
	// driver keeps no file. On tmpfs it adds no I/O to what vgpud's own state
	// dir costs (ext4's fsync commits every dirty file of its journal).
	r.nodeRoot = tmp
	if fsType("/dev/shm") == "tmpfs" {
		nodes, err := os.MkdirTemp("/dev/shm", "vgpu-bench-elastic-nodes-")
		if err != nil {
			return nil, fmt.Errorf("node dir: %w", err)
		}
		if !opts.KeepTemp {
			defer os.RemoveAll(nodes)
		}
		r.nodeRoot = nodes
	}
	rep := r.newReport(ctx, tmp)
	rep.Config.NodeFS = fsType(r.nodeRoot)
	rep.Config.LoadAvgStart = LoadAverage()
	dirs := []string{tmp}
	if opts.TmpfsCompare && len(opts.Concurrency) > 0 && fsType(tmp) != "tmpfs" && fsType("/dev/shm") == "tmpfs" {
		shmTmp, err := os.MkdirTemp("/dev/shm", "vgpu-bench-elastic-")
		if err != nil {
			return nil, fmt.Errorf("tmpfs temp dir: %w", err)
		}
		if !opts.KeepTemp {
			defer os.RemoveAll(shmTmp)
		}
		dirs = append(dirs, shmTmp)
	}
	settle, err := r.settle()
	if err != nil {
		return nil, err
	}
	for di, dir := range dirs {
		type cell struct {
			c      int
			settle time.Duration
		}
		var cells []cell
		for _, c := range opts.Concurrency {
			cells = append(cells, cell{c, settle})
		}
		if di == 0 && opts.FreshRow && len(opts.Concurrency) > 0 {
			cells = append(cells, cell{GoalElasticGrantConcurrency, 0})
		}
		for _, x := range cells {
			row, err := r.grantRow(ctx, filepath.Join(dir, fmt.Sprintf("grant-%d-%d", x.c, x.settle.Milliseconds())), x.c, x.settle)
			if err != nil {
				return nil, fmt.Errorf("grant, %d at once (state on %s): %w", x.c, fsType(dir), err)
			}
			fmt.Fprintf(r.log, "bench: elastic: grant %2d at once (%s, settle %v): n %d median %.2f ms p99 %.2f ms max %.2f ms, %d refused\n",
				x.c, row.StateFS, x.settle, row.Latency.N, row.Latency.Median, row.Latency.P99, row.Latency.Max, row.Refused)
			rep.Grant = append(rep.Grant, *row)
		}
		wc, err := recordWriteCost(filepath.Join(dir, fmt.Sprintf("writes-%d", di)), 200)
		if err != nil {
			return nil, err
		}
		rep.WriteCosts = append(rep.WriteCosts, *wc)
	}
	if opts.Reclaims > 0 {
		rc, err := r.reclaim(ctx, filepath.Join(tmp, "reclaim"))
		if err != nil {
			return nil, fmt.Errorf("reclaim: %w", err)
		}
		rep.Reclaim = rc
	}
	rep.Config.LoadAvgEnd = LoadAverage()
	rep.Evaluate()
	rep.Notes = append(rep.Notes, r.notes(rep)...)
	return rep, nil
}

// settle resolves opts.Settle: 0 is 3 enforcer intervals.
func (r *elasticRun) settle() (time.Duration, error) {
	if r.opts.Settle > 0 {
		return r.opts.Settle, nil
	}
	interval := 50 * time.Millisecond // vgpud's default (daemon.DefaultEnforcerInterval)
	if r.opts.EnforcerInterval != "" {
		d, err := time.ParseDuration(r.opts.EnforcerInterval)
		if err != nil {
			return 0, fmt.Errorf("enforcer interval: %w", err)
		}
		interval = d
	}
	return 3 * interval, nil
}
