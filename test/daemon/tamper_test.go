package daemon

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/vgpu-project/vgpu/daemon/api"
	"github.com/vgpu-project/vgpu/shm"
)

// smallStateFS mounts a tmpfs of size bytes as the node's vgpud state dir, so
// that a tenant can fill it in milliseconds; it is unmounted when the test
// ends (before its temporary directory is removed).
func (nd *node) smallStateFS(size string) {
	nd.t.Helper()
	if os.Geteuid() != 0 {
		nd.t.Skip("mounting a small tmpfs needs root")
	}
	require.NoError(nd.t, os.MkdirAll(nd.data, 0o755))
	if err := unix.Mount("tmpfs", nd.data, "tmpfs", 0, "size="+size+",mode=0755"); err != nil {
		nd.t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	nd.t.Cleanup(func() {
		if err := unix.Unmount(nd.data, unix.MNT_DETACH); err != nil {
			nd.t.Errorf("unmount %s: %v", nd.data, err)
		}
	})
}

// fillFile appends to f until the filesystem is full (ENOSPC); it reports
// whether it got there.
func fillFile(f *os.File) bool {
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			return errors.Is(err, syscall.ENOSPC)
		}
	}
}

// metric returns the metrics endpoint's text.
func (d *vgpud) metricsText(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + d.metrics + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// alive fails the test if vgpud exited.
func (d *vgpud) alive(t *testing.T) {
	t.Helper()
	select {
	case <-d.done:
		t.Fatalf("vgpud exited (%v); log:\n%s", d.cmd.ProcessState, d.log())
	default:
	}
}

// tampered waits until the API says slice id was tampered with and returns how.
func (nd *node) tampered(id string) string {
	nd.t.Helper()
	var how string
	eventually(nd.t, 10*time.Second, "slice "+id+" reported tampered", func() bool {
		sl, err := nd.client.Get(bg(), id)
		require.NoError(nd.t, err)
		how = sl.Tampered
		return how != ""
	})
	return how
}

// TestTenantFillsStateFS: a tenant grows its usage file until vgpud's state
// filesystem is full, and keeps it full. Every other slice's regions were
// fully allocated at creation, so its processes start, claim their slot and
// allocate as usual (a sparse region would SIGBUS them on the first page
// that has no space yet); vgpud stays up, cuts the grown file back every
// tick, and reports the slice tampered (API, vgpuctl, log, metrics).
func TestTenantFillsStateFS(t *testing.T) {
	const interval = 50 * time.Millisecond
	nd := newNode(t, 1, 16*GiB)
	nd.smallStateFS("4m")
	d := nd.start("--enforcer-interval", interval.String())
	attacker, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "attacker", MemoryBytes: 2 * GiB})
	require.NoError(t, err)
	victim, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "victim", MemoryBytes: 4 * GiB, ComputePercent: 30})
	require.NoError(t, err)

	// The attack: the tenant has its usage file open read-write (as libvgpu
	// does) and appends until the filesystem is full, again and again.
	f, err := os.OpenFile(filepath.Join(attacker.Dir, shm.UsageFile), os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.Seek(0, io.SeekEnd)
	require.NoError(t, err)
	require.True(t, fillFile(f), "the state filesystem fills up")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			fillFile(f)
			time.Sleep(time.Millisecond)
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	// The victim slice's processes run normally meanwhile: two of them, one
	// after the other, each claiming a slot and charging the usage file.
	for i := 0; i < 2; i++ {
		p := nd.holder(victim.Dir, "512MiB", 2)
		require.Equal(t, 0, p.wait(), "victim process %d: %s", i, p.stderr())
	}
	sl, err := shm.OpenSlice(victim.Dir)
	require.NoError(t, err)
	require.Equal(t, uint64(2), sl.Usage.AttachCount(), "both victim processes attached")
	sl.Close()

	how := nd.tampered("attacker")
	require.Contains(t, how, "usage file grown")
	d.alive(t)
	vs, err := nd.client.Get(bg(), "victim")
	require.NoError(t, err)
	require.Empty(t, vs.Tampered, "the victim's files are intact")

	out, errs, code := nd.ctl("slices")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "TAMPERED")
	require.Contains(t, out, "slice attacker: region tampered with: usage file grown")
	m := d.metricsText(t)
	require.Contains(t, m, `vgpu_slice_tampered{qos="guaranteed",slice="attacker"} 1`)
	require.Contains(t, m, `vgpu_slice_tampered{qos="guaranteed",slice="victim"} 0`)
	require.Contains(t, m, "vgpu_region_tamper_events_total 1")
	require.Len(t, d.logRecords("slice region tampered with"), 1, "logged once")

	// vgpud cuts the file back: once the tenant stops, the space is free
	// again and a new slice can be made.
	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close
	wg = sync.WaitGroup{}
	eventually(t, 10*time.Second, "the grown usage file cut back", func() bool {
		fi, err := f.Stat()
		require.NoError(t, err)
		return fi.Size() == int64(shm.UsageSize(shm.DefaultSlots))
	})
	_, err = nd.client.Alloc(bg(), api.AllocRequest{ID: "after", MemoryBytes: GiB})
	require.NoError(t, err, "space is back for new slices")
	d.alive(t)
	d.stop()
}

