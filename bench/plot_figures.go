package bench

import (
	"fmt"
	"image/color"
	"math"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// throttleFigures: achieved vs target per tenant of every cell, its error, and
// the share over time of every cell with a change after its start (a join, a
// leave, a retarget).
func throttleFigures(r *ThrottleVgpudReport) ([]figure, error) {
	var cats []string
	target := dotSeries{name: "target"}
	achieved := dotSeries{name: "achieved"}
	var errs plotter.Values
	for _, c := range r.Cells {
		for _, t := range c.Tenants {
			cats = append(cats, c.Name+"/"+t.Name)
			// The target the steady error is against (the time-weighted mean
			// of a retargeted tenant's targets).
			tg := t.AchievedPct - t.SteadyErrPts
			target.median = append(target.median, tg)
			target.p99 = append(target.p99, tg)
			achieved.median = append(achieved.median, t.AchievedPct)
			achieved.p99 = append(achieved.p99, t.AchievedPct)
			errs = append(errs, t.SteadyErrPts)
		}
	}
	if len(cats) == 0 {
		return nil, nil
	}
	shares, err := throttleSharesPlot(cats, []dotSeries{target, achieved})
	if err != nil {
		return nil, err
	}
	errPlot, err := throttleErrorPlot(cats, errs, r.Config.GoalSteadyErrPts)
	if err != nil {
		return nil, err
	}
	figs := []figure{{"shares", shares}, {"error", errPlot}}
	for _, c := range r.Cells {
		changes := 0
		for _, e := range c.Events {
			if e.Kind != "start" {
				changes++
			}
		}
		if changes == 0 {
			continue
		}
		p, err := throttleSeries(&c)
		if err != nil {
			return nil, err
		}
		if p != nil {
			figs = append(figs, figure{"series-" + c.Name, p})
		}
	}
	return figs, nil
}

// targetSteps is a tenant's target over its life: the start target, then
// every retarget, as steps.
func targetSteps(c *VgpudCell, t VgpudTenant) plotter.XYs {
	tg := plotter.XYs{{X: t.StartS, Y: t.TargetPct}}
	cur := t.TargetPct
	for _, e := range c.Events {
		if e.Kind == "retarget" && e.Tenant == t.Name && e.AtS > t.StartS {
			tg = append(tg, plotter.XY{X: e.AtS, Y: cur}, plotter.XY{X: e.AtS, Y: e.TargetPct})
			cur = e.TargetPct
		}
	}
	end := t.EndS
	if end <= 0 {
		end = c.DurationS
	}
	return append(tg, plotter.XY{X: end, Y: cur})
}

// rotatedCategories names the x axis's categories, slanted to fit many.
func rotatedCategories(p *plot.Plot, cats []string) {
	p.NominalX(cats...)
	p.X.Tick.Label.Rotation = math.Pi / 4
	p.X.Tick.Label.XAlign = draw.XRight
	p.X.Tick.Label.YAlign = draw.YCenter
}

// throttleSharesPlot: each tenant's target (box) and achieved share (dot).
func throttleSharesPlot(cats []string, series []dotSeries) (*plot.Plot, error) {
	p := newPlot("Compute share through vgpud: achieved vs target, per cell/tenant", "",
		"share of the GPU (%, steady part)")
	for s, ser := range series {
		xy := make(plotter.XYs, len(cats))
		for i := range cats {
			xy[i] = plotter.XY{X: float64(i), Y: ser.median[i]}
		}
		sc, err := plotter.NewScatter(xy)
		if err != nil {
			return nil, err
		}
		sc.Color = plotutil.Color(s)
		if s == 0 {
			sc.Shape, sc.Radius = draw.BoxGlyph{}, vg.Points(6)
		} else {
			sc.Shape, sc.Radius = draw.CircleGlyph{}, vg.Points(3)
		}
		p.Add(sc)
		p.Legend.Add(ser.name, sc)
	}
	rotatedCategories(p, cats)
	p.Y.Min, p.Y.Max = 0, 100
	return p, nil
}

// throttleErrorPlot: each tenant's steady error as a bar, with the ±goal lines.
func throttleErrorPlot(cats []string, errs plotter.Values, goal float64) (*plot.Plot, error) {
	p := newPlot(fmt.Sprintf("Steady share error per cell/tenant (goal: within ±%g pts)", goal),
		"", "achieved − target (percentage points)")
	bars, err := plotter.NewBarChart(errs, vg.Points(10))
	if err != nil {
		return nil, err
	}
	bars.Color = plotutil.Color(1)
	p.Add(bars)
	rotatedCategories(p, cats)
	p.X.Min, p.X.Max = -0.6, float64(len(cats))-0.4
	if goal > 0 {
		lim := 1.3 * goal
		for _, e := range errs {
			lim = math.Max(lim, 1.1*math.Abs(e))
		}
		p.Y.Min, p.Y.Max = -lim, lim
		for _, y := range []float64{goal, -goal} {
			if err := hline(p, y, ""); err != nil {
				return nil, err
			}
		}
		p.Legend = plot.NewLegend()
	}
	return p, nil
}

// throttleSeries is one cell's share per NVML sample period over time, each
// tenant's target as a dashed step, and the changes as vertical lines.
func throttleSeries(c *VgpudCell) (*plot.Plot, error) {
	period := float64(c.SamplePeriodNs) / 1e9
	if period <= 0 {
		return nil, nil
	}
	p := newPlot(fmt.Sprintf("Share over time, cell %q: %s", c.Name, c.About), "time since the cell started (s)",
		fmt.Sprintf("share of the GPU (%%, per %.0f ms sample)", period*1e3))
	if len(p.Title.Text) > 110 {
		p.Title.Text = p.Title.Text[:107] + "..."
	}
	for i, t := range c.Tenants {
		var xy plotter.XYs
		for k, v := range t.PeriodPct {
			x := t.SeriesStartS + float64(k)*period
			if x < t.StartS-period || (t.EndS > 0 && x > t.EndS+period) {
				continue
			}
			xy = append(xy, plotter.XY{X: x, Y: v})
		}
		if len(xy) == 0 {
			continue
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.2)
		p.Add(l)
		p.Legend.Add(t.Name+" achieved", l)
		tl, err := plotter.NewLine(targetSteps(c, t))
		if err != nil {
			return nil, err
		}
		tl.Color = plotutil.Color(i)
		tl.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		tl.Width = vg.Points(1)
		p.Add(tl)
		p.Legend.Add(t.Name+" target", tl)
	}
	var lbl plotter.XYLabels
	for _, e := range c.Events {
		if e.Kind == "start" {
			continue
		}
		l, err := plotter.NewLine(plotter.XYs{{X: e.AtS, Y: 0}, {X: e.AtS, Y: 108}})
		if err != nil {
			return nil, err
		}
		l.Color = color.Gray{Y: 120}
		l.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
		p.Add(l)
		text := e.Kind + " " + e.Tenant
		if e.Kind == "retarget" {
			text = fmt.Sprintf("%s → %g%%", e.Tenant, e.TargetPct)
		}
		lbl.XYs = append(lbl.XYs, plotter.XY{X: e.AtS + 0.1, Y: 104})
		lbl.Labels = append(lbl.Labels, text)
	}
	if len(lbl.XYs) > 0 {
		labels, err := plotter.NewLabels(lbl)
		if err != nil {
			return nil, err
		}
		p.Add(labels)
	}
	p.Y.Min, p.Y.Max = 0, 112
	p.X.Min, p.X.Max = 0, c.DurationS
	p.Legend.Padding = vg.Points(1)
	return p, nil
}

// daemonFigures: vgpud's slice allocation and release latency: the CDF of the
// samples, or, for a report from before they were kept, median and p99.
func daemonFigures(r *DaemonReport) ([]figure, error) {
	if r.Alloc == nil || r.Alloc.Alloc.N == 0 {
		return nil, nil
	}
	a := r.Alloc
	goalLabel := fmt.Sprintf("goal: allocation p99 ≤ %g ms", a.GoalMS)
	if len(a.AllocSamplesMS) > 0 {
		p, err := cdfPlot(fmt.Sprintf("vgpud slice allocation latency through its API (CDF; %d allocations on %d GPUs)",
			len(a.AllocSamplesMS), a.Devices),
			"ms per request, client side (unix socket round trip)",
			[]string{fmt.Sprintf("allocate (p50 %.2f ms, p99 %.2f ms)", a.Alloc.Median, a.Alloc.P99),
				fmt.Sprintf("release (p50 %.2f ms, p99 %.2f ms)", a.Release.Median, a.Release.P99)},
			[][]float64{a.AllocSamplesMS, a.ReleaseSamplesMS}, a.GoalMS, goalLabel, true)
		if err != nil {
			return nil, err
		}
		return []figure{{"alloc", p}}, nil
	}
	cats := []string{fmt.Sprintf("allocate (n=%d)", a.Alloc.N), fmt.Sprintf("release (n=%d)", a.Release.N)}
	ser := dotSeries{name: "vgpud", median: []float64{a.Alloc.Median, a.Release.Median}, p99: []float64{a.Alloc.P99, a.Release.P99}}
	p, err := dotWhiskerPlot("vgpud slice allocation latency (summary: this report keeps no samples)",
		"ms per request", cats, []dotSeries{ser}, false)
	if err != nil {
		return nil, err
	}
	if a.GoalMS > 0 {
		if err := hline(p, a.GoalMS, goalLabel); err != nil {
			return nil, err
		}
	}
	return []figure{{"alloc", p}}, nil
}

// cdfLine is the empirical CDF of samples (ms) as a step line.
func cdfLine(samples []float64, logX bool) plotter.XYs {
	s := append([]float64(nil), samples...)
	sort.Float64s(s)
	xy := make(plotter.XYs, 0, 2*len(s))
	for i, v := range s {
		if v <= 0 && logX {
			v = 1e-3 // a log axis: sub-µs (or negative) values at its floor
		}
		n := float64(len(s))
		xy = append(xy, plotter.XY{X: v, Y: float64(i) / n}, plotter.XY{X: v, Y: float64(i+1) / n})
	}
	return xy
}

func cdfPlot(title, xlabel string, names []string, samples [][]float64, goal float64, goalLabel string, logX bool) (*plot.Plot, error) {
	if logX {
		xlabel += " (log scale)"
	}
	p := newPlot(title, xlabel, "fraction of requests ≤ x")
	p.Legend.Top = false
	p.Legend.Left = false
	for i, s := range samples {
		if len(s) == 0 {
			continue
		}
		l, err := plotter.NewLine(cdfLine(s, logX))
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i / 7)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(names[i], l)
	}
	// A margin right of the slowest sample: its last step is not on the edge.
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
		p.X.Max *= 1.25
	} else {
		p.X.Min = math.Min(0, p.X.Min)
		p.X.Max *= 1.05
	}
	p.Y.Min, p.Y.Max = 0, 1.02
	if goal > 0 {
		l, err := plotter.NewLine(plotter.XYs{{X: goal, Y: 0}, {X: goal, Y: 1}})
		if err != nil {
			return nil, err
		}
		l.Color = color.RGBA{R: 200, A: 255}
		l.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(goalLabel, l)
		if goal*1.5 > p.X.Max {
			p.X.Max = goal * 1.5
		}
	}
	return p, nil
}

