package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/daemon/api"
)

// The table shows each process's identities, its cgroup path, the container
// id shortened, and "-" for what is unknown.
func TestPsTable(t *testing.T) {
	id := strings.Repeat("0123456789abcdef", 4)
	var out bytes.Buffer
	require.NoError(t, psTable(&out, api.Processes{Tracker: "ebpf", Processes: []api.TrackedProcess{
		{PID: 4242, NSPID: 1, PIDNamespace: 4026532000, StartTime: 777, CgroupID: 9,
			CgroupPath: "/system.slice/docker-" + id + ".scope", ContainerID: id, Devices: []string{"195:0", "195:255"}},
		{PID: 17, StartTime: 5, Devices: []string{"195:1"}},
	}}))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 3)
	require.Equal(t, []string{"PID", "NSPID", "PIDNS", "START", "CGROUP", "CONTAINER", "DEVICES"}, strings.Fields(lines[0]))
	require.Equal(t, []string{"4242", "1", "4026532000", "777", "/system.slice/docker-" + id + ".scope",
		id[:12], "195:0,195:255"}, strings.Fields(lines[1]))
	require.Equal(t, []string{"17", "-", "-", "5", "-", "-", "195:1"}, strings.Fields(lines[2]))

	out.Reset()
	require.NoError(t, psTable(&out, api.Processes{Tracker: "procfs", Processes: []api.TrackedProcess{}}))
	require.Equal(t, "no processes hold a GPU device (tracker procfs)\n", out.String())
}

func TestPsUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, exitOK, run([]string{"ps", "--help"}, &stdout, &stderr))
	require.Contains(t, stdout.String(), "GET /v1/processes")
	require.Contains(t, stdout.String(), "-json")
	stdout.Reset()
	require.Equal(t, exitUsage, run([]string{"ps", "extra"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), `unexpected argument "extra"`)
}
