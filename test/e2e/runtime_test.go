package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/internal/testproc"
	"github.com/vgpu-project/vgpu/test/simgpu"
)

func num(t *testing.T, m map[string]string, k string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(m[k], 10, 64)
	require.NoError(t, err, "field %s in %v", k, m)
	return v
}

// A container asking for 1 GiB gets exactly that: allocations stop at 1 GiB
// (its context included), the driver API and NVML both report a 1 GiB device,
// and the slice is gone once the container is.
func TestContainerGetsItsSlice(t *testing.T) {
	n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB})

	res := n.run(run{id: "oom", vgpu: true, annotations: []string{"vgpu.io/memory=1GiB"},
		args: []string{"/bin/alloc", "--api", "alloc", "--path", "linked", "--until-oom", "--chunk", "64MiB"}})
	require.Equal(t, 0, res.code, "ctr: %s\noutput:\n%s", res.ctr, res.output)
	r := testproc.LineWith(t, res.output, "RESULT")
	require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", r["name"])
	require.Equal(t, 1*GiB-ctxMem, num(t, r, "admitted"), "1 GiB including the context")
	require.Empty(t, n.slices(), "the poststop hook released the slice")

	// The env works as well as the annotation.
	res = n.run(run{id: "query", vgpu: true, env: []string{"VGPU_MEMORY=1GiB"}, args: []string{"/bin/query"}})
	require.Equal(t, 0, res.code, "ctr: %s\noutput:\n%s", res.ctr, res.output)
	q := testproc.LineWith(t, res.output, "QUERY")
	for _, k := range []string{"cu_total", "totalmem", "nvml_total", "nvml2_total"} {
		require.Equal(t, 1*GiB, num(t, q, k), k)
	}
	require.Equal(t, 1*GiB-ctxMem, num(t, q, "cu_free"))
	require.Equal(t, 1*GiB-ctxMem, num(t, q, "nvml_free"))
	require.Empty(t, n.slices())
	require.Equal(t, uint64(0), n.deviceUsed(0))
}

// A malicious container cannot raise its limit: the budget is read-only, the
// slice cannot be moved away or forged, /etc/ld.so.preload cannot be removed,
// and unsetting LD_PRELOAD changes nothing (ld.so.preload loads libvgpu).
func TestMaliciousContainerKeepsItsLimit(t *testing.T) {
	n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB})
	res := n.run(run{id: "evil", vgpu: true, annotations: []string{"vgpu.io/memory=1GiB"},
		args: []string{"/bin/dl_tamper", "attack"}})
	require.Equal(t, 0, res.code, "ctr: %s\noutput:\n%s", res.ctr, res.output)
	attacks := 0
	for _, l := range strings.Split(res.output, "\n") {
		if !strings.HasPrefix(l, "ATTACK") {
			continue
		}
		f := testproc.Fields(l)
		if f["name"] == "reexec_without_ld_preload" {
			continue
		}
		attacks++
		require.NotEqual(t, "OK", f["result"], "attack %s worked:\n%s", f["name"], res.output)
	}
	require.Equal(t, 11, attacks, res.output)
	r := testproc.LineWith(t, res.output, "RESULT")
	require.Equal(t, "1", r["libvgpu"], "libvgpu is still loaded after LD_PRELOAD was unset")
	require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", r["name"])
	require.Equal(t, 1*GiB-ctxMem, num(t, r, "admitted"), "still capped at 1 GiB")
	require.Equal(t, 1*GiB, num(t, r, "total"))
	require.Empty(t, n.slices())
}

// A container without a request is not touched: nothing mounted, no slice,
// and its config.json is byte for byte what plain runc gets.
func TestContainerWithoutRequestUntouched(t *testing.T) {
	n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB})
	res := n.run(run{id: "plain", vgpu: true, args: []string{"/bin/dl_tamper", "inspect"}})
	require.Equal(t, 0, res.code, "ctr: %s\noutput:\n%s", res.ctr, res.output)
	in := testproc.LineWith(t, res.output, "INSPECT")
	require.Equal(t, map[string]string{"preload": "-ENOENT", "vgpu_dir": "0", "slice_id": "-", "libvgpu": "0"}, in)

	// The same container through runc and through vgpu-runtime: equal bundles.
	cfg := map[string][]byte{}
	for _, c := range []struct {
		id   string
		vgpu bool
	}{{"same-runc", false}, {"same-vgpu", true}} {
		res := n.run(run{id: c.id, vgpu: c.vgpu, detach: true, args: []string{"/bin/dl_tamper", "sleep"}})
		require.Equal(t, 0, res.code, "ctr: %s", res.ctr)
		n.waitOutput(res, "SLEEPING")
		require.Empty(t, n.slices(), "no slice for a container without a request")
		data, err := os.ReadFile(filepath.Join(n.state, "io.containerd.runtime.v2.task", namespace, c.id, "config.json"))
		require.NoError(t, err)
		cfg[c.id] = bytes.ReplaceAll(data, []byte(c.id), []byte("ID"))
		n.stop(c.id)
	}
	require.Equal(t, string(cfg["same-runc"]), string(cfg["same-vgpu"]), "config.json untouched by vgpu-runtime")
}

