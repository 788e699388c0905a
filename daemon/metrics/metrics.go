// Package metrics exports vgpud's state in the Prometheus format: per device,
// per slice and the daemon's own health. Every metric is documented in
// README.md next to this file.
//
// The daemon feeds it two ways: ObserveTick after every enforcer tick (tick
// durations go into a histogram, the latest report provides the per-slice
// figures), and a Source called at every scrape for what the daemon holds
// (devices with their carving sums, slices, utilization, health). Metrics use
// their own Registry, never the global one, so that tests and several daemons
// in one process do not collide.
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/enforcer"
)

// Health is the daemon's own state.
type Health struct {
	Version      string
	StartTime    time.Time
	EnforcerMode string // off | report | enforce
	// Tracker is the process tracker running (ebpf, procfs or off) and
	// TrackerLost the events it lost.
	Tracker     string
	TrackerLost uint64
}

// Input is what the collector reads from the daemon at every scrape.
type Input struct {
	// Devices as the allocator sums them (guaranteed/allocated memory,
	// guaranteed compute, slice count).
	Devices []api.Device
	// Slices the daemon holds: counted per QoS class (every class is always
	// exported, 0 when empty, so a class appearing is a change of value rather
	// than a new series).
	Slices []api.Slice
	// Utilization maps a device uuid to its GPU utilization, 0..1 (NVML's
	// percent / 100). Devices without an entry export no utilization.
	Utilization map[string]float64
	// Compute is every slice's compute share per device, as the controller
	// last set and measured it.
	Compute []SliceCompute
	// Activity is every slice's activity state after the last tick, by slice
	// id (slices without an entry export none).
	Activity map[string]api.SliceActivity
	Health   Health
	// Elastic is the elastic-memory broker's totals.
	Elastic Elastic
}

// SliceCompute is a slice's compute share on one device. Ratios are 0..1.
type SliceCompute struct {
	Slice, UUID string
	QoS         api.QoS // "" is the default class, guaranteed
	// Target is the configured share; 0: the slice has none (no target series).
	Target float64
	// Allowed is what the controller grants; exported for slices with a share
	// or a token rate.
	Allowed float64
	// Achieved is the measured share, exported only when Measured.
	Achieved float64
	Measured bool
	// TokenRate is the bucket's refill rate in tokens (estimated device-ns) per
	// second; 0: not throttled.
	TokenRate uint64
}

// Source returns the daemon's current Input. It is called once per scrape,
// from the scraping goroutine: it should copy what it needs under the
// daemon's lock and return.
type Source func() Input

// TickDurationBuckets are the histogram buckets of
// vgpu_enforcer_tick_duration_seconds: 50µs to ~100ms, where a tick over
// 1,000 slices is expected to stay under 5ms.
var TickDurationBuckets = prometheus.ExponentialBuckets(50e-6, 2, 12)

// Metrics is vgpud's Prometheus collector and registry.
type Metrics struct {
	reg          *prometheus.Registry
	src          Source
	tickDuration prometheus.Histogram
	// elasticDecision: each elastic answer's latency (elastic.go).
	elasticDecision prometheus.Histogram
	tamperEvents    atomic.Uint64 // vgpu_region_tamper_events_total

	mu   sync.Mutex
	last *enforcer.TickReport
}

