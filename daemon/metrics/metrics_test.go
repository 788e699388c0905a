package metrics

import (
	"io"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/enforcer"
	"github.com/vgpu-project/vgpu/shm"
)

const (
	uuidA = "GPU-aaaaaaaa-0000-4000-8000-000000000001"
	uuidB = "GPU-bbbbbbbb-0000-4000-8000-000000000002"
)

func testInput() Input {
	return Input{
		Devices: []api.Device{
			{Index: 0, UUID: uuidA, Name: "H100", MemoryBytes: 80 << 30, Minor: 0, PCIBusID: "00000000:01:00.0",
				NUMANode: 0, GuaranteedBytes: 8 << 30, AllocatedBytes: 12 << 30, ComputePercent: 50, Slices: 2},
			{Index: 1, UUID: uuidB, Name: "H100", MemoryBytes: 80 << 30, Minor: 1, PCIBusID: "00000000:02:00.0",
				NUMANode: -1},
		},
		Slices: []api.Slice{
			{ID: "a", QoS: api.QoSGuaranteed},
			{ID: "b", QoS: api.QoSBurstable, ComputePolicy: api.ComputePolicyShare},
			{ID: "c", QoS: ""}, // the default class, the default policy (cap)
		},
		Utilization: map[string]float64{uuidA: 0.25},
		Health: Health{Version: "v0.3.0", StartTime: time.Unix(1700000000, 500000000),
			EnforcerMode: "enforce"},
	}
}

func testReport() *enforcer.TickReport {
	return &enforcer.TickReport{
		Seq:      7,
		Start:    time.Unix(1700000100, 0),
		Duration: 300 * time.Microsecond,
		Slices: []enforcer.SliceSnapshot{
			{ID: "a", QoS: shm.QoSGuaranteed, Devices: []enforcer.SliceDeviceSnapshot{{
				UUID: uuidA, LimitBytes: 4 << 30, UsedBytes: 1 << 30, PeakBytes: 2 << 30, RefusedAllocs: 3,
				DriverBytes: 1 << 30, DriverKnown: true, ReclaimedBytesTotal: 512 << 20, BackstopEventsTotal: 1,
			}}, Processes: []enforcer.ProcessSnapshot{{PID: 10, HostPID: 10, UsedBytes: []uint64{1 << 30}}}},
			{ID: "b", QoS: shm.QoSBurstable, Devices: []enforcer.SliceDeviceSnapshot{
				{UUID: uuidA, LimitBytes: 8 << 30},
				{UUID: "", LimitBytes: 1 << 30}, // matched by index, driver figure unknown
			}},
		},
		Devices: []enforcer.DriverDevice{
			{UUID: uuidA, Processes: 2, ProcessBytes: 3 << 30},
			{UUID: uuidB, Err: "NVML: GPU is lost"},
		},
		Errors: []enforcer.TickError{{Device: uuidB, Err: "driver processes: NVML: GPU is lost"}},
		Totals: enforcer.TickTotals{Ticks: 7, ReclaimedBytes: 512 << 20, ReclaimedProcesses: 1,
			BackstopEvents: 1, Kills: 1, Errors: 3},
	}
}

