package simgpu

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestInitStatusRoundTrip(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "node")
	cfg := Config{Devices: 3, Memory: 4 << 30, SMs: 66, NsPerBlock: 1234, ContextMemory: u64(0), MaxBacklog: 2 * time.Second}
	require.NoError(t, Init(state, cfg))

	st, err := Status(state)
	require.NoError(t, err)
	require.Equal(t, uint64(1234), st.NsPerBlock)
	require.Equal(t, uint64(0), st.ContextMemory, "an explicit zero context memory is kept")
	require.Equal(t, uint64(2*time.Second), st.MaxBacklogNs)
	require.Equal(t, state+".dev/nvidia%d", st.DeviceNodes)
	require.Len(t, st.Devices, 3)
	uuidRE := regexp.MustCompile(`^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for i, d := range st.Devices {
		require.Equal(t, i, d.Index)
		require.Equal(t, DefaultName, d.Name)
		require.Regexp(t, uuidRE, d.UUID)
		require.False(t, seen[d.UUID], "duplicate uuid %s", d.UUID)
		seen[d.UUID] = true
		require.Equal(t, DeviceUUID(state, i), d.UUID, "uuid is derived from the state path")
		require.Equal(t, uint64(4<<30), d.Total)
		require.Equal(t, uint64(0), d.Used)
		require.Equal(t, d.Total, d.Free)
		require.Equal(t, 66, d.SMs)
		require.Equal(t, i, d.Minor)
		require.Equal(t, "00000000:0"+strconv.Itoa(i+1)+":00.0", d.PCIBusID)
		require.Empty(t, d.Processes)
		fi, err := os.Stat(filepath.Join(state+".dev", "nvidia"+strconv.Itoa(i)))
		require.NoError(t, err, "device node file created")
		require.True(t, fi.Mode().IsRegular())
	}
	fi, err := os.Stat(state)
	require.NoError(t, err)
	require.Equal(t, int64(StateSize), fi.Size())
	require.Equal(t, os.FileMode(0o666), fi.Mode().Perm(), "every process of the node maps it read-write")
}

func TestInitDefaults(t *testing.T) {
	state := filepath.Join(t.TempDir(), "node")
	require.NoError(t, Init(state, Config{Devices: 1, Memory: 1 << 30, SMs: 1}))
	st, err := Status(state)
	require.NoError(t, err)
	require.Equal(t, DefaultNsPerBlock, st.NsPerBlock)
	require.Equal(t, DefaultContextMemory, st.ContextMemory)
	require.Equal(t, uint64(DefaultMaxBacklog), st.MaxBacklogNs)
	require.Equal(t, uint64(DefaultSamplePeriod), st.SamplePeriodNs)
}

func TestInitDeviceNodePattern(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "node")
	require.NoError(t, Init(state, Config{Devices: 2, Memory: 1 << 30, SMs: 1, DeviceNodes: filepath.Join(dir, "vgpusim%d")}))
	st, err := Status(state)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, "vgpusim%d"), st.DeviceNodes)
	_, err = os.Stat(state + ".dev")
	require.True(t, os.IsNotExist(err), "with a pattern, init creates no device files")
}

func TestInitRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]Config{
		"zero devices":           {Devices: 0, Memory: 1 << 30, SMs: 1},
		"too many devices":       {Devices: MaxDevices + 1, Memory: 1 << 30, SMs: 1},
		"zero memory":            {Devices: 1, Memory: 0, SMs: 1},
		"zero sms":               {Devices: 1, Memory: 1 << 30, SMs: 0},
		"context >= memory":      {Devices: 1, Memory: 1 << 20, SMs: 1},
		"backlog too long":       {Devices: 1, Memory: 1 << 30, SMs: 1, MaxBacklog: 10 * time.Second},
		"pattern without %d":     {Devices: 1, Memory: 1 << 30, SMs: 1, DeviceNodes: "/dev/vgpusim"},
		"pattern with other %":   {Devices: 1, Memory: 1 << 30, SMs: 1, DeviceNodes: "/dev/%s%d"},
		"relative pattern":       {Devices: 1, Memory: 1 << 30, SMs: 1, DeviceNodes: "dev/vgpusim%d"},
		"name too long":          {Devices: 1, Memory: 1 << 30, SMs: 1, Name: strings.Repeat("x", 200)},
		"negative backlog":       {Devices: 1, Memory: 1 << 30, SMs: 1, MaxBacklog: -time.Second},
		"context memory too big": {Devices: 1, Memory: 1 << 30, SMs: 1, ContextMemory: u64(1 << 30)},
		"sample period too short": {Devices: 1, Memory: 1 << 30, SMs: 1, SamplePeriod: time.Millisecond,
			MaxBacklog: time.Millisecond},
		"sample period too long": {Devices: 1, Memory: 1 << 30, SMs: 1, SamplePeriod: 2 * time.Second},
		"backlog beyond the ring": {Devices: 1, Memory: 1 << 30, SMs: 1, SamplePeriod: 10 * time.Millisecond,
			MaxBacklog: time.Second},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			state := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			require.Error(t, Init(state, cfg))
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Empty(t, entries, "a refused init leaves nothing behind")
		})
	}
	require.Error(t, Init("", Config{Devices: 1, Memory: 1 << 30, SMs: 1}))
}

func TestInitRefusesExistingUnlessForce(t *testing.T) {
	state := filepath.Join(t.TempDir(), "node")
	require.NoError(t, Init(state, Config{Devices: 1, Memory: 1 << 30, SMs: 1}))
	err := Init(state, Config{Devices: 2, Memory: 2 << 30, SMs: 1})
	require.ErrorIs(t, err, ErrExists)
	st, err := Status(state)
	require.NoError(t, err)
	require.Len(t, st.Devices, 1, "the existing node is untouched")

	require.NoError(t, Init(state, Config{Devices: 2, Memory: 2 << 30, SMs: 1, Force: true}))
	st, err = Status(state)
	require.NoError(t, err)
	require.Len(t, st.Devices, 2)
	require.Equal(t, uint64(2<<30), st.Devices[1].Total)
}

func TestInitLeavesNothingBehindOnLateFailure(t *testing.T) {
	dir := t.TempDir()
	// The "state file" is a directory: init gets as far as creating the device nodes
	// and the temp file, then the final rename fails. All of it must be undone.
	state := filepath.Join(dir, "node")
	require.NoError(t, os.Mkdir(state, 0o755))
	err := Init(state, Config{Devices: 2, Memory: 1 << 30, SMs: 1, Force: true})
	require.Error(t, err)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "only the pre-existing directory remains: %v", entries)
	require.Equal(t, "node", entries[0].Name())
}

func TestStatusRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	_, err := Status(filepath.Join(dir, "missing"))
	require.Error(t, err)

	short := filepath.Join(dir, "short")
	require.NoError(t, os.WriteFile(short, []byte("hello"), 0o644))
	_, err = Status(short)
	require.ErrorContains(t, err, "truncated")

	garbage := filepath.Join(dir, "garbage")
	require.NoError(t, os.WriteFile(garbage, make([]byte, StateSize), 0o644))
	_, err = Status(garbage)
	require.ErrorContains(t, err, "bad magic")

	good := filepath.Join(dir, "good")
	require.NoError(t, Init(good, Config{Devices: 1, Memory: 1 << 30, SMs: 1}))
	b, err := os.ReadFile(good)
	require.NoError(t, err)
	b[hdrVersion] = 99
	wrongVersion := filepath.Join(dir, "version")
	require.NoError(t, os.WriteFile(wrongVersion, b, 0o644))
	_, err = Status(wrongVersion)
	require.ErrorContains(t, err, "version")
}

// TestLayoutMatchesC compares every offset and size of layout.go with what the C
// compiler produced for state.h (build/test/sim_layout).
func TestLayoutMatchesC(t *testing.T) {
	root := ensureBuilt(t)
	out, err := exactOutput(filepath.Join(root, "build/test/sim_layout"))
	require.NoError(t, err)
	want := layoutTable()
	got := map[string][2]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		require.Len(t, f, 3, "bad line %q", sc.Text())
		off, err := strconv.Atoi(f[1])
		require.NoError(t, err)
		size, err := strconv.Atoi(f[2])
		require.NoError(t, err)
		got[f[0]] = [2]int{off, size}
	}
	for name, v := range got {
		w, ok := want[name]
		require.True(t, ok, "C field %s has no Go mirror entry", name)
		require.Equal(t, w, v, "%s: Go {offset,size}=%v, C=%v", name, w, v)
	}
	for name := range want {
		_, ok := got[name]
		require.True(t, ok, "Go mirror entry %s is not printed by sim_layout", name)
	}
}