// A bad request fails `ctr run` with the reason, and leaves no slice.
func TestBadRequestFailsTheRun(t *testing.T) {
	n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB})
	res := n.run(run{id: "bad", vgpu: true, annotations: []string{"vgpu.io/memory=lots"}, args: []string{"/bin/query"}})
	require.NotEqual(t, 0, res.code)
	require.Contains(t, res.ctr, `malformed vGPU request: annotation vgpu.io/memory="lots"`)
	require.Empty(t, n.slices())

	res = n.run(run{id: "huge", vgpu: true, annotations: []string{"vgpu.io/memory=64GiB"}, args: []string{"/bin/query"}})
	require.NotEqual(t, 0, res.code)
	require.Contains(t, res.ctr, "vgpud did not give a slice")
	require.Empty(t, n.slices())
	out, _ := n.ctr("containers", "ls", "-q")
	require.Empty(t, strings.TrimSpace(out), "ctr run --rm removed the failed containers")
}

// Stopping a container frees its slice and its memory.
func TestStopFreesSlice(t *testing.T) {
	n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB})
	res := n.run(run{id: "holder", vgpu: true, detach: true, annotations: []string{"vgpu.io/memory=2GiB"},
		args: []string{"/bin/dl_tamper", "hold", "256MiB", "2"}})
	require.Equal(t, 0, res.code, "ctr: %s", res.ctr)
	held := testproc.Fields(n.waitOutput(res, "HELD"))
	require.Equal(t, 512*MiB, num(t, held, "admitted"))
	sl := n.slices()
	require.Len(t, sl, 1)
	require.Equal(t, "holder", sl[0].ID)
	require.Equal(t, api.Owner{Kind: api.OwnerContainer, ContainerID: "holder",
		RuncRoot: "/run/containerd/runc/" + namespace}, sl[0].Owner)
	require.Equal(t, 2*GiB, sl[0].Devices[0].MemoryBytes)
	require.Equal(t, 512*MiB+ctxMem, n.deviceUsed(0))

	n.stop("holder")
	require.Empty(t, n.slices(), "the poststop hook released the slice")
	n.requireDeviceFree(0)
}

// Two containers on one device each stay within their own slice; a third
// that does not fit is refused.
func TestTwoContainersShareDevice(t *testing.T) {
	n := newNode(t, nodeOpts{devices: 1, memory: 4 * GiB})
	limits := map[string]uint64{"a": 1 * GiB, "b": 1536 * MiB}
	for id, lim := range limits {
		res := n.run(run{id: id, vgpu: true, detach: true,
			// A guaranteed slice books its compute share: 40% each, so that
			// both fit on the device by compute and only memory decides.
			annotations: []string{"vgpu.io/memory=" + strconv.FormatUint(lim, 10), "vgpu.io/cores=40"},
			args:        []string{"/bin/dl_tamper", "hold", "64MiB", "1000"}})
		require.Equal(t, 0, res.code, "ctr: %s", res.ctr)
		held := testproc.Fields(n.waitOutput(res, "HELD"))
		require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", held["name"], id)
		require.Equal(t, lim-ctxMem, num(t, held, "admitted"), id)
	}
	require.Len(t, n.slices(), 2)
	st, err := simgpu.Status(n.sim)
	require.NoError(t, err)
	require.Equal(t, limits["a"]+limits["b"], st.Devices[0].Used, "the device holds both slices' fill, no more")
	require.Len(t, st.Devices[0].Processes, 2)
	var per []uint64
	for _, p := range st.Devices[0].Processes {
		per = append(per, p.UsedBytes)
	}
	require.ElementsMatch(t, []uint64{limits["a"], limits["b"]}, per, "each process holds exactly its slice")

	// 1 + 1.5 + 2 GiB guaranteed > 4 GiB: refused.
	res := n.run(run{id: "c", vgpu: true, annotations: []string{"vgpu.io/memory=2GiB", "vgpu.io/cores=10"},
		args: []string{"/bin/query"}})
	require.NotEqual(t, 0, res.code)
	require.Contains(t, res.ctr, "vgpud did not give a slice")
	require.Contains(t, res.ctr, "guaranteed memory free", "vgpud's reason reaches the user")
	require.Len(t, n.slices(), 2)

	n.stop("a")
	n.stop("b")
	require.Empty(t, n.slices())
	n.requireDeviceFree(0)
}

