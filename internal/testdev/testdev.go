// Package testdev makes stand-in GPU device nodes for tests on machines
// without an NVIDIA GPU: character devices the process tracker (package
// tracker) can follow in place of /dev/nvidia* (major 195).
package testdev

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// StandIn makes a character-device node dir/name that stands in for
// /dev/nvidia0 and returns its path and device number. It must have a driver
// (an open of an unregistered major fails with ENXIO, and a failed open holds
// nothing): cpuid (203:0, which nobody else opens, so a test sees only its own
// processes) where that driver is loaded, else mem's null (1:3). Needs root
// (mknod).
func StandIn(dir, name string) (path string, major, minor uint32, err error) {
	major, minor = 1, 3
	if data, err := os.ReadFile("/proc/devices"); err == nil && strings.Contains(string(data), "203 cpu/cpuid") {
		major, minor = 203, 0
	}
	path = filepath.Join(dir, name)
	if err := unix.Mknod(path, unix.S_IFCHR|0o666, int(unix.Mkdev(major, minor))); err != nil {
		return "", 0, 0, fmt.Errorf("mknod %s (%d:%d): %w", path, major, minor, err)
	}
	return path, major, minor, nil
}
