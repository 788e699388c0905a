package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// A slice whose record says tampered exports 1, the others 0; every
// ObserveTamper counts one event.
func TestSliceTampered(t *testing.T) {
	m := New(func() Input {
		in := testInput()
		in.Slices[1].Tampered = "usage file grown to 8192 bytes (mapped 4096)"
		return in
	})
	m.ObserveTamper()
	m.ObserveTamper()
	expected := `
# HELP vgpu_region_tamper_events_total Slices whose region files were found changed behind vgpud's back (size, allocation or link), each counted once.
# TYPE vgpu_region_tamper_events_total counter
vgpu_region_tamper_events_total 2
# HELP vgpu_slice_tampered 1 when a region file of the slice was changed behind vgpud's back (grown, shrunk, holes punched, replaced), else 0.
# TYPE vgpu_slice_tampered gauge
vgpu_slice_tampered{qos="burstable",slice="b"} 1
vgpu_slice_tampered{qos="guaranteed",slice="a"} 0
vgpu_slice_tampered{qos="guaranteed",slice="c"} 0
`
	require.NoError(t, testutil.CollectAndCompare((*collector)(m), strings.NewReader(expected),
		"vgpu_region_tamper_events_total", "vgpu_slice_tampered"))
}
