package testproc

import (
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestExpectReadsPastOtherLines(t *testing.T) {
	p := Start(t, exec.Command("sh", "-c", `echo noise; echo "READY pid=7 x=a=b"; read l; echo DONE n=1; echo >&2 bye`),
		"sh", 10*time.Second)
	require.Equal(t, map[string]string{"pid": "7", "x": "a=b"}, p.Expect("READY"))
	p.Next()
	got, f := p.ExpectEither("FAIL", "DONE")
	require.Equal(t, "DONE", got)
	require.Equal(t, "1", f["n"])
	require.Equal(t, 0, p.Wait())
	require.True(t, p.Exited())
	require.Equal(t, "bye\n", p.Stderr())
}

func TestExitCodeAndQuoting(t *testing.T) {
	p := Start(t, exec.Command("sh", "-c", "exit 3"), "sh", 10*time.Second)
	require.Equal(t, 3, p.WaitExit())
	require.Equal(t, `"a"`, quoteOr([]string{"a"}))
	require.Equal(t, `"a" or "b"`, quoteOr([]string{"a", "b"}))
	require.Equal(t, `"a", "b" or "c"`, quoteOr([]string{"a", "b", "c"}))
}