// New returns the metrics of a daemon reading src (nil: no devices, slices
// or health, only what ObserveTick provides). The registry also holds the Go
// runtime and process collectors.
func New(src Source) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		src: src,
		tickDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vgpu_enforcer_tick_duration_seconds",
			Help:    "Wall time of each enforcer tick.",
			Buckets: TickDurationBuckets,
		}),
		elasticDecision: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vgpu_elastic_decision_seconds",
			Help:    "Latency of each elastic memory answer: from the tick that first saw the request to the answer (recorded, budget written).",
			Buckets: TickDurationBuckets,
		}),
	}
	m.reg.MustRegister(
		m.tickDuration,
		m.elasticDecision,
		(*collector)(m),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry is the registry holding every vgpud metric.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry (mount it at /metrics).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// ObserveTick records one enforcer tick. Call it after every tick: the
// duration histogram counts each call, the other figures come from the latest
// report. The report is kept, not copied: do not modify it afterwards (the
// loop never does).
func (m *Metrics) ObserveTick(rep *enforcer.TickReport) {
	if rep == nil {
		return
	}
	m.tickDuration.Observe(rep.Duration.Seconds())
	m.mu.Lock()
	m.last = rep
	m.mu.Unlock()
}

// ObserveTamper counts a slice whose region files were found tampered with
// (vgpud's region watch calls it once per slice).
func (m *Metrics) ObserveTamper() { m.tamperEvents.Add(1) }

// ObserveElasticDecision records one elastic answer's latency: from the tick
// that first saw the request to its answer.
func (m *Metrics) ObserveElasticDecision(d time.Duration) { m.elasticDecision.Observe(d.Seconds()) }

// Descriptions of the metrics the collector builds at scrape time.
var (
	descDaemonUp = prometheus.NewDesc("vgpu_daemon_up",
		"1 while vgpud serves metrics.", nil, nil)
	descDaemonStart = prometheus.NewDesc("vgpu_daemon_start_time_seconds",
		"Unix time vgpud started.", nil, nil)
	descDaemonInfo = prometheus.NewDesc("vgpu_daemon_info",
		"vgpud's version and enforcer mode (value 1).", []string{"version", "enforcer_mode"}, nil)

	descTrackerInfo = prometheus.NewDesc("vgpu_tracker_info",
		"The process tracker vgpud runs (value 1): kind ebpf, procfs (eBPF could not load: see vgpud's log) or off.",
		[]string{"kind"}, nil)
	descTrackerLost = prometheus.NewDesc("vgpu_tracker_lost_events_total",
		"Process-tracker events lost (ring buffer full, slow reader); each loss is repaired by a procfs rescan.", nil, nil)

	descTicks = prometheus.NewDesc("vgpu_enforcer_ticks_total",
		"Enforcer ticks run.", nil, nil)
	descLastTick = prometheus.NewDesc("vgpu_enforcer_last_tick_timestamp_seconds",
		"Unix time the latest enforcer tick started.", nil, nil)
	descLastTickErrors = prometheus.NewDesc("vgpu_enforcer_last_tick_errors",
		"Errors in the latest enforcer tick (unreadable slice regions, failing driver queries).", nil, nil)
	descErrors = prometheus.NewDesc("vgpu_enforcer_errors_total",
		"Errors over all enforcer ticks.", nil, nil)
	descReclaimedBytes = prometheus.NewDesc("vgpu_enforcer_reclaimed_bytes_total",
		"Bytes returned to slices from processes that died without releasing them.", nil, nil)
	descReclaimedProcs = prometheus.NewDesc("vgpu_enforcer_reclaimed_processes_total",
		"Dead processes whose charge the enforcer returned.", nil, nil)
	descBackstop = prometheus.NewDesc("vgpu_enforcer_backstop_events_total",
		"Processes found using more device memory than their slice allows (each violation counted once).", nil, nil)
	descKills = prometheus.NewDesc("vgpu_enforcer_kills_total",
		"Processes the backstop killed (enforce mode).", nil, nil)
	descTamperEvents = prometheus.NewDesc("vgpu_region_tamper_events_total",
		"Slices whose region files were found changed behind vgpud's back (size, allocation or link), each counted once.", nil, nil)

	devLabels       = []string{"uuid"}
	descDeviceInfo  = prometheus.NewDesc("vgpu_device_info", "A GPU of the node (value 1).", []string{"uuid", "index", "name", "pci_bus_id", "numa_node"}, nil)
	descDeviceTotal = prometheus.NewDesc("vgpu_device_memory_total_bytes",
		"Device memory.", devLabels, nil)
	descDeviceGuaranteed = prometheus.NewDesc("vgpu_device_memory_guaranteed_bytes",
		"Memory guaranteed to slices on the device (never more than the device).", devLabels, nil)
	descDeviceAllocated = prometheus.NewDesc("vgpu_device_memory_allocated_bytes",
		"Sum of the memory limits of the slices on the device (may exceed it with burstable slices).", devLabels, nil)
	descDeviceCompute = prometheus.NewDesc("vgpu_device_compute_guaranteed_ratio",
		"Sum of the guaranteed compute shares on the device, 0..1.", devLabels, nil)
	descDeviceSlices = prometheus.NewDesc("vgpu_device_slices",
		"Slices placed on the device.", devLabels, nil)
	descDeviceDriverUsed = prometheus.NewDesc("vgpu_device_driver_used_bytes",
		"Memory the driver reports for all processes on the device (latest tick).", devLabels, nil)
	descDeviceDriverProcs = prometheus.NewDesc("vgpu_device_driver_processes",
		"Processes the driver reports on the device (latest tick).", devLabels, nil)
	descDeviceUtil = prometheus.NewDesc("vgpu_device_utilization_ratio",
		"GPU utilization over the driver's last sample period, 0..1.", devLabels, nil)

	// Every per-slice series also carries the slice's Kubernetes identity,
	// podLabels (empty for a slice no CRI container owns).
	sliceLabels    = []string{"slice", "uuid", "qos"}
	descSliceLimit = sliceDesc("vgpu_slice_memory_limit_bytes",
		"The slice's memory limit on the device.", sliceLabels, nil)
	descSliceUsed = sliceDesc("vgpu_slice_memory_used_bytes",
		"Memory libvgpu has charged to the slice on the device (its admission counter).", sliceLabels, nil)
	descSlicePeak = sliceDesc("vgpu_slice_memory_peak_bytes",
		"Highest value of vgpu_slice_memory_used_bytes since the slice was created.", sliceLabels, nil)
	descSliceDriver = sliceDesc("vgpu_slice_driver_used_bytes",
		"Memory the driver reports for the slice's processes on the device.", sliceLabels, nil)
	descSliceRefused = sliceDesc("vgpu_slice_allocations_refused_total",
		"Allocations libvgpu refused because they would exceed the slice's limit.", sliceLabels, nil)
	descSliceBackstop = sliceDesc("vgpu_slice_backstop_events_total",
		"Backstop violations in the slice on the device.", sliceLabels, nil)
	descSliceReclaimed = sliceDesc("vgpu_slice_reclaimed_bytes_total",
		"Bytes returned to the slice from dead processes on the device.", sliceLabels, nil)
	descSliceProcs = sliceDesc("vgpu_slice_processes",
		"Processes in the slice (with a slot, or attributed to it by the daemon).", []string{"slice", "qos"}, nil)
	descSliceTarget = sliceDesc("vgpu_slice_compute_target_ratio",
		"The slice's configured compute share on the device, 0..1 (absent: no share).", sliceLabels, nil)
	descSliceAllowed = sliceDesc("vgpu_slice_compute_allowed_ratio",
		"The compute share the controller currently grants the slice on the device, 0..1.", sliceLabels, nil)
	descSliceAchieved = sliceDesc("vgpu_slice_compute_achieved_ratio",
		"The share of the device's time the slice's processes used (driver-measured, ~1s average), 0..1.", sliceLabels, nil)
	descSliceTokenRate = sliceDesc("vgpu_slice_token_rate",
		"Refill rate of the slice's launch token bucket on the device, tokens (estimated device-ns) per second; 0: not throttled.", sliceLabels, nil)
	descSliceTampered = sliceDesc("vgpu_slice_tampered",
		"1 when a region file of the slice was changed behind vgpud's back (grown, shrunk, holes punched, replaced), else 0.",
		[]string{"slice", "qos"}, nil)
	descSliceInfo = sliceDesc("vgpu_slice_info",
		"A slice vgpud holds (value 1): its QoS class and compute policy (cap or share).",
		[]string{"slice", "qos", "compute_policy"}, nil)
	descSliceActivity = sliceDesc("vgpu_slice_activity_seconds",
		"Seconds the slice has been in its activity state (label state: active, idle or empty; one series per slice).",
		[]string{"slice", "state"}, nil)
	descSliceLendable = sliceDesc("vgpu_slice_lendable_bytes",
		"Memory an empty or idle slice does not use of its limit on the device (what elastic memory may lend); 0 while active.",
		[]string{"slice", "uuid"}, nil)
	descSlices = prometheus.NewDesc("vgpu_slices",
		"Slices held by vgpud, by QoS class.", []string{"qos"}, nil)

	allDescs = append([]*prometheus.Desc{
		descDaemonUp, descDaemonStart, descDaemonInfo, descTrackerInfo, descTrackerLost,
		descTicks, descLastTick, descLastTickErrors, descErrors, descReclaimedBytes, descReclaimedProcs,
		descBackstop, descKills, descTamperEvents,
		descDeviceInfo, descDeviceTotal, descDeviceGuaranteed, descDeviceAllocated, descDeviceCompute,
		descDeviceSlices, descDeviceDriverUsed, descDeviceDriverProcs, descDeviceUtil,
		descSliceLimit, descSliceUsed, descSlicePeak, descSliceDriver, descSliceRefused, descSliceBackstop,
		descSliceReclaimed, descSliceProcs, descSlices, descSliceTampered, descSliceInfo,
		descSliceTarget, descSliceAllowed, descSliceAchieved, descSliceTokenRate,
		descSliceActivity, descSliceLendable,
	}, elasticDescs...)
)

// podLabels are the label names of a slice's Kubernetes identity, from its
// owner's labels (api.Owner.Labels: vgpu-runtime copies them from the CRI
// annotations), named as dcgm-exporter names them so that the same queries
// (sum by (namespace)) work on both. A per-slice series carries them when
// its slice has them, and not at all when it has none (a vgpuctl run slice,
// a container not started by a CRI): such series are exactly what they were.
var podLabels = []string{api.OwnerLabelNamespace, api.OwnerLabelPod, api.OwnerLabelContainer}

// podDescs holds, for every per-slice description, its twin with podLabels
// appended. The twin is never registered: it has the same name (so the same
// descriptor id) as the registered one, which is what the registry checks a
// collected metric against; a family whose series differ in label names is
// valid in the exposition format, and Prometheus reads a missing label as
// an empty one.
var podDescs = map[*prometheus.Desc]*prometheus.Desc{}

// sliceDesc is prometheus.NewDesc for a per-slice series, recording its
// twin with podLabels.
func sliceDesc(name, help string, labels []string, constLabels prometheus.Labels) *prometheus.Desc {
	d := prometheus.NewDesc(name, help, labels, constLabels)
	podDescs[d] = prometheus.NewDesc(name, help, append(append([]string(nil), labels...), podLabels...), constLabels)
	return d
}

// pods maps a slice id to its podLabels values, in podLabels order.
type pods map[string][]string

// podsOf indexes the slices' owner labels (a slice with none is left out). A
// value that is not valid UTF-8 (a record edited by hand; vgpud refuses such
// a request) is mended rather than let the scrape fail.
func podsOf(slices []api.Slice) pods {
	p := make(pods, len(slices))
	for _, sl := range slices {
		if len(sl.Owner.Labels) == 0 {
			continue
		}
		vals := make([]string, len(podLabels))
		for i, k := range podLabels {
			vals[i] = strings.ToValidUTF8(sl.Owner.Labels[k], "\uFFFD")
		}
		p[sl.ID] = vals
	}
	return p
}

// gauge exports a per-slice gauge of slice id: with its podLabels when it
// has them.
func (p pods) gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, id string, labels ...string) {
	d, labels = p.with(d, id, labels)
	gauge(ch, d, v, labels...)
}

