package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// OverheadPeerRow compares one peer with libvgpu on one call × thread count:
// bare, libvgpu and the peer run in turn in the same rounds.
type OverheadPeerRow struct {
	Peer    string  `json:"peer"`
	Op      string  `json:"op"`
	Threads int     `json:"threads"`
	Bare    Summary `json:"bare_ns"`
	VGPU    Summary `json:"vgpu_ns"`
	Other   Summary `json:"peer_ns"`
	// VGPUAddedNS and PeerAddedNS: median minus the bare median, ns per call.
	VGPUAddedNS float64 `json:"vgpu_added_median_ns"`
	PeerAddedNS float64 `json:"peer_added_median_ns"`
	// RatioToVGPU: PeerAddedNS / VGPUAddedNS; nil when libvgpu added <= 0.
	RatioToVGPU      *float64  `json:"ratio_to_vgpu,omitempty"`
	RoundPeerAddedNS []float64 `json:"round_peer_added_median_ns"`
}

// OverheadWithPeers is `vgpu-bench overhead --compare`: the overhead report and
// the comparison (a second measurement, bare / libvgpu / every peer in turn).
type OverheadWithPeers struct {
	*OverheadReport
	Peers   []Peer            `json:"peers"`
	Compare []OverheadPeerRow `json:"compare"`
}

// RunOverheadCompare runs the overhead benchmark (RunOverhead), then measures
// the per-call figures of opts.Ops × opts.Threads once more with every peer in the
// rotation, opts.Rounds times.
func RunOverheadCompare(ctx context.Context, opts OverheadOptions, peers []Peer) (*OverheadWithPeers, error) {
	if len(peers) == 0 {
		return nil, fmt.Errorf("overhead --compare: no peers")
	}
	base, err := RunOverhead(ctx, opts)
	if err != nil {
		return nil, err
	}
	out := &OverheadWithPeers{OverheadReport: base, Peers: peers}
	root, err := repositoryRoot(opts.Root, FindRoot)
	if err != nil {
		return nil, err
	}
	run := &overheadRun{opts: opts, paths: pathsAt(root), log: opts.Log}
	if run.log == nil {
		run.log = io.Discard
	}
	if run.tmp, err = os.MkdirTemp("", "vgpu-bench-compare-"); err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(run.tmp)
	if err := run.setup(); err != nil {
		return nil, err
	}
	defer run.usage.Close()
	n := 2 + len(peers)
	for _, op := range opts.Ops {
		for _, threads := range opts.Threads {
			pooled := make([][]float64, n)
			med := make([][]float64, n)
			for round := 0; round < opts.Rounds; round++ {
				for _, i := range rotation(n, round) {
					var s []float64
					switch i {
					case 0, 1:
						s, err = run.callsOnce(ctx, op, threads, i == 1)
					default:
						s, err = run.peerCalls(ctx, peers[i-2], op, threads)
					}
					if err != nil {
						return nil, err
					}
					pooled[i] = append(pooled[i], s...)
					med[i] = append(med[i], Median(s))
				}
				fmt.Fprintf(run.log, "bench: compare round %d/%d %-7s threads=%d done\n", round+1, opts.Rounds, op, threads)
			}
			bare, vgpu := Summarize(pooled[0]), Summarize(pooled[1])
			for j, p := range peers {
				row := OverheadPeerRow{Peer: p.Name, Op: op, Threads: threads, Bare: bare, VGPU: vgpu,
					Other: Summarize(pooled[j+2])}
				row.VGPUAddedNS = vgpu.Median - bare.Median
				row.PeerAddedNS = row.Other.Median - bare.Median
				row.RatioToVGPU = PeerRatio(row.PeerAddedNS, row.VGPUAddedNS)
				for k := range med[0] {
					row.RoundPeerAddedNS = append(row.RoundPeerAddedNS, med[j+2][k]-med[0][k])
				}
				out.Compare = append(out.Compare, row)
			}
		}
	}
	return out, nil
}

// peerCalls runs `bench_overhead calls` under peer p (no libvgpu).
func (r *overheadRun) peerCalls(ctx context.Context, p Peer, op string, threads int) ([]float64, error) {
	args := []string{"calls", "--op", op, "--threads", strconv.Itoa(threads),
		"--iters", strconv.Itoa(r.opts.Iters), "--batch", strconv.Itoa(r.opts.Batch),
		"--warmup", strconv.Itoa(r.opts.Warmup), "--device", strconv.Itoa(r.opts.Device)}
	if r.opts.Pin {
		args = append(args, "--pin")
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.RunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.paths.Prog, args...)
	cmd.Env = peerEnviron(r.environ(false), p)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s calls --op %s (peer %s): %w: %s", filepath.Base(r.paths.Prog), op, p.Name, err,
			strings.TrimSpace(stderr.String()))
	}
	res, err := ParseCalls(stdout.Bytes())
	if err != nil {
		return nil, fmt.Errorf("bench_overhead calls --op %s (peer %s): %w", op, p.Name, err)
	}
	return res.NsPerCall, nil
}

// Markdown is the overhead report followed by the comparison.
func (r *OverheadWithPeers) Markdown() string {
	var b strings.Builder
	b.WriteString(r.OverheadReport.Markdown())
	b.WriteString("\n## Compared with other interception libraries (ns per call; bare, libvgpu and each peer in turn)\n\n")
	for _, p := range r.Peers {
		fmt.Fprintf(&b, "- %s: LD_PRELOAD=%s %s\n", p.Name, p.Lib, strings.Join(p.Env, " "))
	}
	b.WriteString("\n| peer | call | threads | bare median | libvgpu median | peer median | libvgpu added | peer added | peer added per round | peer / libvgpu |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range r.Compare {
		fmt.Fprintf(&b, "| %s | %s | %d | %.1f | %.1f | %.1f | %s | %s | %s | %s |\n", row.Peer, opLabel(row.Op),
			row.Threads, row.Bare.Median, row.VGPU.Median, row.Other.Median, signed(row.VGPUAddedNS, 1),
			signed(row.PeerAddedNS, 1), spread(row.RoundPeerAddedNS, 1), ratioString(row.RatioToVGPU))
	}
	b.WriteString("\n")
	return b.String()
}