// waitNoSlices waits until vgpud holds no slice.
func (n *node) waitNoSlices(why string) {
	n.t.Helper()
	deadline := time.Now().Add(cmdTimeout)
	for len(n.slices()) > 0 {
		if time.Now().After(deadline) {
			n.t.Fatalf("%s: slices still held after %s: %+v", why, cmdTimeout, n.slices())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A container deleted while vgpud is down (its poststop hook cannot release
// the slice) loses its slice when vgpud is back: the runc state is gone.
func TestMissedPoststopReleasedAfterRestart(t *testing.T) {
	n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB,
		vgpudArgs: []string{"--container-check-interval", "200ms", "--container-grace", "1s"}})
	res := n.run(run{id: "orphan", vgpu: true, detach: true, annotations: []string{"vgpu.io/memory=1GiB"},
		args: []string{"/bin/dl_tamper", "hold", "64MiB", "1"}})
	require.Equal(t, 0, res.code, "ctr: %s", res.ctr)
	n.waitOutput(res, "HELD")
	// A running container keeps its slice through many checks (and past the grace).
	time.Sleep(1500 * time.Millisecond)
	require.Len(t, n.slices(), 1, "the container exists: its slice stays")

	n.stopVgpud()
	n.stop("orphan") // the poststop hook finds no vgpud and lets the delete go on
	n.startVgpud()
	n.waitNoSlices("vgpud restarted after the container was deleted")
	n.waitLog("container orphan is gone (no runc state)")
	n.requireDeviceFree(0)
}

// With containerd's socket configured, vgpud releases a deleted container's
// slice from containerd's event stream, at once, whatever released it or not.
// The slice here is allocated through the API for a container run by plain
// runc, so no poststop hook exists at all.
func TestContainerdEventReleasesSlice(t *testing.T) {
	n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB, events: true,
		// Periodic checks would need an hour: only the event can release it.
		vgpudArgs: []string{"--container-check-interval", "1h", "--container-grace", "1h", "--log-level", "debug"}})
	n.waitLog("containerd events: subscribed")
	// containerd confirms a subscription only with the first event: delete
	// probe containers until vgpud has seen one.
	for i := 0; ; i++ {
		id := "probe-" + strconv.Itoa(i)
		res := n.run(run{id: id, args: []string{"/bin/dl_tamper", "inspect"}})
		require.Equal(t, 0, res.code, "ctr: %s", res.ctr)
		data, _ := os.ReadFile(filepath.Join(n.dir, "vgpud.log"))
		if bytes.Contains(data, []byte(`"container": "`+id+`"`)) {
			break
		}
		require.Less(t, i, 50, "vgpud saw none of the probes' deletions:\n%s", data)
		time.Sleep(100 * time.Millisecond)
	}
	res := n.run(run{id: "ghost", detach: true, args: []string{"/bin/dl_tamper", "sleep"}})
	require.Equal(t, 0, res.code, "ctr: %s", res.ctr)
	n.waitOutput(res, "SLEEPING")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := n.client.Alloc(ctx, api.AllocRequest{ID: "ghost-slice", MemoryBytes: GiB,
		Owner: api.Owner{Kind: api.OwnerContainer, ContainerID: "ghost", RuncRoot: "/run/containerd/runc/" + namespace}})
	require.NoError(t, err)
	require.Len(t, n.slices(), 1)

	n.stop("ghost")
	n.waitNoSlices("containerd reported the task deleted")
	n.waitLog("container ghost deleted (containerd: task deleted in namespace " + namespace + ")")
}

// A container that bypasses libvgpu (it calls the driver's own allocation
// entry point) and takes more than its slice is caught by vgpud's backstop
// (enforce mode) and killed.
//
// The container has its own pid namespace, as any container: the simulated
// NVML, like the real driver, reports its process under the host pid (it
// translates the pid the process registered with), so the backstop matches it
// to the container.
func TestBypassCaughtByBackstop(t *testing.T) {
	n := newNode(t, nodeOpts{devices: 1, memory: 16 * GiB,
		vgpudArgs: []string{"--enforcer-mode", "enforce", "--enforcer-interval", "50ms"}})
	res := n.run(run{id: "bypass", vgpu: true, detach: true,
		annotations: []string{"vgpu.io/memory=1GiB"}, args: []string{"/bin/dl_tamper", "bypass", "2GiB"}})
	require.Equal(t, 0, res.code, "ctr: %s", res.ctr)
	line := testproc.Fields(n.waitOutput(res, "BYPASSED"))
	seen := time.Now()
	require.Equal(t, "CUDA_SUCCESS", line["name"], "the driver itself gave the memory")
	deadline := seen.Add(cmdTimeout)
	for {
		out, _ := n.ctr("task", "ls")
		if !strings.Contains(out, "RUNNING") {
			break
		}
		require.True(t, time.Now().Before(deadline), "the bypassing container is still running:\n%s", out)
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("killed %s after its bypassing allocation was seen", time.Since(seen).Round(time.Millisecond))
	n.waitLog(`enforcer backstop: process over its slice	{"slice": "bypass"`)
	n.waitLog(`"action": "killed"`)
	n.stop("bypass")
	require.Empty(t, n.slices())
}
