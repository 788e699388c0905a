package units

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSize(t *testing.T) {
	good := map[string]uint64{
		"0":        0,
		"4096":     4096,
		"4096B":    4096,
		"512MiB":   512 << 20,
		"512mib":   512 << 20,
		"16GiB":    16 << 30,
		"1G":       1 << 30,
		"1GB":      1 << 30, // binary on purpose: documented
		"1g":       1 << 30,
		"2K":       2048,
		"2KB":      2048,
		"2KiB":     2048,
		"3T":       3 << 40,
		" 8 MiB ":  8 << 20, //nolint:gocritic // the spaces are what this case tests
		"1.5GiB":   3 << 29,
		"0.5K":     512,
		"1P":       1 << 50,
		"16383PiB": 16383 << 50,
	}
	for in, want := range good {
		got, err := ParseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	bad := []string{"", "  ", "MiB", "-1", "1X", "1 GiBs", "12i", "1.2.3G", "0.3B", "99999999999999999999",
		"16384PiB", "1e3", "1.7976931348623157e308G"}
	for _, in := range bad {
		_, err := ParseSize(in)
		require.Error(t, err, "%q must be refused", in)
	}
}

func TestFormatSizeRoundTrips(t *testing.T) {
	for _, n := range []uint64{0, 1, 511, 1024, 1536, 1 << 20, 3 << 29, 16 << 30, 1<<40 + 1, 5 << 50} {
		s := FormatSize(n)
		back, err := ParseSize(s)
		require.NoError(t, err, s)
		require.Equal(t, n, back, s)
	}
	require.Equal(t, "16GiB", FormatSize(16<<30))
	require.Equal(t, "1536MiB", FormatSize(3<<29))
	require.Equal(t, "1000B", FormatSize(1000))
}

func TestHumanSize(t *testing.T) {
	require.Equal(t, "0B", HumanSize(0))
	require.Equal(t, "1000B", HumanSize(1000))
	require.Equal(t, "2GiB", HumanSize(2<<30))
	require.Equal(t, "1.50GiB", HumanSize(3<<29))
}
