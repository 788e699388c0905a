package integration

import (
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vgpu-project/vgpu/internal/testbuild"
)

// oldestGlibc is the oldest glibc libvgpu must load on: the glibc of the oldest
// common CUDA base images (CentOS 7 / UBI 7). libvgpu is preloaded into every
// process of a container, so one symbol needing a newer version (dlopen@GLIBC_2.34,
// stat@GLIBC_2.33, ...) stops every program of an older image from starting.
var oldestGlibc = [2]int{2, 17}

// glibcRef matches a dynamic symbol's version in `objdump -T`: "GLIBC_2.34 dlopen",
// or "(GLIBC_2.2.5) dlopen" for a non-default version.
var glibcRef = regexp.MustCompile(`\(?GLIBC_([0-9]+)\.([0-9]+)(?:\.[0-9]+)?\)?\s+(\S+)\s*$`)

// TestLibvgpuNeedsNoNewGlibc: build/libvgpu.so references no symbol of a glibc
// version above 2.17 (libvgpu/src/vgpu_glibc.h pins the ones that moved or
// appeared later). It fails listing the offending symbols.
func TestLibvgpuNeedsNoNewGlibc(t *testing.T) {
	lib := testbuild.Path(testbuild.Root(t, "build/libvgpu.so"), "libvgpu.so")
	out, err := exec.Command("objdump", "-T", lib).CombinedOutput()
	require.NoError(t, err, "objdump -T %s (binutils): %s", lib, out)
	var bad []string
	highest := [2]int{0, 0}
	refs := 0
	for _, line := range strings.Split(string(out), "\n") {
		m := glibcRef.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		refs++
		major, _ := strconv.Atoi(m[1])
		minor, _ := strconv.Atoi(m[2])
		v := [2]int{major, minor}
		if v[0] > highest[0] || (v[0] == highest[0] && v[1] > highest[1]) {
			highest = v
		}
		if v[0] > oldestGlibc[0] || (v[0] == oldestGlibc[0] && v[1] > oldestGlibc[1]) {
			bad = append(bad, fmt.Sprintf("%s@GLIBC_%d.%d", m[3], major, minor))
		}
	}
	require.NotZero(t, refs, "objdump -T %s shows no GLIBC_ symbol at all:\n%s", lib, out)
	sort.Strings(bad)
	require.Empty(t, bad, "%s needs symbols of a glibc newer than %d.%d (pin them in "+
		"libvgpu/src/vgpu_glibc.h):\n  %s", lib, oldestGlibc[0], oldestGlibc[1], strings.Join(bad, "\n  "))
	t.Logf("%s: %d glibc symbol references, the newest GLIBC_%d.%d", lib, refs, highest[0], highest[1])
}
