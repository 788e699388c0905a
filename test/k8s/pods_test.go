package k8s

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vgpu-project/vgpu/test/k8s/cluster"
)

// podWait bounds a pod reaching a state: generous on a loaded 2-core machine.
const podWait = 3 * time.Minute

// claimTemplate is a ResourceClaimTemplate asking for memory of one vgpu.io
// device (consumable capacity: the GPU is shared).
func claimTemplate(name, memory string) string {
	return fmt.Sprintf(`apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: %s, namespace: default}
spec:
  spec:
%s`, name, indent(claimSpec(memory), "    "))
}

// claimSpec is a ResourceClaim's spec asking for memory of one vgpu.io device.
func claimSpec(memory string) string {
	return fmt.Sprintf(`devices:
  requests:
  - name: gpu
    exactly:
      deviceClassName: %s
      capacity:
        requests:
          memory: %s
`, driver, memory)
}

// indent puts prefix before every line of text.
func indent(text, prefix string) string {
	lines := strings.SplitAfter(text, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}

// workload is what each test pod runs: allocate until the driver refuses
// (the cap), then what cuMemGetInfo says, then it holds the claim until deleted.
const workload = `/bin/alloc --api alloc --path linked --until-oom --chunk 64MiB && ` +
	`/bin/query </dev/null && echo READY && exec sleep 100000`

// gpuPod is a pod of the test image running workload, with one claim made
// from template.
func gpuPod(name, template string) string {
	return testPod(name, workload) + fmt.Sprintf(`    resources:
      claims: [{name: gpu}]
  resourceClaims:
  - name: gpu
    resourceClaimTemplateName: %s
`, template)
}

// testPod is a pod of the test image running script in sh, without claims.
func testPod(name, script string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default}
spec:
  hostNetwork: true
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: work
    image: %s
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", %q]
`, name, testImage, script)
}

// pod is the part of a Pod the test reads.
type pod struct {
	Metadata struct {
		UID string `json:"uid"`
	} `json:"metadata"`
	Spec struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		Phase                 string              `json:"phase"`
		Conditions            []cluster.Condition `json:"conditions"`
		ContainerStatuses     []any               `json:"containerStatuses"`
		ResourceClaimStatuses []struct {
			Name              string `json:"name"`
			ResourceClaimName string `json:"resourceClaimName"`
		} `json:"resourceClaimStatuses"`
	} `json:"status"`
}

func getPod(c *cluster.Cluster, name string) (pod, error) {
	var p pod
	err := c.GetJSON(&p, "get", "pod", name, "-n", "default")
	return p, err
}

func (p pod) condition(typ string) (cluster.Condition, bool) {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c, true
		}
	}
	return cluster.Condition{}, false
}

// waitReady waits until the pod runs and its workload printed READY, and
// returns the pod's log.
func waitReady(t *testing.T, c *cluster.Cluster, name string) string {
	t.Helper()
	var logs string
	err := cluster.WaitFor("pod "+name+" running its workload", podWait, nil, func() error {
		p, err := getPod(c, name)
		if err != nil {
			return err
		}
		if p.Status.Phase != "Running" {
			return fmt.Errorf("phase %q, conditions %+v", p.Status.Phase, p.Status.Conditions)
		}
		logs, err = c.Kubectl("logs", name, "-n", "default")
		if err != nil {
			return err
		}
		if !strings.Contains(logs, "READY") {
			return fmt.Errorf("no READY yet; log:\n%s", logs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return logs
}

// waitUnschedulable waits until the scheduler has marked the pod
// unschedulable for the reason want (a part of the condition's message:
// before the claim controller made the pod's claim, the pod waits for that
// instead), and returns its PodScheduled condition.
func waitUnschedulable(t *testing.T, c *cluster.Cluster, name, want string) cluster.Condition {
	t.Helper()
	var cond cluster.Condition
	err := cluster.WaitFor("pod "+name+" unschedulable: "+want, podWait, nil, func() error {
		p, err := getPod(c, name)
		if err != nil {
			return err
		}
		var ok bool
		cond, ok = p.condition("PodScheduled")
		if !ok || cond.Status != "False" || cond.Reason != "Unschedulable" || !strings.Contains(cond.Message, want) {
			return fmt.Errorf("phase %q, PodScheduled %+v", p.Status.Phase, cond)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return cond
}

// waitGone waits until the pod object is gone (deleted, its containers stopped).
func waitGone(t *testing.T, c *cluster.Cluster, name string) {
	t.Helper()
	err := cluster.WaitFor("pod "+name+" gone", podWait, nil, func() error {
		_, err := c.Kubectl("get", "pod", name, "-n", "default")
		if err == nil {
			return errors.New("still there")
		}
		if strings.Contains(err.Error(), "NotFound") || strings.Contains(err.Error(), "not found") {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// containersOf lists the CRI containers (sandboxes included) containerd
// holds for a pod: none means the pod never reached the node.
func containersOf(t *testing.T, c *cluster.Cluster, name string) []string {
	t.Helper()
	out, err := c.Ctr("containers", "ls", "-q", fmt.Sprintf(`labels."io.kubernetes.pod.name"==%s`, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)
}

// nodeSlice returns the devices of the driver's ResourceSlice for the node.
func nodeSlice(c *cluster.Cluster) ([]map[string]any, error) {
	var list struct {
		Items []struct {
			Spec struct {
				Devices []map[string]any `json:"devices"`
			} `json:"spec"`
		} `json:"items"`
	}
	err := c.GetJSON(&list, "get", "resourceslices",
		"--field-selector", "spec.driver="+driver+",spec.nodeName="+cluster.NodeName)
	if err != nil {
		return nil, err
	}
	if len(list.Items) == 0 {
		return nil, errors.New("no ResourceSlice yet")
	}
	var devs []map[string]any
	for _, it := range list.Items {
		devs = append(devs, it.Spec.Devices...)
	}
	if len(devs) == 0 {
		return nil, errors.New("ResourceSlice without devices")
	}
	return devs, nil
}

// sliceOf is the vgpud slice of a pod's claim: the plugin names it after the
// claim's uid (claim-<uid>).
func sliceOf(t *testing.T, c *cluster.Cluster, name string) string {
	t.Helper()
	p, err := getPod(c, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Status.ResourceClaimStatuses) != 1 || p.Status.ResourceClaimStatuses[0].ResourceClaimName == "" {
		t.Fatalf("pod %s: no generated claim: %+v", name, p.Status.ResourceClaimStatuses)
	}
	var claim struct {
		Metadata struct {
			UID string `json:"uid"`
		} `json:"metadata"`
	}
	if err := c.GetJSON(&claim, "get", "resourceclaim", p.Status.ResourceClaimStatuses[0].ResourceClaimName,
		"-n", "default"); err != nil {
		t.Fatal(err)
	}
	return "claim-" + claim.Metadata.UID
}
