package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// cpuModel returns the first "model name" of /proc/cpuinfo (or "unknown").
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name", "Model", "Hardware":
			if v = strings.TrimSpace(v); v != "" {
				return v
			}
		}
	}
	return "unknown"
}

var nvidiaVersionRE = regexp.MustCompile(`^\d+\.\d+(\.\d+)?$`)

// nvidiaDriverVersion returns the kernel driver version ("550.54.15") from
// /proc/driver/nvidia/version, falling back to nvidia-smi; "" when neither answers.
func nvidiaDriverVersion(ctx context.Context) string {
	if b, err := os.ReadFile("/proc/driver/nvidia/version"); err == nil {
		if v := parseNvidiaProcVersion(string(b)); v != "" {
			return v
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nvidia-smi", "--query-gpu=driver_version",
		"--format=csv,noheader").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}

// parseNvidiaProcVersion extracts the version from the first line of
// /proc/driver/nvidia/version, e.g. "NVRM version: NVIDIA UNIX x86_64 Kernel Module
// 550.54.15  Tue Mar  5 ..." or "... Open Kernel Module for x86_64  570.86.15  Release".
func parseNvidiaProcVersion(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	_, rest, ok := strings.Cut(line, "Module")
	if !ok {
		return ""
	}
	for _, f := range strings.Fields(rest) {
		if nvidiaVersionRE.MatchString(f) {
			return f
		}
	}
	return ""
}

// cudaVersionString renders cuDriverGetVersion's 12040 as "12.4".
func cudaVersionString(v int) string {
	if v <= 0 {
		return ""
	}
	return fmt.Sprintf("%d.%d", v/1000, (v%1000)/10)
}

// pinnedCommit, once PinCommit has set it, is the commit every report of this
// process records.
var pinnedCommit string

// PinCommit makes every later report of this process record the commit the
// tree at root (FindRoot's when empty) has now, and returns it. The suite pins
// it when it starts, right after `make bench` built the binaries from that
// tree: in a shared checkout HEAD may move on during a long run, and every
// report of one run must name the commit its binaries came from.
func PinCommit(ctx context.Context, root string) string {
	if root == "" {
		root, _ = FindRoot()
	}
	pinnedCommit = ""
	pinnedCommit = gitCommit(ctx, root)
	return pinnedCommit
}

// gitCommit returns the pinned commit (PinCommit), else the short commit of
// the tree at root, or "".
func gitCommit(ctx context.Context, root string) string {
	if pinnedCommit != "" {
		return pinnedCommit
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// hostMachine describes this machine; the driver fields are filled by the caller.
func hostMachine(ctx context.Context, root string, now time.Time) Machine {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return Machine{
		Hostname:  host,
		CPUModel:  cpuModel(),
		Cores:     runtime.NumCPU(),
		Kernel:    kernel,
		GoVersion: runtime.Version(),
		Date:      now.UTC().Format(time.RFC3339),
		Commit:    gitCommit(ctx, root),
	}
}
