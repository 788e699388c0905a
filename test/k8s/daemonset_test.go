package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/test/k8s/cluster"
)

// draImageArchive is the plugin's image as `make dra-image` saves it
// (deploy/kubernetes/Dockerfile over bin/vgpu-dra): the image users deploy,
// under the name deploy/kubernetes/daemonset.yaml gives it.
const draImageArchive = "build/vgpu-dra-image.tar"

// TestDRADaemonSet deploys the driver as users do: deploy/kubernetes/ (the
// namespace, RBAC, DeviceClass and the plugin's DaemonSet, its image the one
// `make dra-image` builds) applied for real to the cluster, with vgpud as the host
// service. The plugin pod registers with the kubelet and publishes the GPU
// through its service account; a claim's pod runs capped; the plugin pod
// deleted, the DaemonSet's new one re-adopts the claim and unprepares it
// when the pod goes.
func TestDRADaemonSet(t *testing.T) {
	c, node, root := setupNode(t, func(root, _ string) []string {
		archive := filepath.Join(root, draImageArchive)
		require.FileExists(t, archive, "run `make dra-image` first (make test-k8s does)")
		return []string{archive}
	})
	c.MustKubectl("label", "node", cluster.NodeName, "vgpu.io/enabled=true")
	c.Apply(deployManifests(t, root, c, node))
	first := waitPluginPod(t, c, "")
	err := cluster.WaitFor("the plugin pod's ResourceSlice", podWait, nil, func() error {
		_, err := nodeSlice(c)
		return err
	})
	require.NoError(t, err, "plugin log:\n%s", pluginLog(c, first))
	checkResourceSlice(t, c)

	c.Apply(claimTemplate("gpu-6gi", "6Gi") + "---\n" + gpuPod("p1", "gpu-6gi"))
	requireCapped(t, waitReady(t, c, "p1"), 6*GiB)
	slice := sliceOf(t, c, "p1")
	require.Equal(t, map[string]uint64{slice: 6 * GiB}, sliceIDs(node))

	// A new plugin pod (the DaemonSet replaces the deleted one) finds the
	// claim's slice in vgpud and unprepares it when the pod goes.
	c.MustKubectl("delete", "pod", "-n", "vgpu-system", first, "--wait=true", "--timeout=2m")
	second := waitPluginPod(t, c, first)
	t.Logf("plugin pod %s replaced by %s", first, second)
	require.Equal(t, map[string]uint64{slice: 6 * GiB}, sliceIDs(node), "the plugin's restart released nothing")
	c.MustKubectl("delete", "pod", "p1", "-n", "default", "--wait=false")
	waitGone(t, c, "p1")
	err = cluster.WaitFor("p1's slice released", podWait, nil, func() error {
		if s := node.slices(); len(s) != 0 {
			return fmt.Errorf("%d slices left: %+v", len(s), s)
		}
		return nil
	})
	require.NoError(t, err, "plugin log:\n%s", pluginLog(c, second))
}

// deployManifests is deploy/kubernetes/ without the example, changed only
// where this test node differs from a real one: the kubelet's directories under the test cluster's root dir and vgpud's
// socket in the node's dir instead of /var/lib/kubelet and /run/vgpu; host
// networking with the apiserver on the loopback (the test cluster runs no
// service proxy, so the in-cluster service address reaches nothing).
func deployManifests(t *testing.T, root string, c *cluster.Cluster, node *gpuNode) string {
	t.Helper()
	var docs []string
	for _, f := range []string{"namespace.yaml", "rbac.yaml", "deviceclass.yaml", "daemonset.yaml"} {
		data, err := os.ReadFile(filepath.Join(root, "deploy/kubernetes", f))
		require.NoError(t, err)
		docs = append(docs, string(data))
	}
	ds := docs[len(docs)-1]
	for _, r := range []struct{ old, new string }{
		{"/var/lib/kubelet/plugins_registry", filepath.Join(c.KubeletRoot, "plugins_registry")},
		{"/var/lib/kubelet/plugins\n", filepath.Join(c.KubeletRoot, "plugins") + "\n"},
		{"path: /run/vgpu\n", "path: " + filepath.Dir(node.vgpudSock) + "\n"},
		{"      serviceAccountName: vgpu-dra\n", "      serviceAccountName: vgpu-dra\n      hostNetwork: true\n"},
		{"          env:\n", "          env:\n            - {name: KUBERNETES_SERVICE_HOST, value: 127.0.0.1}\n" +
			"            - {name: KUBERNETES_SERVICE_PORT, value: \"" + strconv.Itoa(cluster.APIServerPort) + "\"}\n"},
	} {
		require.Positive(t, strings.Count(ds, r.old), "deploy/kubernetes/daemonset.yaml no longer has %q", r.old)
		ds = strings.ReplaceAll(ds, r.old, r.new)
	}
	docs[len(docs)-1] = ds
	return strings.Join(docs, "\n---\n")
}

// waitPluginPod waits until a plugin pod other than not runs and is ready,
// and returns its name.
func waitPluginPod(t *testing.T, c *cluster.Cluster, not string) string {
	t.Helper()
	var name string
	err := cluster.WaitFor("a running vgpu-dra pod", podWait, nil, func() error {
		var list struct {
			Items []struct {
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
				Status struct {
					Phase string `json:"phase"`
				} `json:"status"`
			} `json:"items"`
		}
		if err := c.GetJSON(&list, "get", "pods", "-n", "vgpu-system", "-l", "app.kubernetes.io/name=vgpu-dra"); err != nil {
			return err
		}
		for _, p := range list.Items {
			if p.Metadata.Name != not && p.Status.Phase == "Running" {
				name = p.Metadata.Name
				return nil
			}
		}
		return fmt.Errorf("plugin pods: %+v", list.Items)
	})
	require.NoError(t, err, "%s", describePlugin(c))
	return name
}

// pluginLog is a plugin pod's log (for failure messages).
func pluginLog(c *cluster.Cluster, pod string) string {
	out, err := c.Kubectl("logs", "-n", "vgpu-system", pod)
	if err != nil {
		return err.Error()
	}
	return out
}

// describePlugin is kubectl's account of the DaemonSet and its pods (for
// failure messages).
func describePlugin(c *cluster.Cluster) string {
	ctx := time.Now().Format(time.RFC3339)
	ds, _ := c.Kubectl("describe", "daemonset", "-n", "vgpu-system", "vgpu-dra")
	pods, _ := c.Kubectl("describe", "pods", "-n", "vgpu-system")
	return ctx + "\n" + ds + "\n" + pods
}
