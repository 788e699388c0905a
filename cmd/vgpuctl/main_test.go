package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vgpu-project/vgpu/shm"
)

// TestMain lets the test binary act as vgpuctl itself, so the exit codes of the
// real main are checked without a separate build.
func TestMain(m *testing.M) {
	if os.Getenv("VGPUCTL_TEST_AS_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

type result struct {
	code           int
	stdout, stderr string
}

func vgpuctl(args ...string) result {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

// TestCreateAndShow: create writes the slice described by the flags; show
// prints budget and usage, free clamped at 0, and every owned slot.
func TestCreateAndShow(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "slice")
	uuid := "GPU-01234567-89ab-cdef-0123-456789abcdef"
	r := vgpuctl("slice", "create", "--dir", dir, "--memory", "2GiB", "--device", "1", "--device", uuid,
		"--context-overhead", "300MiB", "--id", "job-7", "--slots", "16", "--compute", "37.5",
		"--priority", "5", "--qos", "burstable", "--compute-policy", "share")
	require.Equal(t, 0, r.code, r.stderr)
	require.Empty(t, r.stderr)
	require.Contains(t, r.stdout, "created slice "+dir)

	s, err := shm.OpenSlice(dir)
	require.NoError(t, err)
	defer s.Close()
	require.Equal(t, shm.SliceSpec{
		ID: "job-7",
		Devices: []shm.DeviceBudget{
			// --compute 37.5: a static rate of 37.5% of a second of estimated
			// device-ns per second, 20 ms of it as burst.
			{Index: 1, MemoryLimit: 2 << 30, ContextOverhead: 300 << 20, ComputeShareBP: 3750,
				TokenRate: 375_000_000, TokenBurst: 7_500_000},
			{UUID: uuid, MemoryLimit: 2 << 30, ContextOverhead: 300 << 20, ComputeShareBP: 3750,
				TokenRate: 375_000_000, TokenBurst: 7_500_000},
		},
		Priority: 5,
		QoS:      shm.QoSBurstable,
		Policy:   shm.PolicyShare,
	}, s.Budget.Spec())
	require.Equal(t, 16, s.Usage.SlotCount())

	r = vgpuctl("slice", "show", "--dir", dir)
	require.Equal(t, 0, r.code, r.stderr)
	for _, want := range []string{"job-7", "qos burstable", "policy share", "index 1", uuid, "300MiB", "37.5%", "no processes", "0 of 16 slots"} {
		require.Contains(t, r.stdout, want)
	}

	// Two processes, one over the limit on device 0 (free must clamp to 0).
	a, err := s.Usage.ClaimSlot(shm.SlotIdentity{PID: 4242})
	require.NoError(t, err)
	b, err := s.Usage.ClaimSlot(shm.SlotIdentity{PID: 4343})
	require.NoError(t, err)
	require.True(t, s.Usage.Charge(a, 0, 2<<30, 2<<30))
	require.False(t, s.Usage.Charge(b, 0, 1, 2<<30))
	atomic.AddUint64(&s.Usage.Raw().Dev[0].UsedBytes, 1<<20) // a leaked charge
	require.True(t, s.Usage.Charge(b, 1, 64<<20, 2<<30))
	s.Usage.SetHostPID(b, 99999)

	r = vgpuctl("slice", "show", "--dir", dir)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "2 of 16 slots (2 attached")
	lines := strings.Split(r.stdout, "\n")
	var dev0, procA, procB string
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) > 2 && f[0] == "0" && f[1] == "index":
			dev0 = l
		case len(f) > 1 && f[1] == "4242":
			procA = l
		case len(f) > 1 && f[1] == "4343":
			procB = l
		}
	}
	require.Equal(t, []string{"0", "index 1", "2GiB", "2.00GiB", "0B", "2GiB", "1", "300MiB", "37.5%"},
		splitCols(dev0), "device 0 row: %q", dev0)
	require.Equal(t, []string{"0", "4242", "live", "-", "0", "2GiB", "0B"}, splitCols(procA))
	require.Equal(t, []string{"1", "4343", "live", "99999", "0", "0B", "64MiB"}, splitCols(procB))

	r = vgpuctl("slice", "show", "--dir", dir, "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var v sliceView
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v))
	require.Equal(t, "job-7", v.ID)
	require.Equal(t, fmt.Sprintf("%d.%d", shm.ABIMajor, shm.ABIMinor), v.ABI)
	require.Equal(t, 16, v.Slots)
	require.Len(t, v.Devices, 2)
	require.Equal(t, uint64(2<<30+1<<20), v.Devices[0].UsedBytes)
	require.Zero(t, v.Devices[0].FreeBytes)
	require.Equal(t, uint64(1), v.Devices[0].RefusedAllocs)
	require.Equal(t, uint64(2<<30-64<<20), v.Devices[1].FreeBytes)
	require.Equal(t, uuid, v.Devices[1].UUID)
	require.Equal(t, []processView{
		{Slot: a, PID: 4242, State: "live", UsedBytes: []uint64{2 << 30, 0}},
		{Slot: b, PID: 4343, State: "live", HostPID: 99999, UsedBytes: []uint64{0, 64 << 20}},
	}, v.Processes)
}