// TestTenantTruncatesUsage: `truncate -s 0` of a usage file (the tenant's
// own processes would fault on their mapping; vgpud's would too) leaves vgpud
// running its loop over that slice (its reads are fault-guarded, the compute
// controller's included) and reports the slice tampered.
func TestTenantTruncatesUsage(t *testing.T) {
	const interval = 50 * time.Millisecond
	nd := newNode(t, 1, 16*GiB)
	d := nd.start("--enforcer-interval", interval.String())
	s, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "trunc", MemoryBytes: 2 * GiB, ComputePercent: 25})
	require.NoError(t, err)
	other, err := nd.client.Alloc(bg(), api.AllocRequest{ID: "other", MemoryBytes: 2 * GiB, ComputePercent: 25})
	require.NoError(t, err)
	p := nd.holder(other.Dir, "256MiB", 1)
	defer p.wait()

	require.NoError(t, os.Truncate(filepath.Join(s.Dir, shm.UsageFile), 0))
	how := nd.tampered("trunc")
	require.Contains(t, how, "usage file shrunk to 0 bytes")
	// Several more ticks over the truncated file.
	time.Sleep(10 * interval)
	d.alive(t)
	top, err := nd.client.Top(bg())
	require.NoError(t, err)
	for _, u := range top {
		if u.Slice.ID == "other" {
			require.Len(t, u.Processes, 1, "the other slice is still enforced")
			require.Empty(t, u.Slice.Tampered)
		}
	}
	out, errs, code := nd.ctl("top")
	require.Equal(t, 0, code, errs)
	require.True(t, strings.Contains(out, "slice trunc: region tampered with: usage file shrunk"), out)

	// Releasing it is clean, and vgpud's own unlink is no tampering.
	require.NoError(t, nd.client.Release(bg(), "trunc"))
	require.NoError(t, nd.client.Release(bg(), "other"))
	time.Sleep(4 * interval)
	require.Len(t, d.logRecords("slice region tampered with"), 1)
	d.alive(t)
}

// TestOwnerUsageFileMode: a slice owned by a process (vgpuctl run) has its
// usage file owned by that process's user, 0600; the budget stays 0644.
func TestOwnerUsageFileMode(t *testing.T) {
	nd := newNode(t, 1, 16*GiB)
	nd.start()
	out := filepath.Join(t.TempDir(), "modes")
	p := nd.startProc(nd.env(), "bin/vgpuctl", "run", "--memory", "1GiB", "--id", "owned", "--",
		"sh", "-c", `stat -c '%a %u' "$VGPU_SLICE_DIR/usage" "$VGPU_SLICE_DIR/budget" > "$1"`, "sh", out)
	require.Equal(t, 0, p.wait(), p.stderr())
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Equal(t, []string{"600 " + strconv.Itoa(os.Getuid()), "644 0"}, lines)
}
