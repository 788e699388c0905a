package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/daemon/devices"
)

// TestResolveClaimOwner: a ResourceClaim owner needs its uid and takes
// nothing of the other kinds; claim fields without the kind are refused.
func TestResolveClaimOwner(t *testing.T) {
	ok := api.Owner{Kind: api.OwnerClaim, ClaimUID: "0b7f1c2e-5d1a-4c56-9a43-2f8a0e0c1d11", ClaimNamespace: "ml",
		ClaimName: "train-gpu", PodUIDs: []string{"c1175db3-2c48-4325-a5c3-33b1774b2011"}}
	o := ok
	require.NoError(t, resolveOwner(&o))
	require.Equal(t, ok, o, "nothing is filled in for a claim")

	for name, bad := range map[string]api.Owner{
		"no uid":           {Kind: api.OwnerClaim, ClaimName: "x"},
		"with a pid":       {Kind: api.OwnerClaim, ClaimUID: "u", PID: 1},
		"with a container": {Kind: api.OwnerClaim, ClaimUID: "u", ContainerID: "c"},
		"long name":        {Kind: api.OwnerClaim, ClaimUID: "u", ClaimName: strings.Repeat("n", 254)},
		"no kind":          {ClaimUID: "u"},
		"container+claim":  {Kind: api.OwnerContainer, ContainerID: "c", ClaimUID: "u"},
		"pod uid path":     {Kind: api.OwnerClaim, ClaimUID: "u", PodUIDs: []string{"../x"}},
		"too many pods":    {Kind: api.OwnerClaim, ClaimUID: "u", PodUIDs: make([]string, api.MaxOwnerPods+1)},
		"pods, no kind":    {PodUIDs: []string{"p"}},
	} {
		o := bad
		require.Error(t, resolveOwner(&o), name)
	}
}

// TestClaimPodMembers: a claim slice's members are the processes in its
// pods' cgroups, so the backstop judges them: a process of the pod holding
// more than the slice is killed in enforce mode (a process of another pod
// on the same GPU is not the slice's).
func TestClaimPodMembers(t *testing.T) {
	const pod = "c1175db3-2c48-4325-a5c3-33b1774b2011"
	proc := t.TempDir()
	for pid, cg := range map[string]string{
		"4242": "0::/kubepods/besteffort/pod" + pod + "/ctr-1\n",
		"4343": "0::/kubepods/besteffort/podother/ctr-2\n",
	} {
		require.NoError(t, os.MkdirAll(filepath.Join(proc, pid), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(proc, pid, "cgroup"), []byte(cg), 0o644))
	}
	cfg := testConfig(t.TempDir())
	cfg.EnforcerMode = ModeEnforce
	cfg.Tracker = "off"
	gpus := newFakeGPUs(1, 16*GiB)
	var mu sync.Mutex
	var killed []int
	kill := func(pid int) error {
		mu.Lock()
		defer mu.Unlock()
		killed = append(killed, pid)
		return nil
	}
	ts := startServer(t, cfg, gpus, WithKill(kill), func(o *options) { o.procRoot = proc })
	_, err := ts.client.Alloc(ts.ctx, api.AllocRequest{ID: "claim-x", MemoryBytes: GiB,
		Owner: api.Owner{Kind: api.OwnerClaim, ClaimUID: "x", PodUIDs: []string{pod}}})
	require.NoError(t, err)
	gpus.setProcs(gpus.devs[0].UUID, devices.ProcessMemory{HostPID: 4242, UsedBytes: 3 * GiB},
		devices.ProcessMemory{HostPID: 4343, UsedBytes: 5 * GiB})
	eventually(t, 2*time.Second, "the pod's process over the slice is killed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(killed) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	for _, pid := range killed {
		require.Equal(t, 4242, pid, "only the claim pod's process")
	}
}
