package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Fixed, non-default ports (the defaults plus 10000 or so), so the test
// cluster cannot be mistaken for, or clash with, a real one on this machine.
const (
	EtcdPort       = 23790
	etcdPeerPort   = 23800
	APIServerPort  = 16443
	KubeletPort    = 20250
	kubeletHealthz = 20248
	kcmPort        = 20257
	schedulerPort  = 20259
)

// The pause image: containerd's CRI runs it as every pod's sandbox; the test
// builds and imports it under this name (nothing is pulled).
const PauseImage = "registry.k8s.io/pause:3.10"

func (c *Cluster) ports() []int {
	return []int{EtcdPort, etcdPeerPort, APIServerPort, KubeletPort, kubeletHealthz, kcmPort, schedulerPort}
}

func (c *Cluster) etcdArgs() []string {
	client := "http://127.0.0.1:" + strconv.Itoa(EtcdPort)
	peer := "http://127.0.0.1:" + strconv.Itoa(etcdPeerPort)
	return []string{"--name", "default", "--data-dir", filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default=" + peer,
		// A throw-away test store: no fsync keeps a loaded CI disk out of the way.
		"--unsafe-no-fsync", "--log-level", "warn"}
}

func (c *Cluster) apiserverArgs() []string {
	p := c.pki.path
	return []string{
		"--etcd-servers", "http://127.0.0.1:" + strconv.Itoa(EtcdPort),
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(APIServerPort),
		// The kubernetes service's endpoints would be 127.0.0.1, which is invalid.
		"--endpoint-reconciler-type", "none",
		// The node is "localhost": its kubelet is reached by that name.
		"--kubelet-preferred-address-types", "Hostname,InternalIP",
		"--authorization-mode", "Node,RBAC",
		"--client-ca-file", p("ca.crt"),
		"--tls-cert-file", p("apiserver.crt"), "--tls-private-key-file", p("apiserver.key"),
		"--kubelet-client-certificate", p("apiserver-kubelet.crt"), "--kubelet-client-key", p("apiserver-kubelet.key"),
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", p("sa.pub"), "--service-account-signing-key-file", p("sa.key"),
		"--service-cluster-ip-range", "10.96.0.0/24",
		"--feature-gates", c.cfg.FeatureGates,
		"--profiling=false",
	}
}

func (c *Cluster) controllerManagerArgs() []string {
	p := c.pki.path
	return []string{
		"--kubeconfig", p("controller-manager.kubeconfig"),
		"--authentication-kubeconfig", p("controller-manager.kubeconfig"),
		"--authorization-kubeconfig", p("controller-manager.kubeconfig"),
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(kcmPort),
		"--leader-elect=false", "--use-service-account-credentials=true",
		"--service-account-private-key-file", p("sa.key"), "--root-ca-file", p("ca.crt"),
		"--feature-gates", c.cfg.FeatureGates,
		"--profiling=false",
	}
}

func (c *Cluster) schedulerArgs() []string {
	p := c.pki.path
	return []string{
		"--kubeconfig", p("scheduler.kubeconfig"),
		"--authentication-kubeconfig", p("scheduler.kubeconfig"),
		"--authorization-kubeconfig", p("scheduler.kubeconfig"),
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(schedulerPort),
		"--leader-elect=false",
		"--feature-gates", c.cfg.FeatureGates,
		"--profiling=false",
	}
}

// containerdConfig writes containerd's config (v1.7, version 2 format): its own
// root, state, sockets, runc root and CNI config, so it shares nothing with a
// containerd the machine may run, and CDI on for the DRA driver's devices.
func (c *Cluster) containerdConfig() (string, error) {
	d := filepath.Join(c.Dir, "containerd")
	cniConf := filepath.Join(d, "cni")
	if err := os.MkdirAll(cniConf, 0o755); err != nil {
		return "", err
	}
	// Pods use the host's network; the runtime reports NetworkReady once a CNI
	// config loads, so a loopback-only one is enough.
	lo := `{"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]}`
	if err := os.WriteFile(filepath.Join(cniConf, "10-lo.conflist"), []byte(lo), 0o644); err != nil {
		return "", err
	}
	cri := `plugins."io.containerd.grpc.v1.cri"`
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[%[6]s]
  sandbox_image = %[7]q
  enable_cdi = true
  cdi_spec_dirs = [%[8]q]
  # REQUIRED in a sandbox without CAP_SYS_RESOURCE: runc fails every sandbox
  # ("can't get final child's PID from pipe") when it cannot lower the
  # pause process's oom_score_adj to -998.
  restrict_oom_score_adj = true
  enable_selinux = false
  [%[6]s.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [%[6]s.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [%[6]s.containerd.runtimes.runc.options]
        BinaryName = %[9]q
        Root = %[10]q
        SystemdCgroup = false
  [%[6]s.cni]
    bin_dir = %[11]q
    conf_dir = %[12]q
`, filepath.Join(d, "root"), filepath.Join(d, "state"), c.ContainerdSock, c.ContainerdSock+".ttrpc",
		filepath.Join(d, "opt"), cri, PauseImage, c.cfg.CDIDir, c.cfg.Runc, filepath.Join(d, "runc"),
		c.cfg.CNIBinDir, cniConf)
	path := filepath.Join(d, "config.toml")
	return path, os.WriteFile(path, []byte(cfg), 0o644)
}

// kubeletConfig writes the kubelet's configuration file.
func (c *Cluster) kubeletConfig() (string, error) {
	p := c.pki.path
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
healthzBindAddress: 127.0.0.1
healthzPort: %d
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
# The CI machines run cgroup v1 (hybrid); swap may be on.
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
podLogsDir: %q
containerRuntimeEndpoint: unix://%s
imageServiceEndpoint: unix://%s
# A loaded CI disk must not evict the test's pods.
evictionHard: {"memory.available": "1Mi", "nodefs.available": "1%%", "imagefs.available": "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
featureGates: {%s}
`, KubeletPort, kubeletHealthz, p("ca.crt"), filepath.Join(c.Dir, "pod-logs"), c.ContainerdSock,
		c.ContainerdSock, gatesYAML(c.cfg.FeatureGates))
	path := filepath.Join(c.Dir, "kubelet.yaml")
	return path, os.WriteFile(path, []byte(cfg), 0o644)
}

func (c *Cluster) kubeletArgs(config string) []string {
	return []string{
		"--config", config,
		"--kubeconfig", c.pki.path("kubelet.kubeconfig"),
		"--root-dir", c.KubeletRoot,
		"--cert-dir", filepath.Join(c.Dir, "kubelet-pki"),
		// The apiserver reaches the kubelet by this name (Hostname address);
		// the kubelet refuses a loopback --node-ip.
		"--hostname-override", NodeName,
		"--v", "2",
	}
}

// gatesYAML turns "A=true,B=false" into "A: true, B: false".
func gatesYAML(gates string) string {
	var out []string
	for _, g := range strings.Split(gates, ",") {
		if k, v, ok := strings.Cut(g, "="); ok {
			out = append(out, k+": "+v)
		}
	}
	return strings.Join(out, ", ")
}