func TestCollectAndCompare(t *testing.T) {
	m := New(testInput)
	m.ObserveTick(testReport())
	expected := `
# HELP vgpu_elastic_callbacks_total Loans called back because their lender became active (or was released).
# TYPE vgpu_elastic_callbacks_total counter
vgpu_elastic_callbacks_total 0
# HELP vgpu_elastic_evictions_total Borrowers handed to the backstop because the device was physically short of its guarantees.
# TYPE vgpu_elastic_evictions_total counter
vgpu_elastic_evictions_total 0
# HELP vgpu_elastic_granted_bytes_total Bytes granted by elastic memory requests.
# TYPE vgpu_elastic_granted_bytes_total counter
vgpu_elastic_granted_bytes_total 0
# HELP vgpu_elastic_grants_total Elastic memory requests granted (a slice over its base given more, up to its ceiling).
# TYPE vgpu_elastic_grants_total counter
vgpu_elastic_grants_total 0
# HELP vgpu_elastic_refusals_total Elastic memory requests refused (above the ceiling, or not enough memory to grant; see vgpud's log).
# TYPE vgpu_elastic_refusals_total counter
vgpu_elastic_refusals_total 0
# HELP vgpu_elastic_shrinks_total Grants taken back because a guaranteed slice needed the memory.
# TYPE vgpu_elastic_shrinks_total counter
vgpu_elastic_shrinks_total 0
# HELP vgpu_daemon_info vgpud's version and enforcer mode (value 1).
# TYPE vgpu_daemon_info gauge
vgpu_daemon_info{enforcer_mode="enforce",version="v0.3.0"} 1
# HELP vgpu_daemon_start_time_seconds Unix time vgpud started.
# TYPE vgpu_daemon_start_time_seconds gauge
vgpu_daemon_start_time_seconds 1.7000000005e+09
# HELP vgpu_daemon_up 1 while vgpud serves metrics.
# TYPE vgpu_daemon_up gauge
vgpu_daemon_up 1
# HELP vgpu_device_compute_guaranteed_ratio Sum of the guaranteed compute shares on the device, 0..1.
# TYPE vgpu_device_compute_guaranteed_ratio gauge
vgpu_device_compute_guaranteed_ratio{uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 0.5
vgpu_device_compute_guaranteed_ratio{uuid="GPU-bbbbbbbb-0000-4000-8000-000000000002"} 0
# HELP vgpu_device_driver_processes Processes the driver reports on the device (latest tick).
# TYPE vgpu_device_driver_processes gauge
vgpu_device_driver_processes{uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 2
# HELP vgpu_device_driver_used_bytes Memory the driver reports for all processes on the device (latest tick).
# TYPE vgpu_device_driver_used_bytes gauge
vgpu_device_driver_used_bytes{uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 3.221225472e+09
# HELP vgpu_device_info A GPU of the node (value 1).
# TYPE vgpu_device_info gauge
vgpu_device_info{index="0",name="H100",numa_node="0",pci_bus_id="00000000:01:00.0",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 1
vgpu_device_info{index="1",name="H100",numa_node="-1",pci_bus_id="00000000:02:00.0",uuid="GPU-bbbbbbbb-0000-4000-8000-000000000002"} 1
# HELP vgpu_device_memory_allocated_bytes Sum of the memory limits of the slices on the device (may exceed it with burstable slices).
# TYPE vgpu_device_memory_allocated_bytes gauge
vgpu_device_memory_allocated_bytes{uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 1.2884901888e+10
vgpu_device_memory_allocated_bytes{uuid="GPU-bbbbbbbb-0000-4000-8000-000000000002"} 0
# HELP vgpu_device_memory_guaranteed_bytes Memory guaranteed to slices on the device (never more than the device).
# TYPE vgpu_device_memory_guaranteed_bytes gauge
vgpu_device_memory_guaranteed_bytes{uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 8.589934592e+09
vgpu_device_memory_guaranteed_bytes{uuid="GPU-bbbbbbbb-0000-4000-8000-000000000002"} 0
# HELP vgpu_device_memory_total_bytes Device memory.
# TYPE vgpu_device_memory_total_bytes gauge
vgpu_device_memory_total_bytes{uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 8.589934592e+10
vgpu_device_memory_total_bytes{uuid="GPU-bbbbbbbb-0000-4000-8000-000000000002"} 8.589934592e+10
# HELP vgpu_device_slices Slices placed on the device.
# TYPE vgpu_device_slices gauge
vgpu_device_slices{uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 2
vgpu_device_slices{uuid="GPU-bbbbbbbb-0000-4000-8000-000000000002"} 0
# HELP vgpu_device_utilization_ratio GPU utilization over the driver's last sample period, 0..1.
# TYPE vgpu_device_utilization_ratio gauge
vgpu_device_utilization_ratio{uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 0.25
# HELP vgpu_enforcer_backstop_events_total Processes found using more device memory than their slice allows (each violation counted once).
# TYPE vgpu_enforcer_backstop_events_total counter
vgpu_enforcer_backstop_events_total 1
# HELP vgpu_enforcer_errors_total Errors over all enforcer ticks.
# TYPE vgpu_enforcer_errors_total counter
vgpu_enforcer_errors_total 3
# HELP vgpu_enforcer_kills_total Processes the backstop killed (enforce mode).
# TYPE vgpu_enforcer_kills_total counter
vgpu_enforcer_kills_total 1
# HELP vgpu_enforcer_last_tick_errors Errors in the latest enforcer tick (unreadable slice regions, failing driver queries).
# TYPE vgpu_enforcer_last_tick_errors gauge
vgpu_enforcer_last_tick_errors 1
# HELP vgpu_enforcer_last_tick_timestamp_seconds Unix time the latest enforcer tick started.
# TYPE vgpu_enforcer_last_tick_timestamp_seconds gauge
vgpu_enforcer_last_tick_timestamp_seconds 1.7000001e+09
# HELP vgpu_enforcer_reclaimed_bytes_total Bytes returned to slices from processes that died without releasing them.
# TYPE vgpu_enforcer_reclaimed_bytes_total counter
vgpu_enforcer_reclaimed_bytes_total 5.36870912e+08
# HELP vgpu_enforcer_reclaimed_processes_total Dead processes whose charge the enforcer returned.
# TYPE vgpu_enforcer_reclaimed_processes_total counter
vgpu_enforcer_reclaimed_processes_total 1
# HELP vgpu_region_tamper_events_total Slices whose region files were found changed behind vgpud's back (size, allocation or link), each counted once.
# TYPE vgpu_region_tamper_events_total counter
vgpu_region_tamper_events_total 0
# HELP vgpu_enforcer_ticks_total Enforcer ticks run.
# TYPE vgpu_enforcer_ticks_total counter
vgpu_enforcer_ticks_total 7
# HELP vgpu_slice_allocations_refused_total Allocations libvgpu refused because they would exceed the slice's limit.
# TYPE vgpu_slice_allocations_refused_total counter
vgpu_slice_allocations_refused_total{qos="burstable",slice="b",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 0
vgpu_slice_allocations_refused_total{qos="burstable",slice="b",uuid="slice-device-1"} 0
vgpu_slice_allocations_refused_total{qos="guaranteed",slice="a",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 3
# HELP vgpu_slice_backstop_events_total Backstop violations in the slice on the device.
# TYPE vgpu_slice_backstop_events_total counter
vgpu_slice_backstop_events_total{qos="burstable",slice="b",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 0
vgpu_slice_backstop_events_total{qos="burstable",slice="b",uuid="slice-device-1"} 0
vgpu_slice_backstop_events_total{qos="guaranteed",slice="a",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 1
# HELP vgpu_slice_driver_used_bytes Memory the driver reports for the slice's processes on the device.
# TYPE vgpu_slice_driver_used_bytes gauge
vgpu_slice_driver_used_bytes{qos="guaranteed",slice="a",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 1.073741824e+09
# HELP vgpu_slice_info A slice vgpud holds (value 1): its QoS class and compute policy (cap or share).
# TYPE vgpu_slice_info gauge
vgpu_slice_info{compute_policy="cap",qos="guaranteed",slice="a"} 1
vgpu_slice_info{compute_policy="cap",qos="guaranteed",slice="c"} 1
vgpu_slice_info{compute_policy="share",qos="burstable",slice="b"} 1
# HELP vgpu_slice_memory_limit_bytes The slice's memory limit on the device.
# TYPE vgpu_slice_memory_limit_bytes gauge
vgpu_slice_memory_limit_bytes{qos="burstable",slice="b",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 8.589934592e+09
vgpu_slice_memory_limit_bytes{qos="burstable",slice="b",uuid="slice-device-1"} 1.073741824e+09
vgpu_slice_memory_limit_bytes{qos="guaranteed",slice="a",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 4.294967296e+09
# HELP vgpu_slice_memory_peak_bytes Highest value of vgpu_slice_memory_used_bytes since the slice was created.
# TYPE vgpu_slice_memory_peak_bytes gauge
vgpu_slice_memory_peak_bytes{qos="burstable",slice="b",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 0
vgpu_slice_memory_peak_bytes{qos="burstable",slice="b",uuid="slice-device-1"} 0
vgpu_slice_memory_peak_bytes{qos="guaranteed",slice="a",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 2.147483648e+09
# HELP vgpu_slice_memory_used_bytes Memory libvgpu has charged to the slice on the device (its admission counter).
# TYPE vgpu_slice_memory_used_bytes gauge
vgpu_slice_memory_used_bytes{qos="burstable",slice="b",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 0
vgpu_slice_memory_used_bytes{qos="burstable",slice="b",uuid="slice-device-1"} 0
vgpu_slice_memory_used_bytes{qos="guaranteed",slice="a",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 1.073741824e+09
# HELP vgpu_slice_processes Processes in the slice (with a slot, or attributed to it by the daemon).
# TYPE vgpu_slice_processes gauge
vgpu_slice_processes{qos="burstable",slice="b"} 0
vgpu_slice_processes{qos="guaranteed",slice="a"} 1
# HELP vgpu_slice_reclaimed_bytes_total Bytes returned to the slice from dead processes on the device.
# TYPE vgpu_slice_reclaimed_bytes_total counter
vgpu_slice_reclaimed_bytes_total{qos="burstable",slice="b",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 0
vgpu_slice_reclaimed_bytes_total{qos="burstable",slice="b",uuid="slice-device-1"} 0
vgpu_slice_reclaimed_bytes_total{qos="guaranteed",slice="a",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 5.36870912e+08
# HELP vgpu_slice_tampered 1 when a region file of the slice was changed behind vgpud's back (grown, shrunk, holes punched, replaced), else 0.
# TYPE vgpu_slice_tampered gauge
vgpu_slice_tampered{qos="burstable",slice="b"} 0
vgpu_slice_tampered{qos="guaranteed",slice="a"} 0
vgpu_slice_tampered{qos="guaranteed",slice="c"} 0
# HELP vgpu_slices Slices held by vgpud, by QoS class.
# TYPE vgpu_slices gauge
vgpu_slices{qos="best-effort"} 0
vgpu_slices{qos="burstable"} 1
vgpu_slices{qos="guaranteed"} 2
`
	require.NoError(t, testutil.CollectAndCompare((*collector)(m), strings.NewReader(expected)))

	// The tick histogram counted the tick.
	hist := `
# HELP vgpu_enforcer_tick_duration_seconds Wall time of each enforcer tick.
# TYPE vgpu_enforcer_tick_duration_seconds histogram
vgpu_enforcer_tick_duration_seconds_bucket{le="5e-05"} 0
vgpu_enforcer_tick_duration_seconds_bucket{le="0.0001"} 0
vgpu_enforcer_tick_duration_seconds_bucket{le="0.0002"} 0
vgpu_enforcer_tick_duration_seconds_bucket{le="0.0004"} 1
vgpu_enforcer_tick_duration_seconds_bucket{le="0.0008"} 1
vgpu_enforcer_tick_duration_seconds_bucket{le="0.0016"} 1
vgpu_enforcer_tick_duration_seconds_bucket{le="0.0032"} 1
vgpu_enforcer_tick_duration_seconds_bucket{le="0.0064"} 1
vgpu_enforcer_tick_duration_seconds_bucket{le="0.0128"} 1
vgpu_enforcer_tick_duration_seconds_bucket{le="0.0256"} 1
vgpu_enforcer_tick_duration_seconds_bucket{le="0.0512"} 1
vgpu_enforcer_tick_duration_seconds_bucket{le="0.1024"} 1
vgpu_enforcer_tick_duration_seconds_bucket{le="+Inf"} 1
vgpu_enforcer_tick_duration_seconds_sum 0.0003
vgpu_enforcer_tick_duration_seconds_count 1
`
	require.NoError(t, testutil.GatherAndCompare(m.Registry(), strings.NewReader(hist),
		"vgpu_enforcer_tick_duration_seconds"))
}

