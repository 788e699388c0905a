package k8s

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/test/k8s/cluster"
)

// A claim's opaque configuration is written by whoever may create claims in
// a namespace: the plugin must refuse what it does not accept, and a refused
// claim must leave nothing behind and harm nobody.
var forgedConfigs = []struct {
	pod, template, params, want string
}{
	// More memory than the scheduler allocated, through a field that is not
	// the config's: memory comes from the allocation only.
	{"forged-mem", "gpu-forged-mem", "memory: 16Gi", `unknown field "memory"`},
	// An elastic ceiling above the GPU.
	{"forged-max", "gpu-forged-max", "memoryMax: 64Gi", "memoryMax"},
}

// forgedTemplate is claimTemplate's 1Gi claim with an opaque vgpu.io config
// holding params beside the right apiVersion and kind.
func forgedTemplate(name, params string) string {
	return claimTemplate(name, "1Gi") + fmt.Sprintf(`      config:
      - requests: [gpu]
        opaque:
          driver: %s
          parameters: {apiVersion: vgpu.io/v1alpha1, kind: SliceConfig, %s}
`, driver, params)
}

// checkForgedConfigs: pods whose claims carry a forged config are scheduled
// (the scheduler does not read opaque config) but never start: the kubelet
// reports the plugin's refusal; vgpud makes no slice for them, keeps
// serving, and the running pods keep their slices and caps. Deleted, they
// free what the scheduler had allocated them.
func checkForgedConfigs(t *testing.T, c *cluster.Cluster, node *gpuNode) {
	t.Helper()
	before := sliceIDs(node)
	for _, f := range forgedConfigs {
		c.Apply(forgedTemplate(f.template, f.params) + "---\n" + gpuPod(f.pod, f.template))
	}
	for _, f := range forgedConfigs {
		msg := waitEvent(t, c, f.pod, "FailedPrepareDynamicResources", f.want)
		t.Logf("%s: %s", f.pod, msg)
		p, err := getPod(c, f.pod)
		require.NoError(t, err)
		require.Equal(t, "Pending", p.Status.Phase, "%s never starts", f.pod)
		require.Empty(t, containersOf(t, c, f.pod), "%s: no sandbox or container created", f.pod)
	}
	require.Equal(t, before, sliceIDs(node), "no slice made for a refused claim")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := node.client.Health(ctx)
	require.NoError(t, err, "vgpud still serves")
	requireRunningAndCapped(t, c, "p1", "p2")
	for _, f := range forgedConfigs {
		c.MustKubectl("delete", "pod", f.pod, "-n", "default", "--wait=false")
	}
	for _, f := range forgedConfigs {
		waitGone(t, c, f.pod)
	}
	require.Equal(t, before, sliceIDs(node))
}

// event is the part of an Event the test reads.
type event struct {
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// waitEvent waits for an event of reason on the pod whose message contains
// want, and returns that message.
func waitEvent(t *testing.T, c *cluster.Cluster, podName, reason, want string) string {
	t.Helper()
	var msg string
	err := cluster.WaitFor("event "+reason+" of pod "+podName, podWait, nil, func() error {
		var list struct {
			Items []event `json:"items"`
		}
		if err := c.GetJSON(&list, "get", "events", "-n", "default",
			"--field-selector", "involvedObject.kind=Pod,involvedObject.name="+podName); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Reason == reason && strings.Contains(e.Message, want) {
				msg = e.Message
				return nil
			}
		}
		return fmt.Errorf("events so far: %+v", list.Items)
	})
	if err != nil {
		t.Fatal(err)
	}
	return msg
}
