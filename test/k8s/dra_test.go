package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/testproc"
	"github.com/vgpu-project/vgpu/test/k8s/cluster"
)

// noFit is the scheduler's reason for a claim that no device can satisfy
// (its DRA plugin's "cannot allocate all claims").
const noFit = "cannot allocate all claims"

// TestDRA runs a real single-node Kubernetes v1.34 cluster (containerd v1.7
// with CDI) on a simulated node of one 16 GiB GPU, with vgpud and the vgpu.io
// DRA plugin, and checks what a user of the cluster sees: pods that claim a
// share of the GPU run capped at their claim; a pod whose claim no longer fits
// stays Pending with the scheduler's reason and never reaches the node, and
// starts once a running pod is deleted; a claim larger than a GPU is
// unschedulable; a claim with a forged config is refused by the plugin and
// harms nobody; vgpud and the plugin restart without losing anything; memory
// booked outside Kubernetes is not offered to the scheduler; a pod joining a
// shared claim becomes a member of its slice.
func TestDRA(t *testing.T) {
	c, node, root := setup(t)
	checkPlainPod(t, c)
	checkManifests(t, c, root)
	checkResourceSlice(t, c)
	c.Apply(claimTemplate("gpu-6gi", "6Gi") + "---\n" + claimTemplate("gpu-20gi", "20Gi"))

	// Two pods of 6 GiB each on the 16 GiB GPU: both run, each capped at 6 GiB.
	c.Apply(gpuPod("p1", "gpu-6gi") + "---\n" + gpuPod("p2", "gpu-6gi"))
	for _, p := range []string{"p1", "p2"} {
		requireCapped(t, waitReady(t, c, p), 6*GiB)
	}
	requireSlices(t, node, 6*GiB, 6*GiB)

	// A third: 4 GiB are left, it does not fit. The scheduler says so, and
	// it never reaches the node (no sandbox, no container).
	c.Apply(gpuPod("p3", "gpu-6gi"))
	cond := waitUnschedulable(t, c, "p3", noFit)
	t.Logf("p3 PodScheduled=%s %s: %s", cond.Status, cond.Reason, cond.Message)
	// Longer than the scheduler's retry: still Pending, still not on the node.
	time.Sleep(5 * time.Second)
	p3, err := getPod(c, "p3")
	require.NoError(t, err)
	require.Equal(t, "Pending", p3.Status.Phase)
	require.Empty(t, p3.Spec.NodeName, "never bound to the node")
	require.Empty(t, p3.Status.ContainerStatuses)
	require.Empty(t, containersOf(t, c, "p3"), "no container created")
	requireSlices(t, node, 6*GiB, 6*GiB)

	// More than a GPU holds: unschedulable, with the reason.
	c.Apply(gpuPod("big", "gpu-20gi"))
	cond = waitUnschedulable(t, c, "big", noFit)
	t.Logf("big PodScheduled=%s %s: %s", cond.Status, cond.Reason, cond.Message)
	require.Empty(t, containersOf(t, c, "big"))

	checkForgedConfigs(t, c, node)
	restartVgpud(t, c, node)
	restartPlugin(t, c, node)

	// Deleting p1 (through the restarted plugin: it re-adopted p1's claim)
	// frees its slice; p3 then gets it and runs capped.
	s1, s2 := sliceOf(t, c, "p1"), sliceOf(t, c, "p2")
	require.Equal(t, map[string]uint64{s1: 6 * GiB, s2: 6 * GiB}, sliceIDs(node))
	c.MustKubectl("delete", "pod", "p1", "-n", "default", "--wait=false")
	waitGone(t, c, "p1")
	requireCapped(t, waitReady(t, c, "p3"), 6*GiB)
	require.Equal(t, map[string]uint64{s2: 6 * GiB, sliceOf(t, c, "p3"): 6 * GiB}, sliceIDs(node),
		"p1's slice released, p3's made")
	waitUnschedulable(t, c, "big", noFit) // still too big

	// Everything deleted: every slice released, the GPU empty.
	c.MustKubectl("delete", "pod", "--all", "-n", "default", "--wait=false")
	for _, p := range []string{"p2", "p3", "big"} {
		waitGone(t, c, p)
	}
	err = cluster.WaitFor("every slice released", podWait, nil, func() error {
		if s := node.slices(); len(s) != 0 {
			return fmt.Errorf("%d slices left: %+v", len(s), s)
		}
		return nil
	})
	require.NoError(t, err)

	checkOutsideBooking(t, c, node)
	checkSharedClaim(t, c, node)
	require.Empty(t, node.slices(), "every slice released")
}

// setup starts the cluster on the simulated node, then vgpud and vgpu-dra
// (a host process).
func setup(t *testing.T) (*cluster.Cluster, *gpuNode, string) {
	t.Helper()
	t0 := time.Now()
	c, node, root := setupNode(t, nil)
	node.startDRA(c)
	t.Cleanup(node.stopDRA)
	t.Logf("cluster, vgpud and vgpu-dra up in %s", time.Since(t0).Round(100*time.Millisecond))
	return c, node, root
}