// splitCols splits a tabwriter row into its cells: cells are separated by at
// least two spaces and contain at most single spaces ("index 1").
func splitCols(line string) []string {
	var out []string
	for _, c := range strings.Split(line, "  ") {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	return out
}

func TestCreateDefaultsAndForce(t *testing.T) {
	dir := t.TempDir()
	r := vgpuctl("slice", "create", "--dir", dir, "--memory", "1Gi")
	require.Equal(t, 0, r.code, r.stderr)
	s, err := shm.OpenSlice(dir)
	require.NoError(t, err)
	require.Equal(t, []shm.DeviceBudget{{Index: 0, MemoryLimit: 1 << 30, ContextOverhead: 256 << 20, ComputeShareBP: 10000}},
		s.Budget.Spec().Devices)
	require.Equal(t, shm.DefaultSlots, s.Usage.SlotCount())
	require.Equal(t, uint32(shm.PolicyCap), s.Budget.Policy(), "cap unless --compute-policy says otherwise")
	require.NoError(t, s.Close())

	r = vgpuctl("slice", "create", "--dir", dir, "--memory", "4Gi")
	require.Equal(t, 1, r.code)
	require.Equal(t, "vgpuctl: "+dir+" already holds a slice (use --force to replace it)\n", r.stderr)

	r = vgpuctl("slice", "create", "--dir", dir, "--memory", "4Gi", "--force", "--context-overhead", "0")
	require.Equal(t, 0, r.code, r.stderr)
	s, err = shm.OpenSlice(dir)
	require.NoError(t, err)
	defer s.Close()
	require.Equal(t, uint64(4<<30), s.Budget.MemoryLimit(0))
	require.Zero(t, s.Budget.Device(0).ContextOverhead)
}

// TestBadInput: every usage error exits 2 with a "vgpuctl: " message naming the
// problem, and creates nothing.
func TestBadInput(t *testing.T) {
	cases := []struct {
		args []string
		msg  string
	}{
		{[]string{}, "Usage:"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"slice"}, "Usage:"},
		{[]string{"slice", "frob"}, `unknown command "frob" for "vgpuctl slice"`},
		{[]string{"slice", "create", "--memory", "1Gi"}, "--dir is required"},
		{[]string{"slice", "create", "--dir", "D"}, "--memory is required"},
		{[]string{"slice", "create", "--dir", "D", "--memory", "lots"}, `parse size "lots"`},
		{[]string{"slice", "create", "--dir", "D", "--memory", "0"}, "--memory must be more than 0"},
		{[]string{"slice", "create", "--dir", "D", "--memory", "256MiB"}, "--context-overhead 256MiB leaves no memory in a 256MiB slice"},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "--slots", "0"}, "--slots 0 out of range"},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "--slots", "65537"}, "--slots 65537 out of range"},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "--compute", "0"}, "--compute 0 out of range"},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "--compute", "101"}, "--compute 101 out of range"},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "--qos", "gold"}, `--qos "gold"`},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "--compute-policy", "burst"}, `--compute-policy "burst": want cap or share`},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "--compute-policy", ""}, `--compute-policy "": want cap or share`},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "--priority", "-1"}, "invalid value"},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "--device", "0", "--device", "0"}, "both name index 0"},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "--device", "GPU-a", "--device", "GPU-a"}, "both name uuid GPU-a"},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "--device", ""}, "want a device index or a UUID"},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "--device", strings.Repeat("x", 64)}, "uuid is 64 bytes"},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "--id", strings.Repeat("x", 64)}, "slice id is 64 bytes"},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "extra"}, `unexpected argument "extra"`},
		{[]string{"slice", "create", "--dir", "D", "--memory", "1Gi", "--frob"}, "flag provided but not defined: -frob"},
		{[]string{"slice", "show"}, "--dir is required"},
		{[]string{"slice", "show", "--dir", "D", "--json=maybe"}, "invalid boolean value"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			root := t.TempDir()
			args := append([]string(nil), c.args...)
			for i, a := range args {
				if a == "D" {
					args[i] = filepath.Join(root, "slice")
				}
			}
			r := vgpuctl(args...)
			require.Equal(t, 2, r.code, "stdout %q stderr %q", r.stdout, r.stderr)
			require.Contains(t, r.stderr, c.msg)
			if c.msg != "Usage:" {
				require.True(t, strings.HasPrefix(r.stderr, "vgpuctl: "), r.stderr)
			}
			ents, err := os.ReadDir(root)
			require.NoError(t, err)
			require.Empty(t, ents, "nothing created")
		})
	}
}