// elasticFigures: the CDF of grant latency per row, and of shrink/eviction.
func elasticFigures(r *ElasticReport) ([]figure, error) {
	var figs []figure
	var names []string
	var samples [][]float64
	goal := 0.0
	for _, g := range r.Grant {
		n := fmt.Sprintf("%d at once, state on %s", g.Concurrency, g.StateFS)
		if g.SettleMS == 0 {
			n += ", released when ready"
		}
		names = append(names, n)
		samples = append(samples, g.SamplesMS)
		if g.GoalP99MS != nil && *g.GoalP99MS > goal {
			goal = *g.GoalP99MS
		}
	}
	if len(samples) > 0 {
		p, err := cdfPlot("Elastic memory grant latency through vgpud (CDF)", "ms from the tenant's allocation call to its grant",
			names, samples, goal, fmt.Sprintf("goal: p99 ≤ %g ms (8 at once)", goal), true)
		if err != nil {
			return nil, err
		}
		figs = append(figs, figure{"grant", p})
	}
	if rc := r.Reclaim; rc != nil && (len(rc.ShrinkMS) > 0 || len(rc.EvictMS) > 0) {
		p, err := cdfPlot("Elastic reclaim: lender returns → borrower shrunk / evicted (CDF)", "ms from the lender's PHASE ready",
			[]string{"shrink (budget lowered)", "evict (borrower killed)"}, [][]float64{rc.ShrinkMS, rc.EvictMS}, 0, "", false)
		if err != nil {
			return nil, err
		}
		figs = append(figs, figure{"reclaim", p})
	}
	return figs, nil
}

