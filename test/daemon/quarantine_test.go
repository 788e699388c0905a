package daemon

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
)

// TestQuarantineKeepsBooking is the attack "corrupt a slice record on disk,
// restart vgpud": the record is quarantined, but while its tenant still runs
// its guaranteed memory is not booked again for others. vgpuctl shows it;
// `quarantine restore` brings it back live (the tenant carries on, counted
// again), `quarantine release` frees it. vgpud stays up throughout.
func TestQuarantineKeepsBooking(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	d := nd.start()
	out, errOut, code := nd.ctl("alloc", "--memory", "12GiB", "--compute", "50", "--id", "victim")
	require.Equal(t, 0, code, errOut)
	dir := strings.Fields(out)[1]
	tenant := nd.holder(dir, "256MiB", 4) // 1.25 GiB with its context
	d.stop()

	recPath := filepath.Join(dir, "slice.json")
	require.NoError(t, os.WriteFile(recPath, []byte(`{"version":1,"slice":{"id":"victim","devices":[{"memory_bytes":1`), 0o644))
	d = nd.start()
	_, ok := d.findLog("slice cannot be re-adopted; moved to quarantine")
	require.True(t, ok, d.log())

	// The attack's payoff would be this 8 GiB guaranteed slice: refused.
	_, errOut, code = nd.ctl("alloc", "--memory", "8GiB")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "does not fit")
	// Nor may a new slice take the held slice's name.
	_, errOut, code = nd.ctl("alloc", "--memory", "1GiB", "--qos", "burstable", "--id", "victim")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "quarantined")

	out, errOut, code = nd.ctl("quarantine", "list")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, regexp.MustCompile(`(?m)^victim-\d+\s+victim\s+budget\s+0:12GiB\s+50%\s+guaranteed\s+yes\s`), out)
	qs, err := nd.client.Quarantine(bg())
	require.NoError(t, err)
	require.Len(t, qs, 1)
	require.Equal(t, []api.SliceDevice{{Index: 0, UUID: qs[0].Devices[0].UUID, MemoryBytes: 12 * GiB, ComputePercent: 50}},
		qs[0].Devices)
	require.NoError(t, tenant.cmd.Process.Signal(syscall.Signal(0)), "the tenant still runs")

	// Restored: live and enforced again, with the tenant's charge still counted.
	out, errOut, code = nd.ctl("quarantine", "restore", "victim")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "victim "+dir+"\n", out)
	eventually(t, lineTimeout, "top counts the tenant of the restored slice", func() bool {
		top, err := nd.client.Top(bg())
		require.NoError(t, err)
		return len(top) == 1 && top[0].Slice.ID == "victim" && top[0].UsedBytes[0] == 1280*MiB &&
			len(top[0].Processes) == 1 && top[0].Processes[0].HostPID == tenant.pid()
	})
	_, _, code = nd.ctl("alloc", "--memory", "8GiB")
	require.Equal(t, 1, code, "still booked once live")
	out, _, _ = nd.ctl("quarantine", "list")
	require.Equal(t, "no quarantined slices\n", out)
	tenant.next()
	require.Equal(t, 0, tenant.wait(), tenant.stderr())

	// Again, with its budget corrupt too: what it holds is unknown, so all of
	// the device's free guaranteed memory is held; release frees it.
	d.stop()
	require.NoError(t, os.WriteFile(recPath, []byte("not json"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, shm.BudgetFile), []byte("not a budget either"), 0o644))
	d = nd.start()
	_, _, code = nd.ctl("alloc", "--memory", "1GiB")
	require.Equal(t, 1, code, "unknown holding: no guaranteed slice fits")
	out, errOut, code = nd.ctl("alloc", "--memory", "1GiB", "--qos", "best-effort")
	require.Equal(t, 0, code, "a best-effort slice reserves nothing: %s", errOut)
	_, _, code = nd.ctl("release", strings.Fields(out)[0])
	require.Equal(t, 0, code)
	out, _, _ = nd.ctl("quarantine", "list")
	require.Regexp(t, `(?m)^victim-\d+\s+victim\s+unknown\s+0:16GiB\s+100%\s+guaranteed\s+no\s`, out)
	_, errOut, code = nd.ctl("quarantine", "restore", "victim")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "release it instead")

	out, errOut, code = nd.ctl("quarantine", "release", "victim")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "released victim")
	out, errOut, code = nd.ctl("alloc", "--memory", "16GiB", "--id", "victim")
	require.Equal(t, 0, code, "everything free again, the id too: %s", errOut)
	require.Contains(t, out, "victim ")

	h, err := nd.client.Health(bg())
	require.NoError(t, err, "vgpud stayed up")
	require.Equal(t, "ok", h.Status)
	require.Zero(t, h.Quarantined)
	select {
	case <-d.done:
		t.Fatalf("vgpud exited: %s", d.log())
	default:
	}
}
