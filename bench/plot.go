package bench

import (
	"encoding/json"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Plot is one figure PlotResults drew: Name.svg and Name.png under its out dir.
type Plot struct {
	Name      string // file name without extension, e.g. "overhead-calls"
	Title     string
	Benchmark string // the report it was drawn from ("overhead", ...)
	Source    string // the JSON file's base name
}

// plotSize is every figure's size.
const (
	plotW = 8 * vg.Inch
	plotH = 4.5 * vg.Inch
)

// PlotResults draws every figure the reports in inDir (*.json, as vgpu-bench
// writes them) allow, as SVG and PNG under outDir, and returns them in order.
// A report whose benchmark has no figures (or an unreadable file) is skipped.
func PlotResults(inDir, outDir string) ([]Plot, error) {
	files, err := filepath.Glob(filepath.Join(inDir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	var out []Plot
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return out, err
		}
		var head struct {
			Benchmark string `json:"benchmark"`
		}
		if json.Unmarshal(data, &head) != nil {
			continue
		}
		src := filepath.Base(f)
		suffix := strings.TrimSuffix(strings.TrimPrefix(src, head.Benchmark), ".json") // "-simgpu"
		figs, err := figuresFor(head.Benchmark, data)
		if err != nil {
			return out, fmt.Errorf("%s: %w", src, err)
		}
		for _, fg := range figs {
			name := head.Benchmark + "-" + fg.name + suffix
			if err := savePlot(fg.p, filepath.Join(outDir, name)); err != nil {
				return out, fmt.Errorf("%s: %w", name, err)
			}
			out = append(out, Plot{Name: name, Title: fg.p.Title.Text, Benchmark: head.Benchmark, Source: src})
		}
	}
	return out, nil
}

type figure struct {
	name string
	p    *plot.Plot
}

func figuresFor(benchmark string, data []byte) ([]figure, error) {
	switch benchmark {
	case "overhead":
		var r OverheadReport
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		return overheadFigures(&r)
	case "throttle":
		var r ThrottleVgpudReport
		if err := json.Unmarshal(data, &r); err != nil || len(r.Cells) == 0 {
			return nil, nil // the older direct-mode report: no figures
		}
		return throttleFigures(&r)
	case "daemon":
		var r DaemonReport
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		return daemonFigures(&r)
	case "elastic":
		var r ElasticReport
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		return elasticFigures(&r)
	case "tracker":
		var r TrackerReport
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		return trackerFigures(&r)
	case "runtime":
		var r RuntimeReport
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		return runtimeFigures(&r)
	case "isolation":
		var r IsolationReport
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		return isolationFigures(&r)
	case "workload":
		var r WorkloadReport
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		return workloadFigures(&r)
	}
	return nil, nil
}

func savePlot(p *plot.Plot, base string) error {
	if err := p.Save(plotW, plotH, base+".svg"); err != nil {
		return err
	}
	return p.Save(plotW, plotH, base+".png")
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	return p
}

// whiskers is points at (X, Y) with an error bar from Y-Low to Y+High.
type whiskers struct {
	plotter.XYs
	low, high []float64
}

func (w whiskers) YError(i int) (float64, float64) { return w.low[i], w.high[i] }

// dotSeries is one series of a dot-and-whisker chart: a median per category
// and its p99 (the whisker runs from the median up to the p99). With p99 nil
// it is dots only (one figure per category, e.g. a ratio), named as it is.
type dotSeries struct {
	name        string
	median, p99 []float64
}

// dotWhiskerPlot draws, per category on x, each series' median as a dot and a
// whisker up to its p99, the series side by side. logY for figures spanning
// decades.
func dotWhiskerPlot(title, ylabel string, cats []string, series []dotSeries, logY bool) (*plot.Plot, error) {
	p := newPlot(title, "", ylabel)
	n := len(series)
	for s, ser := range series {
		off := 0.0
		if n > 1 {
			off = (float64(s) - float64(n-1)/2) * 0.5 / float64(n-1)
		}
		w := whiskers{}
		for i := range cats {
			if i >= len(ser.median) || ser.median[i] <= 0 && logY {
				continue
			}
			w.XYs = append(w.XYs, plotter.XY{X: float64(i) + off, Y: ser.median[i]})
			w.low = append(w.low, 0)
			if ser.p99 != nil {
				w.high = append(w.high, math.Max(0, ser.p99[i]-ser.median[i]))
			}
		}
		if len(w.XYs) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(w.XYs)
		if err != nil {
			return nil, err
		}
		sc.Color = plotutil.Color(s)
		sc.Shape = draw.CircleGlyph{}
		sc.Radius = vg.Points(4)
		if ser.p99 == nil {
			p.Add(sc)
			p.Legend.Add(ser.name, sc)
			continue
		}
		eb, err := plotter.NewYErrorBars(w)
		if err != nil {
			return nil, err
		}
		eb.Color = plotutil.Color(s)
		eb.Width = vg.Points(1.5)
		eb.CapWidth = vg.Points(8)
		p.Add(eb, sc)
		p.Legend.Add(ser.name+" (dot: median, whisker: p99)", sc)
	}
	p.NominalX(cats...)
	p.X.Min, p.X.Max = -0.6, float64(len(cats))-0.4
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	} else {
		p.Y.Min = 0
	}
	p.Y.Max *= 1.15 // room for the legend
	if logY {
		p.Y.Max *= 2
		p.Y.Min /= 2
	}
	return p, nil
}

