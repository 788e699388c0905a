package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFlags: the agreed flags and their defaults; the node name is
// required (flag or $NODE_NAME); bad command lines exit 2 with a reason.
func TestFlags(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	t.Setenv("POD_UID", "")
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, &out, &errOut))
	for _, f := range []string{"--node-name", "--kubeconfig", "--vgpud-socket", "--kubelet-registrar-dir",
		"--kubelet-plugins-dir", "--driver-name", "DRAConsumableCapacity"} {
		require.Contains(t, strings.ReplaceAll(out.String(), "  -", "  --"), f)
	}

	_, code, err := parseFlags(nil, &out)
	require.Equal(t, 2, code)
	require.ErrorContains(t, err, "--node-name (or $NODE_NAME) is required")
	require.Equal(t, 2, run(context.Background(), []string{"--bogus"}, &out, &errOut))
	require.Contains(t, errOut.String(), "see vgpu-dra --help")

	t.Setenv("NODE_NAME", "n1")
	o, code, err := parseFlags(nil, &out)
	require.NoError(t, err)
	require.Zero(t, code)
	require.Equal(t, options{nodeName: "n1", socket: "/run/vgpu/vgpud.sock",
		registrarDir: "/var/lib/kubelet/plugins_registry", pluginsDir: "/var/lib/kubelet/plugins",
		driverName: "vgpu.io", poll: 5 * time.Second, podSync: 2 * time.Second, logFormat: "json", logLevel: "info"}, *o)
	for _, bad := range []string{"--poll-interval", "--pod-sync-interval"} {
		_, code, err = parseFlags([]string{bad, "1ms"}, &out)
		require.Equal(t, 2, code)
		require.ErrorContains(t, err, bad+" 1ms: want at least 100ms")
	}
}