// trackerFigures: open/exit event latency per tracker (median, p99).
func trackerFigures(r *TrackerReport) ([]figure, error) {
	if len(r.Latency) == 0 {
		return nil, nil
	}
	var cats []string
	idx := map[string]int{}
	var trackers []string
	byTracker := map[string]*dotSeries{}
	for _, l := range r.Latency {
		if _, ok := idx[l.What]; !ok {
			idx[l.What] = len(cats)
			cats = append(cats, l.What)
		}
		if byTracker[l.Tracker] == nil {
			trackers = append(trackers, l.Tracker)
			byTracker[l.Tracker] = &dotSeries{name: l.Tracker}
		}
	}
	for _, t := range trackers {
		s := byTracker[t]
		s.median = make([]float64, len(cats))
		s.p99 = make([]float64, len(cats))
	}
	for _, l := range r.Latency {
		s := byTracker[l.Tracker]
		s.median[idx[l.What]] = l.MS.Median
		s.p99[idx[l.What]] = l.MS.P99
	}
	var series []dotSeries
	for _, t := range trackers {
		series = append(series, *byTracker[t])
	}
	p, err := dotWhiskerPlot("Process tracker: event → seen latency, eBPF vs procfs scan", "ms (log scale)", cats, series, true)
	if err != nil {
		return nil, err
	}
	return []figure{{"latency", p}}, nil
}

// runtimeFigures: container create time, plain runc vs through vgpu-runtime.
func runtimeFigures(r *RuntimeReport) ([]figure, error) {
	if r.Runc.N == 0 {
		return nil, nil
	}
	cats := []string{"runc", "vgpu-runtime\nno GPU request", "vgpu-runtime\nGPU request"}
	ser := dotSeries{name: "create",
		median: []float64{r.Runc.Median, r.Passthrough.Median, r.VGPU.Median},
		p99:    []float64{r.Runc.P99, r.Passthrough.P99, r.VGPU.P99}}
	p, err := dotWhiskerPlot(fmt.Sprintf("Container create time (goal: vgpu-runtime adds ≤ %g ms median)", r.GoalMS),
		"ms per create", cats, []dotSeries{ser}, false)
	if err != nil {
		return nil, err
	}
	return []figure{{"create", p}}, nil
}
