package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/dra"
	"github.com/vgpu-project/vgpu/internal/testproc"
	"github.com/vgpu-project/vgpu/runtime-hook/gpucdi"
)

const draNode = "node-a"

// draNodeWithCDI is a 2-GPU simulated node whose vgpud publishes slices as
// CDI devices into the test's dir (the node's GPUs described by vgpu-sim's
// spec, as on a real node by nvidia-ctk's).
func draNodeWithCDI(t *testing.T) (*node, *vgpud, string) {
	t.Helper()
	nd := newNode(t, 2, 16*GiB)
	cdiDir := filepath.Join(nd.dir, "cdi")
	out, err := exec.Command(filepath.Join(nd.root, "bin/vgpu-sim"), "cdi-spec", "--state", nd.state,
		"--cdi-dir", cdiDir, "--lib-dir", filepath.Join(nd.root, "build/simgpu")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	cfg, err := json.Marshal(map[string]any{"cdi_dir": cdiDir, "cdi_spec_dirs": []string{cdiDir},
		"libvgpu": filepath.Join(nd.root, "build/libvgpu.so")})
	require.NoError(t, err)
	cfgPath := filepath.Join(nd.dir, "vgpud.json")
	require.NoError(t, os.WriteFile(cfgPath, cfg, 0o644))
	d := nd.start("--config", cfgPath)
	return nd, d, cdiDir
}

func newDriver(t *testing.T, nd *node) *dra.Driver {
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	return dra.New("vgpu.io", draNode, nd.client, log, func(err error) { t.Errorf("fatal: %v", err) })
}

// allocatedClaim is a claim as the scheduler leaves it: allocated device
// gpu-<index> of this node's pool with the consumed capacity, and the
// opaque configs (JSON) of the claim.
func allocatedClaim(uid string, index int, memory, compute string, configs ...string) *resourceapi.ResourceClaim {
	c := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Name: "c-" + uid, Namespace: "ml", UID: types.UID(uid)}}
	consumed := map[resourceapi.QualifiedName]resource.Quantity{dra.CapacityMemory: resource.MustParse(memory)}
	if compute != "" {
		consumed[dra.CapacityCompute] = resource.MustParse(compute)
	}
	share := types.UID("share-" + uid)
	alloc := &resourceapi.AllocationResult{}
	alloc.Devices.Results = []resourceapi.DeviceRequestAllocationResult{{Request: "gpu", Driver: "vgpu.io",
		Pool: draNode, Device: dra.DeviceName(index), ShareID: &share, ConsumedCapacity: consumed}}
	for _, cfg := range configs {
		alloc.Devices.Config = append(alloc.Devices.Config, resourceapi.DeviceAllocationConfiguration{
			Source: resourceapi.AllocationConfigSourceClaim,
			DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
				Driver: "vgpu.io", Parameters: runtime.RawExtension{Raw: []byte(cfg)}}}})
	}
	c.Status.Allocation = alloc
	c.Status.ReservedFor = []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: "pod-" + uid, UID: types.UID("pod-" + uid)}}
	return c
}

func prepare(t *testing.T, d *dra.Driver, c *resourceapi.ResourceClaim) kubeletplugin.PrepareResult {
	t.Helper()
	res, err := d.PrepareResourceClaims(context.Background(), []*resourceapi.ResourceClaim{c})
	require.NoError(t, err)
	require.Len(t, res, 1)
	return res[c.UID]
}

func unprepare(t *testing.T, d *dra.Driver, uid string) error {
	t.Helper()
	res, err := d.UnprepareResourceClaims(context.Background(), []kubeletplugin.NamespacedObject{
		{UID: types.UID(uid), NamespacedName: types.NamespacedName{Namespace: "ml", Name: "c-" + uid}}})
	require.NoError(t, err)
	require.Len(t, res, 1)
	return res[types.UID(uid)]
}

