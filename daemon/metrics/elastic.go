package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// Elastic is what vgpud's elastic-memory broker decided over its life.
type Elastic struct {
	Grants, GrantedBytes, Refusals, Shrinks, Callbacks, Evictions uint64
}

var (
	descElasticGrants = prometheus.NewDesc("vgpu_elastic_grants_total",
		"Elastic memory requests granted (a slice over its base given more, up to its ceiling).", nil, nil)
	descElasticGrantedBytes = prometheus.NewDesc("vgpu_elastic_granted_bytes_total",
		"Bytes granted by elastic memory requests.", nil, nil)
	descElasticRefusals = prometheus.NewDesc("vgpu_elastic_refusals_total",
		"Elastic memory requests refused (above the ceiling, or not enough memory to grant; see vgpud's log).", nil, nil)
	descElasticShrinks = prometheus.NewDesc("vgpu_elastic_shrinks_total",
		"Grants taken back because a guaranteed slice needed the memory.", nil, nil)
	descElasticCallbacks = prometheus.NewDesc("vgpu_elastic_callbacks_total",
		"Loans called back because their lender became active (or was released).", nil, nil)
	descElasticEvictions = prometheus.NewDesc("vgpu_elastic_evictions_total",
		"Borrowers handed to the backstop because the device was physically short of its guarantees.", nil, nil)
	descSliceMemoryMax = sliceDesc("vgpu_slice_memory_max_bytes",
		"The slice's elastic ceiling on the device (only slices that may grow).", []string{"slice", "uuid"}, nil)
	descSliceGranted = sliceDesc("vgpu_slice_memory_granted_bytes",
		"Memory granted to the slice above its base on the device (its limit is base + granted).", []string{"slice", "uuid"}, nil)
	descSliceBorrowed = sliceDesc("vgpu_slice_memory_borrowed_bytes",
		"The part of the slice's grant lent by another slice, by lender.", []string{"slice", "uuid", "lender"}, nil)

	elasticDescs = []*prometheus.Desc{descElasticGrants, descElasticGrantedBytes, descElasticRefusals,
		descElasticShrinks, descElasticCallbacks, descElasticEvictions,
		descSliceMemoryMax, descSliceGranted, descSliceBorrowed}
)

// collectElastic exports the broker's totals and each elastic slice's
// ceiling, grant and loans.
func collectElastic(ch chan<- prometheus.Metric, e Elastic, slices []api.Slice, p pods) {
	counter(ch, descElasticGrants, float64(e.Grants))
	counter(ch, descElasticGrantedBytes, float64(e.GrantedBytes))
	counter(ch, descElasticRefusals, float64(e.Refusals))
	counter(ch, descElasticShrinks, float64(e.Shrinks))
	counter(ch, descElasticCallbacks, float64(e.Callbacks))
	counter(ch, descElasticEvictions, float64(e.Evictions))
	for _, sl := range slices {
		for _, d := range sl.Devices {
			if !d.Elastic() {
				continue
			}
			p.gauge(ch, descSliceMemoryMax, float64(d.MemoryMaxBytes), sl.ID, sl.ID, d.UUID)
			p.gauge(ch, descSliceGranted, float64(d.GrantedBytes), sl.ID, sl.ID, d.UUID)
			for _, l := range d.Loans {
				p.gauge(ch, descSliceBorrowed, float64(l.Bytes), sl.ID, sl.ID, d.UUID, l.From)
			}
		}
	}
}
