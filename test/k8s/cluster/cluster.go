// Package cluster starts and stops a real single-node Kubernetes cluster for
// the tests in test/k8s: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, containerd (v1.7, CRI with CDI) and the kubelet as host
// processes, from binaries test/k8s/build.sh built into a cache, everything
// under one working directory. Test code only: product code never imports it.
package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// NodeName is the node's name; the apiserver reaches its kubelet by it.
const NodeName = "localhost"

// Config says what to run.
type Config struct {
	BinDir       string   // the built binaries (build.sh's output)
	Runc         string   // runc (Debian's)
	CNIBinDir    string   // CNI plugins (Debian's containernetworking-plugins)
	CDIDir       string   // where containerd reads CDI specs (vgpud publishes there)
	FeatureGates string   // for apiserver, controller-manager, scheduler and kubelet
	Images       []string // OCI archives imported before the kubelet starts (the pause image among them)
	// StartTimeout bounds each component's start (default 3 minutes: a loaded
	// 2-core machine).
	StartTimeout time.Duration
}

// Cluster is a running cluster.
type Cluster struct {
	t              testing.TB
	cfg            Config
	pki            *pki
	Dir            string // everything: logs, data, sockets
	Admin          string // an admin (system:masters) kubeconfig
	KubeletRoot    string // the kubelet's --root-dir
	ContainerdSock string
	procs          []*Proc // in start order
	host           *hostState
	kubelet        *Proc
}

// Start starts a cluster and registers its stop (and the cleanup of what it
// leaves on the host) with t.Cleanup; it fails t when a component does not
// come up, with the components' log tails.
func Start(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 3 * time.Minute
	}
	// A short path: unix socket paths (kubelet plugins, shims) have a
	// 108-byte limit, which t.TempDir's long names come close to.
	dir, err := os.MkdirTemp("", "vgpu-k8s-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, cfg: cfg, Dir: dir, KubeletRoot: filepath.Join(dir, "kubelet"),
		ContainerdSock: filepath.Join(dir, "containerd", "containerd.sock")}
	c.host = saveHost(dir)
	t.Cleanup(c.stop)
	t0 := time.Now()
	if err := c.start(); err != nil {
		c.DumpLogs()
		t.Fatalf("test cluster: %v", err)
	}
	t.Logf("test cluster up in %s (node %s Ready), in %s", time.Since(t0).Round(100*time.Millisecond), NodeName, dir)
	return c
}

func (c *Cluster) start() error {
	for _, port := range c.ports() {
		if err := portFree(port); err != nil {
			return err
		}
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
		"kubectl", "containerd", "containerd-shim-runc-v2", "ctr"} {
		if _, err := os.Stat(c.bin(b)); err != nil {
			return fmt.Errorf("%w: run `make k8s-binaries` (test/k8s/build.sh)", err)
		}
	}
	for _, d := range []string{filepath.Join(c.Dir, "logs"), c.KubeletRoot, c.cfg.CDIDir,
		filepath.Join(c.Dir, "containerd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := c.makePKI(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	steps := []struct {
		name string
		fn   func() error
	}{
		{"etcd", c.startEtcd}, {"kube-apiserver", c.startAPIServer},
		{"kube-controller-manager", c.startControllerManager}, {"kube-scheduler", c.startScheduler},
		{"containerd", c.startContainerd}, {"kubelet", c.startKubelet},
	}
	for _, s := range steps {
		t0 := time.Now()
		if err := s.fn(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		c.t.Logf("%s up in %s", s.name, time.Since(t0).Round(100*time.Millisecond))
	}
	// Pods need the default service account (the controller-manager makes it).
	return WaitFor("the default service account", c.cfg.StartTimeout, nil, func() error {
		_, err := c.Kubectl("get", "serviceaccount", "default", "-n", "default")
		return err
	})
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.cfg.BinDir, name) }

// startProc starts a component with its log in <dir>/logs and keeps it for the stop.
func (c *Cluster) startProc(name string, env []string, bin string, args ...string) (*Proc, error) {
	p, err := StartProc(filepath.Join(c.Dir, "logs"), name, env, bin, args...)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

func (c *Cluster) makePKI() error {
	p, err := newPKI(filepath.Join(c.Dir, "pki"))
	if err != nil {
		return err
	}
	c.pki = p
	ids := []struct{ name, cn, org string }{
		{"admin", "vgpu-k8s-admin", "system:masters"},
		{"controller-manager", "system:kube-controller-manager", ""},
		{"scheduler", "system:kube-scheduler", ""},
		{"kubelet", "system:node:" + NodeName, "system:nodes"},
		{"apiserver-kubelet", "kube-apiserver-kubelet-client", "system:masters"},
	}
	for _, id := range ids {
		var orgs []string
		if id.org != "" {
			orgs = []string{id.org}
		}
		if err := p.issue(id.name, id.cn, orgs); err != nil {
			return err
		}
	}
	if err := p.issue("apiserver", "kube-apiserver", nil, "127.0.0.1", "localhost", "10.96.0.1",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc"); err != nil {
		return err
	}
	server := "https://127.0.0.1:" + strconv.Itoa(APIServerPort)
	for _, name := range []string{"admin", "controller-manager", "scheduler", "kubelet"} {
		path, err := p.kubeconfig(name, server)
		if err != nil {
			return err
		}
		if name == "admin" {
			c.Admin = path
		}
	}
	return nil
}

// apiClient is an HTTPS client that trusts the cluster's CA and presents the
// admin certificate (for /readyz and the components' /healthz).
func (c *Cluster) apiClient() (*http.Client, error) {
	caPEM, err := os.ReadFile(c.pki.path("ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("bad ca.crt")
	}
	cert, err := tls.LoadX509KeyPair(c.pki.path("admin.crt"), c.pki.path("admin.key"))
	if err != nil {
		return nil, err
	}
	// The components' own serving certificates are self-signed: their
	// /healthz is checked without verification; the apiserver's with the CA.
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}}, nil
}

func insecureClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}} //nolint:gosec // a local test component's self-signed cert
}

// DumpLogs logs the tail of every component's log (on failure).
func (c *Cluster) DumpLogs() {
	for _, p := range c.procs {
		max := 6 << 10
		if p.Name == "kubelet" || p.Name == "containerd" {
			max = 16 << 10
		}
		c.t.Logf("--- %s log (tail) ---\n%s", p.Name, p.Tail(max))
	}
}