// TestDRAPrepareUnprepare: vgpu-dra's handlers against a real vgpud on the
// simulated node — a claim becomes slice claim-<uid> with the allocated
// memory and share and the config's class, policy, priority and ceiling,
// published as CDI device vgpu.io/slice=<id>; a repeated prepare finds it; a
// different allocation under the same uid is refused; unprepare releases
// it and is idempotent.
func TestDRAPrepareUnprepare(t *testing.T) {
	nd, _, cdiDir := draNodeWithCDI(t)
	d := newDriver(t, nd)
	cfg := `{"apiVersion":"vgpu.io/v1alpha1","kind":"SliceConfig","qos":"burstable","priority":2,` +
		`"computePolicy":"share","memoryMax":"8Gi"}`
	c := allocatedClaim("uid-a", 1, "6Gi", "30", cfg)
	res := prepare(t, d, c)
	require.NoError(t, res.Err)
	require.Equal(t, []kubeletplugin.Device{{Requests: []string{"gpu"}, PoolName: draNode, DeviceName: "gpu-1",
		CDIDeviceIDs: []string{"vgpu.io/slice=claim-uid-a"}}}, res.Devices)

	sl, err := nd.client.Get(context.Background(), "claim-uid-a")
	require.NoError(t, err)
	require.Equal(t, api.Owner{Kind: api.OwnerClaim, ClaimUID: "uid-a", ClaimNamespace: "ml", ClaimName: "c-uid-a", PodUIDs: []string{"pod-uid-a"},
		Labels: map[string]string{"namespace": "ml", "pod": "pod-uid-a"}}, sl.Owner)
	require.Len(t, sl.Devices, 1)
	require.Equal(t, 1, sl.Devices[0].Index)
	require.Equal(t, 6*GiB, sl.Devices[0].MemoryBytes)
	require.Equal(t, 8*GiB, sl.Devices[0].MemoryMaxBytes)
	require.InDelta(t, 30, sl.Devices[0].ComputePercent, 0.01)
	require.Equal(t, api.QoSBurstable, sl.QoS)
	require.Equal(t, 2, sl.Priority)
	require.Equal(t, api.ComputePolicyShare, sl.ComputePolicy)
	spec, err := os.ReadFile(filepath.Join(cdiDir, gpucdi.SpecName("claim-uid-a")+".json"))
	require.NoError(t, err, "vgpud published the slice's CDI device")
	require.Contains(t, string(spec), `"claim-uid-a"`)

	again := prepare(t, d, c)
	require.NoError(t, again.Err, "a repeated prepare finds the slice")
	require.Equal(t, res.Devices, again.Devices)
	slices, err := nd.client.Slices(context.Background())
	require.NoError(t, err)
	require.Len(t, slices, 1)

	other := allocatedClaim("uid-a", 1, "4Gi", "30", cfg)
	require.ErrorContains(t, prepare(t, d, other).Err, "differs from the claim's allocation: memory 6GiB, not 4GiB")

	require.NoError(t, unprepare(t, d, "uid-a"))
	_, err = nd.client.Get(context.Background(), "claim-uid-a")
	require.True(t, api.IsNotFound(err), "released: %v", err)
	_, err = os.Stat(filepath.Join(cdiDir, gpucdi.SpecName("claim-uid-a")+".json"))
	require.True(t, os.IsNotExist(err), "its CDI spec is gone")
	require.NoError(t, unprepare(t, d, "uid-a"), "unprepare is idempotent")
	require.NoError(t, unprepare(t, d, "uid-never"), "an unknown claim is unprepared already")
}

