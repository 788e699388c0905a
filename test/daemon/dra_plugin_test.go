package daemon

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	drapbv1 "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/vgpu-project/vgpu/dra"
)

// dialUnix is a gRPC client of a unix socket, as the kubelet dials plugins.
func dialUnix(t *testing.T, path string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestDRAPluginWiring: dra.Serve (what vgpu-dra runs) as the kubelet and the
// apiserver see it, with the apiserver played by client-go's fake clientset
// and the kubelet by gRPC calls: it registers as vgpu.io, publishes the
// node's ResourceSlice from a real vgpud, and prepares and unprepares a
// claim over the DRA socket.
func TestDRAPluginWiring(t *testing.T) {
	nd, _, _ := draNodeWithCDI(t)
	claim := allocatedClaim("uid-w", 0, "3Gi", "10")
	kube := fake.NewClientset(claim, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: draNode, UID: "node-uid"}})
	dirs := filepath.Join(nd.dir, "kubelet")
	cfg := dra.PluginConfig{DriverName: "vgpu.io", NodeName: draNode, RegistrarDir: filepath.Join(dirs, "plugins_registry"),
		PluginsDir: filepath.Join(dirs, "plugins"), PollInterval: 100 * time.Millisecond}
	require.NoError(t, os.MkdirAll(cfg.RegistrarDir, 0o750))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- dra.Serve(ctx, cfg, kube, nd.client, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	}()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()

	regSock := filepath.Join(cfg.RegistrarDir, "vgpu.io-reg.sock")
	draSock := filepath.Join(cfg.PluginsDir, "vgpu.io", "dra.sock")
	require.Eventually(t, func() bool {
		_, e1 := os.Stat(regSock)
		_, e2 := os.Stat(draSock)
		return e1 == nil && e2 == nil
	}, 10*time.Second, 10*time.Millisecond, "the plugin's sockets")
	info, err := registerapi.NewRegistrationClient(dialUnix(t, regSock)).GetInfo(ctx, &registerapi.InfoRequest{})
	require.NoError(t, err)
	require.Equal(t, "vgpu.io", info.Name)
	require.Equal(t, draSock, info.Endpoint)
	require.Contains(t, info.SupportedVersions, drapbv1.DRAPluginService)

	require.Eventually(t, func() bool {
		l, err := kube.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 1
	}, 10*time.Second, 20*time.Millisecond, "the node's ResourceSlice is published")
	l, err := kube.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	rs := l.Items[0]
	require.Equal(t, "vgpu.io", rs.Spec.Driver)
	require.Equal(t, draNode, *rs.Spec.NodeName)
	require.Equal(t, draNode, rs.Spec.Pool.Name)
	require.Len(t, rs.Spec.Devices, 2)
	require.Equal(t, "gpu-0", rs.Spec.Devices[0].Name)

	plugin := drapbv1.NewDRAPluginClient(dialUnix(t, draSock))
	ref := &drapbv1.Claim{Namespace: claim.Namespace, Name: claim.Name, UID: string(claim.UID)}
	prep, err := plugin.NodePrepareResources(ctx, &drapbv1.NodePrepareResourcesRequest{Claims: []*drapbv1.Claim{ref}})
	require.NoError(t, err)
	got := prep.Claims[string(claim.UID)]
	require.Empty(t, got.Error)
	require.Len(t, got.Devices, 1)
	require.Equal(t, []string{"vgpu.io/slice=claim-uid-w"}, got.Devices[0].CDIDeviceIDs)
	sl, err := nd.client.Get(ctx, "claim-uid-w")
	require.NoError(t, err)
	require.Equal(t, 3*GiB, sl.Devices[0].MemoryBytes)

	unprep, err := plugin.NodeUnprepareResources(ctx, &drapbv1.NodeUnprepareResourcesRequest{Claims: []*drapbv1.Claim{ref}})
	require.NoError(t, err)
	require.Empty(t, unprep.Claims[string(claim.UID)].Error)
	slices, err := nd.client.Slices(ctx)
	require.NoError(t, err)
	require.Empty(t, slices)
}
