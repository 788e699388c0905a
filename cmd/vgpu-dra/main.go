// Command vgpu-dra is vgpu's Kubernetes DRA driver (a kubelet plugin, driver
// vgpu.io): it publishes the GPUs vgpud manages in a ResourceSlice and makes
// a vgpud slice for each allocated ResourceClaim. See `vgpu-dra --help` and
// deploy/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/dra"
	"github.com/vgpu-project/vgpu/internal/logging"
)

const help = `vgpu-dra — vgpu's Dynamic Resource Allocation driver (kubelet plugin).

Usage:
  vgpu-dra --node-name NODE [flags]

vgpu-dra publishes every GPU vgpud manages as a device (gpu-<index>) of the
node's pool in a ResourceSlice (resource.k8s.io/v1), with attributes uuid,
productName, index, minor, memoryTotal, pciBusID, numaNode and two consumable
capacities: memory (bytes) and compute (percent, 100 a GPU) — what is left for
DRA once slices made outside DRA and processes in no slice are subtracted
(republished when that changes: vgpud is asked every --poll-interval).
Many claims share one GPU through consumable capacity (KEP-5075: the cluster
needs feature gate DRAConsumableCapacity, alpha in Kubernetes 1.34; without it
each GPU goes to one claim at a time, whole).

For each claim the kubelet prepares, it asks vgpud for a slice with the memory
and compute share the scheduler allocated (a request without a compute
capacity gets no share: not throttled, nothing reserved) and the claim's
opaque config for driver vgpu.io (apiVersion vgpu.io/v1alpha1, kind
SliceConfig: qos, priority, computePolicy, memoryMax), and hands the container
the CDI device vgpu.io/slice=<id> (vgpud writes its spec into its cdi_dir).
The slice's id is claim-<claim uid>; vgpud's store is the only state, so
prepare and unprepare are idempotent and a restarted plugin finds its slices.
The pods a claim is reserved for are the slice's members in vgpud (their
processes are judged by its backstop); a pod that joins a shared claim after
it was prepared gets no prepare call, so the claims of vgpud's claim slices
are read every --pod-sync-interval and vgpud told of new pods.

SIGTERM or SIGINT stop it cleanly; prepared slices stay with vgpud.
Exit status: 0 after a clean stop, 1 on an error, 2 on a bad command line.

Flags:
`

type options struct {
	nodeName     string
	kubeconfig   string
	socket       string
	registrarDir string
	pluginsDir   string
	driverName   string
	podUID       string
	poll         time.Duration
	podSync      time.Duration
	logFormat    string
	logLevel     string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, code, err := parseFlags(args, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "vgpu-dra: %v\n", err)
		return code
	}
	if code == 0 && o == nil {
		return 0 // --help
	}
	log, err := logging.New(o.logFormat, o.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "vgpu-dra: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	if err := serve(ctx, o, log); err != nil {
		fmt.Fprintf(stderr, "vgpu-dra: %v\n", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stdout io.Writer) (*options, int, error) {
	o := &options{}
	fs := flag.NewFlagSet("vgpu-dra", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's `NAME` (default: $NODE_NAME; required): the pool and the ResourceSlice's node")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig `FILE` (\"\": the in-cluster config of the pod's service account)")
	fs.StringVar(&o.socket, "vgpud-socket", api.DefaultSocket, "vgpud's API `SOCKET`")
	fs.StringVar(&o.registrarDir, "kubelet-registrar-dir", kubeletplugin.KubeletRegistryDir, "`DIR` where the kubelet looks for plugin registration sockets")
	fs.StringVar(&o.pluginsDir, "kubelet-plugins-dir", kubeletplugin.KubeletPluginsDir, "`DIR` of kubelet plugins: the driver's socket goes into DIR/<driver-name> (created)")
	fs.StringVar(&o.driverName, "driver-name", "vgpu.io", "the DRA driver `NAME` (DeviceClass selectors and opaque configs name it)")
	fs.StringVar(&o.podUID, "pod-uid", os.Getenv("POD_UID"), "the plugin pod's `UID` (default: $POD_UID): enables the kubelet's seamless plugin upgrades (Kubernetes >= 1.33); empty: off")
	fs.DurationVar(&o.poll, "poll-interval", 5*time.Second, "how often vgpud is asked whether what the GPUs offer DRA changed (`PERIOD`)")
	fs.DurationVar(&o.podSync, "pod-sync-interval", 2*time.Second, "how often the claims of vgpud's claim slices are read for pods that joined them (`PERIOD`)")
	fs.StringVar(&o.logFormat, "log-format", "json", "log `FORMAT`: json (one object a line) or console")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `LEVEL`: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var b strings.Builder
			fs.SetOutput(&b)
			fs.PrintDefaults()
			fmt.Fprint(stdout, help, b.String())
			return nil, 0, nil
		}
		return nil, 2, fmt.Errorf("%w (see vgpu-dra --help)", err)
	}
	if fs.NArg() > 0 {
		return nil, 2, fmt.Errorf("unexpected argument %q (see vgpu-dra --help)", fs.Arg(0))
	}
	if o.nodeName == "" {
		return nil, 2, errors.New("--node-name (or $NODE_NAME) is required")
	}
	if o.poll < 100*time.Millisecond {
		return nil, 2, fmt.Errorf("--poll-interval %s: want at least 100ms", o.poll)
	}
	if o.podSync < 100*time.Millisecond {
		return nil, 2, fmt.Errorf("--pod-sync-interval %s: want at least 100ms", o.podSync)
	}
	return o, 0, nil
}

// serve runs the plugin until ctx ends or the helper fails fatally.
func serve(ctx context.Context, o *options, log *zap.Logger) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	vgpud := api.NewClient(o.socket)
	defer vgpud.Close()
	return dra.Serve(ctx, dra.PluginConfig{DriverName: o.driverName, NodeName: o.nodeName,
		RegistrarDir: o.registrarDir, PluginsDir: o.pluginsDir, PodUID: o.podUID, PollInterval: o.poll,
		PodSyncInterval: o.podSync}, kube, vgpud, log)
}
