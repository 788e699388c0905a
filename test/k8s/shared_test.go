package k8s

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/testproc"
	"github.com/vgpu-project/vgpu/test/k8s/cluster"
)

// holdWorkload shows what cuMemGetInfo says, then allocates 1 GiB and holds
// it (and its context) until the pod is deleted: alloc --step waits for a line
// on stdin before each phase; it gets one, then a pipe nobody writes.
const holdWorkload = `/bin/query </dev/null && echo READY && ` +
	`(echo; exec sleep 100000) | exec /bin/alloc --api alloc --path linked --chunk 1GiB --count 1 --step`

// sharedClaim is a ResourceClaim (made once, shared by the pods that name it)
// asking for memory of one vgpu.io device.
func sharedClaim(name, memory string) string {
	return fmt.Sprintf(`apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: %s, namespace: default}
spec:
%s`, name, indent(claimSpec(memory), "  "))
}

// sharedClaimPod is a pod running holdWorkload with the existing claim.
func sharedClaimPod(name, claim string) string {
	return testPod(name, holdWorkload) + fmt.Sprintf(`    resources:
      claims: [{name: gpu}]
  resourceClaims:
  - name: gpu
    resourceClaimName: %s
`, claim)
}

// checkSharedClaim: two pods share one ResourceClaim. The kubelet prepares it
// once, for the first pod; the second reaches no prepare, and the plugin's pod
// sync makes its processes members of the claim's slice: both pods are the
// slice's pods, the memory the second holds is not counted as held outside
// DRA (the node still offers the whole GPU: claims are the scheduler's to
// count), and both see the claim's memory. The slice outlives the first pod and goes with the last.
func checkSharedClaim(t *testing.T, c *cluster.Cluster, node *gpuNode) {
	t.Helper()
	c.Apply(sharedClaim("shared", "4Gi") + "---\n" + sharedClaimPod("s1", "shared"))
	requireClaimMemory(t, waitReady(t, c, "s1"), 4*GiB)
	waitLog(t, c, "s1", "PHASE allocated")
	var claim struct {
		Metadata struct {
			UID string `json:"uid"`
		} `json:"metadata"`
	}
	require.NoError(t, c.GetJSON(&claim, "get", "resourceclaim", "shared", "-n", "default"))
	slice := "claim-" + claim.Metadata.UID

	c.Apply(sharedClaimPod("s2", "shared"))
	requireClaimMemory(t, waitReady(t, c, "s2"), 4*GiB)
	waitLog(t, c, "s2", "PHASE allocated")
	waitSlicePods(t, c, node, slice, "s1", "s2")
	// Nothing held outside DRA: the whole GPU is offered (claims are the
	// scheduler's to count). Without the sync, s2's memory would be taken off.
	waitOffered(t, c, 16*GiB)
	err := cluster.WaitFor("no memory held outside a slice", podWait, nil, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		devs, err := node.client.Devices(ctx)
		if err != nil {
			return err
		}
		if devs[0].UnslicedBytes != 0 {
			return fmt.Errorf("%d bytes in no slice", devs[0].UnslicedBytes)
		}
		return nil
	})
	require.NoError(t, err)

	uid2 := podUID(t, c, "s2")
	c.MustKubectl("delete", "pod", "s1", "-n", "default", "--wait=false")
	waitGone(t, c, "s1")
	waitSlicePodUIDs(t, node, slice, uid2)
	c.MustKubectl("delete", "pod", "s2", "-n", "default", "--wait=false")
	waitGone(t, c, "s2")
	err = cluster.WaitFor("the shared claim's slice released", podWait, nil, func() error {
		for _, s := range node.slices() {
			if s.ID == slice {
				return fmt.Errorf("slice %s still there", slice)
			}
		}
		return nil
	})
	require.NoError(t, err)
	c.MustKubectl("delete", "resourceclaim", "shared", "-n", "default")
}

// requireClaimMemory checks that a pod's cuMemGetInfo showed the claim.
func requireClaimMemory(t *testing.T, logs string, claim uint64) {
	t.Helper()
	q := testproc.LineWith(t, logs, "QUERY")
	require.Equal(t, strconv.FormatUint(claim, 10), q["cu_total"], "cuMemGetInfo shows the claim: %s", logs)
}

// waitLog waits until the pod's log has a line starting with prefix.
func waitLog(t *testing.T, c *cluster.Cluster, name, prefix string) {
	t.Helper()
	err := cluster.WaitFor("pod "+name+" logging "+prefix, podWait, nil, func() error {
		logs, err := c.Kubectl("logs", name, "-n", "default")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(logs, "\n") {
			if strings.HasPrefix(l, prefix) {
				return nil
			}
		}
		return fmt.Errorf("log:\n%s", logs)
	})
	require.NoError(t, err)
}

func podUID(t *testing.T, c *cluster.Cluster, name string) string {
	t.Helper()
	p, err := getPod(c, name)
	require.NoError(t, err)
	require.NotEmpty(t, p.Metadata.UID)
	return p.Metadata.UID
}

// waitSlicePods waits until vgpud's slice id has exactly the pods' uids.
func waitSlicePods(t *testing.T, c *cluster.Cluster, node *gpuNode, id string, pods ...string) {
	t.Helper()
	var uids []string
	for _, p := range pods {
		uids = append(uids, podUID(t, c, p))
	}
	waitSlicePodUIDs(t, node, id, uids...)
}

func waitSlicePodUIDs(t *testing.T, node *gpuNode, id string, uids ...string) {
	t.Helper()
	slices.Sort(uids)
	err := cluster.WaitFor("slice "+id+" with pods "+strings.Join(uids, ","), podWait, nil, func() error {
		for _, s := range node.slices() {
			if s.ID != id {
				continue
			}
			got := slices.Clone(s.Owner.PodUIDs)
			slices.Sort(got)
			if !slices.Equal(got, uids) {
				return fmt.Errorf("pods %v", got)
			}
			return nil
		}
		return fmt.Errorf("no slice %s", id)
	})
	require.NoError(t, err)
}