// counter is gauge for a counter.
func (p pods) counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, id string, labels ...string) {
	d, labels = p.with(d, id, labels)
	counter(ch, d, v, labels...)
}

func (p pods) with(d *prometheus.Desc, id string, labels []string) (*prometheus.Desc, []string) {
	vals, ok := p[id]
	if !ok {
		return d, labels
	}
	return podDescs[d], append(labels, vals...)
}

// collector is Metrics seen as the prometheus.Collector of the scrape-time
// metrics (a distinct type so that Metrics' own method set stays small).
type collector Metrics

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

// Collect exports the scrape-time metrics: the daemon, the enforcer's totals,
// the devices, the slices per QoS class, the compute shares and each slice's
// memory, from the source's input and the last tick's report.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	var in Input
	if c.src != nil {
		in = c.src()
	}
	c.mu.Lock()
	rep := c.last
	c.mu.Unlock()

	p := podsOf(in.Slices)
	collectDaemon(ch, in.Health, rep)
	counter(ch, descTamperEvents, float64(c.tamperEvents.Load()))
	collectDevices(ch, &in, rep)
	collectQoS(ch, in.Slices, rep, p)
	collectActivity(ch, in.Slices, in.Activity, time.Now(), p)
	collectCompute(ch, in.Compute, p)
	collectElastic(ch, in.Elastic, in.Slices, p)
	if rep != nil {
		collectSlices(ch, rep, p)
	}
}

