package cluster

import (
	"fmt"
	"os"
)

func (c *Cluster) startEtcd() error {
	p, err := c.startProc("etcd", nil, c.bin("etcd"), c.etcdArgs()...)
	if err != nil {
		return err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/health", EtcdPort)
	return WaitFor("etcd /health", c.cfg.StartTimeout, p, func() error { return httpOK(insecureClient(), url) })
}

func (c *Cluster) startAPIServer() error {
	p, err := c.startProc("kube-apiserver", nil, c.bin("kube-apiserver"), c.apiserverArgs()...)
	if err != nil {
		return err
	}
	client, err := c.apiClient()
	if err != nil {
		return err
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/readyz", APIServerPort)
	return WaitFor("kube-apiserver /readyz", c.cfg.StartTimeout, p, func() error { return httpOK(client, url) })
}

func (c *Cluster) startControllerManager() error {
	p, err := c.startProc("kube-controller-manager", nil, c.bin("kube-controller-manager"), c.controllerManagerArgs()...)
	if err != nil {
		return err
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz", kcmPort)
	return WaitFor("kube-controller-manager /healthz", c.cfg.StartTimeout, p,
		func() error { return httpOK(insecureClient(), url) })
}

func (c *Cluster) startScheduler() error {
	p, err := c.startProc("kube-scheduler", nil, c.bin("kube-scheduler"), c.schedulerArgs()...)
	if err != nil {
		return err
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz", schedulerPort)
	return WaitFor("kube-scheduler /healthz", c.cfg.StartTimeout, p,
		func() error { return httpOK(insecureClient(), url) })
}

// startContainerd starts containerd v1.7 and imports the images. Its shim
// (containerd-shim-runc-v2, found on PATH) must be the v1.7 one from the same
// build, not Debian's 1.6: the cache's bin dir comes first.
func (c *Cluster) startContainerd() error {
	cfg, err := c.containerdConfig()
	if err != nil {
		return err
	}
	env := []string{"PATH=" + c.cfg.BinDir + ":" + os.Getenv("PATH")}
	p, err := c.startProc("containerd", env, c.bin("containerd"), "--config", cfg)
	if err != nil {
		return err
	}
	if err := WaitFor("containerd socket", c.cfg.StartTimeout, p, func() error { return dialUnix(c.ContainerdSock) }); err != nil {
		return err
	}
	for _, img := range c.cfg.Images {
		if out, err := c.Ctr("images", "import", img); err != nil {
			return fmt.Errorf("ctr images import %s: %w: %s", img, err, out)
		}
	}
	return nil
}

func (c *Cluster) startKubelet() error {
	cfg, err := c.kubeletConfig()
	if err != nil {
		return err
	}
	p, err := c.startProc("kubelet", nil, c.bin("kubelet"), c.kubeletArgs(cfg)...)
	if err != nil {
		return err
	}
	c.kubelet = p
	return WaitFor("node "+NodeName+" Ready", c.cfg.StartTimeout, p, c.nodeReady)
}

// nodeReady is nil once the node reports Ready=True.
func (c *Cluster) nodeReady() error {
	var node struct {
		Status struct {
			Conditions []Condition `json:"conditions"`
		} `json:"status"`
	}
	if err := c.GetJSON(&node, "get", "node", NodeName); err != nil {
		return err
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == "Ready" {
			if cond.Status == "True" {
				return nil
			}
			return fmt.Errorf("condition Ready=%s: %s: %s", cond.Status, cond.Reason, cond.Message)
		}
	}
	return fmt.Errorf("no Ready condition yet")
}

// Condition is a status condition of a node or pod.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}
