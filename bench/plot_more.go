package bench

import (
	"fmt"
	"image/color"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// isolationFigures: the victim's throughput and (latency victim) p99 next to
// its neighbours, relative to alone, one dot per configuration and
// aggressors (kind, count), with the vgpu goals. Log scale: bare ratios on
// the FIFO simulated device go down to a thousandth (and p99 up a thousandfold).
func isolationFigures(r *IsolationReport) ([]figure, error) {
	g := r.groups()
	configs, keys, at := g.configs, g.keys, g.rows
	if len(keys) == 0 {
		return nil, nil
	}
	var cats, latCats []string
	val := func(x *float64) float64 {
		if x == nil {
			return 0 // no figure: left out on the log axis
		}
		return *x
	}
	thr := make([]dotSeries, len(configs))
	p99 := make([]dotSeries, len(configs))
	for i, c := range configs {
		thr[i].name, p99[i].name = c, c
	}
	for _, k := range keys {
		cat := fmt.Sprintf("%s\n%d %s", k.victim, k.n, k.aggressor) // short: eight fit side by side
		cats = append(cats, cat)
		if k.victim == VictimLatency {
			latCats = append(latCats, cat)
		}
		for i, c := range configs {
			row := at[k][c]
			if row == nil {
				row = &IsolationRow{}
			}
			thr[i].median = append(thr[i].median, val(row.RelThroughput))
			if k.victim == VictimLatency {
				p99[i].median = append(p99[i].median, val(row.RelP99))
			}
		}
	}
	var figs []figure
	p, err := dotWhiskerPlot("Noisy neighbours: victim throughput next to aggressors, relative to alone",
		"victim steps/s ÷ alone (log scale)", cats, thr, true)
	if err != nil {
		return nil, err
	}
	if err := hline(p, r.Config.GoalThroughputRatio, fmt.Sprintf("vgpu goal: ≥ %g× alone", r.Config.GoalThroughputRatio)); err != nil {
		return nil, err
	}
	p.Y.Max = math.Max(p.Y.Max, 2) // alone (1×) below the top edge
	p.X.Label.Text = "victim, and its aggressors (count, kind)"
	figs = append(figs, figure{"throughput", p})
	if len(latCats) > 0 {
		p, err := dotWhiskerPlot("Noisy neighbours: latency victim p99 step time, relative to alone",
			"victim p99 step time ÷ alone (log)", latCats, p99, true)
		if err != nil {
			return nil, err
		}
		if err := hline(p, r.Config.GoalP99Ratio, fmt.Sprintf("vgpu goal: ≤ %g× alone", r.Config.GoalP99Ratio)); err != nil {
			return nil, err
		}
		p.Y.Min = math.Min(p.Y.Min, 0.5) // alone (1×) and the goal in view, not on the edge
		p.X.Label.Text = "victim, and its aggressors (count, kind)"
		figs = append(figs, figure{"p99", p})
	}
	return figs, nil
}

// workloadFigures: what each run adds to the median step over bare: each
// round's figure (small) and the pooled one (large), with the goal.
func workloadFigures(r *WorkloadReport) ([]figure, error) {
	var cats []string
	var pooled, rounds plotter.XYs
	goal := 0.0
	for _, row := range r.Rows {
		if row.Mode == ModeBare {
			continue
		}
		x := float64(len(cats))
		cats = append(cats, row.Mode)
		pooled = append(pooled, plotter.XY{X: x, Y: row.AddedMedianPct})
		for _, v := range row.RoundAddedPct {
			rounds = append(rounds, plotter.XY{X: x + 0.12, Y: v})
		}
		if row.GoalPct != nil && *row.GoalPct > goal {
			goal = *row.GoalPct
		}
	}
	if len(cats) == 0 {
		return nil, nil
	}
	p := newPlot("Training-like step end to end: time added to the median step over bare",
		"", "added to median step (% of bare)")
	if len(rounds) > 0 {
		sc, err := plotter.NewScatter(rounds)
		if err != nil {
			return nil, err
		}
		sc.Color = color.Gray{Y: 130}
		sc.Shape = draw.CircleGlyph{}
		sc.Radius = vg.Points(2)
		p.Add(sc)
		p.Legend.Add("each round (its median vs that round's bare)", sc)
	}
	sc, err := plotter.NewScatter(pooled)
	if err != nil {
		return nil, err
	}
	sc.Color = plotutil.Color(0)
	sc.Shape = draw.CircleGlyph{}
	sc.Radius = vg.Points(5)
	p.Add(sc)
	p.Legend.Add("all rounds pooled", sc)
	p.NominalX(cats...)
	p.X.Min, p.X.Max = -0.6, float64(len(cats))-0.4
	zero, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: 0}, {X: p.X.Max, Y: 0}})
	if err != nil {
		return nil, err
	}
	zero.Color = color.Gray{Y: 60} // bare's own level: the reference, not a goal
	p.Add(zero)
	if goal > 0 {
		if err := hline(p, goal, fmt.Sprintf("goal: libvgpu adds ≤ %g %%", goal)); err != nil {
			return nil, err
		}
	}
	p.Y.Max += (p.Y.Max - p.Y.Min) * 0.3 // room for the legend
	p.Y.Tick.Marker = halfPointTicks{}
	return []figure{{"added", p}}, nil
}

// halfPointTicks marks every 0.5 (every 1 beyond a span of 6), 0 among them:
// the default ticker put them at -0.5, 1.0, 2.5 with no 0 in sight.
type halfPointTicks struct{}

func (halfPointTicks) Ticks(lo, hi float64) []plot.Tick {
	step := 0.5
	if hi-lo > 6 {
		step = 1
	}
	var t []plot.Tick
	for v := math.Ceil(lo/step) * step; v <= hi; v += step {
		t = append(t, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', 1, 64)})
	}
	return t
}