// collectDaemon exports the daemon's own series and the enforcer's totals
// (zero before the first tick, so the counters exist from the start).
func collectDaemon(ch chan<- prometheus.Metric, h Health, rep *enforcer.TickReport) {
	gauge(ch, descDaemonUp, 1)
	if !h.StartTime.IsZero() {
		gauge(ch, descDaemonStart, float64(h.StartTime.UnixNano())/1e9)
	}
	gauge(ch, descDaemonInfo, 1, h.Version, h.EnforcerMode)
	if h.Tracker != "" {
		gauge(ch, descTrackerInfo, 1, h.Tracker)
		ch <- prometheus.MustNewConstMetric(descTrackerLost, prometheus.CounterValue, float64(h.TrackerLost))
	}

	var totals enforcer.TickTotals
	if rep != nil {
		totals = rep.Totals
		gauge(ch, descLastTick, float64(rep.Start.UnixNano())/1e9)
		gauge(ch, descLastTickErrors, float64(len(rep.Errors)))
	}
	counter(ch, descTicks, float64(totals.Ticks))
	counter(ch, descErrors, float64(totals.Errors))
	counter(ch, descReclaimedBytes, float64(totals.ReclaimedBytes))
	counter(ch, descReclaimedProcs, float64(totals.ReclaimedProcesses))
	counter(ch, descBackstop, float64(totals.BackstopEvents))
	counter(ch, descKills, float64(totals.Kills))
}

