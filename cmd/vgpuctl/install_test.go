package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/stretchr/testify/require"
)

const testRuntime = "/usr/local/bin/vgpu-runtime"

func installOpts(path string) installOptions {
	return installOptions{
		ConfigPath: path, RuntimePath: testRuntime, RuntimeName: "vgpu",
		Now:           func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) },
		DetectVersion: func() (int, error) { return 0, errors.New("no containerd in this test") },
	}
}

func copyFixture(t *testing.T, name string, edit func(string) string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	s := string(data)
	if edit != nil {
		s = edit(s)
	}
	p := filepath.Join(t.TempDir(), "config.toml")
	require.NoError(t, os.WriteFile(p, []byte(s), 0o600))
	return p
}

func readTOML(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	m := map[string]any{}
	require.NoError(t, toml.Unmarshal(data, &m))
	return m
}

func dig(t *testing.T, m map[string]any, path ...string) any {
	t.Helper()
	var cur any = m
	for _, k := range path {
		mm, ok := cur.(map[string]any)
		require.True(t, ok, "%v: not a table at %q", path, k)
		cur, ok = mm[k]
		require.True(t, ok, "%v: no %q", path, k)
	}
	return cur
}

func TestInstallContainerdV2(t *testing.T) {
	path := copyFixture(t, "containerd-1.6-default.toml", func(s string) string {
		return strings.Replace(s, "SystemdCgroup = false", "SystemdCgroup = true", 1)
	})
	orig, err := os.ReadFile(path)
	require.NoError(t, err)
	res, err := installContainerd(installOpts(path))
	require.NoError(t, err)
	require.True(t, res.Changed)
	require.Equal(t, 2, res.Version)
	require.Equal(t, path+".vgpu-backup-20260102T030405Z", res.Backup)
	backup, err := os.ReadFile(res.Backup)
	require.NoError(t, err)
	require.Equal(t, orig, backup, "the backup is the old file, byte for byte")
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	cfg := readTOML(t, path)
	rt := []string{"plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"}
	vgpu := dig(t, cfg, append(rt, "vgpu")...).(map[string]any)
	require.Equal(t, "io.containerd.runc.v2", vgpu["runtime_type"])
	opts := vgpu["options"].(map[string]any)
	require.Equal(t, testRuntime, opts["BinaryName"])
	require.Equal(t, true, opts["SystemdCgroup"], "runc's options are copied")
	require.Equal(t, []any{"vgpu.io/*"}, vgpu["pod_annotations"])
	require.Equal(t, []any{"vgpu.io/*"}, vgpu["container_annotations"])
	require.Equal(t, "", dig(t, cfg, append(rt, "runc", "options", "BinaryName")...), "runc itself untouched")
	require.Equal(t, int64(2), cfg["version"])
	require.Equal(t, "/var/lib/containerd", cfg["root"], "the rest of the config is kept")

	// containerd 1.6 itself accepts the result (where it is installed: make
	// deps installs it for the end-to-end tests).
	if _, err := exec.LookPath("containerd"); err == nil {
		out, err := exec.Command("containerd", "--config", path, "config", "dump").CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vgpu.options]`)
		require.Contains(t, string(out), `BinaryName = "`+testRuntime+`"`)
	} else {
		t.Log("containerd is not installed: its own check of the written config was not run")
	}
}

func TestInstallContainerdV3(t *testing.T) {
	path := copyFixture(t, "containerd-2.0.toml", nil)
	res, err := installContainerd(installOpts(path))
	require.NoError(t, err)
	require.True(t, res.Changed)
	require.Equal(t, 3, res.Version)
	cfg := readTOML(t, path)
	vgpu := dig(t, cfg, "plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", "vgpu").(map[string]any)
	require.Equal(t, "io.containerd.runc.v2", vgpu["runtime_type"])
	require.Equal(t, "podsandbox", vgpu["sandboxer"], "copied from runc")
	opts := vgpu["options"].(map[string]any)
	require.Equal(t, testRuntime, opts["BinaryName"])
	require.Equal(t, true, opts["SystemdCgroup"])
	_, v2 := cfg["plugins"].(map[string]any)["io.containerd.grpc.v1.cri"].(map[string]any)["containerd"]
	require.False(t, v2, "nothing written in the version 2 place")
}

func TestInstallContainerdIdempotent(t *testing.T) {
	for _, fixture := range []string{"containerd-1.6-default.toml", "containerd-2.0.toml"} {
		t.Run(fixture, func(t *testing.T) {
			path := copyFixture(t, fixture, nil)
			_, err := installContainerd(installOpts(path))
			require.NoError(t, err)
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			o := installOpts(path)
			o.Now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC) }
			res, err := installContainerd(o)
			require.NoError(t, err)
			require.False(t, res.Changed, "a second install changes nothing")
			require.Empty(t, res.Backup)
			again, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, after, again)
			backups, _ := filepath.Glob(path + ".vgpu-backup-*")
			require.Len(t, backups, 1, "only the first install made a backup")

			// A different runtime path is an update.
			o.RuntimePath = "/opt/vgpu/bin/vgpu-runtime"
			res, err = installContainerd(o)
			require.NoError(t, err)
			require.True(t, res.Changed)
			require.Contains(t, string(res.Output), "/opt/vgpu/bin/vgpu-runtime")
			require.NotContains(t, string(res.Output), testRuntime)
		})
	}
}

func TestInstallContainerdMissingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "etc", "containerd", "config.toml")

	_, err := installContainerd(installOpts(path))
	require.ErrorContains(t, err, "give --config-version 2 or 3", "no file and no containerd to ask")

	o := installOpts(path)
	o.DetectVersion = func() (int, error) { return 3, nil }
	o.DryRun = true
	res, err := installContainerd(o)
	require.NoError(t, err)
	require.True(t, res.Changed)
	_, err = os.Stat(path)
	require.True(t, os.IsNotExist(err), "dry run writes nothing")

	o.DryRun = false
	o.Version = 2
	res, err = installContainerd(o)
	require.NoError(t, err)
	require.Equal(t, 2, res.Version, "--config-version wins over detection")
	require.Empty(t, res.Backup, "nothing to back up")
	cfg := readTOML(t, path)
	require.Equal(t, int64(2), cfg["version"])
	vgpu := dig(t, cfg, "plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes", "vgpu").(map[string]any)
	require.Equal(t, map[string]any{"BinaryName": testRuntime}, vgpu["options"])
}

func TestInstallContainerdRefuses(t *testing.T) {
	v1 := filepath.Join(t.TempDir(), "config.toml")
	require.NoError(t, os.WriteFile(v1, []byte("[plugins.cri]\n  sandbox_image = \"pause:3.6\"\n"), 0o644))
	_, err := installContainerd(installOpts(v1))
	require.ErrorContains(t, err, "version 1 config")

	bad := filepath.Join(t.TempDir(), "config.toml")
	require.NoError(t, os.WriteFile(bad, []byte("version = 2\n[plugins\n"), 0o644))
	_, err = installContainerd(installOpts(bad))
	require.ErrorContains(t, err, "parse")
	data, _ := os.ReadFile(bad)
	require.Equal(t, "version = 2\n[plugins\n", string(data), "a file it cannot parse is left alone")

	o := installOpts(filepath.Join(t.TempDir(), "c.toml"))
	o.RuntimePath = "vgpu-runtime"
	_, err = installContainerd(o)
	require.ErrorContains(t, err, "not absolute")
}

func TestInstallContainerdCommand(t *testing.T) {
	path := copyFixture(t, "containerd-1.6-default.toml", nil)
	var out, errb bytes.Buffer
	code := run([]string{"install", "containerd", "--config", path, "--runtime-path", testRuntime, "--dry-run"}, &out, &errb)
	require.Equal(t, exitOK, code, errb.String())
	require.Contains(t, out.String(), "vgpu-runtime")
	out.Reset()
	code = run([]string{"install", "containerd", "--config", path, "--runtime-path", testRuntime}, &out, &errb)
	require.Equal(t, exitOK, code, errb.String())
	require.Contains(t, out.String(), "added runtime \"vgpu\"")
	require.Contains(t, out.String(), "systemctl restart containerd")
	out.Reset()
	code = run([]string{"install", "containerd", "--config", path, "--runtime-path", testRuntime}, &out, &errb)
	require.Equal(t, exitOK, code, errb.String())
	require.Contains(t, out.String(), "nothing to do")
}

// The snippets in deploy/ say what `install containerd` writes.
func TestDeploySnippets(t *testing.T) {
	for file, table := range map[string]string{
		"containerd-v2.toml": "io.containerd.grpc.v1.cri",
		"containerd-v3.toml": "io.containerd.cri.v1.runtime",
	} {
		cfg := readTOML(t, filepath.Join("..", "..", "deploy", file))
		vgpu := dig(t, cfg, "plugins", table, "containerd", "runtimes", "vgpu").(map[string]any)
		require.Equal(t, "io.containerd.runc.v2", vgpu["runtime_type"], file)
		require.Equal(t, []any{"vgpu.io/*"}, vgpu["pod_annotations"], file)
		require.Equal(t, []any{"vgpu.io/*"}, vgpu["container_annotations"], file)
		require.Equal(t, "/usr/local/bin/vgpu-runtime", dig(t, vgpu, "options", "BinaryName"), file)
	}
}