// TestShowErrors: show of a missing or damaged slice is a runtime error (exit
// 1) that names the file and the problem.
func TestShowErrors(t *testing.T) {
	dir := t.TempDir()
	r := vgpuctl("slice", "show", "--dir", dir)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "vgpuctl: open slice "+dir)
	require.Contains(t, r.stderr, "no such file")

	require.Equal(t, 0, vgpuctl("slice", "create", "--dir", dir, "--memory", "1Gi").code)
	usage := filepath.Join(dir, shm.UsageFile)
	budget, err := os.ReadFile(filepath.Join(dir, shm.BudgetFile))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(usage, budget, 0o666))
	r = vgpuctl("slice", "show", "--dir", dir)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "usage file "+usage+": bad magic: this is a budget file")
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"help"}, {"slice", "--help"}, {"slice", "create", "--help"}, {"slice", "show", "-h"},
	} {
		r := vgpuctl(args...)
		require.Equal(t, 0, r.code, args)
		require.Empty(t, r.stderr, args)
		require.Contains(t, r.stdout, "Usage:", args)
	}
	r := vgpuctl("slice", "create", "--help")
	require.Contains(t, r.stdout, "Examples:")
	require.Contains(t, r.stdout, "-context-overhead SIZE")
	require.Contains(t, r.stdout, "per-context footprint (default 256MiB)")
	require.Contains(t, r.stdout, "Sizes are Kubernetes quantities")
	require.Contains(t, vgpuctl("slice", "show", "--help").stdout, "Examples:")
}

// TestExitCodes runs the real main (this test binary re-executed as vgpuctl).
func TestExitCodes(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"slice", "create", "--dir", dir, "--memory", "1Gi"}, 0},
		{[]string{"slice", "show", "--dir", dir}, 0},
		{[]string{"slice", "create", "--dir", dir, "--memory", "1Gi"}, 1},
		{[]string{"slice", "create", "--dir", dir}, 2},
		{[]string{"slice", "show", "--dir", filepath.Join(dir, "none")}, 1},
	} {
		cmd := exec.Command(self, c.args...)
		cmd.Env = append(os.Environ(), "VGPUCTL_TEST_AS_MAIN=1")
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else {
			require.NoError(t, err)
		}
		require.Equal(t, c.code, code, "%v: %s", c.args, out)
	}
}