// collectDevices exports what the allocator books on each device, its
// utilization, and the driver's figures of the last tick.
func collectDevices(ch chan<- prometheus.Metric, in *Input, rep *enforcer.TickReport) {
	seenDev := make(map[string]bool, len(in.Devices))
	for _, d := range in.Devices {
		if seenDev[d.UUID] {
			continue // one series per device, whatever the source says
		}
		seenDev[d.UUID] = true
		gauge(ch, descDeviceInfo, 1, d.UUID, strconv.Itoa(d.Index), d.Name, d.PCIBusID, strconv.Itoa(d.NUMANode))
		gauge(ch, descDeviceTotal, float64(d.MemoryBytes), d.UUID)
		gauge(ch, descDeviceGuaranteed, float64(d.GuaranteedBytes), d.UUID)
		gauge(ch, descDeviceAllocated, float64(d.AllocatedBytes), d.UUID)
		gauge(ch, descDeviceCompute, d.ComputePercent/100, d.UUID)
		gauge(ch, descDeviceSlices, float64(d.Slices), d.UUID)
	}
	for uuid, u := range in.Utilization {
		gauge(ch, descDeviceUtil, u, uuid)
	}
	if rep == nil {
		return
	}
	for _, d := range rep.Devices {
		if d.Err != "" {
			continue // no figure is better than a wrong 0
		}
		gauge(ch, descDeviceDriverUsed, float64(d.ProcessBytes), d.UUID)
		gauge(ch, descDeviceDriverProcs, float64(d.Processes), d.UUID)
	}
}

