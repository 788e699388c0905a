package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// vmmPaths are the interception paths the VMM tests run through: linked symbols,
// dlsym and both cuGetProcAddress forms.
var vmmPaths = []string{"linked", "dlsym", "gpa:12000", "gpa2:12000", "gpaself"}

// startVMM runs build/test/vmm_escape with a scenario and checks that cuMemMap
// and cuMemUnmap (with the rest of the VMM API libvgpu hooks) reached libvgpu on
// the path.
func startVMM(t *testing.T, f *fixture, path, scenario string, extra ...string) *proc {
	t.Helper()
	_, err := os.Stat(filepath.Join(f.root, "build/test/vmm_escape"))
	require.NoError(t, err, "run `make build` first")
	args := append([]string{"--path", path, "--scenario", scenario, "--chunk", "64MiB", "--step"},
		extra...)
	p := start(t, f.env(), "vmm_escape", args...)
	h := p.expect("HOOKS")
	checkHooks(t, h, false)
	return p
}

// TestMustShowVMMReleaseWhileMappedStaysCharged: a program that creates 64 MiB,
// maps it and releases the handle while keeping the mapping (the driver keeps the
// memory: it is still usable through the mapping) must stop with
// CUDA_ERROR_OUT_OF_MEMORY having held no more than its 2 GiB slice, libvgpu's
// charge equal to the driver's figure after every round; unmapping everything
// returns the charge.
func TestMustShowVMMReleaseWhileMappedStaysCharged(t *testing.T) {
	for _, path := range vmmPaths {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			const ovh = 256 * MiB
			f := newFixture(t, fixtureOpts{ovh: ovh, limit: 2 * GiB, physical: 8 * GiB})
			p := startVMM(t, f, path, "escape")
			pid := p.pid()
			p.phase("ready")
			f.requireAgree(pid, ovh, "context held")
			p.next()
			var held uint64
			for {
				kind, l := p.expectEither("HELD ", "RESULT ")
				if kind == "RESULT " {
					require.Equal(t, "2", l["err"], "stopped with %v", l)
					require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", l["name"])
					require.Equal(t, held, num(t, l, "admitted"))
					break
				}
				held = num(t, l, "bytes")
				p.phase("held")
				require.LessOrEqual(t, held+ovh, f.limit,
					"%s held through mappings of released handles, past the slice", mib(held))
				f.requireAgree(pid, ovh+held, fmt.Sprintf("%s created, mapped, released", mib(held)))
				require.Equal(t, ovh+held, f.used())
				p.next()
			}
			require.Greater(t, held+ovh+chunk, f.limit,
				"refused although another chunk fit (%s held)", mib(held))
			p.phase("full")
			f.requireAgree(pid, ovh+held, "at OOM")
			require.Equal(t, ovh+held, f.simStatus().Devices[0].Used,
				"the node holds exactly what the slice charged")
			require.GreaterOrEqual(t, f.sl.Usage.Device(0).RefusedAllocs, uint64(1))
			p.next()
			p.phase("unmapped")
			f.requireAgree(pid, ovh, "every mapping unmapped")
			require.Equal(t, ovh, f.used())
			p.next()
			p.phase("end")
			f.requireAgree(pid, 0, "context released")
			require.Equal(t, uint64(0), f.used())
			p.next()
			p.waitOK()
			require.Equal(t, uint64(0), f.used())
			require.Empty(t, f.sl.Usage.Slots())
		})
	}
}

// TestVMMReleaseAndUnmapOrders: the handle is credited exactly when the driver
// frees it — released and no mapping left — whatever the order: unmap then
// release; release then unmap; one handle mapped at two VA ranges (credited only
// after both unmaps); one cuMemUnmap covering several mappings, contiguous or
// with a hole, one of them of a handle not yet released.
func TestVMMReleaseAndUnmapOrders(t *testing.T) {
	type check struct {
		phase  string
		chunks uint64 // VMM memory held at this phase (context apart)
	}
	scenarios := map[string][]check{
		"unmap_release": {{"mapped", 1}, {"unmapped", 1}, {"released", 0}},
		"release_unmap": {{"released", 1}, {"unmapped", 0}},
		"twice":         {{"released", 1}, {"one", 1}, {"both", 0}},
		"span":          {{"released", 3}, {"unmapped", 1}, {"done", 0}},
		"gap":           {{"released", 3}, {"unmapped", 1}, {"done", 0}},
	}
	for scenario, checks := range scenarios {
		for _, path := range vmmPaths {
			t.Run(scenario+"/"+path, func(t *testing.T) {
				t.Parallel()
				const ovh = 256 * MiB
				f := newFixture(t, fixtureOpts{ovh: ovh})
				p := startVMM(t, f, path, scenario)
				pid := p.pid()
				p.phase("ready")
				f.requireAgree(pid, ovh, "context held")
				p.next()
				for _, c := range checks {
					p.phase(c.phase)
					f.requireAgree(pid, ovh+c.chunks*chunk, scenario+": "+c.phase)
					require.Equal(t, ovh+c.chunks*chunk, f.used(), "%s: %s", scenario, c.phase)
					p.next()
				}
				p.phase("end")
				f.requireAgree(pid, 0, "context released")
				p.next()
				p.waitOK()
				require.Equal(t, uint64(0), f.used())
			})
		}
	}
}

// TestVMMHandlesOutliveContexts: VMM memory is not bound to a context — a
// handle made while a second context was current stays charged (and the driver
// keeps it) when that context is destroyed and when the primary context goes,
// until its mapping is unmapped.
func TestVMMHandlesOutliveContexts(t *testing.T) {
	for _, path := range []string{"linked", "gpa2:12000"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			const ovh = 256 * MiB
			f := newFixture(t, fixtureOpts{ovh: ovh})
			p := startVMM(t, f, path, "ctx")
			pid := p.pid()
			p.phase("ready")
			p.next()
			for _, c := range []struct {
				phase string
				want  uint64
			}{
				{"held", 2*ovh + chunk},
				{"ctx_destroyed", ovh + chunk},
				{"primary_released", chunk},
				{"unmapped", 0},
			} {
				p.phase(c.phase)
				f.requireAgree(pid, c.want, c.phase)
				require.Equal(t, c.want, f.used(), c.phase)
				p.next()
			}
			p.phase("end")
			p.next()
			p.waitOK()
			require.Equal(t, uint64(0), f.used())
		})
	}
}

// TestVMMExitWhileMappedReturnsEverything: a process that exits holding the
// whole slice through mappings of released handles gives it all back.
func TestVMMExitWhileMappedReturnsEverything(t *testing.T) {
	for _, path := range []string{"linked", "gpa2:12000"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			const ovh = 256 * MiB
			f := newFixture(t, fixtureOpts{ovh: ovh})
			p := startVMM(t, f, path, "escape", "--exit-holding")
			pid := p.pid()
			p.phase("ready")
			p.next()
			for {
				if kind, _ := p.expectEither("HELD ", "RESULT "); kind == "RESULT " {
					break
				}
				p.phase("held")
				p.next()
			}
			p.phase("full")
			held := f.slotUsed(pid)
			require.Greater(t, held, ovh, "nothing held before the exit")
			require.Equal(t, held, f.used())
			p.next()
			p.waitOK()
			require.Equal(t, uint64(0), f.used())
			require.Empty(t, f.sl.Usage.Slots(), "a clean exit frees the slot")
		})
	}
}