// Before any tick and without a source, the daemon's metrics are still
// valid: counters at 0, every QoS class at 0, no per-slice series.
func TestNoTickNoSource(t *testing.T) {
	m := New(nil)
	expected := `
# HELP vgpu_enforcer_ticks_total Enforcer ticks run.
# TYPE vgpu_enforcer_ticks_total counter
vgpu_enforcer_ticks_total 0
# HELP vgpu_slices Slices held by vgpud, by QoS class.
# TYPE vgpu_slices gauge
vgpu_slices{qos="best-effort"} 0
vgpu_slices{qos="burstable"} 0
vgpu_slices{qos="guaranteed"} 0
`
	require.NoError(t, testutil.CollectAndCompare((*collector)(m), strings.NewReader(expected),
		"vgpu_enforcer_ticks_total", "vgpu_slices", "vgpu_slice_memory_used_bytes"))
	m.ObserveTick(nil) // ignored
	require.Equal(t, 0, testutil.CollectAndCount((*collector)(m), "vgpu_enforcer_last_tick_errors"))
}

// Slice classes come from the tick when the source gives no slice list; a
// slice repeated by a confused source is exported once.
func TestSlicesFromTickAndDuplicates(t *testing.T) {
	in := testInput()
	in.Slices = nil
	in.Devices = append(in.Devices, in.Devices[0])
	m := New(func() Input { return in })
	rep := testReport()
	rep.Slices = append(rep.Slices, rep.Slices[0])
	m.ObserveTick(rep)
	expected := `
# HELP vgpu_slices Slices held by vgpud, by QoS class.
# TYPE vgpu_slices gauge
vgpu_slices{qos="best-effort"} 0
vgpu_slices{qos="burstable"} 1
vgpu_slices{qos="guaranteed"} 2
`
	require.NoError(t, testutil.CollectAndCompare((*collector)(m), strings.NewReader(expected), "vgpu_slices"))
	require.Equal(t, 2, testutil.CollectAndCount((*collector)(m), "vgpu_device_memory_total_bytes"))
	require.Equal(t, 3, testutil.CollectAndCount((*collector)(m), "vgpu_slice_memory_limit_bytes"))
}

