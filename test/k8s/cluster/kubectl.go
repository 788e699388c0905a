package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// CmdTimeout bounds every kubectl and ctr command: generous for a loaded CI
// machine, finite so that a hang fails the test instead of stalling CI.
const CmdTimeout = 90 * time.Second

// run runs a command with the timeout; stdin (if not empty) is fed to it.
// The error carries the combined output.
func run(stdin string, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), CmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	if ctx.Err() != nil {
		return out.String(), fmt.Errorf("%s %s: timed out after %s: %s", bin, strings.Join(args, " "), CmdTimeout, errOut.String())
	}
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err,
			strings.TrimSpace(errOut.String()+"\n"+out.String()))
	}
	return out.String(), nil
}

// Kubectl runs the cluster's kubectl as the admin; it returns stdout.
func (c *Cluster) Kubectl(args ...string) (string, error) {
	return run("", c.bin("kubectl"), append([]string{"--kubeconfig", c.Admin}, args...)...)
}

// KubectlIn runs kubectl with stdin (e.g. `apply -f -` of a manifest).
func (c *Cluster) KubectlIn(stdin string, args ...string) (string, error) {
	return run(stdin, c.bin("kubectl"), append([]string{"--kubeconfig", c.Admin}, args...)...)
}

// MustKubectl is Kubectl that fails the test on error.
func (c *Cluster) MustKubectl(args ...string) string {
	c.t.Helper()
	out, err := c.Kubectl(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// Apply applies a manifest (YAML or JSON), failing the test on error.
func (c *Cluster) Apply(manifest string) {
	c.t.Helper()
	if _, err := c.KubectlIn(manifest, "apply", "-f", "-"); err != nil {
		c.t.Fatalf("%v\nmanifest:\n%s", err, manifest)
	}
}

// GetJSON runs `kubectl <args> -o json` and decodes the object into v.
func (c *Cluster) GetJSON(v any, args ...string) error {
	out, err := c.Kubectl(append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// Ctr runs the cluster's ctr against its containerd, in the CRI's namespace.
func (c *Cluster) Ctr(args ...string) (string, error) {
	return run("", c.bin("ctr"), append([]string{"-a", c.ContainerdSock, "-n", "k8s.io"}, args...)...)
}
