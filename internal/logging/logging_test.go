package logging

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNew(t *testing.T) {
	for _, f := range []string{"json", "console"} {
		log, err := New(f, "debug")
		require.NoError(t, err)
		log.Debug("hello")
	}
	_, err := New("xml", "info")
	require.ErrorContains(t, err, "json or console")
	_, err = New("json", "loud")
	require.ErrorContains(t, err, "log level")
}