// Names, units and help texts follow the Prometheus conventions (promlint).
func TestLint(t *testing.T) {
	m := New(testInput)
	m.ObserveTick(testReport())
	problems, err := testutil.CollectAndLint((*collector)(m))
	require.NoError(t, err)
	require.Empty(t, problems)
	problems, err = testutil.GatherAndLint(m.Registry())
	require.NoError(t, err)
	require.Empty(t, problems)
}

// The handler serves the registry in the text format, with the slice metrics.
func TestHandler(t *testing.T) {
	m := New(testInput)
	m.ObserveTick(testReport())
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	text := string(body)
	require.Contains(t, text, `vgpu_slice_memory_limit_bytes{qos="guaranteed",slice="a",uuid="`+uuidA+`"} 4.294967296e+09`)
	require.Contains(t, text, "vgpu_enforcer_tick_duration_seconds_count 1")
	require.Contains(t, text, "go_goroutines")
	require.Contains(t, text, "process_start_time_seconds")
}

// Every vgpu_ metric the collector can produce is documented in README.md.
func TestEveryMetricDocumented(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`(vgpu_[a-z_]+)`").FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = true
	}
	nameRE := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	var names []string
	for _, d := range allDescs {
		names = append(names, nameRE.FindStringSubmatch(d.String())[1])
	}
	names = append(names, "vgpu_enforcer_tick_duration_seconds", "vgpu_elastic_decision_seconds")
	sort.Strings(names)
	for _, n := range names {
		require.True(t, documented[n], "metric %s is not documented in daemon/metrics/README.md", n)
	}
	for n := range documented {
		require.Contains(t, names, n, "README.md documents %s, which does not exist", n)
	}
}