// TestDRABadClaims: what a user writes is checked, each with a reason, and
// nothing is left behind.
func TestDRABadClaims(t *testing.T) {
	nd, _, _ := draNodeWithCDI(t)
	d := newDriver(t, nd)
	for name, tc := range map[string]struct {
		claim *resourceapi.ResourceClaim
		want  string
	}{
		"unknown field": {allocatedClaim("u1", 0, "1Gi", "", `{"apiVersion":"vgpu.io/v1alpha1","kind":"SliceConfig","qos2":"x"}`),
			`unknown field "qos2"`},
		"bad qos": {allocatedClaim("u2", 0, "1Gi", "", `{"apiVersion":"vgpu.io/v1alpha1","kind":"SliceConfig","qos":"gold"}`),
			"qos"},
		"bad kind": {allocatedClaim("u3", 0, "1Gi", "", `{"apiVersion":"vgpu.io/v1","kind":"SliceConfig"}`),
			"want apiVersion vgpu.io/v1alpha1"},
		"ceiling below memory": {allocatedClaim("u4", 0, "4Gi", "", `{"apiVersion":"vgpu.io/v1alpha1","kind":"SliceConfig","memoryMax":"2Gi"}`),
			"memoryMax 2Gi is below the allocated memory"},
		"memory over the GPU": {allocatedClaim("u5", 0, "32Gi", ""), "at most the GPU's"},
		"compute over 100":    {allocatedClaim("u6", 0, "1Gi", "150"), "compute 150"},
		"no such GPU":         {allocatedClaim("u7", 7, "1Gi", ""), "no such GPU"},
		"below context":       {allocatedClaim("u8", 0, "128Mi", ""), "vgpud refused"},
	} {
		err := prepare(t, d, tc.claim).Err
		require.ErrorContains(t, err, tc.want, name)
		require.ErrorContains(t, err, "vgpu.io: claim ml/"+tc.claim.Name, name)
	}
	slices, err := nd.client.Slices(context.Background())
	require.NoError(t, err)
	require.Empty(t, slices)
}

// TestDRARestart: the plugin keeps nothing; after vgpud is killed and
// restarted, a new plugin instance finds the claim's slice (re-adoption),
// a repeated prepare matches it and unprepare releases it. vgpud's
// liveness checks never release a claim's slice on their own.
func TestDRARestart(t *testing.T) {
	nd, v, _ := draNodeWithCDI(t)
	c := allocatedClaim("uid-r", 0, "2Gi", "")
	require.NoError(t, prepare(t, newDriver(t, nd), c).Err)
	v.kill9()
	v2 := nd.start()
	defer v2.stop()

	d := newDriver(t, nd)
	claims, err := d.Claims(context.Background())
	require.NoError(t, err)
	require.Len(t, claims, 1)
	require.Equal(t, "claim-uid-r", claims[0].ID)
	require.Equal(t, "uid-r", claims[0].Owner.ClaimUID)
	require.NoError(t, prepare(t, d, c).Err)
	require.NoError(t, unprepare(t, d, "uid-r"))
	claims, err = d.Claims(context.Background())
	require.NoError(t, err)
	require.Empty(t, claims)
}

// TestDRAPublishedCapacity: what a GPU offers DRA is its memory less a
// guaranteed slice made outside DRA and less the memory of a process in no
// slice; claims' own slices are not subtracted (the scheduler counts them).
func TestDRAPublishedCapacity(t *testing.T) {
	nd, _, _ := draNodeWithCDI(t)
	d := newDriver(t, nd)
	capacity := func() map[string][2]string {
		res, err := d.Resources(context.Background())
		require.NoError(t, err)
		out := map[string][2]string{}
		for _, dev := range res.Pools[draNode].Slices[0].Devices {
			m, c := dev.Capacity[dra.CapacityMemory].Value, dev.Capacity[dra.CapacityCompute].Value
			out[dev.Name] = [2]string{m.String(), c.String()}
			require.True(t, *dev.AllowMultipleAllocations)
			require.Equal(t, "NVIDIA", (*dev.Attributes["productName"].StringValue)[:6])
		}
		return out
	}
	require.Equal(t, map[string][2]string{"gpu-0": {"16Gi", "100"}, "gpu-1": {"16Gi", "100"}}, capacity())

	devs, err := nd.client.Devices(context.Background())
	require.NoError(t, err)
	_, err = nd.client.Alloc(context.Background(), api.AllocRequest{ID: "outside", MemoryBytes: 4 * GiB,
		ComputePercent: 25, UUIDs: []string{devs[0].UUID}})
	require.NoError(t, err)
	require.NoError(t, prepare(t, d, allocatedClaim("uid-p", 0, "6Gi", "30")).Err)
	require.Equal(t, map[string][2]string{"gpu-0": {"12Gi", "75"}, "gpu-1": {"16Gi", "100"}}, capacity())

	// A process on GPU 0 outside vgpu (no libvgpu, no slice) holding 2GiB.
	bare := nd.startProc(nd.env("CUDA_VISIBLE_DEVICES=0"), "build/test/alloc", "--api", "alloc", "--chunk", "1GiB",
		"--count", "2", "--step")
	bare.expect("PHASE ready")
	bare.next()
	bare.expect("RESULT")
	bare.expect("PHASE allocated")
	devs, err = nd.client.Devices(context.Background())
	require.NoError(t, err)
	require.GreaterOrEqual(t, devs[0].UnslicedBytes, 2*GiB, "vgpud sees the process in no slice")
	require.Zero(t, devs[1].UnslicedBytes)
	want := resource.NewQuantity(int64(12*GiB-devs[0].UnslicedBytes), resource.BinarySI).String()
	require.Equal(t, map[string][2]string{"gpu-0": {want, "75"}, "gpu-1": {"16Gi", "100"}}, capacity())
}

