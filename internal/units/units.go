// Package units parses and formats byte sizes for the vgpu command lines.
//
// Every unit is a binary power: K, M, G, T (optionally followed by "i", "iB" or
// "B", any case) mean 1024, 1024², 1024³, 1024⁴ bytes. "1G", "1GB" and "1GiB" are
// therefore the same size. GPU memory is sized in binary units everywhere (nvidia-smi,
// CUDA), so a decimal "GB" would only ever be a surprise. A plain number is bytes.
package units

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

var multipliers = map[string]uint64{
	"":  1,
	"k": 1 << 10,
	"m": 1 << 20,
	"g": 1 << 30,
	"t": 1 << 40,
	"p": 1 << 50,
}

// ParseSize parses "512MiB", "16GiB", "1G", "1GB", "1.5GiB", "4096" or "4096B".
// Fractions are allowed with a unit and must come out to whole bytes.
func ParseSize(s string) (uint64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("parse size %q: empty", s)
	}
	i := 0
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '.') {
		i++
	}
	num, unit := in[:i], strings.ToLower(strings.TrimSpace(in[i:]))
	if num == "" {
		return 0, fmt.Errorf("parse size %q: no number (want e.g. 512MiB, 16GiB or plain bytes)", s)
	}
	unit = strings.TrimSuffix(unit, "b")
	if len(unit) == 2 && unit[1] == 'i' { // "Ki", "Mi", ... but not a bare "i"
		unit = unit[:1]
	}
	mult, ok := multipliers[unit]
	if !ok {
		return 0, fmt.Errorf("parse size %q: unknown unit %q (use K, M, G, T with optional iB/B; binary powers)", s, in[i:])
	}
	if !strings.Contains(num, ".") {
		v, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse size %q: %w", s, err)
		}
		hi, lo := bits.Mul64(v, mult)
		if hi != 0 {
			return 0, fmt.Errorf("parse size %q: too large", s)
		}
		return lo, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("parse size %q: %w", s, err)
	}
	b := f * float64(mult)
	if b >= math.Ldexp(1, 64) {
		return 0, fmt.Errorf("parse size %q: too large", s)
	}
	if b != math.Trunc(b) {
		return 0, fmt.Errorf("parse size %q: not a whole number of bytes", s)
	}
	return uint64(b), nil
}

// FormatSize renders bytes with the largest binary unit that divides it exactly
// ("16GiB", "1536MiB", "1000B"), so that ParseSize(FormatSize(n)) == n.
func FormatSize(n uint64) string {
	units := []struct {
		suffix string
		size   uint64
	}{{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	if n == 0 {
		return "0B"
	}
	for _, u := range units {
		if n%u.size == 0 {
			return strconv.FormatUint(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}

// HumanSize renders bytes approximately for tables ("1.50GiB"); not parseable back
// exactly. Use FormatSize where the value must round-trip.
func HumanSize(n uint64) string {
	units := []struct {
		suffix string
		size   uint64
	}{{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if n >= u.size {
			if n%u.size == 0 {
				return strconv.FormatUint(n/u.size, 10) + u.suffix
			}
			return strconv.FormatFloat(float64(n)/float64(u.size), 'f', 2, 64) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}