// Compute shares per slice device: target only for a slice with a share,
// allowed for a share or a token rate, achieved only when measured, the token
// rate always; the default QoS class is named.
func TestComputeShares(t *testing.T) {
	in := testInput()
	in.Compute = []SliceCompute{
		{Slice: "a", UUID: uuidA, QoS: api.QoSGuaranteed, Target: 0.3, Allowed: 0.3, Achieved: 0.296,
			Measured: true, TokenRate: 312_000_000},
		{Slice: "a", UUID: uuidA, QoS: api.QoSGuaranteed, Target: 0.9}, // repeated: exported once
		// No share, not throttled, measured.
		{Slice: "b", UUID: uuidA, QoS: api.QoSBurstable, Allowed: 1, Achieved: 0.5, Measured: true},
		// No share but held to a floor by a higher priority: throttled.
		{Slice: "c", UUID: uuidB, Allowed: 0.01, TokenRate: 10_000_000},
		// A share, not measured (no NVML per-process figures).
		{Slice: "d", UUID: uuidB, QoS: api.QoSBestEffort, Target: 0.5, Allowed: 0.5, TokenRate: 500_000_000},
	}
	m := New(func() Input { return in })
	expected := `
# HELP vgpu_slice_compute_achieved_ratio The share of the device's time the slice's processes used (driver-measured, ~1s average), 0..1.
# TYPE vgpu_slice_compute_achieved_ratio gauge
vgpu_slice_compute_achieved_ratio{qos="burstable",slice="b",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 0.5
vgpu_slice_compute_achieved_ratio{qos="guaranteed",slice="a",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 0.296
# HELP vgpu_slice_compute_allowed_ratio The compute share the controller currently grants the slice on the device, 0..1.
# TYPE vgpu_slice_compute_allowed_ratio gauge
vgpu_slice_compute_allowed_ratio{qos="best-effort",slice="d",uuid="GPU-bbbbbbbb-0000-4000-8000-000000000002"} 0.5
vgpu_slice_compute_allowed_ratio{qos="guaranteed",slice="a",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 0.3
vgpu_slice_compute_allowed_ratio{qos="guaranteed",slice="c",uuid="GPU-bbbbbbbb-0000-4000-8000-000000000002"} 0.01
# HELP vgpu_slice_compute_target_ratio The slice's configured compute share on the device, 0..1 (absent: no share).
# TYPE vgpu_slice_compute_target_ratio gauge
vgpu_slice_compute_target_ratio{qos="best-effort",slice="d",uuid="GPU-bbbbbbbb-0000-4000-8000-000000000002"} 0.5
vgpu_slice_compute_target_ratio{qos="guaranteed",slice="a",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 0.3
# HELP vgpu_slice_token_rate Refill rate of the slice's launch token bucket on the device, tokens (estimated device-ns) per second; 0: not throttled.
# TYPE vgpu_slice_token_rate gauge
vgpu_slice_token_rate{qos="best-effort",slice="d",uuid="GPU-bbbbbbbb-0000-4000-8000-000000000002"} 5e+08
vgpu_slice_token_rate{qos="burstable",slice="b",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 0
vgpu_slice_token_rate{qos="guaranteed",slice="a",uuid="GPU-aaaaaaaa-0000-4000-8000-000000000001"} 3.12e+08
vgpu_slice_token_rate{qos="guaranteed",slice="c",uuid="GPU-bbbbbbbb-0000-4000-8000-000000000002"} 1e+07
`
	require.NoError(t, testutil.CollectAndCompare((*collector)(m), strings.NewReader(expected),
		"vgpu_slice_compute_target_ratio", "vgpu_slice_compute_allowed_ratio",
		"vgpu_slice_compute_achieved_ratio", "vgpu_slice_token_rate"))

	problems, err := testutil.CollectAndLint((*collector)(m))
	require.NoError(t, err)
	require.Empty(t, problems)

	// Without compute figures (no tick yet) there are no such series.
	in.Compute = nil
	require.Zero(t, testutil.CollectAndCount((*collector)(m), "vgpu_slice_compute_target_ratio",
		"vgpu_slice_token_rate"))
}