// TestDRAPodJoinsSharedClaim: the kubelet prepares a claim once per node, so a
// pod that joins a shared claim later reaches no prepare. Until the plugin's
// pod sync tells vgpud, that pod's processes are in no slice (its memory
// counted as held outside DRA, no backstop judging it); once the claim's
// status.reservedFor names it, the plugin updates the slice's pods and the
// process, found through its pod's cgroup, is the claim slice's.
func TestDRAPodJoinsSharedClaim(t *testing.T) {
	nd, _, _ := draNodeWithCDI(t)
	d := newDriver(t, nd)
	claim := allocatedClaim("uid-shared", 0, "6Gi", "30")
	require.NoError(t, prepare(t, d, claim).Err)
	slice := dra.SliceID(claim.UID)

	// The joining pod's process: in the kubelet's cgroupfs layout (pod<uid>),
	// holding 2GiB on GPU 0 without libvgpu.
	podB := fmt.Sprintf("b%d-%d", os.Getpid(), time.Now().UnixNano())
	_, cgFD := testCgroupNamed(t, "pod"+podB)
	cmd := exec.Command(filepath.Join(nd.root, "build/test/alloc"), "--api", "alloc", "--chunk", "1GiB", "--count", "2", "--step")
	cmd.Env, cmd.Dir = nd.env("CUDA_VISIBLE_DEVICES=0"), nd.root
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgFD}
	p := &proc{Proc: testproc.Start(t, cmd, "alloc in pod "+podB, lineTimeout), t: t, cmd: cmd}
	p.expect("PHASE ready")
	p.next()
	p.expect("RESULT")
	p.expect("PHASE allocated")
	unsliced := func() uint64 {
		devs, err := nd.client.Devices(context.Background())
		require.NoError(t, err)
		return devs[0].UnslicedBytes
	}
	eventually(t, 2*time.Second, "the joining pod's process is in no slice yet", func() bool { return unsliced() >= 2*GiB })

	// The scheduler reserves the claim for the pod too; the plugin's sync
	// reads the claim (here from the test) and tells vgpud.
	claim.Status.ReservedFor = append(claim.Status.ReservedFor,
		resourceapi.ResourceClaimConsumerReference{Resource: "pods", Name: "pod-b", UID: types.UID(podB)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.SyncPods(ctx, func(_ context.Context, ns, name string) (*resourceapi.ResourceClaim, error) {
			if ns != claim.Namespace || name != claim.Name {
				return nil, apierrors.NewNotFound(resourceapi.Resource("resourceclaims"), name)
			}
			return claim.DeepCopy(), nil
		}, 50*time.Millisecond)
	}()
	defer func() { cancel(); <-done }()
	eventually(t, 5*time.Second, "vgpud has the claim's new pod", func() bool {
		sl, err := nd.client.Get(context.Background(), slice)
		require.NoError(t, err)
		return len(sl.Owner.PodUIDs) == 2 && sl.Owner.PodUIDs[1] == podB
	})
	eventually(t, 2*time.Second, "the process is the claim slice's: no memory held outside", func() bool { return unsliced() == 0 })
}
