package tracker

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// BenchmarkOpen measures an open+close with the programs detached and
// attached: of a regular file (the cost every other open on the system
// pays) and of a tracked device (the cost of reporting it).
func BenchmarkOpen(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	dir := b.TempDir()
	plain := filepath.Join(dir, "plain")
	require.NoError(b, os.WriteFile(plain, nil, 0o644))
	node, dev := standIn(b, dir, "vgpusim0")
	run := func(b *testing.B, path string) {
		for b.Loop() {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			_ = f.Close()
		}
	}
	b.Run("detached/file", func(b *testing.B) { run(b, plain) })
	b.Run("detached/device", func(b *testing.B) { run(b, node) })
	tr, err := New(context.Background(), Config{Majors: []uint32{dev.Major}, Log: zap.NewNop()})
	require.NoError(b, err)
	defer tr.Close()
	require.Equal(b, "ebpf", tr.Kind())
	b.Run("attached/file", func(b *testing.B) { run(b, plain) })
	b.Run("attached/device", func(b *testing.B) { run(b, node) })
}
