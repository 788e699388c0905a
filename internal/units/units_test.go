package units

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSize(t *testing.T) {
	good := map[string]uint64{
		"0":      0,
		"4096":   4096,
		"4096B":  4096,
		"4096b":  4096,
		"512Mi":  512 << 20,
		"512MiB": 512 << 20,
		"512mib": 512 << 20,
		"16Gi":   16 << 30,
		"16GiB":  16 << 30,
		"16gib":  16 << 30,
		"2Ki":    2048,
		"2KiB":   2048,
		"3Ti":    3 << 40,
		"1Pi":    1 << 50,
		"1Ei":    1 << 60,
		// Kubernetes: no "i" is decimal.
		"4G":      4e9,
		"4GB":     4e9,
		"4gb":     4e9,
		"512M":    512e6,
		"512MB":   512e6,
		"2k":      2000,
		"2kB":     2000,
		"2KB":     2000,
		"3T":      3e12,
		"1P":      1e15,
		"1E":      1e18,
		"1e9":     1e9,
		"1E3":     1000,
		"+5":      5,
		" 8 MiB ": 8 << 20, //nolint:gocritic // the spaces are what this case tests
		"8 Mi":    8 << 20,
		"1.5Gi":   3 << 29,
		"1.5GiB":  3 << 29,
		"0.5Ki":   512,
		"1.5G":    15e8,
		"7Ei":     7 << 60,
	}
	for in, want := range good {
		got, err := ParseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	bad := []string{"", "  ", "MiB", "Gi", "-1", "-1Gi", "1X", "1 GiBs", "12i", "1.2.3G", "0.3B", "0.1Ki",
		"99999999999999999999", "8Ei", "1e100", "1.7976931348623157e308G", "9223372036854775807",
		"512m", "1g", "2K", "1t", "1gi", "1n", "1u", "1e", "e3", ".", "1..0"}
	for _, in := range bad {
		_, err := ParseSize(in)
		require.Error(t, err, "%q must be refused", in)
	}
}

// TestParseSizeHints: a unit Kubernetes does not know, and "m" (milli), say
// what to write instead.
func TestParseSizeHints(t *testing.T) {
	_, err := ParseSize("512m")
	require.ErrorContains(t, err, "512Mi (binary) or 512M (decimal)")
	_, err = ParseSize("2K")
	require.ErrorContains(t, err, "2Ki (binary, 2·2^10) or 2k (decimal, 2·10^3)")
	_, err = ParseSize("4g")
	require.ErrorContains(t, err, "4Gi (binary, 4·2^30) or 4G (decimal, 4·10^9)")
	_, err = ParseSize("1X")
	require.ErrorContains(t, err, `unknown unit "X"`)
	_, err = ParseSize("0.3")
	require.ErrorContains(t, err, "not a whole number of bytes")
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