// setupNode starts the cluster on the simulated node (with the test images
// and those extra makes in its dir imported), then vgpud.
func setupNode(t *testing.T, extra func(root, dir string) []string) (*cluster.Cluster, *gpuNode, string) {
	t.Helper()
	requireHost(t)
	root := repoRoot(t)
	bins := k8sBinaries(t, root)
	dir := t.TempDir()
	// containerd reads CDI specs where vgpud publishes them and where the
	// simulated GPUs' spec lies.
	cdiDir := filepath.Join(dir, "cdi")
	node := newGPUNode(t, root, cdiDir)
	imgs := images(t, root, dir)
	if extra != nil {
		imgs = append(imgs, extra(root, dir)...)
	}
	c := cluster.Start(t, cluster.Config{BinDir: bins, Runc: "/usr/sbin/runc", CNIBinDir: "/usr/lib/cni",
		CDIDir: cdiDir, FeatureGates: "DRAConsumableCapacity=true", Images: imgs})
	// Registered after the cluster's stop, so they run before it: the plugin
	// and vgpud go first, and their logs come out on failure.
	node.startVgpud()
	t.Cleanup(node.stopVgpud)
	t.Cleanup(func() {
		if t.Failed() {
			node.dumpLogs()
		}
	})
	return c, node, root
}

// checkPlainPod: a pod without a claim runs, and has no GPU at all (the
// driver reaches containers only through a claim's CDI device).
func checkPlainPod(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	c.Apply(testPod("plain", "/bin/query </dev/null; echo query=$?"))
	var logs string
	err := cluster.WaitFor("pod plain done", podWait, nil, func() error {
		p, err := getPod(c, "plain")
		if err != nil {
			return err
		}
		if p.Status.Phase != "Succeeded" {
			return fmt.Errorf("phase %q, conditions %+v", p.Status.Phase, p.Status.Conditions)
		}
		logs, err = c.Kubectl("logs", "plain", "-n", "default")
		return err
	})
	require.NoError(t, err)
	require.Contains(t, logs, "libcuda.so.1", "no driver without a claim")
	require.Contains(t, logs, "query=127")
	c.MustKubectl("delete", "pod", "plain", "-n", "default", "--wait=false")
	waitGone(t, c, "plain")
}

// checkManifests: deploy/kubernetes/ applies cleanly to this cluster (a
// server-side dry run: every object valid against the served APIs and
// admission). Its Namespace is created for real first (a dry run of objects in
// a namespace that does not exist yet fails), and so is its DeviceClass, which
// the test's claims name.
func checkManifests(t *testing.T, c *cluster.Cluster, root string) {
	t.Helper()
	manifests := filepath.Join(root, "deploy/kubernetes")
	entries, err := os.ReadDir(manifests)
	require.NoError(t, err, "the driver's manifests")
	require.NotEmpty(t, entries)
	var namespaces, classes []string
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(manifests, e.Name()))
		require.NoError(t, err)
		for _, doc := range strings.Split(string(data), "\n---") {
			switch {
			case strings.Contains(doc, "\nkind: Namespace"):
				namespaces = append(namespaces, doc)
			case strings.Contains(doc, "\nkind: DeviceClass"):
				classes = append(classes, doc)
			}
		}
	}
	require.Len(t, classes, 1, "deploy/kubernetes/ holds one DeviceClass")
	for _, doc := range append(namespaces, classes...) {
		c.Apply(doc)
	}
	c.MustKubectl("get", "deviceclass", driver)
	out, err := c.Kubectl("apply", "--dry-run=server", "-f", manifests)
	require.NoError(t, err, "kubectl apply --dry-run=server -f deploy/kubernetes/")
	t.Logf("kubectl apply --dry-run=server -f deploy/kubernetes/:\n%s", out)
}

// checkResourceSlice: the plugin publishes the node's GPU with its memory and
// compute as consumable capacity, shareable among claims.
func checkResourceSlice(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	devs, err := nodeSlice(c)
	require.NoError(t, err)
	require.Len(t, devs, 1, "one simulated GPU: %v", devs)
	require.Equal(t, true, devs[0]["allowMultipleAllocations"], "%v", devs[0])
	capacity, _ := devs[0]["capacity"].(map[string]any)
	size, err := offeredMemory(c)
	require.NoError(t, err, "memory capacity: %v", capacity)
	require.Equal(t, 16*GiB, size, "memory capacity: the whole GPU: %v", capacity)
	_, ok := capacity["compute"]
	require.True(t, ok, "compute capacity: %v", capacity)
}

// requireCapped checks a test pod's log: its allocations stopped at the claim
// (the context included) with CUDA_ERROR_OUT_OF_MEMORY, and cuMemGetInfo
// reported the claim as the device's memory.
func requireCapped(t *testing.T, logs string, claim uint64) {
	t.Helper()
	r := testproc.LineWith(t, logs, "RESULT")
	require.Equal(t, "CUDA_ERROR_OUT_OF_MEMORY", r["name"], logs)
	require.Equal(t, strconv.FormatUint(claim-ctxMem, 10), r["admitted"], "capped at the claim: %s", logs)
	q := testproc.LineWith(t, logs, "QUERY")
	require.Equal(t, strconv.FormatUint(claim, 10), q["cu_total"], "cuMemGetInfo shows the claim: %s", logs)
}

// requireSlices checks vgpud's slices: their memory, in any order.
func requireSlices(t *testing.T, node *gpuNode, want ...uint64) {
	t.Helper()
	err := cluster.WaitFor("vgpud's slices", podWait, nil, func() error {
		var got []uint64
		for _, s := range node.slices() {
			for _, d := range s.Devices {
				got = append(got, d.MemoryBytes)
			}
		}
		sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("slice memory %v, want %v", got, want)
		}
		return nil
	})
	require.NoError(t, err)
}
