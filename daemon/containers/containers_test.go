package containers

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRuncState(t *testing.T) {
	root := filepath.Join(t.TempDir(), "runc", "k8s.io")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "alive"), 0o711))

	v, err := RuncState(Slice{ContainerID: "alive", RuncRoot: root})
	require.NoError(t, err)
	require.Equal(t, Exists, v)
	v, err = RuncState(Slice{ContainerID: "deleted", RuncRoot: root})
	require.NoError(t, err)
	require.Equal(t, Gone, v)
	v, err = RuncState(Slice{ContainerID: "x", RuncRoot: filepath.Join(root, "nope")})
	require.NoError(t, err)
	require.Equal(t, Unknown, v, "a root vgpud cannot see says nothing about the container")
}

func TestWatcherGone(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	verdicts := map[string]Verdict{"a": Exists, "b": Gone, "c": Unknown, "young": Gone}
	w := New(Config{Grace: 30 * time.Second, Now: func() time.Time { return now },
		Check: func(s Slice) (Verdict, error) { return verdicts[s.ContainerID], nil }}, nil)
	old := now.Add(-time.Minute)
	gone := w.Gone([]Slice{
		{ID: "sa", ContainerID: "a", CreatedAt: old},
		{ID: "sb", ContainerID: "b", CreatedAt: old},
		{ID: "sc", ContainerID: "c", CreatedAt: old},
		{ID: "sy", ContainerID: "young", CreatedAt: now.Add(-time.Second)},
	})
	require.Equal(t, []Slice{{ID: "sb", ContainerID: "b", CreatedAt: old}}, gone,
		"only an old slice whose container is certainly gone")
}

type fakeEvents struct {
	ch chan Deletion
}

func (f *fakeEvents) Subscribe(ctx context.Context) (<-chan Deletion, func() error, error) {
	return f.ch, func() error { return nil }, nil
}

func TestWatcherRun(t *testing.T) {
	start := time.Now()
	ev := &fakeEvents{ch: make(chan Deletion)}
	var mu sync.Mutex
	slices := []Slice{
		{ID: "s1", ContainerID: "c1", CreatedAt: start.Add(-time.Hour)},
		{ID: "s2", ContainerID: "c2", CreatedAt: start.Add(-time.Hour)},
		{ID: "s3", ContainerID: "c3", CreatedAt: start.Add(time.Hour)}, // made after the deletion below
		{ID: "gone-at-start", ContainerID: "dead", CreatedAt: start.Add(-time.Hour)},
	}
	released := make(chan string, 10)
	w := New(Config{Interval: time.Hour, Grace: time.Minute, Events: ev,
		Check: func(s Slice) (Verdict, error) {
			if s.ContainerID == "dead" {
				return Gone, nil
			}
			return Exists, nil
		}}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, func() []Slice {
			mu.Lock()
			defer mu.Unlock()
			return append([]Slice(nil), slices...)
		}, func(id, why string) {
			mu.Lock()
			for i, s := range slices {
				if s.ID == id {
					slices = append(slices[:i], slices[i+1:]...)
					break
				}
			}
			mu.Unlock()
			released <- id
		})
	}()
	require.Equal(t, "gone-at-start", <-released, "the first check runs at once")
	ev.ch <- Deletion{ContainerID: "c2", At: start, Why: "test"}
	require.Equal(t, "s2", <-released)
	ev.ch <- Deletion{ContainerID: "c3", At: start, Why: "test"}
	ev.ch <- Deletion{ContainerID: "c1", At: start, Why: "test"}
	require.Equal(t, "s1", <-released, "s3 belongs to a newer container with a reused id")
	cancel()
	<-done
	require.Len(t, released, 0)
}

func TestCgroupAttributor(t *testing.T) {
	proc := t.TempDir()
	write := procCgroupWriter(t, proc)
	const k8s = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	write("10", "12:memory:/vgpu-e2e/ctr-a\n11:devices:/vgpu-e2e/ctr-a\n")
	write("11", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-"+k8s+".scope\n")
	write("12", "0::/kubepods/burstable/pod1234/"+k8s+"\n")
	write("13", "0::/user.slice/user-0.slice/session-1.scope\n")
	write("14", "0::/system.slice/docker-ctr-b.scope\n")

	a := NewCgroupAttributor(proc)
	_, ok := a.SliceOf(10)
	require.False(t, ok, "no containers known")
	a.Set("ctr-a", "slice-a")
	a.Set(k8s, "slice-k")
	a.Set("ctr-b", "slice-b")
	for pid, want := range map[int]string{10: "slice-a", 11: "slice-k", 12: "slice-k", 14: "slice-b"} {
		got, ok := a.SliceOf(pid)
		require.True(t, ok, "pid %d", pid)
		require.Equal(t, want, got, "pid %d", pid)
	}
	_, ok = a.SliceOf(13)
	require.False(t, ok)
	_, ok = a.SliceOf(99)
	require.False(t, ok, "no such process")
	a.Reset()
	_, ok = a.SliceOf(10)
	require.False(t, ok)
}

// TestCgroupAttributorPods: a pod's processes belong to its slice under
// either kubelet cgroup driver; a container with a slice of its own keeps it.
func TestCgroupAttributorPods(t *testing.T) {
	proc := t.TempDir()
	write := procCgroupWriter(t, proc)
	const uid = "c1175db3-2c48-4325-a5c3-33b1774b2011"
	write("20", "0::/kubepods/besteffort/pod"+uid+"/ctr-1\n")
	write("21", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"+
		strings.ReplaceAll(uid, "-", "_")+".slice/cri-containerd-ctr-2.scope\n")
	write("22", "0::/kubepods.slice/kubepods-pod"+strings.ReplaceAll(uid, "-", "_")+".slice/cri-containerd-ctr-3.scope\n")
	write("23", "0::/kubepods/besteffort/pod"+uid+"/ctr-own\n")
	write("24", "0::/kubepods/besteffort/podother/ctr-4\n")

	a := NewCgroupAttributor(proc)
	a.SetPod(uid, "claim")
	a.Set("ctr-own", "own")
	for pid, want := range map[int]string{20: "claim", 21: "claim", 22: "claim", 23: "own"} {
		got, ok := a.SliceOf(pid)
		require.True(t, ok, "pid %d", pid)
		require.Equal(t, want, got, "pid %d", pid)
	}
	_, ok := a.SliceOf(24)
	require.False(t, ok, "another pod")
	a.Reset()
	_, ok = a.SliceOf(20)
	require.False(t, ok)
}

// procCgroupWriter writes <proc>/<pid>/cgroup files, as /proc shows them.
func procCgroupWriter(t *testing.T, proc string) func(pid, content string) {
	return func(pid, content string) {
		require.NoError(t, os.MkdirAll(filepath.Join(proc, pid), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(proc, pid, "cgroup"), []byte(content), 0o644))
	}
}
