package daemon

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
)

const gib = uint64(1) << 30

// planSlice is a one-device slice on "GPU-0" for the planner.
func planSlice(id string, qos api.QoS, state string, base, maxBytes, used uint64) *elasticSlice {
	return &elasticSlice{id: id, qos: qos, state: state,
		devs:   []api.SliceDevice{{UUID: "GPU-0", MemoryBytes: base, MemoryMaxBytes: maxBytes}},
		used:   []uint64{used},
		reqs:   make([]*shm.ElasticRequest, 1),
		shrunk: make([]bool, 1)}
}

func planNode(total, physUsed uint64, ss ...*elasticSlice) *elasticInput {
	var guaranteed uint64
	for _, s := range ss {
		if s.qos.Guaranteed() {
			guaranteed += s.devs[0].MemoryBytes
		}
	}
	return &elasticInput{slices: ss, devices: map[string]*elasticDevice{
		"GPU-0": {total: total, guaranteed: guaranteed, physUsed: physUsed, known: true}}}
}

func ask(s *elasticSlice, bytes, seq uint64) { s.reqs[0] = &shm.ElasticRequest{Bytes: bytes, Seq: seq} }

func eventKinds(p *elasticPlan) []string {
	var out []string
	for _, e := range p.events {
		out = append(out, e.kind)
	}
	return out
}

// Grants come from memory no slice reserved, rounded up to the grant step and
// bounded by the ceiling; a request above the ceiling, or one the device
// cannot hold by the driver's figures, is answered without a grant.
func TestPlanGrantsFromThePool(t *testing.T) {
	g := planSlice("g", api.QoSGuaranteed, api.ActivityActive, 8*gib, 0, 4*gib)
	b := planSlice("b", api.QoSBurstable, api.ActivityActive, 2*gib, 6*gib, 2*gib)
	ask(b, 3*gib+1, 7)
	p := planElastic(planNode(16*gib, 6*gib, g, b), false)
	require.Equal(t, []string{evGrant}, eventKinds(p))
	require.Equal(t, gib+grantStep, b.devs[0].GrantedBytes, "1 GiB + 1 byte asked, rounded up to the step")
	require.Empty(t, b.devs[0].Loans)
	require.True(t, b.changed)
	require.Equal(t, []elasticAnswer{{slice: b, dev: 0, seq: 7}}, p.answers)

	b2 := planSlice("b", api.QoSBurstable, api.ActivityActive, 2*gib, 6*gib, 2*gib)
	ask(b2, 7*gib, 8)
	p = planElastic(planNode(16*gib, 6*gib, g, b2), false)
	require.Equal(t, []string{evRefuse}, eventKinds(p), "above the ceiling")
	require.Zero(t, b2.devs[0].GrantedBytes)
	require.Len(t, p.answers, 1, "a refusal is an answer too")

	b3 := planSlice("b", api.QoSBurstable, api.ActivityActive, 2*gib, 6*gib, 2*gib)
	ask(b3, 5*gib, 9)
	p = planElastic(planNode(16*gib, 14*gib, g, b3), false)
	require.Equal(t, []string{evRefuse}, eventKinds(p), "the driver says the device is nearly full")
	require.Zero(t, b3.devs[0].GrantedBytes)
}

// Two requesters in one plan never get more than the device holds: a grant
// counts as used from the moment it is made.
func TestPlanConcurrentRequestersStayWithinTheDevice(t *testing.T) {
	a := planSlice("a", api.QoSBurstable, api.ActivityActive, 2*gib, 12*gib, 2*gib)
	b := planSlice("b", api.QoSBurstable, api.ActivityActive, 2*gib, 12*gib, 2*gib)
	ask(a, 10*gib, 1)
	ask(b, 10*gib, 1)
	p := planElastic(planNode(16*gib, 4*gib, a, b), false)
	require.Equal(t, []string{evGrant, evRefuse}, eventKinds(p))
	require.Equal(t, 8*gib, a.devs[0].GrantedBytes)
	require.Zero(t, b.devs[0].GrantedBytes, "4 GiB left: b's 8 GiB does not fit")
}

// A burstable slice borrows an idle guaranteed slice's unused base once the
// pool is spent; a guaranteed slice never borrows; an active one never lends.
func TestPlanBorrowsFromIdleGuaranteed(t *testing.T) {
	lender := planSlice("lender", api.QoSGuaranteed, api.ActivityIdle, 12*gib, 0, gib)
	b := planSlice("b", api.QoSBurstable, api.ActivityActive, 2*gib, 12*gib, 2*gib)
	ask(b, 10*gib, 3)
	p := planElastic(planNode(16*gib, 3*gib, lender, b), false)
	require.Equal(t, []string{evGrant}, eventKinds(p))
	require.Equal(t, 8*gib, b.devs[0].GrantedBytes)
	require.Equal(t, []api.Loan{{From: "lender", Bytes: 4 * gib}}, b.devs[0].Loans, "4 GiB unreserved, 4 GiB lent")

	gb := planSlice("gb", api.QoSGuaranteed, api.ActivityActive, 2*gib, 12*gib, 2*gib)
	lender2 := planSlice("lender", api.QoSGuaranteed, api.ActivityIdle, 12*gib, 0, gib)
	ask(gb, 10*gib, 1)
	p = planElastic(planNode(16*gib, 3*gib, lender2, gb), false)
	require.Equal(t, []string{evRefuse}, eventKinds(p), "a guaranteed slice grows only into unreserved memory (2 GiB)")

	active := planSlice("lender", api.QoSGuaranteed, api.ActivityActive, 12*gib, 0, gib)
	b2 := planSlice("b", api.QoSBurstable, api.ActivityActive, 2*gib, 12*gib, 2*gib)
	ask(b2, 10*gib, 1)
	p = planElastic(planNode(16*gib, 3*gib, active, b2), false)
	require.Equal(t, []string{evRefuse}, eventKinds(p), "an active slice lends nothing")
}