// hline adds a dashed horizontal line at y labelled in the legend.
func hline(p *plot.Plot, y float64, label string) error {
	l, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: y}, {X: p.X.Max, Y: y}})
	if err != nil {
		return err
	}
	l.Color = color.RGBA{R: 200, A: 255}
	l.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(label, l)
	if y > p.Y.Max {
		p.Y.Max = y * 1.15
	}
	return nil
}

func overheadFigures(r *OverheadReport) ([]figure, error) {
	var figs []figure
	if len(r.Calls) > 0 {
		var cats []string
		bare := dotSeries{name: "bare"}
		vgpu := dotSeries{name: "with libvgpu"}
		for _, c := range r.Calls {
			cats = append(cats, fmt.Sprintf("%s\n%d thread(s)", shortOp(c.Op), c.Threads))
			bare.median = append(bare.median, c.Bare.Median)
			bare.p99 = append(bare.p99, c.Bare.P99)
			vgpu.median = append(vgpu.median, c.VGPU.Median)
			vgpu.p99 = append(vgpu.p99, c.VGPU.P99)
		}
		p, err := dotWhiskerPlot("Driver call cost, bare vs with libvgpu ("+r.Machine.Driver+")",
			"ns per call (log scale)", cats, []dotSeries{bare, vgpu}, true)
		if err != nil {
			return nil, err
		}
		figs = append(figs, figure{"calls", p})
	}
	if len(r.Init) > 0 {
		p := newPlot("CUDA init time vs concurrent processes ("+r.Machine.Driver+")",
			"processes started at once (log scale)", "ms per process (median, p99; log)")
		for s, v := range []struct {
			name string
			get  func(InitRow) Summary
		}{{"bare", func(i InitRow) Summary { return i.Bare }}, {"with libvgpu", func(i InitRow) Summary { return i.VGPU }}} {
			w := whiskers{}
			for _, row := range r.Init {
				sm := v.get(row)
				x := float64(row.Procs) * (1 + (float64(s)-0.5)*0.06)
				w.XYs = append(w.XYs, plotter.XY{X: x, Y: sm.Median})
				w.low = append(w.low, 0)
				w.high = append(w.high, math.Max(0, sm.P99-sm.Median))
			}
			l, sc, err := plotter.NewLinePoints(w.XYs)
			if err != nil {
				return nil, err
			}
			l.Color, sc.Color = plotutil.Color(s), plotutil.Color(s)
			l.Width = vg.Points(1.5)
			sc.Shape = draw.CircleGlyph{}
			eb, err := plotter.NewYErrorBars(w)
			if err != nil {
				return nil, err
			}
			eb.Color = plotutil.Color(s)
			p.Add(l, sc, eb)
			p.Legend.Add(v.name, l, sc)
		}
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = procTicks(r.Init)
		p.X.Min, p.X.Max = p.X.Min*0.8, p.X.Max*1.25
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Y.Max *= 3
		p.Y.Min /= 1.5
		figs = append(figs, figure{"init", p})
	}
	return figs, nil
}

func shortOp(op string) string {
	switch op {
	case OpLaunch:
		return "cuLaunchKernel"
	case OpAlloc:
		return "cuMemAlloc+Free"
	case OpGetInfo:
		return "cuMemGetInfo"
	}
	return op
}

// procTicks marks exactly the process counts measured.
func procTicks(rows []InitRow) plot.ConstantTicks {
	var t plot.ConstantTicks
	for _, r := range rows {
		t = append(t, plot.Tick{Value: float64(r.Procs), Label: fmt.Sprint(r.Procs)})
	}
	return t
}
