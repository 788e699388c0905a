package integration

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDetachingTheLastUsageCreditsTheContext: pycuda's contexts live by the
// usage count (cuCtxCreate: 1, cuCtxAttach: +1) and die at the cuCtxDetach that
// drops it to 0 — never by cuCtxDestroy. On every interception path, a context
// created and attached once, holding three chunks, stays charged after the first
// detach and is credited with everything allocated in it at the second, exactly
// as the simulated driver frees it; then (the normal run) after the chunks were
// freed first.
func TestDetachingTheLastUsageCreditsTheContext(t *testing.T) {
	for _, path := range paths {
		for _, drop := range []bool{true, false} {
			name := path + "/freed-first"
			if drop {
				name = path + "/with-allocations"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				const ovh = 256 * MiB
				f := newFixture(t, fixtureOpts{ovh: ovh})
				args := []string{"--path", path, "--api", "alloc", "--count", "3", "--ctx", "attach",
					"--step"}
				if drop {
					args = append(args, "--drop-ctx")
				}
				p := start(t, f.env(), "alloc", args...)
				pid := p.pid()
				checkHooks(t, p.expect("HOOKS"), false)
				p.phase("ready")
				f.requireAgree(pid, ovh, "context created and attached")
				p.next()
				p.phase("allocated")
				f.requireAgree(pid, ovh+3*chunk, "3 chunks held")
				p.next()
				held := uint64(ovh + 3*chunk)
				if !drop {
					p.phase("freed")
					f.requireAgree(pid, ovh, "chunks freed")
					held = ovh
					p.next()
				}
				p.phase("detached_once")
				f.requireAgree(pid, held, "one usage left: the context lives")
				require.Equal(t, held, f.used())
				s, ok := f.slotOf(pid)
				require.True(t, ok)
				require.Equal(t, uint64(1), s.Contexts)
				p.next()
				p.phase("released")
				f.requireAgree(pid, 0, "last detach: the context and its allocations are gone")
				require.Equal(t, uint64(0), f.used())
				s, ok = f.slotOf(pid)
				require.True(t, ok)
				require.Equal(t, uint64(0), s.Contexts)
				p.next()
				p.waitOK()
				require.Empty(t, f.sl.Usage.Slots())
			})
		}
	}
}
