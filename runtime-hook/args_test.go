package runtimehook

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseArgs(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want Invocation
	}{
		{
			name: "containerd shim create",
			args: []string{"--root", "/run/containerd/runc/k8s.io", "--log", "/b/log.json", "--log-format", "json",
				"--systemd-cgroup", "create", "--bundle", "/b", "--pid-file", "/b/init.pid", "--console-socket", "/tmp/c.sock", "abc"},
			want: Invocation{Root: "/run/containerd/runc/k8s.io", Log: "/b/log.json", LogFormat: "json",
				Command: "create", Bundle: "/b", ContainerID: "abc"},
		},
		{
			name: "equals forms and -b",
			args: []string{"--root=/r", "--log=/l", "--log-format=text", "create", "-b", "/bb", "--no-pivot", "id1"},
			want: Invocation{Root: "/r", Log: "/l", LogFormat: "text", Command: "create", Bundle: "/bb", ContainerID: "id1"},
		},
		{
			name: "single dash, bundle=, preserve-fds",
			args: []string{"-debug", "-log", "/l", "create", "--bundle=/x", "--preserve-fds", "2", "c"},
			want: Invocation{Log: "/l", LogFormat: "text", Command: "create", Bundle: "/x", ContainerID: "c", PreserveFDs: 2},
		},
		{
			name: "no bundle: the working dir",
			args: []string{"create", "c2"},
			want: Invocation{LogFormat: "text", Command: "create", ContainerID: "c2"},
		},
		{
			name: "other command",
			args: []string{"--root", "/r", "delete", "--force", "c"},
			want: Invocation{Root: "/r", LogFormat: "text", Command: "delete"},
		},
		{
			name: "start: not create",
			args: []string{"start", "c"},
			want: Invocation{LogFormat: "text", Command: "start"},
		},
		{
			name: "version flag only",
			args: []string{"--version"},
			want: Invocation{LogFormat: "text"},
		},
		{
			name: "rootless takes a value",
			args: []string{"--rootless", "false", "create", "--bundle", "/b", "c"},
			want: Invocation{LogFormat: "text", Command: "create", Bundle: "/b", ContainerID: "c"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inv, err := ParseArgs(c.args)
			require.NoError(t, err)
			require.Equal(t, c.args, inv.RuncArgs, "runc gets the command line as it came")
			inv.RuncArgs = nil
			require.Equal(t, c.want, inv)
		})
	}
}

func TestParseArgsOwnFlags(t *testing.T) {
	inv, err := ParseArgs([]string{"--vgpu-config", "/c.json", "--vgpu-socket=/s", "--root", "/r",
		"--vgpu-runc", "/usr/sbin/runc", "--vgpu-libvgpu", "/l.so", "create", "--bundle", "/b", "c"})
	require.NoError(t, err)
	require.Equal(t, Overrides{ConfigPath: "/c.json", Socket: "/s", Runc: "/usr/sbin/runc", LibVGPU: "/l.so"}, inv.Own)
	require.Equal(t, []string{"--root", "/r", "create", "--bundle", "/b", "c"}, inv.RuncArgs,
		"vgpu-runtime's own flags never reach runc")

	_, err = ParseArgs([]string{"--vgpu-bogus", "x", "create", "c"})
	require.ErrorContains(t, err, "unknown flag --vgpu-bogus")
	_, err = ParseArgs([]string{"--vgpu-config"})
	require.ErrorContains(t, err, "needs a value")
}