// collectQoS counts slices per QoS class: the daemon's list when it has one,
// else the last tick's; and exports each listed slice's info (class and
// compute policy) and whether it was tampered with.
func collectQoS(ch chan<- prometheus.Metric, slices []api.Slice, rep *enforcer.TickReport, p pods) {
	byQoS := make(map[api.QoS]int, len(api.QoSClasses))
	for _, q := range api.QoSClasses {
		byQoS[q] = 0
	}
	if slices != nil {
		for _, s := range slices {
			byQoS[s.QoS.Normalized()]++
			tampered := 0.0
			if s.Tampered != "" {
				tampered = 1
			}
			p.gauge(ch, descSliceTampered, tampered, s.ID, s.ID, string(s.QoS.Normalized()))
			p.gauge(ch, descSliceInfo, 1, s.ID, s.ID, string(s.QoS.Normalized()), string(s.ComputePolicy.Normalized()))
		}
	} else if rep != nil {
		for _, s := range rep.Slices {
			byQoS[api.QoSOfCode(s.QoS)]++
		}
	}
	for q, n := range byQoS {
		gauge(ch, descSlices, float64(n), string(q))
	}
}

// collectActivity exports each slice's activity state, how long it has been
// in it, and what it could lend per device.
func collectActivity(ch chan<- prometheus.Metric, slices []api.Slice, activity map[string]api.SliceActivity, now time.Time, p pods) {
	for _, sl := range slices {
		a, ok := activity[sl.ID]
		if !ok {
			continue
		}
		p.gauge(ch, descSliceActivity, max(0, now.Sub(a.Since).Seconds()), sl.ID, sl.ID, a.State)
		for i, d := range sl.Devices {
			if i < len(a.LendableBytes) {
				p.gauge(ch, descSliceLendable, float64(a.LendableBytes[i]), sl.ID, sl.ID, d.UUID)
			}
		}
	}
}

// collectCompute exports each slice's compute share per device, once per
// (slice, device).
func collectCompute(ch chan<- prometheus.Metric, compute []SliceCompute, p pods) {
	seenCompute := make(map[[2]string]bool, len(compute))
	for _, c := range compute {
		if seenCompute[[2]string{c.Slice, c.UUID}] {
			continue
		}
		seenCompute[[2]string{c.Slice, c.UUID}] = true
		id, labels := c.Slice, []string{c.Slice, c.UUID, string(c.QoS.Normalized())}
		if c.Target > 0 {
			p.gauge(ch, descSliceTarget, c.Target, id, labels...)
		}
		if c.Target > 0 || c.TokenRate != 0 {
			// A slice with no share and no rate runs unthrottled: a grant of
			// "everything" would read like a figure.
			p.gauge(ch, descSliceAllowed, c.Allowed, id, labels...)
		}
		if c.Measured {
			p.gauge(ch, descSliceAchieved, c.Achieved, id, labels...)
		}
		p.gauge(ch, descSliceTokenRate, float64(c.TokenRate), id, labels...)
	}
}

// collectSlices exports each slice's processes and per-device memory from
// the last tick.
func collectSlices(ch chan<- prometheus.Metric, rep *enforcer.TickReport, p pods) {
	seenSlice := make(map[string]bool, len(rep.Slices))
	for _, s := range rep.Slices {
		if seenSlice[s.ID] {
			continue
		}
		seenSlice[s.ID] = true
		qos := string(api.QoSOfCode(s.QoS))
		p.gauge(ch, descSliceProcs, float64(len(s.Processes)), s.ID, s.ID, qos)
		for k, d := range s.Devices {
			uuid := d.UUID
			if uuid == "" {
				// A device matched by index (no uuid in the budget): name
				// it by its place in the slice so the series stay apart.
				uuid = "slice-device-" + strconv.Itoa(k)
			}
			id, labels := s.ID, []string{s.ID, uuid, qos}
			p.gauge(ch, descSliceLimit, float64(d.LimitBytes), id, labels...)
			p.gauge(ch, descSliceUsed, float64(d.UsedBytes), id, labels...)
			p.gauge(ch, descSlicePeak, float64(d.PeakBytes), id, labels...)
			if d.DriverKnown {
				p.gauge(ch, descSliceDriver, float64(d.DriverBytes), id, labels...)
			}
			p.counter(ch, descSliceRefused, float64(d.RefusedAllocs), id, labels...)
			p.counter(ch, descSliceBackstop, float64(d.BackstopEventsTotal), id, labels...)
			p.counter(ch, descSliceReclaimed, float64(d.ReclaimedBytesTotal), id, labels...)
		}
	}
}