// A lender waking calls its loans back: the borrower's limit drops and what
// it holds above it is allowed until the device is physically short of what
// the guaranteed slices are owed; then the borrowers over their limits are
// evicted, best-effort first, the largest overage first. Never a guaranteed
// slice.
func TestPlanCallBackAndEvict(t *testing.T) {
	borrower := func(id string, qos api.QoS, used uint64) *elasticSlice {
		s := planSlice(id, qos, api.ActivityActive, 2*gib, 12*gib, used)
		s.devs[0].GrantedBytes = 4 * gib
		s.devs[0].Loans = []api.Loan{{From: "lender", Bytes: 4 * gib}}
		return s
	}
	lender := planSlice("lender", api.QoSGuaranteed, api.ActivityActive, 8*gib, 0, gib)
	b := borrower("b", api.QoSBurstable, 5*gib)
	p := planElastic(planNode(16*gib, 6*gib, lender, b), false)
	require.Equal(t, []string{evCallback}, eventKinds(p), "10 GiB free: the lender's 7 GiB owed fit")
	require.Zero(t, b.devs[0].GrantedBytes)
	require.Empty(t, b.devs[0].Loans)
	require.True(t, b.shrunk[0], "5 GiB held over a 2 GiB limit")
	require.Empty(t, p.evict)

	// An idle lender keeps lending; one that woke (opened, allocated) does not.
	idle := planSlice("lender", api.QoSGuaranteed, api.ActivityIdle, 8*gib, 0, gib)
	b = borrower("b", api.QoSBurstable, 5*gib)
	p = planElastic(planNode(16*gib, 6*gib, idle, b), false)
	require.Empty(t, p.events)
	require.Equal(t, 4*gib, b.devs[0].GrantedBytes)
	idle.woke = true
	p = planElastic(planNode(16*gib, 6*gib, idle, b), false)
	require.Equal(t, []string{evCallback}, eventKinds(p))

	lender = planSlice("lender", api.QoSGuaranteed, api.ActivityActive, 8*gib, 0, gib)
	be := borrower("be", api.QoSBestEffort, 4*gib)
	bu := borrower("bu", api.QoSBurstable, 6*gib)
	p = planElastic(planNode(16*gib, 11*gib, lender, be, bu), false)
	// Owed 7 GiB, 5 GiB free: 2 GiB short. The best-effort one goes first
	// even though the burstable one is further over.
	require.Equal(t, []string{evCallback, evCallback, evEvict}, eventKinds(p))
	require.Equal(t, map[string][]bool{"be": {true}}, p.evict)
}

// A guaranteed slice placed into memory that had been granted takes it back:
// the pool's grants shrink, best-effort first.
func TestPlanShrinksAnOverdrawnPool(t *testing.T) {
	g := planSlice("g", api.QoSGuaranteed, api.ActivityActive, 10*gib, 0, 0)
	be := planSlice("be", api.QoSBestEffort, api.ActivityActive, gib, 8*gib, gib)
	be.devs[0].GrantedBytes = 3 * gib
	bu := planSlice("bu", api.QoSBurstable, api.ActivityActive, gib, 8*gib, gib)
	bu.devs[0].GrantedBytes = 4 * gib
	p := planElastic(planNode(16*gib, 2*gib, g, be, bu), false)
	// 6 GiB unreserved, 7 GiB granted: 1 GiB back, from the best-effort slice.
	require.Equal(t, []string{evShrink}, eventKinds(p))
	require.Equal(t, 2*gib, be.devs[0].GrantedBytes)
	require.Equal(t, 4*gib, bu.devs[0].GrantedBytes)
}

// An empty slice gives back what it was granted and does not use, its
// lenders repaid last-first; what it still holds above its base is kept.
func TestPlanEmptySliceGivesBack(t *testing.T) {
	lender := planSlice("lender", api.QoSGuaranteed, api.ActivityIdle, 8*gib, 0, 0)
	e := planSlice("e", api.QoSBurstable, api.ActivityEmpty, 2*gib, 12*gib, 3*gib)
	e.devs[0].GrantedBytes = 6 * gib
	e.devs[0].Loans = []api.Loan{{From: "lender", Bytes: 4 * gib}}
	p := planElastic(planNode(16*gib, 3*gib, lender, e), false)
	require.Equal(t, []string{evShrink}, eventKinds(p))
	require.Equal(t, gib, e.devs[0].GrantedBytes, "keeps the 1 GiB it holds above its base")
	require.Equal(t, []api.Loan{{From: "lender", Bytes: gib}}, e.devs[0].Loans)
	require.True(t, e.changed)
}
